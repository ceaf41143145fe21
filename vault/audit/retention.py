"""Retention: dropping old events while the rest stays verifiable.

Pruning everything up to seq ``k`` keeps (or signs) the checkpoint at ``k``: the first
retained event's ``prev_hash`` is checked against that signed anchor, so the remaining
chain verifies with the public key alone. The prune is itself an event (``audit.prune``)
whose details name the first retained seq and carry the signed prune anchor (an Ed25519
signature, with the audit signing key, over the anchor's seq and hash and the first
retained seq); verifiers
require the chain to start exactly there, under that signature, so nobody can later drop
more of the prefix, or forge an ``audit.prune`` event, and pass it off as retention.

The chain is verified first: pruning must never launder a tampered prefix into a
freshly signed anchor.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, delete, func, select
from sqlalchemy.orm import Session

from vault.audit.chain import append_events, format_ts, read_head
from vault.audit.checkpoints import Checkpointer
from vault.audit.events import AuditEvent
from vault.audit.store import verify_database
from vault.audit.verify import TailPolicy, VerifyResult
from vault.clock import Clock
from vault.errors import Conflict
from vault.storage.engine import SessionFactory, unit_of_work
from vault.storage.models import AuditCheckpoint, AuditEventRow

__all__ = ["PruneSummary", "adopt_unsigned_prune", "prune_before", "prune_preview"]

UNSIGNED_PRUNE = "has no valid signed prune anchor"


@dataclass(frozen=True, slots=True)
class PruneSummary:
    deleted: int
    first_retained_seq: int
    anchor_seq: int | None
    prune_event_seq: int


def prune_before(
    *,
    engine: Engine,
    sessions: SessionFactory,
    checkpointer: Checkpointer,
    clock: Clock,
    before: datetime,
    event: AuditEvent,
    tail: TailPolicy,
) -> PruneSummary:
    """Delete events with ``ts < before`` and record ``event`` (action ``audit.prune``)."""
    if event.action != "audit.prune":
        raise ValueError("the prune event must have action audit.prune")
    check = verify_database(
        engine, public_key=checkpointer.public_key, seal=checkpointer.head_seal, tail=tail
    )
    if not check.ok:
        raise Conflict(
            f"the audit chain does not verify (first bad seq {check.first_bad_seq}); not pruning"
        )
    cutoff = format_ts(before)
    with unit_of_work(sessions) as session:
        head = read_head(session, lock=True)
        anchor, deleted = _delete_through_anchor(session, checkpointer, cutoff, check.head_seq)
        first_retained, anchor_hash = _start_of_chain(session, head.seq, head.hash)
        details: dict[str, str | int | bool | None] = dict(event.details or {})
        details.update(
            first_retained_seq=first_retained, deleted=deleted, before=cutoff, anchor_seq=anchor
        )
        if first_retained > 1:
            details["anchor_signature"] = checkpointer.sign_prune_anchor(
                anchor_seq=first_retained - 1,
                anchor_hash=anchor_hash,
                first_retained_seq=first_retained,
            ).hex()
        recorded = replace(
            event, outcome="success", resource_type=event.resource_type or "audit", details=details
        )
        rows = append_events(session, [recorded], now=clock.now(), seal=checkpointer.head_seal)
        checkpointer.checkpoint_head(session)
    seq = rows[0]["seq"]
    assert isinstance(seq, int)
    return PruneSummary(
        deleted=deleted, first_retained_seq=first_retained, anchor_seq=anchor, prune_event_seq=seq
    )


def adopt_unsigned_prune(
    *,
    engine: Engine,
    sessions: SessionFactory,
    checkpointer: Checkpointer,
    clock: Clock,
    event: AuditEvent,
    tail: TailPolicy,
) -> int:
    """Sign the prune anchor of a chain pruned before prune anchors were signed; return
    the seq of the ``audit.prune`` event that now carries it.

    The upgrade path for such a chain, which otherwise never verifies again. It is an
    operator's decision to trust how the chain starts today, so it is refused unless
    plain verification fails for exactly that reason and every other rule holds, and
    it is recorded (``adopted: true``) where a reviewer sees it.
    """

    def check(*, lenient: bool) -> VerifyResult:
        return verify_database(
            engine,
            public_key=checkpointer.public_key,
            seal=checkpointer.head_seal,
            tail=tail,
            unsigned_prune_ok=lenient,
        )

    plain = check(lenient=False)
    if plain.ok:
        raise Conflict("nothing to adopt: the audit chain verifies")
    if UNSIGNED_PRUNE not in (plain.problem or ""):
        raise Conflict(f"the audit chain does not verify: {plain.problem}; not adopting")
    lenient = check(lenient=True)
    if not lenient.ok:
        raise Conflict(f"the audit chain does not verify otherwise: {lenient.problem}")
    first = int(lenient.first_seq or 1)
    with unit_of_work(sessions) as session:
        prev_hash = session.execute(
            select(AuditEventRow.prev_hash).where(AuditEventRow.seq == first)
        ).scalar_one()
        signature = checkpointer.sign_prune_anchor(
            anchor_seq=first - 1, anchor_hash=prev_hash, first_retained_seq=first
        )
        details = dict(event.details or {})
        details.update(
            first_retained_seq=first,
            anchor_seq=first - 1,
            anchor_signature=signature.hex(),
            adopted=True,
        )
        recorded = replace(event, outcome="success", details=details)
        rows = append_events(session, [recorded], now=clock.now(), seal=checkpointer.head_seal)
        checkpointer.checkpoint_head(session)
    return cast(int, rows[0]["seq"])


def prune_preview(engine: Engine, before: datetime) -> tuple[int, int | None]:
    """What :func:`prune_before` would delete, without deleting: (events, last seq).
    Like it, everything up to the newest event older than ``before`` goes."""
    cutoff = format_ts(before)
    with engine.connect() as conn:
        last_old = conn.execute(
            select(func.max(AuditEventRow.seq)).where(AuditEventRow.ts < cutoff)
        ).scalar_one_or_none()
        if last_old is None:
            return 0, None
        count = conn.execute(
            select(func.count()).select_from(AuditEventRow).where(AuditEventRow.seq <= last_old)
        ).scalar_one()
    return int(count), int(last_old)


def _start_of_chain(session: Session, head_seq: int, head_hash: str) -> tuple[int, str]:
    """The first retained seq and the hash it links to (the head, if nothing is left)."""
    first = session.execute(
        select(AuditEventRow.seq, AuditEventRow.prev_hash).order_by(AuditEventRow.seq).limit(1)
    ).first()
    if first is None:
        return head_seq + 1, head_hash
    return int(first.seq), str(first.prev_hash)


def _delete_through_anchor(
    session: Session, checkpointer: Checkpointer, cutoff: str, verified_seq: int
) -> tuple[int | None, int]:
    """Delete the events before ``cutoff`` up to a signed anchor; return (anchor, deleted).

    Only the verified prefix is pruned, and the anchor's checkpoint must be the event's
    own hash: a chain that changed since it was verified is not pruned.
    """
    last_old = session.execute(
        select(func.max(AuditEventRow.seq)).where(AuditEventRow.ts < cutoff)
    ).scalar_one_or_none()
    if last_old is None or last_old > verified_seq:
        return None, 0
    anchor = int(last_old)
    anchor_hash = session.execute(
        select(AuditEventRow.hash).where(AuditEventRow.seq == anchor)
    ).scalar_one()
    existing = session.execute(
        select(AuditCheckpoint.hash).where(AuditCheckpoint.seq == anchor)
    ).scalar_one_or_none()
    if existing is None:
        checkpointer.write(session, seq=anchor, hash=anchor_hash)
    elif existing != anchor_hash:
        raise Conflict("the audit chain changed during pruning; not pruning")
    result = session.execute(delete(AuditEventRow).where(AuditEventRow.seq <= anchor))
    deleted = int(cast("CursorResult[Any]", result).rowcount)
    session.execute(delete(AuditCheckpoint).where(AuditCheckpoint.seq < anchor))
    return anchor, deleted
