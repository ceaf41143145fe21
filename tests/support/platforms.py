"""A local stand-in for Telegram, Instagram and the Graph API (Messenger).

A real HTTP server on 127.0.0.1 (``ThreadingHTTPServer`` in a thread) that answers the
platforms' documented shapes, counts the calls it gets per endpoint, and can be told to
fail: ``fail = "401" | "190" | "500" | "slow"``; :func:`refused_url` gives a URL where
nothing listens (connection refused). Its base URL stands for all three platforms:

- ``GET /bot<token>/getMe`` -> ``{"ok": true, "result": {"id", "is_bot", "first_name",
  "username"}}`` with the token's own bot id (``bot_id`` overrides it: a mismatch);
  401 ``{"ok": false, "error_code": 401, "description": "Unauthorized"}``.
- ``GET /me?fields=user_id,username&access_token=...`` -> ``{"user_id", "username",
  "id"}``.
- ``GET /refresh_access_token?grant_type=ig_refresh_token&access_token=...`` ->
  ``{"access_token", "token_type": "bearer", "expires_in": 5184000}`` (for the
  Instagram refresher; the new token is ``<old>.r<n>``, kept in ``issued``; with
  ``hold_first_refresh`` the first such call waits for ``release_refresh``).
- ``GET /<page_id>?fields=id,name&access_token=...[&appsecret_proof=...]`` -> ``{"id",
  "name"}``; with ``app_secret`` set, a missing or wrong proof is Graph error 100.
- Graph errors: ``{"error": {"message", "type": "OAuthException", "code": 190,
  "error_subcode": 460, "fbtrace_id"}}`` with status 400.

It never logs a request line (they carry tokens). Use :func:`platform_standin`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.settings import make_settings
from vault.settings import Settings

__all__ = ["PlatformStandIn", "platform_standin", "refused_url", "standin_settings"]

GRAPH_190 = {
    "message": "Error validating access token: The session has been invalidated because"
    " the user changed their password.",
    "type": "OAuthException",
    "code": 190,
    "error_subcode": 460,
    "fbtrace_id": "AbCdEfGhIjK",
}


class PlatformStandIn:
    """What the server answers; change the attributes between calls."""

    def __init__(self) -> None:
        self.fail: str | None = None  # "401" | "190" | "500" | "slow"
        self.slow_seconds = 3.0
        self.bot_id: int | None = None  # getMe answers this id instead of the token's
        self.app_secret: str | None = None  # when set, Messenger calls must prove it
        self.calls: Counter[str] = Counter()
        self.queries: list[dict[str, str]] = []
        self.refreshes = 0
        self.issued: list[str] = []  # every token the refresh endpoint handed out
        # The kill test: the first refresh call is answered (the token is issued) only
        # once ``release_refresh`` is set; ``refresh_held`` says it has arrived.
        self.hold_first_refresh = False
        self.refresh_held = threading.Event()
        self.release_refresh = threading.Event()
        # Called (in the server's thread) while a request is being answered: tests use it
        # to look at the vault's database while the vault waits for the platform.
        self.during_call: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self.url = ""

    def count(self, endpoint: str, query: dict[str, str]) -> None:
        with self._lock:
            self.calls[endpoint] += 1
            self.queries.append(query)

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """Count the call (before any delay), then answer as told."""
        endpoint = _endpoint(path)
        self.count(endpoint, query)
        if self.during_call is not None:
            self.during_call()
        if self.fail == "slow":
            time.sleep(self.slow_seconds)
        if self.fail == "500":
            return 500, {"error": "internal"}
        if endpoint == "telegram.getMe":
            return self._telegram(path[len("/bot") : -len("/getMe")])
        if endpoint == "instagram.me":
            return self._graph({"user_id": "17841400000000001", "username": "acme.shop"})
        if endpoint == "instagram.refresh":
            return self._refresh(query)
        return self._page(path.strip("/"), query)

    def _telegram(self, token: str) -> tuple[int, dict[str, Any]]:
        if self.fail in ("401", "190"):
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        bot_id = self.bot_id if self.bot_id is not None else int(token.partition(":")[0])
        result = {"id": bot_id, "is_bot": True, "first_name": "Acme", "username": "acme_bot"}
        return 200, {"ok": True, "result": result}

    def _graph(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.fail in ("401", "190"):
            return 400, {"error": GRAPH_190}
        return 200, body

    def _refresh(self, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        token = f"{query.get('access_token', '')}.r"
        with self._lock:
            self.refreshes += 1
            token += str(self.refreshes)
            hold = self.hold_first_refresh and not self.refresh_held.is_set()
            if self.fail not in ("401", "190"):
                self.issued.append(token)
            if hold:
                self.refresh_held.set()
        if hold:
            self.release_refresh.wait(60)
        body = {"access_token": token, "token_type": "bearer", "expires_in": 5_184_000}
        return self._graph(body)

    def _page(self, page_id: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if self.app_secret is not None:
            token = query.get("access_token", "")
            proof = hmac.new(self.app_secret.encode(), token.encode(), hashlib.sha256)
            if not hmac.compare_digest(query.get("appsecret_proof", ""), proof.hexdigest()):
                error = {"message": "Invalid appsecret_proof provided in the API argument"}
                return 400, {"error": {**error, "type": "GraphMethodException", "code": 100}}
        return self._graph({"id": page_id, "name": "Acme Page"})


def _endpoint(path: str) -> str:
    if path.startswith("/bot") and path.endswith("/getMe"):
        return "telegram.getMe"
    if path == "/me":
        return "instagram.me"
    if path == "/refresh_access_token":
        return "instagram.refresh"
    return "graph.page"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        status, body = self.server.standin.answer(parts.path, query)
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the client gave up (a timeout test)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the request line carries the token."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, standin: PlatformStandIn) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.standin = standin


@contextmanager
def platform_standin() -> Iterator[PlatformStandIn]:
    standin = PlatformStandIn()
    server = _Server(standin)
    standin.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="platform-standin", daemon=True
    )
    thread.start()
    try:
        yield standin
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def refused_url() -> str:
    """A loopback URL where nothing listens: connecting to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def standin_settings(
    tmp_path: Path, db_url: str, standin: PlatformStandIn, **extra: Any
) -> Settings:
    """The tests' settings (tests/conftest.py) with platform checks on and every platform
    at the stand-in: the one way a test turns outbound checks on."""
    values: dict[str, Any] = {
        "provider_checks": True,
        "telegram_api_url": standin.url,
        "graph_api_url": standin.url,
        "instagram_api_url": standin.url,
        "connector_connect_timeout_seconds": 1.0,
        "connector_read_timeout_seconds": 1.0,
        # The background refresher stays off unless a test turns it on (it would refresh
        # due Instagram lines behind the test's back).
        "instagram_refresh_interval_seconds": 0,
        "instagram_refresh_lease_seconds": 5.0,
    }
    return make_settings(tmp_path / "var", db_url, **{**values, **extra})
