"""The ``linevault`` command: one Typer app, sub-commands mounted from their modules."""

from __future__ import annotations

from api.cli.core import app

__all__ = ["app", "main"]


def main() -> None:
    app()
