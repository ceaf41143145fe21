"""Tenant KEK rotation and the online rewrap, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from tests.support.keys import make_tenant, open_all, open_line, seed_lines, uncached
from vault.errors import NotFound
from vault.keys.rewrap import RewrapError, Rewrapper
from vault.keys.rotation import TenantKeyService
from vault.keys.service import rewrapper_for, tenant_key_service_for
from vault.keys.shred import shred_line_credential, shred_tenant_keys
from vault.runtime import Runtime
from vault.storage.engine import unit_of_work
from vault.storage.models import AuditEventRow, Kek, KeyRotation, Line, Tenant


@pytest.fixture
def tenant(runtime: Runtime) -> str:
    with unit_of_work(runtime.sessions) as session:
        return make_tenant(session, runtime.keyring, now=runtime.clock.now())


def _rotate(runtime: Runtime, tenant_id: str):  # type: ignore[no-untyped-def]
    with unit_of_work(runtime.sessions) as session:
        return tenant_key_service_for(runtime, session).rotate(
            tenant_id, actor_type="system", actor_id="test"
        )


def _keks(runtime: Runtime, tenant_id: str) -> dict[int, Kek]:
    with unit_of_work(runtime.sessions) as session:
        rows = session.execute(select(Kek).where(Kek.tenant_id == tenant_id)).scalars()
        return {k.version: k for k in rows}


def _versions(runtime: Runtime, tenant_id: str) -> list[int | None]:
    with unit_of_work(runtime.sessions) as session:
        return list(
            session.execute(select(Line.kek_version).where(Line.tenant_id == tenant_id)).scalars()
        )


def _actions(runtime: Runtime, tenant_id: str) -> list[str]:
    with unit_of_work(runtime.sessions) as session:
        return list(
            session.execute(
                select(AuditEventRow.action)
                .where(AuditEventRow.tenant_id == tenant_id)
                .order_by(AuditEventRow.seq)
            ).scalars()
        )


def test_rotation_switches_new_deks_at_once_and_rewraps_the_rest(
    runtime: Runtime, tenant: str
) -> None:
    secrets = seed_lines(
        runtime.sessions, runtime.keyring, tenant_id=tenant, count=30, now=runtime.clock.now()
    )
    view = _rotate(runtime, tenant)
    assert (view.from_version, view.to_version, view.pending_rewrap) == (1, 2, 30)
    assert not view.resumed
    keks = _keks(runtime, tenant)
    assert (keks[1].state, keks[2].state) == ("retired", "active")
    with unit_of_work(runtime.sessions) as session:
        assert session.get(Tenant, tenant).active_kek_version == 2  # type: ignore[union-attr]
        assert runtime.keyring.active_kek(session, tenant_id=tenant)[0] == 2
    # Before any rewrap every credential opens under the retired version.
    ring = uncached(runtime.provider)
    assert open_all(runtime.engine, ring, tenant) == secrets

    done = rewrapper_for(runtime, batch_size=7).run(view.id)
    assert done is not None
    assert (done.state, done.rewrapped, done.pending_rewrap) == ("done", 30, 0)
    assert set(_versions(runtime, tenant)) == {2}
    keks = _keks(runtime, tenant)
    assert keks[1].state == "destroyed"
    assert keks[1].wrapped is None and keks[1].root_key_id is None
    assert keks[1].destroyed_at is not None
    assert keks[2].state == "active"
    assert open_all(runtime.engine, ring, tenant) == secrets
    assert _actions(runtime, tenant)[-3:] == ["key.rotate", "key.rewrap_done", "key.destroy"]


def test_rotate_again_while_running_resumes_instead_of_starting_another(
    runtime: Runtime, tenant: str
) -> None:
    seed_lines(
        runtime.sessions, runtime.keyring, tenant_id=tenant, count=20, now=runtime.clock.now()
    )
    first = _rotate(runtime, tenant)
    rewrapper = rewrapper_for(runtime, batch_size=6)
    assert rewrapper.step(first.id).rewrapped == 6
    again = _rotate(runtime, tenant)
    assert again.resumed and again.id == first.id and again.to_version == 2
    assert again.pending_rewrap == 14 and again.rewrapped == 6
    assert sorted(_keks(runtime, tenant)) == [1, 2]
    done = rewrapper_for(runtime, batch_size=6).run(again.id)
    assert done is not None and done.state == "done" and done.rewrapped == 20
    # A new rotation after the first finished goes on to version 3.
    third = _rotate(runtime, tenant)
    assert (third.from_version, third.to_version) == (2, 3)
    rewrapper.run(third.id)
    states = {v: k.state for v, k in _keks(runtime, tenant).items()}
    assert states == {1: "destroyed", 2: "destroyed", 3: "active"}


def test_tenant_without_lines_and_unknown_tenant(runtime: Runtime, tenant: str) -> None:
    view = _rotate(runtime, tenant)
    assert view.pending_rewrap == 0
    done = rewrapper_for(runtime).run(view.id)
    assert done is not None and done.state == "done"
    with pytest.raises(NotFound):
        _rotate(runtime, "tnt_missing")


def test_reads_are_served_throughout_the_rewrap(runtime: Runtime, tenant: str) -> None:
    secrets = seed_lines(
        runtime.sessions, runtime.keyring, tenant_id=tenant, count=200, now=runtime.clock.now()
    )
    ids = list(secrets)
    view = _rotate(runtime, tenant)
    ring = runtime.keyring  # the shared, caching key ring, as the server uses it
    errors: list[BaseException] = []
    reads = 0
    mid_rewrap_reads = 0  # reads made while some but not all batches had committed
    progress: list[int] = []
    stop = threading.Event()
    mid_read = threading.Event()

    def on_batch(count: int) -> None:
        progress.append(count)
        if len(progress) == 20:
            # Halfway: hold the rewrap until a reader has been served mid-rotation, so the
            # test does not depend on how the scheduler interleaves threads.
            mid_read.wait(timeout=30)

    def reader() -> None:
        nonlocal reads, mid_rewrap_reads
        n = 0
        while not stop.is_set():
            line_id = ids[n % len(ids)]
            n += 1
            try:
                assert open_line(runtime.engine, ring, line_id) == secrets[line_id]
                reads += 1
                if 0 < len(progress) < 40:
                    mid_rewrap_reads += 1
                    mid_read.set()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
                return

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        done = Rewrapper(
            runtime.sessions,
            keyring=runtime.keyring,
            audit=runtime.audit,
            clock=runtime.clock,
            batch_size=5,
        ).run(view.id, progress=on_batch)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    assert done is not None and done.state == "done"
    assert sum(progress) == 200 and len(progress) == 40
    assert reads > 0 and mid_rewrap_reads > 0
    assert open_all(runtime.engine, uncached(runtime.provider), tenant) == secrets


def test_replaced_revoked_and_stale_lines_during_a_rotation(runtime: Runtime, tenant: str) -> None:
    now = runtime.clock.now()
    secrets = seed_lines(runtime.sessions, runtime.keyring, tenant_id=tenant, count=10, now=now)
    ids = list(secrets)
    view = _rotate(runtime, tenant)
    # Revoked: no envelope left, no KEK referenced; it neither blocks nor is rewrapped.
    with unit_of_work(runtime.sessions) as session:
        line = session.get(Line, ids[0])
        assert line is not None
        line.status = "revoked"
        shred_line_credential(session, line=line)
    # Stale: a writer that read the old active version seals under it after the switch.
    with unit_of_work(runtime.sessions) as session:
        kek1 = runtime.keyring.load_kek(session, tenant_id=tenant, version=1)
        line = session.get(Line, ids[1])
        assert line is not None
        sealed = runtime.keyring.seal_credential(
            kek=kek1,
            kek_version=1,
            tenant_id=tenant,
            line_id=line.id,
            line_type=line.type,
            credential_version=2,
            plaintext=b"replaced-under-v1",
        )
        line.version, line.kek_version = 2, 1
        line.wrapped_dek, line.ciphertext = sealed.wrapped_dek, sealed.ciphertext
    secrets[ids[1]] = b"replaced-under-v1"
    rewrapper = rewrapper_for(runtime, batch_size=4)
    # Finishing now must refuse: lines still reference version 1.
    assert rewrapper.finish(view.id) is False
    assert _keks(runtime, tenant)[1].state == "retired"
    done = rewrapper.run(view.id)
    assert done is not None and done.state == "done" and done.rewrapped == 9
    assert _keks(runtime, tenant)[1].state == "destroyed"
    ring = uncached(runtime.provider)
    for line_id in ids[1:]:
        assert open_line(runtime.engine, ring, line_id) == secrets[line_id]
    with pytest.raises(LookupError):
        open_line(runtime.engine, ring, ids[0])


def test_a_damaged_envelope_stops_the_rewrap_and_keeps_the_old_key(
    runtime: Runtime, tenant: str
) -> None:
    secrets = seed_lines(
        runtime.sessions, runtime.keyring, tenant_id=tenant, count=5, now=runtime.clock.now()
    )
    bad = next(iter(secrets))
    with unit_of_work(runtime.sessions) as session:
        line = session.get(Line, bad)
        assert line is not None and line.wrapped_dek is not None
        line.wrapped_dek = line.wrapped_dek[:-1] + bytes([line.wrapped_dek[-1] ^ 1])
    view = _rotate(runtime, tenant)
    with pytest.raises(RewrapError, match=bad):
        rewrapper_for(runtime, batch_size=10).run(view.id)
    assert _keks(runtime, tenant)[1].state == "retired"
    with unit_of_work(runtime.sessions) as session:
        assert session.get(KeyRotation, view.id).state == "running"  # type: ignore[union-attr]
    ring = uncached(runtime.provider)
    for line_id in list(secrets)[1:]:
        assert open_line(runtime.engine, ring, line_id) == secrets[line_id]


def test_shredding_a_tenant_cancels_its_rotation(runtime: Runtime, tenant: str) -> None:
    seed_lines(
        runtime.sessions, runtime.keyring, tenant_id=tenant, count=12, now=runtime.clock.now()
    )
    view = _rotate(runtime, tenant)
    rewrapper = rewrapper_for(runtime, batch_size=5)
    rewrapper.step(view.id)
    with unit_of_work(runtime.sessions) as session:
        assert shred_tenant_keys(session, tenant_id=tenant, now=runtime.clock.now()) == 2
    done = rewrapper.run(view.id)
    assert done is not None and done.state == "cancelled"
    assert {k.state for k in _keks(runtime, tenant).values()} == {"destroyed"}


def test_status_lists_versions_and_the_rotation(runtime: Runtime, tenant: str) -> None:
    seed_lines(
        runtime.sessions, runtime.keyring, tenant_id=tenant, count=3, now=runtime.clock.now()
    )
    view = _rotate(runtime, tenant)
    with unit_of_work(runtime.sessions) as session:
        service = TenantKeyService(
            session, keyring=runtime.keyring, audit=runtime.audit, clock=runtime.clock
        )
        status = service.status(tenant)
    assert status.active_version == 2
    assert [(v.version, v.state) for v in status.versions] == [(1, "retired"), (2, "active")]
    assert status.rotation is not None and status.rotation.id == view.id
    assert status.rotation.pending_rewrap == 3
