"""The credential fetch, answered in front of FastAPI.

The fetch is the one request that arrives thousands of times a second, and profiling
showed the framework's per-request work (Starlette's and FastAPI's exception, telemetry
and body-limit middleware, route matching, dependency solving, request parsing) costing
more CPU than the fetch itself. :class:`LinevaultApp` recognises exactly
``GET /v1/tenants/{id}/lines/{id}/credential`` with well-formed ids and hands it to
:class:`FetchFastPath`, which runs the same request-id/access-log/metrics and body-limit
middleware as every other request and then the same
:func:`api.routes.credentials.answer_fetch` the documented route calls, so the answers
are identical (tests/api/test_fastpath.py); an unexpected exception becomes the same 500
problem the app's handler gives. Every other request, and any fetch path with malformed
ids, goes on to FastAPI untouched. The same fetch asked the Vault way,
``GET /v1/lines/data/{id}/{id}`` (KV v2), is answered here too, by
:func:`api.routes.vault_compat.answer_kv_read`, which its documented route also calls.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from api.deps import context_from_scope
from api.metrics import Metrics
from api.middleware import BodyLimitMiddleware, RequestContextMiddleware
from api.problems import internal_error_response
from api.routes.credentials import FETCH_PATH, answer_fetch
from api.routes.vault_compat import KV_MOUNT, KV_PATH, answer_kv_read, vault_token_of
from vault.validation import ID_PATTERN

__all__ = ["FetchFastPath", "LinevaultApp"]

log = logging.getLogger("linevault.api")
_FETCH = re.compile(rf"^/v1/tenants/({ID_PATTERN})/lines/({ID_PATTERN})/credential$")
# The same fetch asked the Vault way (KV v2 read, api/routes/vault_compat.py).
_KV_READ = re.compile(rf"^/v1/{KV_MOUNT}/data/({ID_PATTERN})/({ID_PATTERN})$")
_IDS = "linevault.fetch_ids"
_KV = "linevault.kv_read"


class _Route:
    """Names the route for metrics and logs, as FastAPI's route object would."""

    def __init__(self, path: str) -> None:
        self.path = path


_ROUTE, _KV_ROUTE = _Route(FETCH_PATH), _Route(KV_PATH)


class FetchFastPath:
    """The fetch endpoint behind the app's own request-context and body-limit middleware."""

    def __init__(self, *, metrics: Metrics, max_body_bytes: int) -> None:
        self._stack = RequestContextMiddleware(
            BodyLimitMiddleware(self._endpoint, max_bytes=max_body_bytes), metrics=metrics
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._stack(scope, receive, send)

    @staticmethod
    async def _endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        tenant_id, line_id = scope[_IDS]
        headers = {}
        for name, value in scope.get("headers", ()):
            if name in (b"authorization", b"x-vault-token") and name not in headers:
                headers[name] = value.decode("latin-1")
        app: Any = scope["app"]
        kv = scope.get(_KV, False)
        scope["route"] = _KV_ROUTE if kv else _ROUTE
        response: Response
        try:
            if kv:
                response = await answer_kv_read(
                    app.state.runtime,
                    tenant_id=tenant_id,
                    line_id=line_id,
                    token=vault_token_of(headers),
                    ctx=context_from_scope(scope),
                )
            else:
                response = await answer_fetch(
                    app.state.runtime,
                    tenant_id=tenant_id,
                    line_id=line_id,
                    authorization=headers.get(b"authorization"),
                    ctx=context_from_scope(scope),
                )
        except Exception as exc:  # the app's catch-all handler, for this path
            log.error("unhandled error: %s", type(exc).__name__)
            response = internal_error_response()
        await response(scope, receive, send)


class LinevaultApp(FastAPI):
    """FastAPI, with credential fetches answered before its middleware stack.

    ``fetch_fast_path`` is set by :func:`api.app.create_app`; None sends fetches
    through FastAPI's documented route like any other request.
    """

    fetch_fast_path: FetchFastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.fetch_fast_path
        if fast is not None and scope["type"] == "http" and scope["method"] == "GET":
            path = scope["path"]
            match = _FETCH.match(path) or _KV_READ.match(path)
            if match is not None:
                scope["app"] = self
                scope[_IDS] = match.groups()
                scope[_KV] = match.re is _KV_READ
                await fast(scope, receive, send)
                return
        await super().__call__(scope, receive, send)
