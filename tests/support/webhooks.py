"""A local webhook receiver for tests: a real HTTP server on loopback.

It records every request (headers and body), answers ``status`` (503 while "down"),
may sleep before answering, and can say which events it saw once each when
deduplicating on ``webhook-id``, as a receiver should.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from standardwebhooks.webhooks import Webhook as Verifier

from tests.support.settings import make_settings
from vault.settings import Settings

__all__ = ["Delivery", "Receiver", "receiver", "webhook_settings"]


def webhook_settings(tmp_path: Path, db_url: str, **overrides: Any) -> Settings:
    """Test settings whose dispatcher may deliver to a receiver on loopback."""
    return make_settings(tmp_path / "var", db_url, **{"webhook_allow_private": True, **overrides})


@dataclass(frozen=True)
class Delivery:
    headers: dict[str, str]
    body: str

    @property
    def event(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.body)
        return doc

    def verify(self, secret: str) -> dict[str, Any]:
        """Check the signature exactly as a receiver would (the standardwebhooks package)."""
        doc: dict[str, Any] = Verifier(secret).verify(self.body, self.headers)
        return doc


@dataclass
class Receiver:
    port: int = 0
    status: int = 200
    delay: float = 0.0
    received: list[Delivery] = field(default_factory=list)
    arrived: list[str] = field(default_factory=list)  # webhook-ids, as requests come in
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def record(self, headers: dict[str, str], body: str) -> None:
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            self.received.append(Delivery(headers, body))

    def deliveries(self) -> list[Delivery]:
        with self.lock:
            return list(self.received)

    def accepted(self) -> list[Delivery]:
        """What a receiver keeps: 2xx answers only, first of each ``webhook-id``."""
        seen: set[str] = set()
        out = []
        for d in self.deliveries():
            if d.headers.get("x-test-status", "200").startswith("2"):
                key = d.headers["webhook-id"]
                if key not in seen:
                    seen.add(key)
                    out.append(d)
        return out

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.accepted()
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"received {len(self.accepted())} of {count} deliveries")


@contextmanager
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0"))).decode()
            headers = {k.lower(): v for k, v in self.headers.items()}
            with state.lock:
                state.arrived.append(headers.get("webhook-id", ""))
            status = state.status
            headers["x-test-status"] = str(status)
            state.record(headers, body)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
