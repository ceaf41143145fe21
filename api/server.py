"""The ASGI entry point for ``linevault serve`` (each worker process calls it once)."""

from __future__ import annotations

from fastapi import FastAPI

from api.app import create_app
from api.logs import configure_logging
from vault.settings import Settings

__all__ = ["build_app"]


def build_app() -> FastAPI:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings, serving=True)
