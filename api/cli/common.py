"""Helpers every CLI command shares: settings from flags and environment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vault.settings import Settings

__all__ = ["DataDir", "build_settings", "fail"]

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (default: $LINEVAULT_DATA_DIR or ./var)."),
]


def build_settings(data_dir: Path | None = None, **overrides: object) -> Settings:
    values: dict[str, object] = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    return Settings(**values)  # type: ignore[arg-type]


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)
