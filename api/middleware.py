"""Pure ASGI middleware: body size limit, request ids, access log, metrics, headers.

The size limit runs before any routing or parsing: a declared ``Content-Length`` over the
limit is refused at once, and a streamed body is cut off the moment it passes the limit.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.metrics import Metrics
from api.problems import problem_body

__all__ = ["BodyLimitMiddleware", "RequestContextMiddleware"]

log = logging.getLogger("linevault.access")
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


async def _send_problem(send: Send, status: int, code: str, title: str, detail: str) -> None:
    """A problem answered before the app runs (json.dumps' own spacing, as always)."""
    body = json.dumps(problem_body(status, code, title, detail)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.detail = f"request bodies are limited to {max_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        announced = False  # a request with neither header has no body (RFC 9112, 6.3)
        for name, value in scope.get("headers", ()):
            if name == b"transfer-encoding":
                announced = True
            elif name == b"content-length":
                announced = True
                try:
                    declared = int(value)
                except ValueError:
                    await _send_problem(
                        send, 400, "invalid_request", "Invalid request", "bad Content-Length"
                    )
                    return
                if declared > self.max_bytes:
                    await _send_problem(
                        send, 413, "payload_too_large", "Payload too large", self.detail
                    )
                    return
        if not announced:  # nothing to count (every fetch): no wrapper on its answer
            await self.app(scope, receive, send)
            return
        body = _LimitedBody(receive, send, max_bytes=self.max_bytes, detail=self.detail)
        await self.app(scope, body.receive, body.send)


class _LimitedBody:
    """One request's streamed body, counted: past the limit, answer 413 ourselves and
    tell the app the client went away, so no route or body parser ever sees the
    oversized payload."""

    __slots__ = ("_detail", "_max_bytes", "_receive", "_send", "received", "refused", "started")

    def __init__(self, receive: Receive, send: Send, *, max_bytes: int, detail: str) -> None:
        self._receive = receive
        self._send = send
        self._max_bytes = max_bytes
        self._detail = detail
        self.received = 0
        self.started = False
        self.refused = False

    async def receive(self) -> Message:
        if self.refused:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self._max_bytes:
                self.refused = True
                if not self.started:
                    await _send_problem(
                        self._send, 413, "payload_too_large", "Payload too large", self._detail
                    )
                return {"type": "http.disconnect"}
        return message

    async def send(self, message: Message) -> None:
        if self.refused:
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


class RequestContextMiddleware:
    """Gives each request an id, logs one access line and counts it."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = (
            incoming
            if incoming and _SAFE_REQUEST_ID.match(incoming)
            else ("req_" + secrets.token_hex(12))
        )
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        start = time.perf_counter()
        status = 500

        async def wrapped_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                headers.append((b"x-request-id", request_id.encode()))
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                headers.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, wrapped_send)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "-")
            self.metrics.observe_request(method, template, status, elapsed)
            if log.isEnabledFor(logging.INFO):
                client = scope.get("client")
                log.info(
                    "request",
                    extra={
                        "request_id": request_id,
                        "method": method,
                        "path": scope.get("path", ""),
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                        "client": client[0] if client else None,
                    },
                )
