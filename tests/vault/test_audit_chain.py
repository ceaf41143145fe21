"""Tamper evidence: any single modified, deleted, inserted or reordered event, or a tail
truncated past a checkpoint, is caught by the database verifier AND by export verification,
on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.support.audit import DB_TAMPERS, EXPORT_TAMPERS, export_lines, fill_chain, verify_chain
from tests.support.settings import make_settings
from vault.audit.export import verify_export
from vault.runtime import Runtime
from vault.settings import Settings
from vault.storage.models import AuditCheckpoint, AuditEventRow

N_EVENTS = 40
TARGET = 17  # an event in the middle, with checkpoints before and after it


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return make_settings(
        data_dir=tmp_path / "var",
        database_url=db_url,
        log_level="warning",
        audit_checkpoint_every=5,
    )


@pytest.fixture
def chain(runtime: Runtime) -> Runtime:
    fill_chain(runtime, N_EVENTS)
    return runtime


def test_intact_chain_verifies_on_both_paths(chain: Runtime) -> None:
    result = verify_chain(chain)
    assert result.ok, result
    assert result.events_checked == N_EVENTS + 1  # + system.init
    with chain.readonly_sessions() as s:
        checkpoints = s.execute(select(func.count()).select_from(AuditCheckpoint)).scalar_one()
    assert checkpoints >= 4  # signed at least every 5 events
    assert result.checkpoints_checked == checkpoints
    lines = export_lines(chain)
    check = verify_export(lines, public_key=chain.system_keys.audit_public_key)
    assert check.result.ok, check.result
    assert check.result.events_checked == N_EVENTS + 2  # + the audit.export event
    assert check.result.head_seq == N_EVENTS + 2
    assert not check.key_from_file


@pytest.mark.parametrize("kind", sorted(DB_TAMPERS))
def test_database_tampering_is_detected(chain: Runtime, kind: str) -> None:
    DB_TAMPERS[kind](chain.engine, TARGET)
    result = verify_chain(chain)
    assert not result.ok
    assert result.first_bad_seq is not None and result.problem
    if kind in ("modify", "delete", "reorder"):
        assert result.first_bad_seq == TARGET, result
    if kind == "insert":  # a well-formed forgery links back; the displaced event cannot
        assert result.first_bad_seq in (TARGET, TARGET + 1), result


@pytest.mark.parametrize("kind", sorted(EXPORT_TAMPERS))
def test_export_tampering_is_detected(chain: Runtime, kind: str) -> None:
    lines = export_lines(chain)
    key = chain.system_keys.audit_public_key
    assert verify_export(lines, public_key=key).result.ok
    tampered = EXPORT_TAMPERS[kind](lines, TARGET)
    result = verify_export(tampered, public_key=key).result
    assert not result.ok, kind
    if kind in ("modify", "delete", "reorder"):
        assert result.first_bad_seq == TARGET, result
    if kind == "insert":  # a well-formed forgery links back; the displaced event cannot
        assert result.first_bad_seq in (TARGET, TARGET + 1), result


def test_export_signed_by_another_key_is_rejected(chain: Runtime) -> None:
    lines = export_lines(chain)
    other = bytes(32)
    assert not verify_export(lines, public_key=other).result.ok


def test_resigned_export_fails_against_the_trusted_key(chain: Runtime) -> None:
    """An attacker who rewrites an export and signs it with their own key (and puts that
    key in the header) passes self-consistency but not the trusted key."""
    import json

    from kms.crypto import SigningKey
    from vault.audit.checkpoints import checkpoint_message

    lines = export_lines(chain)
    forged_key = SigningKey.generate()
    header = json.loads(lines[0])
    header["public_key"] = forged_key.public_key_bytes().hex()
    docs = [json.loads(x) for x in lines[1:]]
    for doc in docs:
        if doc["kind"] == "checkpoint":
            msg = checkpoint_message(seq=doc["seq"], hash=doc["hash"], ts=doc["ts"])
            doc["signature"] = forged_key.sign(msg).hex()
    forged = [json.dumps(header) + "\n"] + [json.dumps(d) + "\n" for d in docs]
    assert verify_export(forged).result.ok  # self-consistent...
    assert not verify_export(forged, public_key=chain.system_keys.audit_public_key).result.ok


def test_forged_checkpoint_signature_is_detected(chain: Runtime) -> None:
    from sqlalchemy import update

    with chain.sessions() as s:
        seq = s.execute(select(func.max(AuditCheckpoint.seq))).scalar_one()
        s.execute(
            update(AuditCheckpoint).where(AuditCheckpoint.seq == seq).values(signature=bytes(64))
        )
        s.commit()
    result = verify_chain(chain)
    assert not result.ok and "signature" in (result.problem or "")


def test_checkpoints_only_cover_committed_events(chain: Runtime) -> None:
    with chain.readonly_sessions() as s:
        cps = s.execute(select(AuditCheckpoint.seq, AuditCheckpoint.hash)).all()
        for seq, hash_ in cps:
            stored = s.execute(
                select(AuditEventRow.hash).where(AuditEventRow.seq == seq)
            ).scalar_one()
            assert stored == hash_
