"""The audit head's MAC (vault/audit/chain.py ``HeadSeal``): it covers the tail that no
checkpoint signs yet, legitimate appends never launder a rewritten tail, and a head from
before migration 0004f is sealed once at start, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.support.audit import event_rows, fill_chain, insert_event, rechain, verify_chain
from tests.vault.test_runners import events
from vault.audit.chain import TAINTED, ChainHead, HeadSeal
from vault.clock import FixedClock
from vault.runtime import Runtime, open_runtime
from vault.settings import Settings
from vault.storage.models import AuditEventRow

KEY = bytes(range(32))
HASH = "ab" * 32


def _head(runtime: Runtime) -> tuple[int, str, str | None]:
    with runtime.engine.connect() as conn:
        row = conn.execute(text("SELECT seq, hash, mac FROM audit_head")).one()
    return int(row.seq), str(row.hash), row.mac


def test_the_mac_binds_seq_hash_and_key() -> None:
    seal = HeadSeal(KEY)
    mac = seal.tag(7, HASH)
    assert seal.ok(7, HASH, mac)
    assert not seal.ok(8, HASH, mac)
    assert not seal.ok(7, "cd" * 32, mac)
    assert not HeadSeal(bytes(32)).ok(7, HASH, mac)
    assert not seal.ok(7, HASH, None)
    assert not seal.ok(7, HASH, "not hex")
    assert not seal.ok(7, HASH, TAINTED)


def test_a_tainted_head_stays_tainted() -> None:
    seal = HeadSeal(KEY)
    rows: list[dict[str, object]] = [{"seq": 8, "hash": HASH}]
    genuine = seal.successor(ChainHead(7, "cd" * 32, seal.tag(7, "cd" * 32)), rows)
    assert genuine.mac is not None and seal.ok(8, HASH, genuine.mac)
    forged = seal.successor(ChainHead(7, "cd" * 32, "ee" * 32), rows)
    assert forged.mac == TAINTED
    assert seal.successor(forged, [{"seq": 9, "hash": HASH}]).mac == TAINTED
    assert seal.follows(ChainHead(0, "00" * 32, None))  # the empty chain


def test_appends_after_a_forged_tail_keep_it_visible(runtime: Runtime) -> None:
    """The forger recomputes every hash; the server then keeps writing (on PostgreSQL
    through its one-statement fast path too): the head never gets a genuine MAC again."""
    fill_chain(runtime, 12)
    assert verify_chain(runtime).ok
    last = event_rows(runtime.engine)[-1]
    with runtime.engine.begin() as conn:
        insert_event(conn, dict(last, seq=int(last["seq"]) + 1, actor_id="mallory"))
    rechain(runtime.engine)
    fill_chain(runtime, 12)
    assert _head(runtime)[2] == TAINTED
    result = verify_chain(runtime)
    assert not result.ok and "head's MAC" in (result.problem or ""), result


def _head_backfills(runtime: Runtime) -> list[AuditEventRow]:
    return [e for e in events(runtime, "integrity.backfill") if e.resource_id == "audit_head"]


def _as_before_0004f(runtime: Runtime) -> None:
    with runtime.engine.begin() as conn:
        conn.execute(text("UPDATE audit_head SET mac = NULL"))
        conn.execute(text("DELETE FROM integrity_state"))
        conn.execute(
            text(
                "INSERT INTO integrity_state (id, macs_backfilled_at, head_sealed_at) "
                "VALUES (1, CURRENT_TIMESTAMP, NULL)"
            )
        )


def test_a_head_from_before_the_migration_is_sealed_once(
    runtime: Runtime, settings: Settings, clock: FixedClock
) -> None:
    fill_chain(runtime, 6)
    _as_before_0004f(runtime)
    before = verify_chain(runtime)
    assert not before.ok and "carries no MAC" in (before.problem or ""), before

    restarted = open_runtime(settings, clock=clock)
    try:
        assert verify_chain(restarted).ok
    finally:
        restarted.close()
    [sealed] = _head_backfills(runtime)
    assert sealed.seq == _head(runtime)[0]

    # Once only: a MAC removed later is not sealed again by another start.
    with runtime.engine.begin() as conn:
        conn.execute(text("UPDATE audit_head SET mac = NULL"))
    again = open_runtime(settings, clock=clock)
    try:
        result = verify_chain(again)
        assert not result.ok and "carries no MAC" in (result.problem or ""), result
    finally:
        again.close()
    assert (
        len([e for e in events(runtime, "integrity.backfill") if e.resource_id == "audit_head"])
        == 1
    )


@pytest.mark.parametrize("mac", ["ff" * 32, TAINTED])
def test_a_wrong_mac_is_never_adopted_at_start(
    runtime: Runtime, settings: Settings, clock: FixedClock, mac: str
) -> None:
    fill_chain(runtime, 3)
    _as_before_0004f(runtime)
    with runtime.engine.begin() as conn:
        conn.execute(text("UPDATE audit_head SET mac = :m"), {"m": mac})
    restarted = open_runtime(settings, clock=clock)
    try:
        assert not verify_chain(restarted).ok
    finally:
        restarted.close()
