"""Online backup and restore of the embedded SQLite database.

``backup_sqlite`` copies the live database with SQLite's backup API in one step: the
copy is the database as of one read transaction (WAL mode: readers and the writer go on
meanwhile; fetches keep being served and audited), so it is consistent, audit chain
and checkpoints included. The copy is written beside the target as a hidden partial
file created 0600, checked (``quick_check``), switched to a rollback journal so it is
one self-contained file, synced and renamed into place: a crash never leaves a
half-written backup under the requested name, and the file is never readable by
group or others (the same rule as the database file, tests/vault/test_file_modes.py).

``restore_sqlite`` checks a backup and copies it into a data dir that holds nothing yet.

Neither touches the root key: a backup holds ciphertext, wrapped keys and the audit
trail, and opens nothing without the key provider (docs/operations.md, "Backups").
PostgreSQL is backed up with its own tools (pg_dump / pg_restore, same document).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BackupError", "BackupInfo", "backup_sqlite", "restore_sqlite"]

_BUSY_MS = 15_000


class BackupError(RuntimeError):
    """The backup or restore cannot be made; the message says why (no secret in it)."""


@dataclass(frozen=True, slots=True)
class BackupInfo:
    path: Path
    bytes: int
    revision: str
    audit_head_seq: int


@contextlib.contextmanager
def _connect(path: Path, *, readonly: bool = False) -> Iterator[sqlite3.Connection]:
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=_BUSY_MS / 1000)
    try:
        conn.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
        yield conn
    finally:
        conn.close()


def _describe(conn: sqlite3.Connection, path: Path) -> BackupInfo:
    """Check a copy and say what it holds; BackupError if it is not a linevault database."""
    try:
        if conn.execute("PRAGMA quick_check").fetchall() != [("ok",)]:
            raise BackupError(f"{path} is damaged (quick_check failed)")
        revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        head = conn.execute("SELECT seq FROM audit_head WHERE id = 1").fetchone()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path} is not a linevault SQLite database") from exc
    if revision is None or head is None:
        raise BackupError(f"{path} is not an initialised linevault database")
    return BackupInfo(path, path.stat().st_size, str(revision[0]), int(head[0]))


def _private_file(path: Path) -> None:
    """Create ``path`` empty and 0600, refusing one that exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)  # whatever the umask


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy(source: Path, target: Path, *, source_readonly: bool, journal: str) -> BackupInfo:
    """Copy ``source`` into the empty 0600 file ``target`` in one backup step."""
    with _connect(source, readonly=source_readonly) as src, _connect(target) as dst:
        src.backup(dst)  # pages=-1: all pages under one read transaction
        dst.execute(f"PRAGMA journal_mode={journal}")
        info = _describe(dst, target)
    _sync(target)
    return info


def backup_sqlite(database: Path, out: Path) -> BackupInfo:
    """An online, consistent copy of ``database`` at ``out`` (mode 0600; refuses to
    overwrite). Safe while servers run on the database."""
    if not database.exists():
        raise BackupError(f"no database at {database}")
    if out.exists():
        raise BackupError(f"{out} exists; choose a new file name")
    partial = out.with_name(f".{out.name}.partial")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    _private_file(partial)
    try:
        info = _copy(database, partial, source_readonly=False, journal="DELETE")
        os.replace(partial, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise
    _sync(out.parent)
    return BackupInfo(out, info.bytes, info.revision, info.audit_head_seq)


def restore_sqlite(
    backup: Path, data_dir: Path, *, database_name: str = "linevault.db"
) -> BackupInfo:
    """Copy a checked backup into ``data_dir``, which must be empty or not exist yet."""
    if not backup.is_file():
        raise BackupError(f"no backup file at {backup}")
    with _connect(backup, readonly=True) as conn:
        _describe(conn, backup)
    if data_dir.exists() and any(data_dir.iterdir()):
        raise BackupError(f"{data_dir} is not empty; restore into an empty data dir")
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    target = data_dir / database_name
    _private_file(target)
    try:
        info = _copy(backup, target, source_readonly=True, journal="WAL")
    except BaseException:
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{target}{suffix}").unlink()
        raise
    _sync(data_dir)
    return info
