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
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, cast

from sqlalchemy import event, insert, select
from sqlalchemy.orm import Session

from kms.crypto import SigningKey, verify_signature
from vault.audit.chain import ChainHead, HeadSeal, format_ts, links_from, read_head
from vault.audit.events import SORTED_FIELDS, AuditEvent
from vault.clock import Clock
from vault.errors import Conflict
from vault.storage.engine import SessionFactory, unit_of_work
from vault.storage.models import AuditCheckpoint, AuditEventRow

__all__ = [
    "CHECKPOINT_TAG",
    "PRUNE_ANCHOR_TAG",
    "AnchorSink",
    "CheckpointRecord",
    "Checkpointer",
    "checkpoint_message",
    "parse_ts",
    "prune_anchor_message",
]

log = logging.getLogger("linevault.audit")

CHECKPOINT_TAG = b"linevault/audit-checkpoint/v1\n"
PRUNE_ANCHOR_TAG = b"linevault/audit-prune-anchor/v1\n"
_CP = AuditCheckpoint.__table__
_EV = AuditEventRow.__table__
_SORTED_COLUMNS = [_EV.c[name] for name in SORTED_FIELDS] + [_EV.c.hash]
_TS = SORTED_FIELDS.index("ts")
_SIGNED = "linevault.audit.checkpoint_signed"
_APPENDED = "linevault.audit.checkpoint_appended"
_LISTENING = "linevault.audit.checkpoint_listening"


def _forget_signed(session: Session) -> None:
    session.info.pop(_SIGNED, None)
    session.info.pop(_APPENDED, None)


@dataclass(frozen=True, slots=True)
class _Known:
    """A chain position this process computed itself, following from a checkpoint.

    ``checkpoint`` is the (seq, hash) it was signed at; ``head`` the (seq, hash) reached
    since by appends this process made or checked; ``newest_ts`` the newest event time
    after the checkpoint (None: no event yet). Signing a later head built on it signs
    hashes this process computed, never ones read back from the database, so a row
    rewritten meanwhile is not laundered: verification recomputes it and fails.
    """

    checkpoint: tuple[int, str]
    head: tuple[int, str]
    newest_ts: str | None


def _span(rows: Sequence[dict[str, object]]) -> tuple[tuple[int, str], tuple[int, str], str]:
    """The head ``rows`` were appended after, the head they reached, their newest time."""
    first, last = rows[0], rows[-1]
    return (
        (cast(int, first["seq"]) - 1, cast(str, first["prev_hash"])),
        (cast(int, last["seq"]), cast(str, last["hash"])),
        max(cast(str, row["ts"]) for row in rows),
    )


def checkpoint_message(*, seq: int, hash: str, ts: str) -> bytes:
    """The exact signed bytes: tag + canonical JSON of seq, hash and ts."""
    body = json.dumps({"hash": hash, "seq": seq, "ts": ts}, sort_keys=True, separators=(",", ":"))
    return CHECKPOINT_TAG + body.encode()


def prune_anchor_message(*, anchor_seq: int, anchor_hash: str, first_retained_seq: int) -> bytes:
    """The exact bytes a prune anchor signs (a tag of its own: no checkpoint is one)."""
    body = json.dumps(
        {
            "anchor_hash": anchor_hash,
            "anchor_seq": anchor_seq,
            "first_retained_seq": first_retained_seq,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return PRUNE_ANCHOR_TAG + body.encode()


class AnchorSink(Protocol):
    """Where signed checkpoints are also kept, outside the database."""

    @property
    def failing(self) -> bool:
        """The newest checkpoint could not be kept there."""

    def after_commit(self, session: Session, record: CheckpointRecord) -> None:
        """Append ``record`` once ``session``'s transaction has committed (never before)."""

    def retry(self) -> None:
        """Try again to keep the newest checkpoint that could not be kept."""


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
        head_seal: HeadSeal,
        anchors: AnchorSink | None = None,
    ) -> None:
        self._key = signing_key
        self._seal = head_seal
        self._anchors = anchors
        self._key_id = key_id
        self._clock = clock
        self._every = every
        self._period = timedelta(seconds=seconds)
        self._hint: tuple[int, datetime] | None = None
        self._known: _Known | None = None
        self._known_lock = threading.Lock()

    @property
    def public_key(self) -> bytes:
        """The public half of the signing key itself (never a stored copy)."""
        return self._key.public_key_bytes()

    @property
    def head_seal(self) -> HeadSeal:
        """The head MAC every append sets, from the same root-protected keys."""
        return self._seal

    @property
    def anchors_healthy(self) -> bool:
        """False while a signed checkpoint could not be appended to the anchor log."""
        return self._anchors is None or not self._anchors.failing

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
        self._listen(session)
        session.info.setdefault(_APPENDED, []).append(_span(rows))
        now = self._clock.now()
        if self._hint is not None and not self._due(seq, now, self._hint):
            return
        latest = self._latest(session)
        if latest is not None and (latest[0] >= seq or not self._due(seq, now, latest)):
            return
        self._write_or_log(session, seq=seq, hash=hash_, batch_start=cast(int, rows[0]["seq"]))

    def appended(self, rows: Sequence[dict[str, object]]) -> None:
        """``rows`` were committed by a writer outside any session (the one-statement
        batch): if they follow the position this process knows, it moves to their end."""
        if rows:
            self._extend(*_span(rows))

    def may_be_due(self, seq: int) -> bool:
        """Could a batch ending at ``seq`` need a checkpoint? False only when the cached
        hint says no; one-step writers leave every batch that may to the transactional
        path, where :meth:`after_append` decides from the database."""
        hint = self._hint
        return hint is None or self._due(seq, self._clock.now(), hint)

    def idle(self, sessions: SessionFactory) -> bool:
        """AuditWriter idle hook: sign the committed head if it is unsigned and T passed
        (and retry a failed anchor append)."""
        if self._anchors is not None and self._anchors.failing:
            self._anchors.retry()
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
            return self._write_or_log(session, seq=head.seq, hash=head.hash, batch_start=None)

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
        return self.write(session, seq=head.seq, hash=head.hash, batch_start=head.seq)

    # -- internals -------------------------------------------------------------------

    def sign(self, *, seq: int, hash: str, ts: str) -> CheckpointRecord:
        signature = self._key.sign(checkpoint_message(seq=seq, hash=hash, ts=ts))
        return CheckpointRecord(seq, hash, ts, self._key_id, signature)

    def sign_prune_anchor(
        self, *, anchor_seq: int, anchor_hash: str, first_retained_seq: int
    ) -> bytes:
        return self._key.sign(
            prune_anchor_message(
                anchor_seq=anchor_seq,
                anchor_hash=anchor_hash,
                first_retained_seq=first_retained_seq,
            )
        )

    def write(
        self, session: Session, *, seq: int, hash: str, batch_start: int | None = None
    ) -> CheckpointRecord:
        """Sign (seq, hash) in ``session``'s transaction.

        ``batch_start``: the first seq this transaction appended (None: none). Raises
        :class:`Conflict` when the chain up to ``seq`` is not one this checkpointer
        could have left unsigned (see :meth:`_unsignable`).
        """
        problem = self._unsignable(session, seq=seq, hash=hash, batch_start=batch_start)
        if problem is not None:
            raise Conflict(f"not signing the audit chain at seq {seq}: {problem}")
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
        if self._anchors is not None:
            self._anchors.after_commit(session, record)
        self._note_signed(session, seq, hash, record.ts)
        return record

    def _write_or_log(
        self, session: Session, *, seq: int, hash: str, batch_start: int | None
    ) -> bool:
        """The periodic signatures: a chain that cannot be signed is left unsigned (and
        so fails verification); its events are still written."""
        try:
            self.write(session, seq=seq, hash=hash, batch_start=batch_start)
        except Conflict as exc:
            log.error("audit checkpoint refused: %s", exc.detail)
            return False
        return True

    def _unsignable(
        self, session: Session, *, seq: int, hash: str, batch_start: int | None
    ) -> str | None:
        """Why the chain up to (seq, hash) must not be signed, or None.

        Signing a chain rewritten in the database would launder the forgery, so the
        chain must follow, event by event, from the newest validly signed checkpoint
        (none: only the first event, signed at bootstrap), and the unsigned events
        written before this transaction
        must be what this checkpointer leaves unsigned: fewer than ``every``, each less
        than ``seconds`` after that checkpoint by event time. Reads at most the unsigned
        tail.
        """
        row = session.execute(
            select(_CP.c.seq, _CP.c.hash, _CP.c.ts, _CP.c.key_id, _CP.c.signature)
            .order_by(_CP.c.seq.desc())
            .limit(1)
        ).first()
        if row is None:
            return None if seq == 1 else "the chain has no signed checkpoint"
        newest = CheckpointRecord(
            int(row.seq), str(row.hash), str(row.ts), str(row.key_id), bytes(row.signature)
        )
        if not newest.valid_for(self.public_key):
            return f"the checkpoint at seq {newest.seq} has an invalid signature"
        if newest.seq >= seq:  # an older seq (a prune anchor): the caller verified it
            return None
        batch_start = batch_start or seq + 1
        start, known_ts = self._start(newest, before=batch_start)
        rows = [
            tuple(r)
            for r in session.execute(
                select(*_SORTED_COLUMNS)
                .where(_EV.c.seq > start[0], _EV.c.seq <= seq)
                .order_by(_EV.c.seq)
            )
        ]
        reached = links_from(ChainHead(*start), rows)
        if reached is None or (reached.seq, reached.hash) != (seq, hash):
            return f"it does not follow from the checkpoint at seq {newest.seq}"
        stamps = [str(r[_TS]) for r in rows[: batch_start - 1 - start[0]]]
        if known_ts is not None:
            stamps.append(known_ts)
        return self._tail_problem(newest, stamps, batch_start=batch_start)

    def _start(
        self, newest: CheckpointRecord, *, before: int
    ) -> tuple[tuple[int, str], str | None]:
        """Where to start reading the tail, and the newest event time before it.

        From the position this process knows, if it follows from ``newest`` and lies
        before ``before`` (the first seq of the batch being signed); else from
        ``newest`` itself. Under load this reads only the batch, not the whole tail
        again (re-reading and re-hashing 1,000 events per checkpoint was ~10 % of a
        fetch's CPU, docs/benchmarks.md)."""
        known = self._known
        if (
            known is not None
            and known.checkpoint == (newest.seq, newest.hash)
            and newest.seq <= known.head[0] < before
        ):
            return known.head, known.newest_ts
        return (newest.seq, newest.hash), None

    def _tail_problem(
        self, newest: CheckpointRecord, stamps: Sequence[str], *, batch_start: int
    ) -> str | None:
        """``stamps``: the times of the unsigned events before the batch."""
        earlier = batch_start - 1 - newest.seq
        if earlier >= self._every:
            return f"{earlier} events after seq {newest.seq} were left unsigned"
        if earlier > 0:
            stamped = max(stamps)
            try:
                late = parse_ts(stamped) - parse_ts(newest.ts) >= self._period
            except ValueError:
                return "an unsigned event has a malformed timestamp"
            if late:
                return f"events after seq {newest.seq} were left unsigned too long"
        return None

    def _listen(self, session: Session) -> None:
        """What this transaction appended and signed counts once it commits (a rolled-back
        transaction never happened)."""
        if not session.info.get(_LISTENING):
            session.info[_LISTENING] = True
            event.listen(session, "after_commit", self._committed)
            event.listen(session, "after_rollback", _forget_signed)

    def _note_signed(self, session: Session, seq: int, hash: str, ts: str) -> None:
        self._listen(session)
        session.info[_SIGNED] = max(session.info.get(_SIGNED, (0, ts, "")), (seq, ts, hash))

    def _committed(self, session: Session) -> None:
        for span in session.info.pop(_APPENDED, ()):
            self._extend(*span)
        signed = session.info.pop(_SIGNED, None)
        if signed is None:
            return
        seq, ts, hash_ = signed
        with self._known_lock:
            self._known = _Known((seq, hash_), (seq, hash_), None)
        if self._hint is None or seq > self._hint[0]:
            self._hint = (seq, parse_ts(ts))

    def _extend(self, prev: tuple[int, str], reached: tuple[int, str], newest_ts: str) -> None:
        with self._known_lock:
            known = self._known
            if known is not None and known.head == prev:
                if known.newest_ts is not None:
                    newest_ts = max(known.newest_ts, newest_ts)
                self._known = _Known(known.checkpoint, reached, newest_ts)

    def _due(self, seq: int, now: datetime, last: tuple[int, datetime]) -> bool:
        return seq - last[0] >= self._every or now - last[1] >= self._period

    def _latest(self, session: Session) -> tuple[int, datetime] | None:
        row = session.execute(
            select(_CP.c.seq, _CP.c.ts).order_by(_CP.c.seq.desc()).limit(1)
        ).first()
        if row is None:
            return None
        latest = (int(row.seq), parse_ts(str(row.ts)))
        # Only what is committed becomes the hint: a checkpoint of this transaction may
        # still roll back, and a hint newer than the database would stop this process
        # from signing (an unsigned tail past the verifier's limit).
        if _SIGNED not in session.info:
            self._hint = latest
        return latest
