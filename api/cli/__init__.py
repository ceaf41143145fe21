"""The ``linevault`` command: one Typer app, sub-commands mounted from their modules.

Expected failures (no data dir, an unreachable database, wrong key provider settings,
a bad setting) end with one line on stderr and a documented exit code
(``api.cli.common``, docs/cli.md), never a traceback.
"""

from __future__ import annotations

import sys

import typer

from api.cli.common import EXIT_INTERRUPTED, explain_failure
from api.cli.core import app

__all__ = ["app", "main"]


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True, fg=typer.colors.RED)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:
        explained = explain_failure(exc)
        if explained is None:
            raise
        message, code = explained
        typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
        sys.exit(code)
