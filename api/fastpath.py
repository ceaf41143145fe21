"""The credential fetch, answered before FastAPI's routing and dependency machinery.

The fetch is the one request that arrives thousands of times a second, and profiling
showed FastAPI's per-request work (exception and exit-stack middleware, route matching,
dependency solving, request parsing) costing more CPU than the fetch itself. This pure
ASGI middleware recognises exactly ``GET /v1/tenants/{id}/lines/{id}/credential`` with
well-formed ids and calls the same :func:`api.routes.credentials.answer_fetch` the
documented route calls, so the answers are identical; every other request, and any fetch
path with malformed ids, goes on to FastAPI untouched. It sits inside the request-id,
access-log, metrics and body-limit middleware, so those still apply.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from api.deps import context_from_scope
from api.routes.credentials import FETCH_PATH, answer_fetch

__all__ = ["FetchFastPath"]

_FETCH = re.compile(r"^/v1/tenants/([A-Za-z0-9_-]{1,64})/lines/([A-Za-z0-9_-]{1,64})/credential$")


class _FetchRoute:
    """Names the route for metrics and logs, as FastAPI's route object would."""

    path = FETCH_PATH


_ROUTE = _FetchRoute()


class FetchFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            match = _FETCH.match(scope["path"])
            if match is not None:
                await self._fetch(scope, receive, send, match.group(1), match.group(2))
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def _fetch(
        scope: Scope, receive: Receive, send: Send, tenant_id: str, line_id: str
    ) -> None:
        authorization = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        app: Any = scope["app"]
        scope["route"] = _ROUTE
        response = await answer_fetch(
            app.state.runtime,
            tenant_id=tenant_id,
            line_id=line_id,
            authorization=authorization,
            ctx=context_from_scope(scope),
        )
        await response(scope, receive, send)
