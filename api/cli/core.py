"""``linevault init``, ``serve``, ``migrate`` and ``version``."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from api.cli import audit as audit_cli
from api.cli import keys, users
from api.cli.backup import backup_command, restore_command
from api.cli.common import DataDir, build_settings, fail
from vault import __version__
from vault.bootstrap import AlreadyInitialised, initialise, is_initialised
from vault.runtime import engine_for
from vault.settings import Settings
from vault.storage.migrate import upgrade

__all__ = ["app"]

app = typer.Typer(
    name="linevault",
    help="linevault: an encrypted vault for the credentials of connected chat lines.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,  # plain help: flags are not shown as `--json <bool>`
    pretty_exceptions_show_locals=False,  # a traceback never prints a secret held in a local
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"linevault {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
        ),
    ] = False,
) -> None:
    """linevault: an encrypted vault for the credentials of connected chat lines.

    Exit codes: 0 done, 1 failed check or refused operation, 2 usage (bad option or
    setting, no data dir), 3 database unreachable, 4 key provider unavailable.
    """


app.add_typer(users.app, name="users")
app.add_typer(audit_cli.app, name="audit")
app.add_typer(keys.app, name="keys")
app.command("backup")(backup_command)
app.command("restore")(restore_command)


@app.command("init")
def init_command(
    admin_email: Annotated[str, typer.Option("--admin-email", help="Email of the platform admin.")],
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    if_needed: Annotated[
        bool, typer.Option("--if-needed", help="Exit 0 quietly when already initialised.")
    ] = False,
) -> None:
    """Create the schema, the root key and the platform admin (password + TOTP, shown once)."""
    settings = build_settings(data_dir)
    if "@" not in admin_email or len(admin_email) > 320:
        raise fail("--admin-email must be an email address", 2)
    try:
        if if_needed and is_initialised(settings):
            typer.echo(f"{settings.data_dir} is already initialised.", err=True)
            return
        result = initialise(settings, admin_email=admin_email)
    except AlreadyInitialised as exc:
        raise fail(f"{exc}; nothing was changed", 2) from None
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "admin_email": result.admin_email,
                    "admin_password": result.admin_password,
                    "admin_totp_secret": result.admin_totp_secret,
                    "admin_recovery_codes": list(result.admin_recovery_codes),
                }
            )
        )
        return
    typer.echo("linevault initialised. These credentials are shown ONCE; store them now:")
    typer.echo(f"  admin email:        {result.admin_email}")
    typer.echo(f"  admin password:     {result.admin_password}")
    typer.echo(f"  admin TOTP secret:  {result.admin_totp_secret}")
    uri = (
        f"otpauth://totp/linevault:{result.admin_email}?secret={result.admin_totp_secret}"
        "&issuer=linevault"
    )
    typer.echo(f"  authenticator URI:  {uri}")
    typer.echo("  recovery codes (each works once, if the authenticator is lost):")
    for code in result.admin_recovery_codes:
        typer.echo(f"    {code}")
    from api.cli.qr import print_qr  # only ``init`` draws a QR code; other commands skip qrcode

    print_qr(uri)


@app.command("migrate")
def migrate_command(data_dir: DataDir = None) -> None:
    """Bring the database schema up to date (safe to run repeatedly)."""
    settings = build_settings(data_dir)
    engine = engine_for(settings)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    typer.echo("schema is current")


@app.command("serve")
def serve_command(
    data_dir: DataDir = None,
    host: Annotated[
        str | None,
        typer.Option(
            "--host", help="Address to listen on (default: $LINEVAULT_HOST or 127.0.0.1)."
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", help="Port to listen on (default: $LINEVAULT_PORT or 8210)."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", help="Server processes (default: $LINEVAULT_WORKERS or 1)."),
    ] = None,
) -> None:
    """Serve the HTTP API (default 127.0.0.1:8210); prints where to go, Ctrl-C stops."""
    settings = build_settings(data_dir, host=host, port=port, workers=workers)
    if not is_initialised(settings):
        raise fail(
            f"{settings.data_dir.absolute()} is not initialised: run `linevault init "
            "--admin-email EMAIL` first, or pass --data-dir DIR / set LINEVAULT_DATA_DIR",
            2,
        )
    # Worker processes rebuild the same settings from the environment.
    os.environ["LINEVAULT_DATA_DIR"] = str(settings.data_dir)
    if settings.workers > 1:
        _metrics_dir_for_workers(settings.data_dir)
    _print_urls(settings)
    with _stops_quietly():
        _run_server(settings)
    typer.echo("linevault stopped", err=True)


def _print_urls(settings: Settings) -> None:
    """Where to go, on stderr: the API, its docs, and the console when this build has one."""
    from api.app import create_app
    from api.docs import entry_points

    host = settings.host
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104 (a comparison)
    base = f"http://{f'[{shown}]' if ':' in shown else shown}:{settings.port}"
    typer.echo(f"linevault {__version__} on {base}", err=True)
    for name, path in entry_points(create_app(settings)).items():
        typer.echo(f"  {name + ':':<24} {base}{path}", err=True)
    typer.echo("Press Ctrl-C to stop.", err=True)


class _Stopped(Exception):
    """SIGTERM, raised where uvicorn hands the signal back after its graceful shutdown."""


@contextlib.contextmanager
def _stops_quietly() -> Iterator[None]:
    """Ctrl-C (SIGINT) or SIGTERM end the server cleanly with exit 0: uvicorn shuts down
    gracefully, then re-raises the signal it caught, which lands here instead of killing
    the process (so `make run` ends without `make: *** ... Terminated`)."""

    def on_term(signum: int, frame: object) -> None:
        raise _Stopped

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    except (KeyboardInterrupt, _Stopped):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_server(settings: Settings) -> None:
    import uvicorn

    loop = "uvloop"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        loop = "asyncio"
    uvicorn.run(
        "api.server:build_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop=loop,
        http="httptools",
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=10,
        # X-Forwarded-* only from the proxies named in LINEVAULT_TRUSTED_PROXIES; uvicorn
        # would otherwise believe them from loopback, letting any local client spoof the
        # address the audit trail and the per-address throttle use.
        proxy_headers=settings.trusted_proxies is not None,
        forwarded_allow_ips=settings.trusted_proxies or "",
    )


def _metrics_dir_for_workers(data_dir: Path) -> None:
    """prometheus_client's multiprocess mode for the workers about to start: a fresh
    directory (the files of an earlier run would add its counts) named before any worker
    imports prometheus_client. One the operator set (``PROMETHEUS_MULTIPROC_DIR``) is
    theirs to empty between runs, as prometheus_client documents."""
    from api.metrics import MULTIPROC_ENV

    if os.environ.get(MULTIPROC_ENV):
        return
    metrics_dir = data_dir / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(mode=0o700, parents=True)
    os.environ[MULTIPROC_ENV] = str(metrics_dir)


@app.command("version")
def version_command() -> None:
    """Print the version."""
    typer.echo(__version__)
