"""Per-runner, per-minute fetch counters shared by every server process.

Rate limits must hold across processes without a write per request: the audit writer
adds each batch's served fetches to ``runner_usage`` inside the batch's own transaction
(or statement), and reads back the new totals. Each process keeps the newest totals it
has seen, so a decision checks the limit without a query; the count lags by at most the
batches in flight in other processes, the right trade for not adding a round trip.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Sequence

from sqlalchemy.orm import Session

from vault.audit.events import AuditEvent
from vault.clock import Clock
from vault.storage.usage import USAGE_ADD, USAGE_INSERT, minute_window

__all__ = [
    "COUNTED_ACTIONS",
    "FETCH_ACTION",
    "PROOF_ACTION",
    "RATE_LIMITED",
    "SIGN_ACTION",
    "UsageCounter",
]

FETCH_ACTION = "credential.fetch"
# Uses of a secret without revealing it (vault/runners/use.py): the same decision as the
# fetch, so the same per-runner limit; each counts as one fetch.
SIGN_ACTION = "credential.sign"
PROOF_ACTION = "credential.proof"
COUNTED_ACTIONS = frozenset({FETCH_ACTION, SIGN_ACTION, PROOF_ACTION})
RATE_LIMITED = "rate_limited"
_MAX_TRACKED = 100_000

# One statement text for both dialects (SQLite >= 3.35 and PostgreSQL share the upsert
# and RETURNING syntax), run on the driver connection: it runs inside audit batches, on
# the writer's critical path, so it skips SQLAlchemy's statement construction.
_UPSERT = USAGE_INSERT + " VALUES ({p}, {p}, {p}) " + USAGE_ADD + " RETURNING count"
_PRUNE = 'DELETE FROM runner_usage WHERE "window" < {p}'


class UsageCounter:
    def __init__(self, clock: Clock, *, keep_windows: int = 10) -> None:
        self._clock = clock
        self._keep = keep_windows
        self._pruned = -1
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[int, int]] = {}

    @staticmethod
    def counts(events: Sequence[AuditEvent]) -> dict[str, int]:
        """Served fetches per runner in ``events``, signs and proofs included (refusals
        for the limit itself are not counted, so a runner over its limit gets going again
        next minute)."""
        counts: Counter[str] = Counter()
        for e in events:
            if (
                e.action in COUNTED_ACTIONS
                and e.actor_type == "runner"
                and e.actor_id is not None
                and e.reason != RATE_LIMITED
            ):
                counts[e.actor_id] += 1
        return dict(counts)

    def window(self) -> int:
        return minute_window(self._clock.now())

    def prune_due(self, window: int) -> bool:
        return self._pruned != window

    def observe(self, window: int, totals: Iterable[tuple[str, int]]) -> None:
        """Remember the newest database totals (from any process's batch) for ``window``."""
        with self._lock:
            if len(self._seen) > _MAX_TRACKED:
                self._seen.clear()
            for runner_id, total in totals:
                current = self._seen.get(runner_id)
                if current is None or current[0] < window or current[1] < total:
                    self._seen[runner_id] = (window, int(total))

    def used(self, runner_id: str, window: int) -> int:
        seen = self._seen.get(runner_id)
        return seen[1] if seen is not None and seen[0] == window else 0

    def hook(
        self, session: Session, events: Sequence[AuditEvent], _rows: Sequence[dict[str, object]]
    ) -> None:
        """AuditWriter batch hook (the transactional path): count, read back, prune."""
        counts = self.counts(events)
        if not counts:
            return
        window = self.window()
        conn = session.connection()
        mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        totals: list[tuple[str, int]] = []
        try:
            # Sorted, so two processes' batches lock counter rows in the same order.
            for runner_id, n in sorted(counts.items()):
                cursor.execute(_UPSERT.format(p=mark), (runner_id, window, n))
                total = cursor.fetchone()
                assert total is not None
                totals.append((runner_id, int(total[0])))
            if self.prune_due(window):
                cursor.execute(_PRUNE.format(p=mark), (window - self._keep,))
                self._pruned = window
        finally:
            cursor.close()
        # Observed before the commit: if it then fails, the totals are only high, which
        # errs on the side of the limit for at most this minute.
        self.observe(window, totals)
