"""Every route an app serves, for the tests that must cover them all.

The permission matrix and the API reference check both walk this list, so a new
endpoint cannot escape either of them.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import BaseRoute, Route

__all__ = ["app_routes"]


def app_routes(routes: Sequence[BaseRoute]) -> list[tuple[str, set[str]]]:
    """Every (path template, methods) of ``app.routes``, through included routers too."""
    found = []
    for context in iter_route_contexts(routes):
        route = context.original_route
        if isinstance(route, APIRoute | Route) and context.path:
            found.append((context.path, set(route.methods or ())))
    assert len(found) > 10, "route discovery found too few routes"
    return found
