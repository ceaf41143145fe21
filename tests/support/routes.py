"""Every route an app serves, for the tests that must cover them all.

The permission matrix and the API reference check both walk this list, so a new
endpoint cannot escape either of them.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import BaseRoute, Route

__all__ = ["app_routes", "console_routes"]

CONSOLE_PREFIX = "/ui/"


def _all_routes(routes: Sequence[BaseRoute]) -> list[tuple[str, set[str]]]:
    found = []
    for context in iter_route_contexts(routes):
        route = context.original_route
        if isinstance(route, APIRoute | Route) and context.path:
            found.append((context.path, set(route.methods or ())))
    return found


def app_routes(routes: Sequence[BaseRoute]) -> list[tuple[str, set[str]]]:
    """Every (path template, methods) of ``app.routes``, through included routers too,
    but the console's pages (``/ui/``), which tests/security/test_console_matrix.py
    holds to its own table (cookies and forms, not bearer tokens and JSON)."""
    found = [(p, m) for p, m in _all_routes(routes) if not p.startswith(CONSOLE_PREFIX)]
    assert len(found) > 10, "route discovery found too few routes"
    return found


def console_routes(routes: Sequence[BaseRoute]) -> list[tuple[str, set[str]]]:
    """Every (path template, methods) of the console's pages."""
    found = [(p, m) for p, m in _all_routes(routes) if p.startswith(CONSOLE_PREFIX)]
    assert len(found) > 5, "route discovery found too few console routes"
    return found
