"""Anchors outside the database: C2SP signed notes appended after commit, fsynced; a failed
append blocks nothing but shows in health; verification against them."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kms.crypto import verify_signature
from tests.support.audit import (
    anchored_settings,
    checkpoint_hashes,
    fill_chain,
    sample_event,
    verify_chain,
)
from vault.audit.anchors import ANCHOR_FILE, AnchorError, read_anchors
from vault.runtime import Runtime
from vault.settings import Settings
from vault.storage.engine import unit_of_work


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return anchored_settings(tmp_path, db_url)


def _dir(runtime: Runtime) -> Path:
    directory = runtime.settings.audit_anchor_dir
    assert directory is not None
    return directory


def test_every_checkpoint_is_a_c2sp_signed_note(runtime: Runtime) -> None:
    fill_chain(runtime, 20)
    public = runtime.system_keys.audit_public_key
    assert dict(read_anchors(_dir(runtime), public_key=public)) == checkpoint_hashes(runtime.engine)
    path = _dir(runtime) / ANCHOR_FILE
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    # The first note, checked by hand against the specification, not through read_anchors.
    note = path.read_text(encoding="utf-8").split("\n\n")
    body, signature_line = note[0] + "\n", note[1]
    origin, size, root = body.splitlines()
    assert origin == f"linevault/audit/{runtime.system_keys.audit_key_id}"
    assert int(size) == 1  # `linevault init` signed its own event
    assert base64.b64decode(root).hex() == checkpoint_hashes(runtime.engine)[1]
    assert signature_line.startswith("\u2014 " + origin + " ")
    raw = base64.b64decode(signature_line.split(" ")[2])
    key_hash = hashlib.sha256(origin.encode() + b"\n\x01" + public).digest()[:4]
    assert raw[:4] == key_hash
    assert verify_signature(public_key=public, signature=raw[4:], message=body.encode())


def test_a_rolled_back_checkpoint_is_never_anchored(runtime: Runtime) -> None:
    before = (_dir(runtime) / ANCHOR_FILE).read_bytes()
    session = runtime.sessions()
    for i in range(6):  # enough for a checkpoint inside this transaction
        runtime.audit.record(session, sample_event(i))
    session.rollback()
    session.close()
    assert (_dir(runtime) / ANCHOR_FILE).read_bytes() == before
    with unit_of_work(runtime.sessions) as session:
        for i in range(6):
            runtime.audit.record(session, sample_event(i))
    assert (_dir(runtime) / ANCHOR_FILE).read_bytes() != before
    assert verify_chain(runtime, anchors=_dir(runtime)).ok


def test_a_failed_append_blocks_nothing_and_shows_in_health(
    runtime: Runtime, client: TestClient
) -> None:
    """Fail open for requests (events are committed and signed already), closed for the
    health check, which recovers with the next successful append."""
    directory = _dir(runtime)
    hidden = directory.with_name("anchors-away")
    os.rename(directory, hidden)  # the mount is gone
    fill_chain(runtime, 12)
    assert verify_chain(runtime).ok
    health = client.get("/v1/sys/health")
    assert health.status_code == 503 and health.json()["audit"] == "unavailable"
    os.rename(hidden, directory)
    checkpointer = runtime.audit.checkpointer
    assert checkpointer is not None
    checkpointer.idle(runtime.sessions)  # the writer's idle retry
    assert client.get("/v1/sys/health").status_code == 200
    assert verify_chain(runtime, anchors=directory).ok


def test_bad_torn_and_contradicting_notes(runtime: Runtime) -> None:
    fill_chain(runtime, 10)
    directory = _dir(runtime)
    path = directory / ANCHOR_FILE
    public = runtime.system_keys.audit_public_key
    good = path.read_text(encoding="utf-8")
    path.write_text(good + "linevault/audit/x\n7\n", encoding="utf-8")  # torn by a crash
    assert read_anchors(directory, public_key=public)
    first = good.split("\n\n")[0]
    lines = first.split("\n")
    forged = "\n".join([lines[0], lines[1], base64.b64encode(bytes(32)).decode()])
    note_sig = good.split("\n\n")[1]
    path.write_text(good + forged + "\n\n" + note_sig + "\n\n", encoding="utf-8")
    with pytest.raises(AnchorError, match="invalid signature"):
        read_anchors(directory, public_key=public)
    assert not verify_chain(runtime, anchors=directory).ok
    with pytest.raises(AnchorError, match="not signed"):
        read_anchors(directory, public_key=bytes(32))
    path.unlink()
    assert not verify_chain(runtime, anchors=directory).ok  # no anchors is not "intact"
