"""The benchmark seeder stores the lines the lines service would store.

Fetch figures at a million credentials only mean something if the seeded rows are real
ones: the same envelope, the same associated data and the same keyed fingerprint.
"""

from __future__ import annotations

from sqlalchemy import select

from bench.seed import seed
from vault.lines.schemas import parse_credential
from vault.lines.service import fingerprint
from vault.runtime import Runtime
from vault.storage.engine import unit_of_work
from vault.storage.models import Grant, Line

CREDENTIAL = {"bot_token": "123456:AAE_seededBenchToken-0123456789abcdefghij"}


def test_seeded_lines_open_and_carry_real_fingerprints(runtime: Runtime) -> None:
    done = seed(runtime, tenants=2, lines_per_tenant=3, credential=lambda: CREDENTIAL)
    assert (done.tenants, done.lines, len(done.sample)) == (2, 6, 6)
    plaintext = parse_credential("telegram", CREDENTIAL).plaintext
    with unit_of_work(runtime.sessions) as session:
        for tenant_id, line_id in done.sample:
            line = session.get(Line, line_id)
            assert line is not None and line.tenant_id == tenant_id
            assert (line.status, line.version, line.kek_version) == ("active", 1, 1)
            assert line.fingerprint == fingerprint(
                runtime.system_keys, tenant_id=tenant_id, plaintext=plaintext
            )
            assert line.wrapped_dek is not None and line.ciphertext is not None
            kek = runtime.keyring.load_kek(session, tenant_id=tenant_id, version=1)
            opened = runtime.keyring.open_credential(
                kek=kek,
                kek_version=1,
                tenant_id=tenant_id,
                line_id=line_id,
                line_type=line.type,
                credential_version=line.version,
                wrapped_dek=line.wrapped_dek,
                ciphertext=line.ciphertext,
            )
            assert opened == plaintext
        grants = session.execute(select(Grant.tenant_id, Grant.runner_id, Grant.all_lines)).all()
    assert sorted(grants) == sorted({(t, done.runner_id, True) for t, _ in done.sample})
