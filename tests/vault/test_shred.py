"""Crypto-shredding: once a tenant or credential is shredded nothing can open it again.

"Nothing" includes an attacker holding the root key and full read access to the live
database. Backups are the honest exception, shown here too: a copy of the KEK row made
before shredding still opens with the root key until that root version is destroyed.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from kms import WrappedKey
from kms.errors import DecryptionError, KmsError
from tests.support.keys import make_tenant, open_all, open_line, seed_lines, uncached
from vault.keys.keyring import KeyRing, kek_ad
from vault.keys.service import root_rotation_for
from vault.keys.shred import shred_line_credential, shred_tenant_keys
from vault.runtime import Runtime
from vault.storage.engine import unit_of_work
from vault.storage.models import Kek, Line


def _two_tenants(runtime: Runtime) -> tuple[str, dict[str, bytes], str, dict[str, bytes]]:
    now = runtime.clock.now()
    with unit_of_work(runtime.sessions) as session:
        victim = make_tenant(session, runtime.keyring, now=now, name="victim")
        other = make_tenant(session, runtime.keyring, now=now, name="other")
    a = seed_lines(runtime.sessions, runtime.keyring, tenant_id=victim, count=6, now=now)
    b = seed_lines(runtime.sessions, runtime.keyring, tenant_id=other, count=3, now=now)
    return victim, a, other, b


def _raw_rows(runtime: Runtime, tenant_id: str) -> list[tuple[object, ...]]:
    """Straight SQL, no ORM: what anyone with database access would see."""
    with runtime.engine.connect() as conn:
        keks = conn.execute(
            text("SELECT version, state, root_key_id, wrapped FROM keks WHERE tenant_id = :t"),
            {"t": tenant_id},
        ).all()
        lines = conn.execute(
            text("SELECT kek_version, wrapped_dek, ciphertext FROM lines WHERE tenant_id = :t"),
            {"t": tenant_id},
        ).all()
    return [tuple(r) for r in keks] + [tuple(r) for r in lines]


def _every_key_the_root_can_unwrap(runtime: Runtime, tenant_id: str) -> list[bytes]:
    keys = []
    with runtime.engine.connect() as conn:
        for version, root_id, blob in conn.execute(
            text("SELECT version, root_key_id, wrapped FROM keks WHERE tenant_id = :t"),
            {"t": tenant_id},
        ):
            if blob is None:
                continue
            for candidate_root in [root_id, *runtime.provider.root_key_ids()]:
                try:
                    keys.append(
                        runtime.provider.unwrap(
                            WrappedKey(root_key_id=candidate_root, blob=bytes(blob)),
                            context=kek_ad(tenant_id, version),
                        )
                    )
                except (KmsError, TypeError):
                    continue
    return keys


def test_shredded_tenant_cannot_be_opened_even_with_root_and_database(runtime: Runtime) -> None:
    victim, secrets, other, other_secrets = _two_tenants(runtime)
    with runtime.engine.connect() as conn:  # what an old copy of the lines table holds
        lines_backup = conn.execute(
            select(
                Line.id, Line.version, Line.kek_version, Line.wrapped_dek, Line.ciphertext
            ).where(Line.tenant_id == victim)
        ).all()
    assert open_line(runtime.engine, runtime.keyring, lines_backup[0].id)  # KEK now cached
    with unit_of_work(runtime.sessions) as session:
        destroyed = shred_tenant_keys(
            session, tenant_id=victim, now=runtime.clock.now(), cache=runtime.keyring.cache
        )
    assert destroyed == 1
    # The live database holds nothing secret for the tenant any more.
    for row in _raw_rows(runtime, victim):
        if len(row) == 4:
            _version, state, root_id, wrapped = row
            assert (state, root_id, wrapped) == ("destroyed", None, None)
        else:
            assert row == (None, None, None)
    assert _every_key_the_root_can_unwrap(runtime, victim) == []
    # The process's KEK cache was emptied, and the shared key ring refuses too.
    assert all(key[0] != victim for key in runtime.keyring.cache._items)
    for line_id in secrets:
        with pytest.raises(LookupError):
            open_line(runtime.engine, runtime.keyring, line_id)
    # Even the pre-shred envelopes (from a copy of the lines table) need a KEK that is gone:
    # the only candidates are other tenants' KEKs, and they do not open them.
    with unit_of_work(runtime.sessions) as session:
        foreign = runtime.keyring.load_kek(session, tenant_id=other, version=1)
    for row in lines_backup:
        with pytest.raises(DecryptionError):
            KeyRing.open_credential(
                kek=foreign,
                kek_version=1,
                tenant_id=victim,
                line_id=row.id,
                line_type="telegram",
                credential_version=row.version,
                wrapped_dek=row.wrapped_dek,
                ciphertext=row.ciphertext,
            )
    # Other tenants are untouched.
    assert open_all(runtime.engine, uncached(runtime.provider), other) == other_secrets


def test_a_backup_of_the_kek_opens_until_the_old_root_is_destroyed(runtime: Runtime) -> None:
    victim, secrets, _other, _ = _two_tenants(runtime)
    with runtime.engine.connect() as conn:
        kek_backup = conn.execute(
            select(Kek.version, Kek.root_key_id, Kek.wrapped).where(Kek.tenant_id == victim)
        ).one()
        line_backup = conn.execute(
            select(Line.id, Line.version, Line.wrapped_dek, Line.ciphertext).where(
                Line.tenant_id == victim
            )
        ).first()
    assert line_backup is not None
    with unit_of_work(runtime.sessions) as session:
        shred_tenant_keys(session, tenant_id=victim, now=runtime.clock.now())
    wrapped = WrappedKey(root_key_id=kek_backup.root_key_id, blob=kek_backup.wrapped)
    # Honest: backup + root key still recover the credential...
    kek = runtime.provider.unwrap(wrapped, context=kek_ad(victim, 1))
    recovered = KeyRing.open_credential(
        kek=kek,
        kek_version=1,
        tenant_id=victim,
        line_id=line_backup.id,
        line_type="telegram",
        credential_version=line_backup.version,
        wrapped_dek=line_backup.wrapped_dek,
        ciphertext=line_backup.ciphertext,
    )
    assert recovered == secrets[line_backup.id]
    # ...until a root rotation destroys the root version that wrapped it.
    result = root_rotation_for(runtime).run()
    assert kek_backup.root_key_id in result.destroyed
    with pytest.raises(KmsError):
        runtime.provider.unwrap(wrapped, context=kek_ad(victim, 1))


def test_shredding_one_credential_leaves_the_rest(runtime: Runtime) -> None:
    _victim, secrets, _other, _ = _two_tenants(runtime)
    target = next(iter(secrets))
    with unit_of_work(runtime.sessions) as session:
        line = session.get(Line, target)
        assert line is not None
        shred_line_credential(session, line=line)
    with runtime.engine.connect() as conn:
        row = conn.execute(
            text("SELECT kek_version, wrapped_dek, ciphertext FROM lines WHERE id = :i"),
            {"i": target},
        ).one()
    assert tuple(row) == (None, None, None)
    with pytest.raises(LookupError):
        open_line(runtime.engine, runtime.keyring, target)
    rest = {k: v for k, v in secrets.items() if k != target}
    opened = {}
    for line_id in rest:
        opened[line_id] = open_line(runtime.engine, uncached(runtime.provider), line_id)
    assert opened == rest
