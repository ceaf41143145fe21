"""Helpers every CLI command shares: settings from flags and environment, opening the
runtime, output formats, and turning expected failures into one line on stderr.

Exit codes (docs/cli.md): 0 done; 1 the check or operation failed (a tampered chain, a
refused change); 2 usage: a bad option or setting, no data dir, not initialised;
3 the database cannot be reached; 4 the key provider cannot be opened; 130 interrupted.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError

from kms.errors import KmsError
from vault.errors import VaultError
from vault.runtime import NotInitialised, Runtime, open_runtime
from vault.settings import Settings

__all__ = [
    "EXIT_DATABASE",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_KEY_PROVIDER",
    "EXIT_USAGE",
    "DataDir",
    "Format",
    "FormatOption",
    "JsonFlag",
    "build_settings",
    "explain_failure",
    "fail",
    "open_cli_runtime",
    "require_data_dir",
    "wants_json",
]

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DATABASE = 3
EXIT_KEY_PROVIDER = 4
EXIT_INTERRUPTED = 130

_WHERE = "pass --data-dir DIR or set LINEVAULT_DATA_DIR (default ./var)"

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (default: $LINEVAULT_DATA_DIR or ./var)."),
]


class Format(enum.StrEnum):
    text = "text"
    json = "json"


FormatOption = Annotated[
    Format,
    typer.Option("--format", help="Output: text for people, json (one object) for scripts."),
]

JsonFlag = Annotated[
    bool, typer.Option("--json", help="Same as --format json (kept for scripts that use it).")
]


def wants_json(output: Format, as_json: bool) -> bool:
    """True when the command should print one JSON object instead of text."""
    return as_json or output is Format.json


# The settings of the command being run, for naming the data dir in a failure message.
_current: list[Settings] = []


def build_settings(data_dir: Path | None = None, **overrides: object) -> Settings:
    values: dict[str, object] = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    settings = Settings(**values)  # type: ignore[arg-type]
    _current[:] = [settings]
    return settings


def fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def require_data_dir(settings: Settings) -> None:
    """Refuse, naming the fix, a default SQLite database whose data dir is not there
    (before opening it could create an empty file)."""
    if settings.database_url is None and not (settings.data_dir / "linevault.db").exists():
        raise fail(
            f"no linevault data dir at {settings.data_dir.absolute()}: {_WHERE}, or create"
            " one with `linevault init --admin-email EMAIL`",
            EXIT_USAGE,
        )


def open_cli_runtime(data_dir: Path | None) -> Runtime:
    """The runtime for a one-shot command (no background audit writer)."""
    settings = build_settings(data_dir)
    require_data_dir(settings)
    try:
        return open_runtime(settings, start_writer=False)
    except NotInitialised as exc:
        raise fail(f"{exc} ({_WHERE})", EXIT_USAGE) from None


def _database_name() -> str:
    if not _current:
        return "the database"
    settings = _current[0]
    if settings.database_url is None:
        return f"the SQLite database in {settings.data_dir}"
    try:
        url = make_url(settings.sqlalchemy_url)
    except ArgumentError:
        return "LINEVAULT_DATABASE_URL (not a database URL)"
    return f"the database at {url.host or 'localhost'}:{url.port or 'default port'}"


def _usage_problem(exc: BaseException) -> str | None:
    """The message for a failure of the settings (exit 2), or None."""
    if isinstance(exc, ValidationError):
        return "invalid setting: " + ", ".join(
            f"LINEVAULT_{'_'.join(str(p) for p in err['loc']).upper()} ({err['msg']})"
            for err in exc.errors()
        )
    if isinstance(exc, NotInitialised):
        return f"{exc} ({_WHERE})"
    if isinstance(exc, ArgumentError):
        return "LINEVAULT_DATABASE_URL is not a database URL"
    return None


def explain_failure(exc: BaseException) -> tuple[str, int] | None:
    """One line saying what is wrong and what to do, and the exit code, for a failure
    that is the environment's and not a bug; None for anything else."""
    usage = _usage_problem(exc)
    if usage is not None:
        return usage, EXIT_USAGE
    if isinstance(exc, OperationalError | InterfaceError):
        return (
            f"cannot open {_database_name()}: {_first_line(exc.orig)}; check that it exists "
            f"and is reachable ({_WHERE}, or LINEVAULT_DATABASE_URL)",
            EXIT_DATABASE,
        )
    if isinstance(exc, KmsError):
        # Provider messages are written never to carry key material (kms/errors.py).
        reason = _first_line(exc) if str(exc) else type(exc).__name__
        return (
            f"the key provider cannot be opened: {reason}; check LINEVAULT_KMS_PROVIDER and"
            " its settings (the key file in the data dir or LINEVAULT_ROOT_KEY for local,"
            " LINEVAULT_PKCS11_* for pkcs11)",
            EXIT_KEY_PROVIDER,
        )
    if isinstance(exc, VaultError):
        return exc.detail, EXIT_FAILED
    return None


def _first_line(orig: object) -> str:
    """The driver's reason, first line only, without any value it might quote."""
    text = str(orig or "").strip().splitlines()
    return (text[0] if text else "unreachable")[:160]
