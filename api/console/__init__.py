"""The console: web pages for people under ``/ui/`` (docs/console.md).

Server-rendered (Jinja2 templates, one CSS file and one small script, all served from
``/ui/static``; no build step, no CDN) on the same domain services and permission table
as the API. :mod:`api.console.web` holds what every page shares.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from api.console import (
    account,
    audit,
    lines,
    members,
    runners,
    signin,
    tenant_settings,
    tenants,
)
from api.console.web import CONSOLE_PREFIX

__all__ = ["install_console"]

_STATIC = Path(__file__).with_name("static")
ROUTERS = (
    signin.router,
    tenants.router,
    lines.router,
    account.router,
    runners.router,
    members.router,
    tenant_settings.router,
    audit.router,
)


def install_console(app: FastAPI) -> None:
    """Mount the console's pages and its static files."""
    for router in ROUTERS:
        app.include_router(router)
    app.mount(f"{CONSOLE_PREFIX}/static", StaticFiles(directory=_STATIC), name="console-static")
