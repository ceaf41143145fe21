"""A fetch batch in ONE statement on PostgreSQL: the writer's fast path.

The transactional path costs a batch five round trips (lock and read the head, read
the epoch, append, count usage, commit). When this process wrote the last batch it
already knows the head, so the whole batch can be one autocommit statement that:

- checks the head is still what this process wrote (``seq`` and ``hash``) and, for
  cached decisions, that the authorization epoch still equals the guard; the UPDATE of
  ``audit_head`` takes the chain's row lock, and PostgreSQL re-checks the condition on
  the newest row version if another writer committed meanwhile, so two processes can
  never fork the chain;
- appends the events and moves the head, only if that check passed;
- adds the served fetches to the runners' usage counters and returns the new totals.

When it cannot (no head known, a checkpoint may be due, the usage window must be
pruned, the head moved, the connection failed), it hands the batch back and the
writer's transactional path runs. A connection failure during the statement leaves its
outcome unknown; the transactional path then recognises an applied batch by its hash.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg

from vault.audit.chain import ChainHead, chain_rows
from vault.audit.checkpoints import Checkpointer
from vault.audit.events import AuditEvent
from vault.audit.writer import UnknownOutcome, WriteResult
from vault.runners.usage import UsageCounter, minute_window
from vault.storage.epoch import EPOCH_SQL
from vault.storage.models import AuditEventRow

__all__ = ["PgFastBatch"]

_COLUMNS = ", ".join(c.name for c in AuditEventRow.__table__.columns)
# The only interpolation is the model's column names.
_STATEMENT = (
    f"WITH e AS ({EPOCH_SQL}), "  # noqa: S608
    "h AS (UPDATE audit_head SET seq = %(seq)s, hash = %(hash)s "
    "WHERE id = 1 AND seq = %(prev_seq)s AND hash = %(prev_hash)s "
    "AND (%(guard)s::bigint IS NULL OR %(guard)s::bigint = (SELECT n FROM e)) RETURNING 1), "
    f"ins AS (INSERT INTO audit_events ({_COLUMNS}) SELECT {_COLUMNS} "
    "FROM json_populate_recordset(NULL::audit_events, %(rows)s::json) "
    "WHERE EXISTS (SELECT 1 FROM h)), "
    'u AS (INSERT INTO runner_usage (runner_id, "window", count) '
    "SELECT x.r, x.w, x.c FROM json_to_recordset(%(usage)s::json) AS x(r text, w bigint, c bigint) "
    "WHERE EXISTS (SELECT 1 FROM h) ORDER BY x.r "
    'ON CONFLICT (runner_id, "window") DO UPDATE SET count = runner_usage.count + excluded.count '
    "RETURNING runner_id, count) "
    "SELECT EXISTS (SELECT 1 FROM h), (SELECT n FROM e), "
    "(SELECT string_agg(runner_id || ':' || count, ',') FROM u)"
)
_HEAD = "SELECT seq, hash FROM audit_head WHERE id = 1"
_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class PgFastBatch:
    """Implements :class:`vault.audit.writer.FastBatch`; used only by the writer thread."""

    def __init__(
        self, conninfo: str, *, checkpointer: Checkpointer | None, usage: UsageCounter
    ) -> None:
        self._conninfo = conninfo
        self._checkpointer = checkpointer
        self._usage = usage
        self._conn: psycopg.Connection[Any] | None = None
        self._head: ChainHead | None = None

    def observe_head(self, head: ChainHead) -> None:
        self._head = head

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._conninfo, autocommit=True, prepare_threshold=0)
        return self._conn

    def write(
        self, events: Sequence[AuditEvent], *, now: datetime, guard: int | None
    ) -> WriteResult | None:
        head = self._head
        if head is None or not events:
            return None
        if self._checkpointer is not None and self._checkpointer.may_be_due(head.seq + len(events)):
            return None
        window = minute_window(now)
        counts = self._usage.counts(events)
        if counts and self._usage.prune_due(window):
            return None
        usage = _json([{"r": r, "w": window, "c": n} for r, n in sorted(counts.items())])
        # With several processes the head usually moved since this one last wrote: one
        # unlocked look at it and a second attempt cost less than the locked path.
        for attempt in (1, 2):
            result, totals = self._attempt(head, events, now=now, guard=guard, usage=usage)
            if result is not None:
                if totals:  # "runner_id:total,..." (ids never hold ':' or ',')
                    pairs = (item.rpartition(":") for item in totals.split(","))
                    self._usage.observe(window, [(r, int(c)) for r, _, c in pairs])
                return result
            moved = self._read_head() if attempt == 1 else None
            if moved is None or (
                self._checkpointer is not None
                and self._checkpointer.may_be_due(moved.seq + len(events))
            ):
                break
            head = moved
        return None  # the head keeps moving: the transactional path takes the lock

    def _attempt(
        self,
        head: ChainHead,
        events: Sequence[AuditEvent],
        *,
        now: datetime,
        guard: int | None,
        usage: str,
    ) -> tuple[WriteResult | None, str | None]:
        """One try of the statement after ``head``: the result (None if the head moved)
        and the usage totals it returned."""
        rows = chain_rows(head, events, now=now)
        last = rows[-1]
        params = {
            "seq": last["seq"],
            "hash": last["hash"],
            "prev_seq": head.seq,
            "prev_hash": head.hash,
            "guard": guard,
            "rows": _json(rows),
            "usage": usage,
        }
        self._head = None  # unknown until the answer
        try:
            result = self._connection().execute(_STATEMENT, params).fetchone()
        except psycopg.OperationalError:
            self.close()
            raise UnknownOutcome(rows) from None
        except psycopg.Error:
            # The statement failed as a whole (autocommit): nothing was applied.
            self._head = head
            raise
        assert result is not None
        applied, epoch, totals = result
        if applied:
            self._head = ChainHead.after(rows)
            return WriteResult(rows, int(epoch)), totals
        if guard is not None and epoch != guard:
            self._head = head  # possibly still right; a wrong hint only costs a fallback
            return WriteResult(None, int(epoch)), None
        return None, None

    def _read_head(self) -> ChainHead | None:
        try:
            row = self._connection().execute(_HEAD).fetchone()
        except psycopg.Error:
            self.close()
            return None
        return None if row is None else ChainHead(int(row[0]), str(row[1]))
