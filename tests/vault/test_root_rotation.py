"""Root key rotation: every tenant KEK and system secret rewrapped, the old root destroyed."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from kms import WrappedKey
from kms.errors import KmsError
from tests.support.keys import make_tenant, open_all, seed_lines, uncached
from vault.keys.keyring import kek_ad
from vault.keys.root_rotation import root_references
from vault.keys.service import rewrapper_for, root_rotation_for, tenant_key_service_for
from vault.runtime import Runtime, open_runtime
from vault.settings import Settings
from vault.storage.engine import unit_of_work
from vault.storage.models import AuditEventRow, Kek, SystemSecret


def _world(runtime: Runtime) -> dict[str, dict[str, bytes]]:
    """Three tenants with lines; one rotated (so it also holds a destroyed KEK version)."""
    out: dict[str, dict[str, bytes]] = {}
    now = runtime.clock.now()
    for n in range(3):
        with unit_of_work(runtime.sessions) as session:
            tenant = make_tenant(session, runtime.keyring, now=now, name=f"t{n}")
        out[tenant] = seed_lines(
            runtime.sessions, runtime.keyring, tenant_id=tenant, count=5, now=now
        )
    rotated = next(iter(out))
    with unit_of_work(runtime.sessions) as session:
        view = tenant_key_service_for(runtime, session).rotate(
            rotated, actor_type="system", actor_id="t"
        )
    rewrapper_for(runtime).run(view.id)
    return out


def _roots(runtime: Runtime) -> dict[str, int]:
    with unit_of_work(runtime.sessions) as session:
        return root_references(session)


def test_root_rotation_rewraps_everything_and_destroys_the_old_root(
    runtime: Runtime, settings: Settings
) -> None:
    world = _world(runtime)
    old_root = runtime.provider.active_root_key_id()
    assert _roots(runtime) == {old_root: 3 + 3}  # 3 live KEKs + 3 system secrets
    with unit_of_work(runtime.sessions) as session:
        backup = [
            (k.tenant_id, k.version, k.root_key_id, k.wrapped)
            for k in session.execute(select(Kek).where(Kek.wrapped.is_not(None))).scalars()
        ]
    progress: list[int] = []
    result = root_rotation_for(runtime, batch_size=2).run(progress=progress.append)
    new_root = runtime.provider.active_root_key_id()
    assert result.created and result.active_root_key_id == new_root != old_root
    assert (result.rewrapped_keks, result.rewrapped_secrets) == (3, 3)
    assert sum(progress) == 6
    assert result.destroyed == [old_root] and result.kept == []
    assert runtime.provider.root_key_ids() == [new_root]
    assert _roots(runtime) == {new_root: 6}
    with unit_of_work(runtime.sessions) as session:
        destroyed = session.execute(select(Kek).where(Kek.state == "destroyed")).scalars().all()
        assert len(destroyed) == 1 and destroyed[0].root_key_id is None
        assert {s.root_key_id for s in session.execute(select(SystemSecret)).scalars()} == {
            new_root
        }
        actions = list(session.execute(select(AuditEventRow.action)).scalars())
    assert "key.root_rotate" in actions and "key.root_destroy" in actions
    # Everything still opens, in this process and in a fresh one (system keys reloaded).
    for tenant, secrets in world.items():
        assert open_all(runtime.engine, uncached(runtime.provider), tenant) == secrets
    fresh = open_runtime(settings, start_writer=False)
    try:
        assert fresh.system_keys.mac("x", b"m") == runtime.system_keys.mac("x", b"m")
        assert fresh.system_keys.audit_public_key == runtime.system_keys.audit_public_key
        for tenant, secrets in world.items():
            assert open_all(fresh.engine, uncached(fresh.provider), tenant) == secrets
    finally:
        fresh.close()
    # A backup of the KEK table taken before the rotation is now useless.
    for tenant_id, version, root_id, blob in backup:
        assert root_id is not None and blob is not None
        with pytest.raises(KmsError):
            runtime.provider.unwrap(
                WrappedKey(root_key_id=root_id, blob=blob), context=kek_ad(tenant_id, version)
            )


def test_an_interrupted_root_rotation_resumes_without_a_third_root(runtime: Runtime) -> None:
    world = _world(runtime)
    old_root = runtime.provider.active_root_key_id()
    rotation = root_rotation_for(runtime, batch_size=1)
    # Crash simulation: the new root exists and one KEK was rewrapped, then the process died.
    new_root = runtime.provider.create_root_key()
    with unit_of_work(runtime.sessions) as session:
        assert rotation._rewrap_keks(session, new_root) == 1
    assert _roots(runtime) == {old_root: 5, new_root: 1}
    for tenant, secrets in world.items():  # mixed roots: still all openable
        assert open_all(runtime.engine, uncached(runtime.provider), tenant) == secrets
    result = rotation.run()
    assert not result.created and result.active_root_key_id == new_root
    assert result.rewrapped_keks == 2 and result.destroyed == [old_root]
    assert runtime.provider.root_key_ids() == [new_root]
    for tenant, secrets in world.items():
        assert open_all(runtime.engine, uncached(runtime.provider), tenant) == secrets
    # Running again starts a genuinely new rotation.
    again = rotation.run()
    assert again.created and again.destroyed == [new_root]
