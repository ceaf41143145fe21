"""Checkpoint policy (every N events or T seconds, idle hook, record path) and retention
(prune keeps the rest verifiable from a signed anchor, and is itself audited)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select, text

from tests.support.audit import export_lines, fill_chain, rechain, sample_event, verify_chain
from tests.support.settings import make_settings
from vault.audit.checkpoints import Checkpointer
from vault.audit.events import AuditEvent
from vault.audit.export import verify_export
from vault.audit.retention import adopt_unsigned_prune, prune_before
from vault.clock import FixedClock
from vault.errors import Conflict
from vault.runtime import Runtime, audit_tail
from vault.settings import Settings
from vault.storage.engine import unit_of_work
from vault.storage.models import AuditCheckpoint, AuditEventRow

PRUNE = AuditEvent(action="audit.prune", outcome="success", actor_type="system", actor_id="t")


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return make_settings(
        data_dir=tmp_path / "var",
        database_url=db_url,
        log_level="warning",
        audit_checkpoint_every=10,
        audit_checkpoint_seconds=30,
    )


def _checkpoints(runtime: Runtime) -> list[int]:
    with runtime.readonly_sessions() as s:
        return list(s.execute(select(AuditCheckpoint.seq).order_by(AuditCheckpoint.seq)).scalars())


def _cp(runtime: Runtime) -> Checkpointer:
    assert runtime.audit.checkpointer is not None
    return runtime.audit.checkpointer


def _clock(runtime: Runtime) -> FixedClock:
    assert isinstance(runtime.clock, FixedClock)
    return runtime.clock


def test_checkpoint_every_n_events(runtime: Runtime) -> None:
    for i in range(25):
        runtime.audit.emit(sample_event(i))
    cps = _checkpoints(runtime)
    # `linevault init` signs its own event (seq 1), then every 10 events.
    assert cps == [1, 11, 21]


def test_checkpoint_after_t_seconds_and_when_idle(runtime: Runtime) -> None:
    runtime.audit.emit(sample_event(0))
    assert _checkpoints(runtime) == [1]  # signed by `linevault init`
    runtime.audit.emit(sample_event(1))
    assert _cp(runtime).idle(runtime.sessions) is False  # T has not passed
    _clock(runtime).advance(31)
    assert _cp(runtime).idle(runtime.sessions) is True  # quiet trail: sign the committed head
    assert _checkpoints(runtime) == [1, 3]
    assert _cp(runtime).idle(runtime.sessions) is False  # nothing new to sign
    _clock(runtime).advance(31)
    runtime.audit.emit(sample_event(2))  # a batch after T seconds is signed at once
    assert _checkpoints(runtime) == [1, 3, 4]


def test_record_path_signs_checkpoints_in_the_callers_transaction(runtime: Runtime) -> None:
    for i in range(12):
        with unit_of_work(runtime.sessions) as session:
            runtime.audit.record(session, sample_event(i))
    assert _checkpoints(runtime) == [1, 11]
    # A rolled-back unit of work leaves neither its event nor its checkpoint behind.
    _clock(runtime).advance(31)
    session = runtime.sessions()
    runtime.audit.record(session, sample_event(99))
    session.rollback()
    session.close()
    assert _checkpoints(runtime) == [1, 11]
    assert verify_chain(runtime).ok


def _prune(runtime: Runtime, before) -> object:  # type: ignore[no-untyped-def]
    return prune_before(
        engine=runtime.engine,
        sessions=runtime.sessions,
        checkpointer=_cp(runtime),
        clock=runtime.clock,
        before=before,
        event=PRUNE,
        tail=audit_tail(runtime.settings),
    )


def test_prune_keeps_the_rest_verifiable(runtime: Runtime) -> None:
    clock = _clock(runtime)
    fill_chain(runtime, 15)
    cut = clock.now() + timedelta(seconds=1)
    clock.advance(10)
    fill_chain(runtime, 15)
    summary = _prune(runtime, cut)
    assert summary.deleted == 16  # system.init + 15  # type: ignore[attr-defined]
    with runtime.readonly_sessions() as s:
        first = s.execute(select(func.min(AuditEventRow.seq))).scalar_one()
        prune_event = s.execute(
            select(AuditEventRow).where(AuditEventRow.action == "audit.prune")
        ).scalar_one()
    assert first == 17
    assert json.loads(prune_event.details or "{}")["first_retained_seq"] == 17
    assert _checkpoints(runtime)[0] == 16  # the anchor
    result = verify_chain(runtime)
    assert result.ok, result
    check = verify_export(export_lines(runtime), public_key=runtime.system_keys.audit_public_key)
    assert check.result.ok, check.result
    # A second prune later on works the same way.
    clock.advance(10)
    fill_chain(runtime, 5)
    _prune(runtime, clock.now())
    assert verify_chain(runtime).ok


def test_dropping_more_of_the_prefix_is_detected(runtime: Runtime) -> None:
    clock = _clock(runtime)
    fill_chain(runtime, 10)
    cut = clock.now() + timedelta(seconds=1)
    clock.advance(10)
    fill_chain(runtime, 40)
    _prune(runtime, cut)
    assert verify_chain(runtime).ok
    later_cp = next(c for c in _checkpoints(runtime) if c > 20)
    with runtime.sessions() as s:  # the attacker deletes up to a later signed checkpoint
        s.execute(delete(AuditEventRow).where(AuditEventRow.seq <= later_cp))
        s.execute(delete(AuditCheckpoint).where(AuditCheckpoint.seq < later_cp))
        s.commit()
    result = verify_chain(runtime)
    assert not result.ok and "audit.prune" in (result.problem or "")


def test_prune_refuses_a_tampered_chain(runtime: Runtime) -> None:
    fill_chain(runtime, 8)
    with runtime.sessions() as s:
        from sqlalchemy import update

        s.execute(update(AuditEventRow).where(AuditEventRow.seq == 3).values(ip="6.6.6.6"))
        s.commit()
    with pytest.raises(Conflict):
        _prune(runtime, _clock(runtime).now() + timedelta(days=1))


def test_prune_everything_still_verifies(runtime: Runtime) -> None:
    fill_chain(runtime, 6)
    _clock(runtime).advance(5)
    _prune(runtime, _clock(runtime).now())
    result = verify_chain(runtime)
    assert result.ok and result.events_checked == 1, result


def _adopt(runtime: Runtime) -> int:
    return adopt_unsigned_prune(
        engine=runtime.engine,
        sessions=runtime.sessions,
        checkpointer=_cp(runtime),
        clock=runtime.clock,
        event=PRUNE,
        tail=audit_tail(runtime.settings),
    )


def _as_pruned_before_signed_anchors(runtime: Runtime) -> None:
    """What a chain pruned by an older release looks like: its audit.prune event has no
    anchor signature (hashes consistent, the head sealed as the 0004f start seals it)."""
    with runtime.engine.begin() as conn:
        seq, details = conn.execute(
            text("SELECT seq, details FROM audit_events WHERE action = 'audit.prune'")
        ).one()
        old = json.loads(details)
        del old["anchor_signature"]
        conn.execute(
            text("UPDATE audit_events SET details = :d WHERE seq = :s"),
            {"d": json.dumps(old, sort_keys=True, separators=(",", ":")), "s": seq},
        )
        conn.execute(text("DELETE FROM audit_checkpoints WHERE seq >= :s"), {"s": seq})
    rechain(runtime.engine)
    with runtime.engine.begin() as conn:
        head_seq, head_hash = conn.execute(text("SELECT seq, hash FROM audit_head")).one()
        mac = runtime.audit.seal.tag(int(head_seq), str(head_hash))
        conn.execute(text("UPDATE audit_head SET mac = :m"), {"m": mac})


def test_a_prune_from_before_signed_anchors_can_be_adopted_once(runtime: Runtime) -> None:
    clock = _clock(runtime)
    fill_chain(runtime, 10)
    cut = clock.now() + timedelta(seconds=1)
    clock.advance(10)
    fill_chain(runtime, 4)
    _prune(runtime, cut)
    with pytest.raises(Conflict, match="nothing to adopt"):
        _adopt(runtime)  # a properly signed prune needs nothing
    _as_pruned_before_signed_anchors(runtime)
    before = verify_chain(runtime)
    assert not before.ok and "signed prune anchor" in (before.problem or ""), before

    seq = _adopt(runtime)
    assert verify_chain(runtime).ok
    with runtime.readonly_sessions() as s:
        adopted = s.execute(select(AuditEventRow).where(AuditEventRow.seq == seq)).scalar_one()
    assert json.loads(adopted.details or "{}")["adopted"] is True
    check = verify_export(export_lines(runtime), public_key=runtime.system_keys.audit_public_key)
    assert check.result.ok, check.result


def test_adoption_never_launders_other_tampering(runtime: Runtime) -> None:
    clock = _clock(runtime)
    fill_chain(runtime, 10)
    cut = clock.now() + timedelta(seconds=1)
    clock.advance(10)
    fill_chain(runtime, 4)
    _prune(runtime, cut)
    _as_pruned_before_signed_anchors(runtime)
    with runtime.engine.begin() as conn:  # and an event changed, without re-hashing
        conn.execute(text("UPDATE audit_events SET ip = '6.6.6.6' WHERE seq = 14"))
    with pytest.raises(Conflict, match="not adopting"):
        _adopt(runtime)
    assert not verify_chain(runtime).ok
