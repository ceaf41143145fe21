"""Appending events to the one hash chain, safely from many processes.

Every append locks the single ``audit_head`` row (``SELECT ... FOR UPDATE`` on
PostgreSQL; on SQLite the ``BEGIN IMMEDIATE`` write lock already serializes writers),
links its events to the head, inserts them and moves the head, all in the caller's
transaction. The lock is held until that transaction ends, so two processes can never
fork the chain, and a batch of events costs one lock and one commit.

The head row also carries a MAC (:class:`HeadSeal`) under a root-derived key, set by
every append. Event hashes are unkeyed, so without it someone with write access to the
database could rewrite or extend the part of the chain that no checkpoint signs yet and
recompute every hash; they cannot make the head's MAC for the result.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, insert, text, update
from sqlalchemy.orm import Session

from kms.crypto import MacKey
from vault.audit.events import SORTED_FIELDS, AuditEvent, event_hash, hash_sorted_values
from vault.storage.models import AuditEventRow, AuditHead

__all__ = [
    "HEAD",
    "HEAD_MAC_PURPOSE",
    "MOVE_HEAD",
    "PG_INSERT_ROWS",
    "TAINTED",
    "ChainHead",
    "HeadSeal",
    "append_events",
    "chain_rows",
    "format_ts",
    "links_from",
    "read_head",
    "to_json",
]

log = logging.getLogger("linevault.audit")

_EVENTS = cast(Table, AuditEventRow.__table__)


_COLUMNS = ", ".join(c.name for c in _EVENTS.columns)
# The statement pieces the one-statement batch (vault/audit/fastbatch.py) builds on too.
# PostgreSQL: the whole batch as ONE JSON parameter of ONE fixed statement. The server
# parses and plans it once per connection, the client serialises the batch with the C
# JSON encoder; psycopg's executemany would send one Bind/Execute per row, and a
# multi-row VALUES list is a new statement text for every batch size. This is the
# hottest write of the service. (Column names come from the model, not from input.)
PG_INSERT_ROWS = (
    f"INSERT INTO audit_events ({_COLUMNS}) SELECT {_COLUMNS} "  # noqa: S608
    "FROM json_populate_recordset(NULL::audit_events, CAST(:rows AS json))"
)
MOVE_HEAD = "UPDATE audit_head SET seq = :seq, hash = :hash, mac = :mac WHERE id = 1"
HEAD = "SELECT seq, hash, mac FROM audit_head WHERE id = 1"
HEAD_MAC_PURPOSE = "audit-head-integrity"


class HeadSeal:
    """The head row's MAC: HMAC-SHA256 over ``"<seq>:<hash>"`` under a key derived from
    the root-wrapped system secret (``SystemKeys.mac_key(HEAD_MAC_PURPOSE)``).

    The hash is fixed-length hex and seq an integer, so the message is injective. What
    the MAC cannot stop is a rollback to a head row copied earlier (with every later
    event deleted): checkpoints, the lag rule and the anchors outside the database bound
    that (docs/audit.md).
    """

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = MacKey(key)

    def tag(self, seq: int, hash: str) -> str:
        return self._key.tag(f"{seq}:{hash}".encode()).hex()

    def ok(self, seq: int, hash: str, mac: str | None) -> bool:
        if mac is None:
            return False
        try:
            return self._key.verify(f"{seq}:{hash}".encode(), bytes.fromhex(mac))
        except ValueError:
            return False

    def follows(self, head: ChainHead) -> bool:
        """May an append extend ``head`` with a fresh MAC? Only a genuine head (or the
        empty chain): a legitimate append must not launder a rewritten tail."""
        return head.seq == 0 or self.ok(head.seq, head.hash, head.mac)

    def successor(self, head: ChainHead, rows: Sequence[dict[str, object]]) -> ChainHead:
        """The head once ``rows`` are appended after ``head``, with its MAC: genuine if
        ``head``'s was, else :data:`TAINTED`, so a break stays visible to ``audit verify``
        for good while the service keeps recording (refusing every write would also stop
        revocations). Pure: the writer's fast path recomputes it for the head it keeps."""
        last = rows[-1]
        seq, hash_ = cast(int, last["seq"]), cast(str, last["hash"])
        mac = self.tag(seq, hash_) if self.follows(head) else TAINTED
        return ChainHead(seq, hash_, mac)


# A MAC that never verifies: HMAC-SHA256 outputs all-zero with probability 2**-256.
TAINTED = "0" * 64

# The head moves in the same statement (one round trip less per batch).
_PG_APPEND = text(f"WITH ins AS ({PG_INSERT_ROWS}) {MOVE_HEAD}")
# Compact JSON for the statement parameters (the C encoder, built once).
to_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _insert_and_move_head(
    session: Session, rows: Sequence[dict[str, object]], *, seq: int, hash: str, mac: str
) -> None:
    if session.get_bind().dialect.name == "postgresql":
        # Core on the session's connection: no ORM execution layer on the hottest write.
        session.connection().execute(
            _PG_APPEND, {"rows": to_json(rows), "seq": seq, "hash": hash, "mac": mac}
        )
    else:
        session.execute(insert(_EVENTS), list(rows))
        session.execute(
            update(AuditHead).where(AuditHead.id == 1).values(seq=seq, hash=hash, mac=mac)
        )


class ChainHead:
    """A head: ``mac`` as read from the row (None when built from rows just written)."""

    __slots__ = ("hash", "mac", "seq")

    def __init__(self, seq: int, hash: str, mac: str | None = None) -> None:
        self.seq = seq
        self.hash = hash
        self.mac = mac


def format_ts(moment: datetime) -> str:
    """Event timestamps are stored as text so the hashed bytes never depend on a driver."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_HEAD = text(HEAD)
_HEAD_LOCKED = text(HEAD + " FOR UPDATE")


def read_head(db: Session | Connection, *, lock: bool) -> ChainHead:
    """The head, in ``db``'s transaction; with ``lock``, held until it ends."""
    # Prebuilt Core text on the connection: once per batch on the writer's critical
    # path, so no ORM statement compilation (it was ~40 % of the writer's CPU).
    conn = db.connection() if isinstance(db, Session) else db
    locked = lock and conn.dialect.name != "sqlite"
    row = conn.execute(_HEAD_LOCKED if locked else _HEAD).one()
    return ChainHead(int(row.seq), str(row.hash), row.mac)


_SEQ = SORTED_FIELDS.index("seq")
_PREV = SORTED_FIELDS.index("prev_hash")


def links_from(start: ChainHead, rows: Iterable[Sequence[Any]]) -> ChainHead | None:
    """The head reached by following ``rows`` (values in :data:`SORTED_FIELDS` order,
    then the stored hash) from ``start``; None if one does not continue the chain
    (a gap, a broken link or a modified event). The short check the checkpointer makes
    before it signs; full verification is :class:`vault.audit.verify.ChainVerifier`."""
    seq, prev = start.seq, start.hash
    for row in rows:
        if row[_SEQ] != seq + 1 or row[_PREV] != prev or hash_sorted_values(row) != row[-1]:
            return None
        seq, prev = seq + 1, row[-1]
    return ChainHead(seq, prev)


def chain_rows(
    head: ChainHead, events: Sequence[AuditEvent], *, now: datetime
) -> list[dict[str, object]]:
    """The stored rows of ``events`` linked after ``head`` (nothing is written)."""
    ts = format_ts(now)
    rows: list[dict[str, object]] = []
    prev = head.hash
    seq = head.seq
    for event in events:
        seq += 1
        row = event.to_row(seq=seq, ts=ts, prev_hash=prev)
        row["hash"] = prev = event_hash(row)
        rows.append(row)
    return rows


def append_events(
    session: Session,
    events: Sequence[AuditEvent],
    *,
    now: datetime,
    seal: HeadSeal,
    head: ChainHead | None = None,
    adopt_unsealed: bool = False,
) -> list[dict[str, object]]:
    """Chain ``events`` after the current head inside the caller's transaction.

    ``seal`` MACs the new head (every writer holds the root-derived key) if the current
    head's MAC verifies; ``adopt_unsealed`` accepts a head with no MAC at all, for the
    one-time sealing after migration 0004f only. ``head``, when given, must have been
    read with the lock in this transaction. Returns
    the stored rows (with ``seq`` and ``hash``) so callers can react, e.g. to sign a
    checkpoint, before they commit.
    """
    if not events:
        return []
    if head is None:
        head = read_head(session, lock=True)
    rows = chain_rows(head, events, now=now)
    if adopt_unsealed and head.mac is None:
        head = ChainHead(head.seq, head.hash, seal.tag(head.seq, head.hash))
    new = seal.successor(head, rows)
    if new.mac == TAINTED:
        log.error("audit chain head MAC does not verify at seq %s: head left tainted", head.seq)
    _insert_and_move_head(session, rows, seq=new.seq, hash=new.hash, mac=str(new.mac))
    return rows
