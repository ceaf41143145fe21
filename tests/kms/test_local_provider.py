"""Local key-file provider specifics: file permissions, atomicity, refusal rules."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import threading
from pathlib import Path

import pytest

from kms import (
    InsecureKeyFile,
    KmsUnavailable,
    LocalKeyProvider,
    RootKeyExists,
    RootKeyNotFound,
    UnsupportedOperation,
)
from kms import local as local_module
from kms.crypto import new_key


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_initialize_creates_0600_file(tmp_path: Path) -> None:
    old_umask = os.umask(0o000)  # even a permissive umask must not widen the mode
    try:
        key_file = tmp_path / "data" / "root.key"
        provider = LocalKeyProvider.initialize(key_file)
    finally:
        os.umask(old_umask)
    assert _mode(key_file) == 0o600
    doc = json.loads(key_file.read_text())
    assert doc["format"] == 1
    assert doc["active"] == "local-1" == provider.active_root_key_id()
    assert len(base64.b64decode(doc["keys"]["local-1"])) == 32
    assert provider.name == "local"


def test_second_initialize_refuses(tmp_path: Path) -> None:
    key_file = tmp_path / "root.key"
    LocalKeyProvider.initialize(key_file)
    before = key_file.read_bytes()
    with pytest.raises(RootKeyExists):
        LocalKeyProvider.initialize(key_file)
    assert key_file.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root.key"]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o601])
def test_open_refuses_group_or_other_access(tmp_path: Path, mode: int) -> None:
    key_file = tmp_path / "root.key"
    LocalKeyProvider.initialize(key_file)
    key_file.chmod(mode)
    with pytest.raises(InsecureKeyFile, match="chmod 600"):
        LocalKeyProvider.open(key_file)


def test_running_provider_notices_insecure_mode(tmp_path: Path) -> None:
    key_file = tmp_path / "root.key"
    provider = LocalKeyProvider.initialize(key_file)
    key_file.chmod(0o644)
    with pytest.raises(KmsUnavailable):
        provider.health()


def test_open_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RootKeyNotFound):
        LocalKeyProvider.open(tmp_path / "absent.key")


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b"[]",
        b'{"format": 2, "active": "local-1", "keys": {}}',
        b'{"format": 1, "active": "local-2", "keys": {"local-1": "' + b"A" * 44 + b'"}}',
        b'{"format": 1, "active": "local-1", "keys": {"local-1": "c2hvcnQ="}}',
        b'{"format": 1, "active": "local-1", "keys": {"local-1": "!!!"}}',
        b'{"format": 1, "active": "x", "keys": {"x": "' + b"A" * 44 + b'"}}',
    ],
)
def test_malformed_file_is_unavailable_without_echo(tmp_path: Path, content: bytes) -> None:
    key_file = tmp_path / "root.key"
    key_file.write_bytes(content)
    key_file.chmod(0o600)
    with pytest.raises(KmsUnavailable) as info:
        LocalKeyProvider.open(key_file)
    assert "AAAA" not in str(info.value)
    assert info.value.__cause__ is None


def test_warning_logged_once_per_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_module, "_warned", threading.Event())  # a fresh process
    key_file = tmp_path / "root.key"
    LocalKeyProvider.initialize(key_file)
    with caplog.at_level(logging.WARNING, logger="linevault.kms"):
        LocalKeyProvider.open(key_file)
        LocalKeyProvider.open(key_file)
    records = [r for r in caplog.records if r.name == "linevault.kms"]
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    assert "development" in records[0].getMessage()
    secret = json.loads(key_file.read_text())["keys"]["local-1"]
    assert secret not in caplog.text


def test_rotation_rewrites_atomically_without_temp_files(tmp_path: Path) -> None:
    key_file = tmp_path / "root.key"
    provider = LocalKeyProvider.initialize(key_file)
    inode = key_file.stat().st_ino
    assert provider.create_root_key() == "local-2"
    assert provider.create_root_key() == "local-3"
    provider.destroy_root_key("local-1")
    assert key_file.stat().st_ino != inode  # replaced, not rewritten in place
    assert _mode(key_file) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root.key"]
    doc = json.loads(key_file.read_text())
    assert doc["active"] == "local-3"
    assert sorted(doc["keys"]) == ["local-2", "local-3"]
    assert LocalKeyProvider.open(key_file).root_key_ids() == ["local-2", "local-3"]


def test_failed_write_leaves_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "root.key"
    provider = LocalKeyProvider.initialize(key_file)
    before = key_file.read_bytes()

    def boom(src: object, dst: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk on fire"):
        provider.create_root_key()
    monkeypatch.undo()
    assert key_file.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root.key"]
    assert provider.active_root_key_id() == "local-1"


def test_deleted_file_makes_provider_unavailable(tmp_path: Path) -> None:
    key_file = tmp_path / "root.key"
    provider = LocalKeyProvider.initialize(key_file)
    key_file.unlink()
    with pytest.raises(KmsUnavailable):
        provider.health()
    with pytest.raises(KmsUnavailable):
        provider.wrap(new_key(), context=b"c")


def test_env_key_validation_and_repr() -> None:
    raw = new_key()
    b64 = base64.b64encode(raw).decode()
    provider = LocalKeyProvider.from_base64(b64)
    assert provider.active_root_key_id() == "env-1"
    assert provider.root_key_ids() == ["env-1"]
    assert provider.path is None
    assert b64 not in repr(provider)
    with pytest.raises(UnsupportedOperation, match="LINEVAULT_ROOT_KEY"):
        provider.destroy_root_key("env-1")
    for bad in ("", "not base64!", base64.b64encode(b"short").decode()):
        with pytest.raises(ValueError) as info:
            LocalKeyProvider.from_base64(bad)
        assert info.value.__cause__ is None


def test_key_file_not_in_repr(tmp_path: Path) -> None:
    key_file = tmp_path / "root.key"
    provider = LocalKeyProvider.initialize(key_file)
    secret = json.loads(key_file.read_text())["keys"]["local-1"]
    assert secret not in repr(provider)
    wrapped = provider.wrap(new_key(), context=b"c")
    assert wrapped.blob.hex() not in repr(wrapped)


def test_concurrent_rotation_from_two_instances(tmp_path: Path) -> None:
    """Two instances stand in for two processes: the directory flock serialises them."""
    key_file = tmp_path / "root.key"
    first = LocalKeyProvider.initialize(key_file)
    second = LocalKeyProvider.open(key_file)
    created: list[str] = []

    def rotate(provider: LocalKeyProvider) -> None:
        for _ in range(5):
            created.append(provider.create_root_key())

    threads = [threading.Thread(target=rotate, args=(p,)) for p in (first, second) * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(created) == len(set(created)) == 20
    ids = LocalKeyProvider.open(key_file).root_key_ids()
    assert ids == [f"local-{n}" for n in range(1, 22)]
    assert first.active_root_key_id() == second.active_root_key_id() == "local-21"
