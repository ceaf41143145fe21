"""A fetch batch in ONE statement on PostgreSQL: the writer's fast path.

The transactional path costs a batch five round trips (lock and read the head, read
the epoch, append, count usage, commit). When this process wrote the last batch, or
the host's head file names the head another process of the host wrote last
(:mod:`vault.audit.headboard`), the head is known, so the whole batch can be one
autocommit statement that:

- checks the head is still that one (``seq`` and ``hash``) and, for
  cached decisions, that the authorization epoch still equals the guard; the UPDATE of
  ``audit_head`` takes the chain's row lock, and PostgreSQL re-checks the condition on
  the newest row version if another writer committed meanwhile, so two processes can
  never fork the chain;
- appends the events and moves the head, only if that check passed;
- adds the served fetches to the runners' usage counters and returns the new totals.

It is built from the chain's own append and head statements (:mod:`vault.audit.chain`)
and the counters' upsert (:mod:`vault.storage.usage`), and runs on one connection it
keeps checked out of the process's pool.

When it cannot (no head known, a checkpoint may be due, the usage window must be
pruned, the head moved, the connection failed), it hands the batch back and the
writer's transactional path runs. A connection failure during the statement leaves its
outcome unknown; the transactional path then recognises an applied batch by its hash.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError, OperationalError

from vault.audit.batching import BatchUsage, UnknownOutcome, WriteResult
from vault.audit.chain import (
    MOVE_HEAD,
    PG_INSERT_ROWS,
    ChainHead,
    HeadSeal,
    chain_rows,
    read_head,
    to_json,
)
from vault.audit.checkpoints import Checkpointer
from vault.audit.events import AuditEvent
from vault.audit.headboard import HeadBoard
from vault.storage.epoch import EPOCH_SQL
from vault.storage.usage import USAGE_ADD, USAGE_INSERT, minute_window

__all__ = ["PgFastBatch"]

# The only interpolations are the shared statement pieces (model column names, no input).
_STATEMENT = text(
    f"WITH e AS ({EPOCH_SQL}), "  # noqa: S608
    f"h AS ({MOVE_HEAD} AND seq = :prev_seq AND hash = :prev_hash "
    "AND (CAST(:guard AS bigint) IS NULL OR CAST(:guard AS bigint) = (SELECT n FROM e)) "
    "RETURNING 1), "
    f"ins AS ({PG_INSERT_ROWS} WHERE EXISTS (SELECT 1 FROM h)), "
    f"u AS ({USAGE_INSERT} SELECT x.r, x.w, x.c "
    "FROM json_to_recordset(CAST(:usage AS json)) AS x(r text, w bigint, c bigint) "
    f"WHERE EXISTS (SELECT 1 FROM h) ORDER BY x.r {USAGE_ADD} RETURNING runner_id, count) "
    "SELECT EXISTS (SELECT 1 FROM h), (SELECT n FROM e), "
    "(SELECT string_agg(runner_id || ':' || count, ',') FROM u)"
)


class PgFastBatch:
    """Implements :class:`vault.audit.writer.FastBatch`; used only by the writer thread."""

    def __init__(
        self,
        engine: Engine,
        *,
        checkpointer: Checkpointer | None,
        seal: HeadSeal,
        usage: BatchUsage,
        board: HeadBoard | None = None,
    ) -> None:
        self._engine = engine
        self._board = board
        self._seal = seal
        # Compiled once to the driver's text: executed as is, the statement skips
        # SQLAlchemy's per-execution compile step on the writer's critical path.
        self._sql = str(_STATEMENT.compile(dialect=engine.dialect))
        self._checkpointer = checkpointer
        self._usage = usage
        self._conn: Connection | None = None
        self._head: ChainHead | None = None

    def observe_head(self, head: ChainHead) -> None:
        self._head = head
        if self._board is not None:
            with self._board.turn():
                self._board.post(head)

    def close(self) -> None:
        """Give the connection back and let go of the host's head file (writer stopped)."""
        self._release()
        if self._board is not None:
            self._board.close()
            self._board = None

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _discard(self) -> None:
        """Drop the connection: the next statement runs on a fresh one from the pool."""
        if self._conn is not None:
            self._conn.invalidate()
        self._release()

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        return self._conn

    def write(
        self, events: Sequence[AuditEvent], *, now: datetime, guard: int | None
    ) -> WriteResult | None:
        if not events:
            return None
        window = minute_window(now)
        counts = self._usage.counts(events)
        if counts and self._usage.prune_due(window):
            return None
        usage = to_json([{"r": r, "w": window, "c": n} for r, n in sorted(counts.items())])
        with self._turn():
            result, totals = self._write_in_turn(events, now=now, guard=guard, usage=usage)
        if totals:  # "runner_id:total,..." (ids never hold ':' or ',')
            pairs = (item.rpartition(":") for item in totals.split(","))
            self._usage.observe(window, [(r, int(c)) for r, _, c in pairs])
        return result

    def _write_in_turn(
        self, events: Sequence[AuditEvent], *, now: datetime, guard: int | None, usage: str
    ) -> tuple[WriteResult | None, str | None]:
        """The statement, during this process's turn, held until its answer: the
        processes of a host never race each other for the head, the next one in turn
        links after the head this one posts."""
        # The head may still have moved since it was posted (the locked path, another
        # host): one unlocked look at it and a second attempt cost less than the locked
        # path.
        start: ChainHead | None = None
        for attempt in (1, 2):
            built = self._build(start, events, now=now)
            if built is None:
                return None, None
            result, totals = self._attempt(*built, guard=guard, usage=usage)
            if result is not None:
                return result, totals
            start = self._read_head() if attempt == 1 else None
            if start is None:
                break
        return None, None  # the head keeps moving: the transactional path takes the lock

    def _turn(self) -> contextlib.AbstractContextManager[None]:
        return self._board.turn() if self._board is not None else contextlib.nullcontext()

    def _build(
        self, head: ChainHead | None, events: Sequence[AuditEvent], *, now: datetime
    ) -> tuple[ChainHead, list[dict[str, object]], ChainHead] | None:
        """The head to link after (the host's newest when ``head`` is None), the batch's
        rows and the new head; None when there is no head to start from or a checkpoint
        may be due."""
        if head is None:
            head = (self._board.read() if self._board is not None else None) or self._head
        if head is None or (
            self._checkpointer is not None and self._checkpointer.may_be_due(head.seq + len(events))
        ):
            return None
        rows = chain_rows(head, events, now=now)
        return head, rows, self._seal.successor(head, rows)

    def _attempt(
        self,
        head: ChainHead,
        rows: list[dict[str, object]],
        new: ChainHead,
        *,
        guard: int | None,
        usage: str,
    ) -> tuple[WriteResult | None, str | None]:
        """One try of the statement linking ``rows`` after ``head``: the result (None if
        the head moved) and the usage totals it returned."""
        params: dict[str, Any] = {
            "seq": new.seq,
            "hash": new.hash,
            "mac": new.mac,
            "prev_seq": head.seq,
            "prev_hash": head.hash,
            "guard": guard,
            "rows": to_json(rows),
            "usage": usage,
        }
        self._head = None  # unknown until the answer
        try:
            conn = self._connection()
            applied, epoch, totals = conn.exec_driver_sql(self._sql, params).one()
            conn.commit()  # autocommit: ends SQLAlchemy's transaction, no round trip
        except OperationalError:
            self._discard()
            raise UnknownOutcome(rows) from None
        except DBAPIError:
            # The statement failed as a whole (autocommit): nothing was applied.
            if self._conn is not None:
                self._conn.rollback()
            self._head = head
            raise
        if applied:
            self._head = new
            if self._board is not None:  # during this process's turn: the next links here
                self._board.post(new)
            if self._checkpointer is not None:
                self._checkpointer.appended(rows)
            return WriteResult(rows, int(epoch)), totals
        if guard is not None and epoch != guard:
            self._head = head  # possibly still right; a wrong hint only costs a fallback
            return WriteResult(None, int(epoch)), None
        return None, None

    def _read_head(self) -> ChainHead | None:
        try:
            conn = self._connection()
            head = read_head(conn, lock=False)
            conn.commit()
        except DBAPIError:
            self._discard()
            return None
        return head
