"""Signed checkpoints: Ed25519 statements "the chain at seq N has hash H".

A hash chain alone shows that events were changed, reordered or removed in the middle,
but not that the newest events were cut off, nor that someone with write access to the
database rewrote the whole chain and recomputed every hash. A checkpoint signed with the
audit signing key (wrapped by the root key, so a database dump alone cannot forge one)
pins the chain up to its sequence number; verifiers need only the public key (like AWS
CloudTrail digest files, or the signed tree heads of RFC 6962).

Checkpoints are written in the same transaction as the events they cover (from the
writer's batch hook or from :meth:`AuditTrail.record`), or, when the trail is quiet, by
the writer's idle hook under the chain's head lock, covering only the committed head. A
checkpoint row can therefore never refer to an event that was not committed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from kms.crypto import SigningKey, verify_signature
from vault.audit.chain import format_ts, read_head
from vault.audit.events import AuditEvent
from vault.clock import Clock
from vault.storage.engine import SessionFactory, unit_of_work
from vault.storage.models import AuditCheckpoint

__all__ = [
    "CHECKPOINT_TAG",
    "CheckpointRecord",
    "Checkpointer",
    "checkpoint_message",
    "parse_ts",
]

log = logging.getLogger("linevault.audit")

CHECKPOINT_TAG = b"linevault/audit-checkpoint/v1\n"
_CP = AuditCheckpoint.__table__


def checkpoint_message(*, seq: int, hash: str, ts: str) -> bytes:
    """The exact signed bytes: tag + canonical JSON of seq, hash and ts."""
    body = json.dumps({"hash": hash, "seq": seq, "ts": ts}, sort_keys=True, separators=(",", ":"))
    return CHECKPOINT_TAG + body.encode()


def parse_ts(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    seq: int
    hash: str
    ts: str
    key_id: str
    signature: bytes

    def valid_for(self, public_key: bytes) -> bool:
        return verify_signature(
            public_key=public_key,
            signature=self.signature,
            message=checkpoint_message(seq=self.seq, hash=self.hash, ts=self.ts),
        )


class Checkpointer:
    """Decides when to sign and writes the checkpoint row, in the caller's transaction.

    The last checkpoint's (seq, time) is cached per process as a hint so that most calls
    cost no query; the cache is only ever filled from what the database says, and a
    stale hint (another process checkpointed meanwhile) only costs one indexed lookup.
    """

    def __init__(
        self,
        *,
        signing_key: SigningKey,
        key_id: str,
        clock: Clock,
        every: int,
        seconds: float,
    ) -> None:
        self._key = signing_key
        self._key_id = key_id
        self._clock = clock
        self._every = every
        self._period = timedelta(seconds=seconds)
        self._hint: tuple[int, datetime] | None = None

    # -- hooks -----------------------------------------------------------------------

    def batch_hook(
        self, session: Session, events: Sequence[AuditEvent], rows: Sequence[dict[str, object]]
    ) -> None:
        """AuditWriter batch hook: runs after the batch is chained, before its commit."""
        del events
        self.after_append(session, rows)

    def after_append(self, session: Session, rows: Sequence[dict[str, object]]) -> None:
        """Sign the newest of ``rows`` if N events or T seconds passed since the last one."""
        if not rows:
            return
        last = rows[-1]
        seq, hash_ = last["seq"], last["hash"]
        assert isinstance(seq, int) and isinstance(hash_, str)
        now = self._clock.now()
        if self._hint is not None and not self._due(seq, now, self._hint):
            return
        latest = self._latest(session)
        if latest is not None and (latest[0] >= seq or not self._due(seq, now, latest)):
            return
        self.write(session, seq=seq, hash=hash_)

    def may_be_due(self, seq: int) -> bool:
        """Could a batch ending at ``seq`` need a checkpoint? False only when the cached
        hint says no; one-step writers leave every batch that may to the transactional
        path, where :meth:`after_append` decides from the database."""
        hint = self._hint
        return hint is None or self._due(seq, self._clock.now(), hint)

    def idle(self, sessions: SessionFactory) -> bool:
        """AuditWriter idle hook: sign the committed head if it is unsigned and T passed."""
        now = self._clock.now()
        if self._hint is not None and now - self._hint[1] < self._period:
            return False
        with unit_of_work(sessions) as session:
            latest = self._latest(session)
            # Cheap unlocked look first; take the head lock only when there is work.
            head = read_head(session, lock=False)
            if head.seq == 0 or (latest is not None and latest[0] >= head.seq):
                return False
            if latest is not None and not self._due(head.seq, now, latest):
                return False
            head = read_head(session, lock=True)
            latest = self._latest(session)
            if latest is not None and latest[0] >= head.seq:
                return False
            self.write(session, seq=head.seq, hash=head.hash)
            return True

    def checkpoint_head(self, session: Session) -> CheckpointRecord:
        """Lock the head and make sure a checkpoint covers it (for exports and pruning)."""
        head = read_head(session, lock=True)
        existing = session.execute(
            select(_CP.c.seq, _CP.c.hash, _CP.c.ts, _CP.c.key_id, _CP.c.signature).where(
                _CP.c.seq == head.seq
            )
        ).first()
        if existing is not None:
            return CheckpointRecord(
                int(existing.seq),
                str(existing.hash),
                str(existing.ts),
                str(existing.key_id),
                bytes(existing.signature),
            )
        return self.write(session, seq=head.seq, hash=head.hash)

    # -- internals -------------------------------------------------------------------

    def sign(self, *, seq: int, hash: str, ts: str) -> CheckpointRecord:
        signature = self._key.sign(checkpoint_message(seq=seq, hash=hash, ts=ts))
        return CheckpointRecord(seq, hash, ts, self._key_id, signature)

    def write(self, session: Session, *, seq: int, hash: str) -> CheckpointRecord:
        record = self.sign(seq=seq, hash=hash, ts=format_ts(self._clock.now()))
        session.execute(
            insert(AuditCheckpoint).values(
                seq=record.seq,
                hash=record.hash,
                ts=record.ts,
                key_id=record.key_id,
                signature=record.signature,
            )
        )
        return record

    def _due(self, seq: int, now: datetime, last: tuple[int, datetime]) -> bool:
        return seq - last[0] >= self._every or now - last[1] >= self._period

    def _latest(self, session: Session) -> tuple[int, datetime] | None:
        row = session.execute(
            select(_CP.c.seq, _CP.c.ts).order_by(_CP.c.seq.desc()).limit(1)
        ).first()
        if row is None:
            return None
        latest = (int(row.seq), parse_ts(str(row.ts)))
        self._hint = latest
        return latest
