"""A typed Python client for workflow runners (httpx; sync and async).

Usage::

    with RunnerClient("https://vault.internal", client_id, client_secret) as vault:
        cred = vault.fetch(tenant_id, line_id, workflow_id="wf-1", run_id="run-9")
        bot_token = cred.credential["bot_token"]

What it does for the caller:

- OAuth 2.0 client credentials: gets a token on first use, renews it shortly before it
  expires and once more when the server says it is no longer valid (rotated secret,
  revoked token), then gives up with :class:`AuthenticationError`.
- An in-memory cache per (tenant, line), bounded in size and by the server's
  ``lease_ttl`` (and by the credential's own ``expires_at``); ``lease_ttl`` 0 disables it.
  Only the server-side checks are immediate: a cached answer may be used for up to
  ``lease_ttl`` seconds after a revocation, which is what the lease means.
- Retries with exponential backoff and jitter on 429 (honouring ``Retry-After``), 502,
  503, 504 and connection errors; typed errors for everything else.

It depends on httpx only and imports nothing else from linevault, so it can be vendored.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

__all__ = [
    "AsyncRunnerClient",
    "AuditUnavailable",
    "AuthenticationError",
    "Credential",
    "LinevaultError",
    "NotGranted",
    "RateLimited",
    "Revoked",
    "RunnerClient",
    "ServiceUnavailable",
]

_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_RENEW_MARGIN = 30.0  # seconds before expiry a token is replaced


class LinevaultError(Exception):
    """Any refusal or failure; ``code`` is the server's machine code when it sent one."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class AuthenticationError(LinevaultError):
    """401: bad client credentials, or a token the server no longer accepts."""


class NotGranted(LinevaultError):
    """403/404: this runner holds no grant for the line (or it does not exist)."""


class Revoked(LinevaultError):
    """410: the line's credential was revoked and destroyed."""


class RateLimited(LinevaultError):
    """429 after every retry; ``retry_after`` is the server's hint in seconds."""

    def __init__(self, message: str, *, retry_after: float, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class AuditUnavailable(LinevaultError):
    """503 audit_unavailable after every retry: the vault refuses to answer unaudited."""


class ServiceUnavailable(LinevaultError):
    """Another 5xx or a connection failure after every retry."""


@dataclass(frozen=True)
class Credential:
    line_id: str
    tenant_id: str
    type: str
    version: int
    credential: Mapping[str, Any] = field(repr=False)
    expires_at: datetime | None
    lease_ttl: int

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Credential:
        expires = doc.get("expires_at")
        return cls(
            line_id=str(doc["line_id"]),
            tenant_id=str(doc["tenant_id"]),
            type=str(doc["type"]),
            version=int(doc["version"]),
            credential=dict(doc["credential"]),
            expires_at=datetime.fromisoformat(expires.replace("Z", "+00:00")) if expires else None,
            lease_ttl=int(doc.get("lease_ttl") or 0),
        )

    def cache_seconds(self) -> float:
        seconds = float(self.lease_ttl)
        if self.expires_at is not None:
            seconds = min(seconds, (self.expires_at - datetime.now(UTC)).total_seconds())
        return max(0.0, seconds)


class _Cache:
    """A small thread-safe LRU of fetched credentials with per-entry deadlines."""

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._items: OrderedDict[tuple[str, str], tuple[Credential, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> Credential | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if time.monotonic() >= item[1]:
                del self._items[key]
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: tuple[str, str], value: Credential) -> None:
        seconds = value.cache_seconds()
        if self._max <= 0 or seconds <= 0:
            return
        with self._lock:
            self._items[key] = (value, time.monotonic() + seconds)
            self._items.move_to_end(key)
            while len(self._items) > self._max:
                self._items.popitem(last=False)

    def drop(self, key: tuple[str, str] | None = None) -> None:
        with self._lock:
            if key is None:
                self._items.clear()
            else:
                self._items.pop(key, None)


_ERRORS: Mapping[int, type[LinevaultError]] = {
    401: AuthenticationError,
    403: NotGranted,
    404: NotGranted,
    410: Revoked,
}


def _error_for(response: httpx.Response) -> LinevaultError:
    try:
        doc = response.json()
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    code = doc.get("code") or doc.get("error")
    message = str(
        doc.get("detail") or doc.get("error_description") or code or response.reason_phrase
    )
    status = response.status_code
    kw: dict[str, Any] = {"status": status, "code": code}
    if status == 429:
        return RateLimited(message, retry_after=_retry_after(response, 1.0), **kw)
    if status == 503 and code == "audit_unavailable":
        return AuditUnavailable(message, **kw)
    error = _ERRORS.get(status, ServiceUnavailable if status >= 500 else LinevaultError)
    return error(message, **kw)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _retry_after(response: httpx.Response, default: float) -> float:
    try:
        return max(0.0, float(response.headers.get("retry-after", default)))
    except ValueError:
        return default


class _Core:
    """Everything but the I/O, shared by the sync and async clients."""

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        *,
        max_retries: int,
        backoff: float,
        max_backoff: float,
        cache_size: int,
    ) -> None:
        self.client_id = client_id
        self._secret = client_secret
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.cache = _Cache(cache_size)
        self.token: str | None = None
        self.token_deadline = 0.0

    def token_form(self) -> dict[str, str]:
        return {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self._secret,
        }

    def token_valid(self) -> bool:
        return self.token is not None and time.monotonic() < self.token_deadline

    def accept_token(self, response: httpx.Response) -> str:
        doc = response.json()
        self.token = str(doc["access_token"])
        lifetime = float(doc.get("expires_in", 300))
        self.token_deadline = time.monotonic() + max(
            lifetime - min(_RENEW_MARGIN, lifetime / 2), 1.0
        )
        return self.token

    def delay(self, attempt: int, response: httpx.Response | None) -> float:
        base = min(self.max_backoff, self.backoff * (2**attempt))
        wait = base / 2 + random.uniform(0, base / 2)  # noqa: S311 - jitter, not crypto
        if response is not None and response.status_code == 429:
            wait = max(wait, min(_retry_after(response, wait), self.max_backoff))
        return float(wait)

    @staticmethod
    def path(tenant_id: str, line_id: str) -> str:
        return f"/v1/tenants/{quote(tenant_id, safe='')}/lines/{quote(line_id, safe='')}/credential"

    @staticmethod
    def headers(token: str, workflow_id: str | None, run_id: str | None) -> dict[str, str]:
        headers = _bearer(token)
        if workflow_id:
            headers["X-Workflow-Id"] = workflow_id
        if run_id:
            headers["X-Run-Id"] = run_id
        return headers


class RunnerClient:
    """Synchronous client; safe to share between threads."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        timeout: float = 10.0,
        max_retries: int = 3,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        cache_size: int = 1024,
        workflow_id: str | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self._core = _Core(
            client_id, client_secret, max_retries=max_retries, backoff=backoff,
            max_backoff=max_backoff, cache_size=cache_size,
        )  # fmt: skip
        self._http = http or httpx.Client(base_url=base_url, timeout=timeout)
        self._workflow_id = workflow_id
        self._lock = threading.Lock()

    def __enter__(self) -> RunnerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, method: str, url: str, **kw: Any) -> httpx.Response:
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                got = self._http.request(method, url, **kw)
            except httpx.TransportError as exc:
                if attempt >= self._core.max_retries:
                    raise ServiceUnavailable(
                        f"cannot reach linevault: {type(exc).__name__}"
                    ) from None
            else:
                if got.status_code not in _RETRY_STATUSES or attempt >= self._core.max_retries:
                    return got
                response = got
            time.sleep(self._core.delay(attempt, response))
            attempt += 1

    def token(self, *, renew: bool = False) -> str:
        """A valid access token, fetched or renewed when needed."""
        with self._lock:
            if not renew and self._core.token_valid():
                assert self._core.token is not None
                return self._core.token
            response = self._send("POST", "/v1/runner/token", data=self._core.token_form())
            if response.status_code != 200:
                raise _error_for(response)
            return self._core.accept_token(response)

    def fetch(
        self,
        tenant_id: str,
        line_id: str,
        *,
        workflow_id: str | None = None,
        run_id: str | None = None,
        use_cache: bool = True,
    ) -> Credential:
        key = (tenant_id, line_id)
        if use_cache and (hit := self._core.cache.get(key)) is not None:
            return hit
        for renewed in (False, True):
            headers = self._core.headers(
                self.token(renew=renewed), workflow_id or self._workflow_id, run_id
            )
            response = self._send("GET", self._core.path(tenant_id, line_id), headers=headers)
            if response.status_code == 401 and not renewed:
                continue
            break
        if response.status_code != 200:
            if response.status_code in (403, 404, 410):
                self._core.cache.drop(key)
            raise _error_for(response)
        cred = Credential.from_json(response.json())
        self._core.cache.put(key, cred)
        return cred

    def invalidate(self, tenant_id: str | None = None, line_id: str | None = None) -> None:
        """Forget one cached credential, or all of them."""
        self._core.cache.drop((tenant_id, line_id) if tenant_id and line_id else None)

    def close(self) -> None:
        """Give the token up (best effort) and close the connection pool."""
        self._core.cache.drop()
        token, self._core.token = self._core.token, None
        try:
            if token:
                self._http.delete("/v1/runner/token", headers=_bearer(token))
        except httpx.HTTPError:
            pass
        finally:
            self._http.close()


class AsyncRunnerClient:
    """The same client for asyncio code."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        timeout: float = 10.0,
        max_retries: int = 3,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        cache_size: int = 1024,
        workflow_id: str | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._core = _Core(
            client_id, client_secret, max_retries=max_retries, backoff=backoff,
            max_backoff=max_backoff, cache_size=cache_size,
        )  # fmt: skip
        self._http = http or httpx.AsyncClient(base_url=base_url, timeout=timeout)
        self._workflow_id = workflow_id
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> AsyncRunnerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, method: str, url: str, **kw: Any) -> httpx.Response:
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                got = await self._http.request(method, url, **kw)
            except httpx.TransportError as exc:
                if attempt >= self._core.max_retries:
                    raise ServiceUnavailable(
                        f"cannot reach linevault: {type(exc).__name__}"
                    ) from None
            else:
                if got.status_code not in _RETRY_STATUSES or attempt >= self._core.max_retries:
                    return got
                response = got
            await asyncio.sleep(self._core.delay(attempt, response))
            attempt += 1

    async def token(self, *, renew: bool = False) -> str:
        async with self._lock:
            if not renew and self._core.token_valid():
                assert self._core.token is not None
                return self._core.token
            response = await self._send("POST", "/v1/runner/token", data=self._core.token_form())
            if response.status_code != 200:
                raise _error_for(response)
            return self._core.accept_token(response)

    async def fetch(
        self,
        tenant_id: str,
        line_id: str,
        *,
        workflow_id: str | None = None,
        run_id: str | None = None,
        use_cache: bool = True,
    ) -> Credential:
        key = (tenant_id, line_id)
        if use_cache and (hit := self._core.cache.get(key)) is not None:
            return hit
        for renewed in (False, True):
            token = await self.token(renew=renewed)
            headers = self._core.headers(token, workflow_id or self._workflow_id, run_id)
            response = await self._send("GET", self._core.path(tenant_id, line_id), headers=headers)
            if response.status_code == 401 and not renewed:
                continue
            break
        if response.status_code != 200:
            if response.status_code in (403, 404, 410):
                self._core.cache.drop(key)
            raise _error_for(response)
        cred = Credential.from_json(response.json())
        self._core.cache.put(key, cred)
        return cred

    def invalidate(self, tenant_id: str | None = None, line_id: str | None = None) -> None:
        self._core.cache.drop((tenant_id, line_id) if tenant_id and line_id else None)

    async def aclose(self) -> None:
        self._core.cache.drop()
        token, self._core.token = self._core.token, None
        try:
            if token:
                await self._http.delete("/v1/runner/token", headers=_bearer(token))
        except httpx.HTTPError:
            pass
        finally:
            await self._http.aclose()
