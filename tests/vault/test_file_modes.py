"""The SQLite database and its -wal/-shm files are private to their owner (0600).

They hold no plaintext credential, but metadata, wrapped keys and the audit trail are
nobody else's business on a shared host (issue: "The SQLite file is created 0644")."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.runners import make_tenant
from tests.support.settings import make_settings
from vault.bootstrap import initialise
from vault.clock import FixedClock
from vault.runtime import open_runtime
from vault.storage.engine import make_engine


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The common default umask, under which a plain open() makes 0644 files."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("loose_umask")
def test_the_database_and_its_side_files_are_created_0600(tmp_path: Path) -> None:
    settings = make_settings(data_dir=tmp_path / "var", log_level="warning")
    initialise(settings, admin_email="admin@example.test", clock=FixedClock())
    runtime = open_runtime(settings)
    try:
        make_tenant(runtime)  # a write: the WAL and shared-memory files exist now
        files = [tmp_path / "var" / f"linevault.db{s}" for s in ("", "-wal", "-shm")]
        assert all(f.exists() for f in files)
        assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
    finally:
        runtime.close()


@pytest.mark.usefixtures("loose_umask")
def test_an_existing_readable_database_is_made_private_when_opened(tmp_path: Path) -> None:
    database = tmp_path / "copy.db"
    for suffix in ("", "-wal"):
        Path(f"{database}{suffix}").write_bytes(b"")
        os.chmod(f"{database}{suffix}", 0o644)
    make_engine(f"sqlite:///{database}", pool_size=1).dispose()
    assert mode(database) == 0o600
    assert mode(Path(f"{database}-wal")) == 0o600


@pytest.mark.usefixtures("loose_umask")
def test_a_backup_and_its_restore_are_private(tmp_path: Path) -> None:
    """Issue 13: backups are 0600 too, whatever the umask; a restored data dir is 0700
    with its database 0600 (tests/e2e/test_backup_drill.py takes one under load)."""
    from vault.storage.backup import backup_sqlite, restore_sqlite

    settings = make_settings(tmp_path / "var")
    initialise(settings, admin_email="admin@example.test", clock=FixedClock())
    out = tmp_path / "backup.db"
    backup_sqlite(tmp_path / "var" / "linevault.db", out)
    assert mode(out) == 0o600
    restored = tmp_path / "restored"
    restore_sqlite(out, restored)
    assert mode(restored) == 0o700
    assert mode(restored / "linevault.db") == 0o600
