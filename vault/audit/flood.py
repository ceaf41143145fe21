"""Unauthenticated failures, per client address: limited, and audited without flooding.

A bad bearer token, bad runner client credentials or a failed login costs the caller
nothing, and each used to write one durable, hash-chained audit event: a client could
write hundreds a second. Every such failure now counts in a per-address window, in one
``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` statement on the ``throttles`` table
(key ``src:<address>:<window>``), so every server process shares the count:

- the first ``audited`` failures of an address in a window (1 by default) are audited in
  full, as before;
- the repeats are audited as ONE ``auth.failures`` event per address per window, with
  their count, once the window has closed (:meth:`FailureFlood.sweep`; claiming a closed
  window deletes its row with ``DELETE ... RETURNING``, so exactly one process writes it);
- past ``limit`` failures in a window the address gets 429 until the window ends.

Only failures pay: a valid token never touches this (the fetch's hot path is unchanged).
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from sqlalchemy import delete, literal
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from vault.audit.events import Actor, AuditEvent, RequestContext
from vault.audit.trail import AuditTrail
from vault.clock import Clock
from vault.errors import RateLimited
from vault.storage.engine import SessionFactory, unit_of_work
from vault.storage.models import Throttle

__all__ = ["AGGREGATE_ACTION", "FailureFlood"]

AGGREGATE_ACTION = "auth.failures"
_PREFIX = "src:"
log = logging.getLogger("linevault.audit")


class FailureFlood:
    def __init__(
        self,
        *,
        sessions: SessionFactory,
        audit: AuditTrail,
        clock: Clock,
        window_seconds: int,
        limit: int,
        audited: int = 1,
    ) -> None:
        self._audited = audited
        self._sessions = sessions
        self._audit = audit
        self._clock = clock
        self._window = window_seconds
        self._limit = limit
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, event: AuditEvent, context: RequestContext) -> None:
        """Count one unauthenticated failure of ``context.ip``; audit it in full if it is
        among the address's first ``audited`` in this window; raise ``RateLimited`` past
        the limit."""
        now = self._clock.now()
        window = int(now.timestamp()) // self._window
        count = self._count(f"{_PREFIX}{context.ip or '-'}:{window}", now, window)
        if count <= self._audited:
            self._audit.emit(event)
        if count > self._limit:
            ends = (window + 1) * self._window
            raise RateLimited(retry_after=max(1, int(ends - now.timestamp())))

    def _count(self, key: str, now: datetime, window: int) -> int:
        ends = datetime.fromtimestamp((window + 1) * self._window, UTC)
        with unit_of_work(self._sessions) as session:
            dialect = session.get_bind().dialect.name
            ins = (pg_insert if dialect == "postgresql" else sqlite_insert)(Throttle).values(
                key=key, failures=1, last_failure_at=now, blocked_until=ends
            )
            stmt = ins.on_conflict_do_update(
                index_elements=["key"],
                set_={"failures": Throttle.failures + literal(1), "last_failure_at": now},
            ).returning(Throttle.failures)
            return int(session.execute(stmt).scalar_one())

    def sweep(self) -> int:
        """Write one ``auth.failures`` event per closed window that had repeats; returns
        how many. Windows are claimed by deleting them, so concurrent sweeps never
        write one twice."""
        now = self._clock.now()
        with unit_of_work(self._sessions) as session:
            closed = session.execute(
                delete(Throttle)
                .where(Throttle.key.startswith(_PREFIX), Throttle.blocked_until <= now)
                .returning(Throttle.key, Throttle.failures, Throttle.blocked_until)
            ).all()
        written = 0
        for key, failures, ends in closed:
            if failures <= self._audited:
                continue
            source = key[len(_PREFIX) :].rsplit(":", 1)[0]
            self._audit.emit(self._aggregate(source, failures - self._audited, ends or now))
            written += 1
        return written

    def _aggregate(self, source: str, repeats: int, ends: datetime) -> AuditEvent:
        return AuditEvent.by(
            Actor("system", None),
            AGGREGATE_ACTION,
            "denied",
            reason="repeated unauthenticated failures from one address",
            context=RequestContext(ip=None if source == "-" else source),
            details={
                "count": repeats,
                "window_seconds": self._window,
                "window_end": ends.isoformat().replace("+00:00", "Z"),
            },
        )

    # -- the sweeper thread ---------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="linevault-flood", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(min(self._window, 30)):
            try:
                self.sweep()
            except Exception:  # the next round retries; the rows stay until claimed
                log.warning("aggregating unauthenticated failures failed", exc_info=True)
