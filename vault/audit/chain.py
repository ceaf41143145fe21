"""Appending events to the one hash chain, safely from many processes.

Every append locks the single ``audit_head`` row (``SELECT ... FOR UPDATE`` on
PostgreSQL; on SQLite the ``BEGIN IMMEDIATE`` write lock already serializes writers),
links its events to the head, inserts them and moves the head, all in the caller's
transaction. The lock is held until that transaction ends, so two processes can never
fork the chain, and a batch of events costs one lock and one commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from vault.audit.events import AuditEvent, event_hash
from vault.storage.models import AuditEventRow, AuditHead

__all__ = ["ChainHead", "append_events", "format_ts", "read_head"]


class ChainHead:
    __slots__ = ("hash", "seq")

    def __init__(self, seq: int, hash: str) -> None:
        self.seq = seq
        self.hash = hash


def format_ts(moment: datetime) -> str:
    """Event timestamps are stored as text so the hashed bytes never depend on a driver."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def read_head(session: Session, *, lock: bool) -> ChainHead:
    stmt = select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)
    if lock and session.get_bind().dialect.name != "sqlite":
        stmt = stmt.with_for_update()
    row = session.execute(stmt).one()
    return ChainHead(int(row.seq), str(row.hash))


def append_events(
    session: Session, events: Sequence[AuditEvent], *, now: datetime
) -> list[dict[str, object]]:
    """Chain ``events`` after the current head inside the caller's transaction.

    Returns the stored rows (with ``seq`` and ``hash``) so callers can react, e.g. to
    sign a checkpoint, before they commit.
    """
    if not events:
        return []
    head = read_head(session, lock=True)
    ts = format_ts(now)
    rows: list[dict[str, object]] = []
    prev = head.hash
    seq = head.seq
    for event in events:
        seq += 1
        row = event.to_row(seq=seq, ts=ts, prev_hash=prev)
        row["hash"] = prev = event_hash(row)
        rows.append(row)
    session.execute(insert(AuditEventRow), rows)
    session.execute(update(AuditHead).where(AuditHead.id == 1).values(seq=seq, hash=prev))
    return rows
