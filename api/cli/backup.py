"""``linevault backup`` and ``linevault restore`` (SQLite; PostgreSQL uses its own tools)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from api.cli.common import DataDir, build_settings, fail
from vault.settings import Settings
from vault.storage.backup import BackupError, BackupInfo, backup_sqlite, restore_sqlite

__all__ = ["backup_command", "restore_command"]

_POSTGRES = (
    "LINEVAULT_DATABASE_URL names PostgreSQL: back it up with pg_dump and restore it with "
    'pg_restore (docs/operations.md, "Backups and restore")'
)
_KEY_NOTE = (
    "The backup holds no root key: keep the key provider's backup (root.key or the HSM's) "
    "apart from it; without that key the backup opens nothing."
)


def _sqlite_only(settings: Settings) -> None:
    if settings.database_url is not None:
        raise fail(_POSTGRES, 2)


def _report(info: BackupInfo, *, as_json: bool, verb: str) -> None:
    if as_json:
        doc = {
            "path": str(info.path),
            "bytes": info.bytes,
            "revision": info.revision,
            "audit_head_seq": info.audit_head_seq,
        }
        typer.echo(json.dumps(doc))
        return
    typer.echo(
        f"{verb} {info.path} ({info.bytes} bytes, schema {info.revision}, "
        f"audit head {info.audit_head_seq})"
    )


def backup_command(
    out: Annotated[Path, typer.Option("--out", help="The backup file to create (mode 0600).")],
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Copy the SQLite database online and consistently (servers may keep running)."""
    settings = build_settings(data_dir)
    _sqlite_only(settings)
    try:
        info = backup_sqlite(settings.data_dir / "linevault.db", out.expanduser())
    except BackupError as exc:
        raise fail(str(exc), 2) from None
    _report(info, as_json=as_json, verb="backed up to")
    if not as_json:
        typer.echo(_KEY_NOTE, err=True)


def restore_command(
    backup: Annotated[Path, typer.Argument(help="A file made by `linevault backup`.")],
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Restore a backup into an empty data dir (refuses one that holds anything)."""
    settings = build_settings(data_dir)
    _sqlite_only(settings)
    try:
        info = restore_sqlite(backup.expanduser(), settings.data_dir)
    except BackupError as exc:
        raise fail(str(exc), 2) from None
    _report(info, as_json=as_json, verb="restored from")
    if not as_json:
        typer.echo(
            f"Now make the root key available (e.g. copy root.key into {settings.data_dir}, "
            "mode 0600, or set LINEVAULT_ROOT_KEY_FILE), run `linevault migrate` if this "
            "version is newer, then `linevault audit verify`.",
            err=True,
        )
