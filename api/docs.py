"""The API docs (Swagger UI at /docs, ReDoc at /redoc) from local files, and ``GET /``.

The pages' JavaScript and CSS come from the installed ``fastapi-offline`` package (its
bundled Swagger UI and ReDoc builds, served under ``/static/docs``), never from a CDN,
so the docs work on a host with no network. ReDoc's Google Fonts and Swagger UI's
online validator badge are turned off for the same reason, and both pages carry a
Content-Security-Policy that lets the browser fetch nothing from another host (ReDoc's
sidebar credit would otherwise load its logo from the vendor's CDN).

``GET /`` sends a person somewhere useful: the console (``/ui/``) when the app mounts
one, else the docs. :func:`entry_points` is the one list of those places, also printed
by ``linevault serve``.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["CONSOLE_PATH", "DOCS_STATIC", "entry_points", "install_docs"]

DOCS_STATIC = "/static/docs"
CONSOLE_PATH = "/ui/"
_ASSETS = Path(fastapi_offline.__file__).parent / "static"
# Both pages are an inline bootstrap script plus the local bundles; ReDoc renders in a
# blob: worker. Nothing may come from, or go to, another host.
_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline';"
    " img-src 'self' data:; font-src 'self' data:; connect-src 'self';"
    " worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def _local_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = _CSP
    return page


def entry_points(app: FastAPI) -> dict[str, str]:
    """Where a person goes, by name: the API, its docs, and the console when mounted."""
    places = {"API": "/v1/", "API docs (Swagger UI)": "/docs", "API docs (ReDoc)": "/redoc"}
    paths = (str(getattr(route, "path", "")) for route in app.routes)
    if any(p == CONSOLE_PATH.rstrip("/") or p.startswith(CONSOLE_PATH) for p in paths):
        places["console"] = CONSOLE_PATH
    return places


def install_docs(app: FastAPI) -> None:
    """Mount the local assets and the /docs, /docs/oauth2-redirect, /redoc and / routes
    (create the app with ``docs_url=None, redoc_url=None``)."""
    app.mount(DOCS_STATIC, StaticFiles(directory=_ASSETS), name="docs-static")
    title = app.title

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _local_only(
            get_swagger_ui_html(
                openapi_url=f"{root}/openapi.json",
                title=f"{title} - API docs",
                oauth2_redirect_url=f"{root}/docs/oauth2-redirect",
                swagger_js_url=f"{root}{DOCS_STATIC}/swagger-ui-bundle.js",
                swagger_css_url=f"{root}{DOCS_STATIC}/swagger-ui.css",
                swagger_favicon_url=f"{root}{DOCS_STATIC}/favicon.png",
                swagger_ui_parameters={"validatorUrl": None},
            )
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _local_only(
            get_redoc_html(
                openapi_url=f"{root}/openapi.json",
                title=f"{title} - API reference",
                redoc_js_url=f"{root}{DOCS_STATIC}/redoc.standalone.js",
                redoc_favicon_url=f"{root}{DOCS_STATIC}/favicon.png",
                with_google_fonts=False,
            )
        )

    @app.get("/", include_in_schema=False)
    async def home(request: Request) -> RedirectResponse:
        places = entry_points(request.app)
        target = places.get("console", places["API docs (Swagger UI)"])
        return RedirectResponse(f"{request.scope.get('root_path', '')}{target}", status_code=307)
