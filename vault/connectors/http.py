"""The connectors' HTTP client: httpx with timeouts and a bounded number of calls.

Every outbound URL carries a token (Telegram puts it in the path, Meta in the query),
so this module never logs a URL and keeps httpx's and httpcore's own loggers (which
log each request line at INFO/DEBUG) at WARNING: :func:`quiet_http_loggers` runs when
a client is made and again in the process's logging setup (``api/logs.py``).
Exceptions are turned into :class:`~vault.connectors.base.HttpUnreachable` naming the
class only: ``str()`` of an httpx error can quote the URL.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping

import httpx

from vault.connectors.base import HttpAnswer, HttpUnreachable

__all__ = ["HTTP_LOGGERS", "HttpxClient", "quiet_http_loggers"]

#: The third-party loggers that would print request lines (with their URLs).
HTTP_LOGGERS = ("httpx", "httpcore")
_MAX_BODY = 64 * 1024


def quiet_http_loggers() -> None:
    """Nothing below WARNING from httpx/httpcore, whatever the root level (debug too)."""
    for name in HTTP_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


class HttpxClient:
    """A shared ``httpx.Client``: connect/read timeouts, at most ``max_concurrent``
    calls at once (a call waits for a slot at most the connect timeout), no redirects
    (a redirect would carry the token to another host), no cookies kept."""

    def __init__(self, *, connect_timeout: float, read_timeout: float, max_concurrent: int) -> None:
        quiet_http_loggers()
        self._slot_wait = connect_timeout
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._client = httpx.Client(
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            follow_redirects=False,
            headers={"Accept": "application/json", "User-Agent": "linevault"},
            trust_env=False,
        )

    def get_json(self, url: str, params: Mapping[str, str] | None = None) -> HttpAnswer:
        if not self._slots.acquire(timeout=self._slot_wait):
            raise HttpUnreachable("no free outbound slot")
        try:
            response = self._client.get(url, params=dict(params or {}))
            content = response.content[:_MAX_BODY]
        except httpx.HTTPError as exc:  # never str(exc): it quotes the URL
            raise HttpUnreachable(type(exc).__name__) from None
        finally:
            self._slots.release()
        try:
            body = json.loads(content)
        except ValueError:
            body = None
        return HttpAnswer(status=response.status_code, body=body)

    def close(self) -> None:
        self._client.close()
