"""The sans-I/O core shared by :class:`RunnerClient` and :class:`AsyncRunnerClient`.

Nothing here opens a socket or sleeps. Each operation is a *flow*: a generator that
yields what it needs next, a :class:`Call` (send this request, give me the response) or
a :class:`NeedToken` (give me a valid access token), and returns its result. The two
drivers (``_sync.py``, ``_async.py``) differ only in how they perform those steps: with
``httpx.Client`` and a thread lock, or with ``httpx.AsyncClient`` and an asyncio lock.
Token bookkeeping, the lease cache, request building, response interpretation and the
retry decision all live here once.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from linevault_client.errors import ServiceUnavailable, error_for, retry_after

__all__ = [
    "AppSecretProof",
    "Call",
    "Core",
    "Credential",
    "Flow",
    "NeedToken",
    "RetryableResponse",
    "Signature",
]

T = TypeVar("T")

TOKEN_PATH = "/v1/runner/token"  # noqa: S105 - a path, not a password
RETRY_STATUSES = frozenset({429, 502, 503, 504})
RENEW_MARGIN = 30.0  # seconds before expiry a token is replaced


@dataclass(frozen=True)
class Call:
    """One HTTP request to make (relative to the client's base URL)."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    data: Mapping[str, str] | None = field(default=None, repr=False)
    json: Mapping[str, Any] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class NeedToken:
    """The flow needs an access token; ``renew`` forces a new one."""

    renew: bool


Step = Call | NeedToken
# A flow yields steps, is sent back an httpx.Response (for a Call) or a str (for a
# NeedToken), and returns its result.
Flow = Generator[Step, Any, T]


class RetryableResponse(Exception):
    """Raised inside a retry attempt for a response worth another try (429, 502-504)."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


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


@dataclass(frozen=True)
class Signature:
    """``POST .../sign``: the hex HMAC-SHA256 of a message under a widget line's
    signing secret (the secret itself never leaves the vault)."""

    line_id: str
    version: int
    algorithm: str
    signature: str

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Signature:
        return cls(
            line_id=str(doc["line_id"]),
            version=int(doc["version"]),
            algorithm=str(doc["algorithm"]),
            signature=str(doc["signature"]),
        )


@dataclass(frozen=True)
class AppSecretProof:
    """``POST .../appsecret-proof``: Meta's ``appsecret_proof`` for the line's token."""

    line_id: str
    version: int
    appsecret_proof: str

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> AppSecretProof:
        return cls(
            line_id=str(doc["line_id"]),
            version=int(doc["version"]),
            appsecret_proof=str(doc["appsecret_proof"]),
        )


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


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def line_path(tenant_id: str, line_id: str, action: str) -> str:
    return f"/v1/tenants/{quote(tenant_id, safe='')}/lines/{quote(line_id, safe='')}/{action}"


def credential_path(tenant_id: str, line_id: str) -> str:
    return line_path(tenant_id, line_id, "credential")


class Core:
    """Token state, cache, retry policy and the flows; no I/O."""

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        *,
        max_retries: int,
        backoff: float,
        max_backoff: float,
        cache_size: int,
        workflow_id: str | None,
    ) -> None:
        self.client_id = client_id
        self._secret = client_secret
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.workflow_id = workflow_id
        self.cache = _Cache(cache_size)
        self.token: str | None = None
        self.token_deadline = 0.0

    # -- retries (performed by the drivers through stamina) --------------------------

    def retry_options(self) -> dict[str, Any]:
        """Keyword arguments for ``stamina.retry_context``."""
        return {
            "on": self.retry_hook,
            "attempts": self.max_retries + 1,
            "timeout": None,
            "wait_initial": self.backoff,
            "wait_max": self.max_backoff,
            "wait_jitter": self.backoff,
        }

    def retry_hook(self, exc: Exception) -> bool | float:
        """Whether to try again, or after how many seconds (the server's Retry-After)."""
        if isinstance(exc, httpx.TransportError):
            return True
        if isinstance(exc, RetryableResponse):
            response = exc.response
            if response.status_code == 429 and "retry-after" in response.headers:
                return min(retry_after(response, self.backoff), self.max_backoff)
            return True
        return False

    @staticmethod
    def check(response: httpx.Response) -> httpx.Response:
        """The response, or :class:`RetryableResponse` raised for the retry loop."""
        if response.status_code in RETRY_STATUSES:
            raise RetryableResponse(response)
        return response

    @staticmethod
    def unreachable(exc: httpx.TransportError) -> ServiceUnavailable:
        return ServiceUnavailable(f"cannot reach linevault: {type(exc).__name__}")

    # -- tokens ------------------------------------------------------------------------

    def valid_token(self) -> str | None:
        if self.token is not None and time.monotonic() < self.token_deadline:
            return self.token
        return None

    def token_flow(self) -> Flow[str]:
        """``POST /v1/runner/token`` (OAuth 2.0 client credentials)."""
        form = {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self._secret,
        }
        response = yield Call("POST", TOKEN_PATH, data=form)
        if response.status_code != 200:
            raise error_for(response)
        doc = response.json()
        self.token = str(doc["access_token"])
        lifetime = float(doc.get("expires_in", 300))
        self.token_deadline = time.monotonic() + max(
            lifetime - min(RENEW_MARGIN, lifetime / 2), 1.0
        )
        return self.token

    def release_call(self) -> Call | None:
        """Forget the cache and the token; the call that gives the token up, if any."""
        self.cache.drop()
        token, self.token = self.token, None
        return Call("DELETE", TOKEN_PATH, headers=bearer(token)) if token else None

    # -- the fetch ---------------------------------------------------------------------

    def fetch_flow(
        self,
        tenant_id: str,
        line_id: str,
        *,
        workflow_id: str | None,
        run_id: str | None,
        use_cache: bool,
    ) -> Flow[Credential]:
        key = (tenant_id, line_id)
        if use_cache and (hit := self.cache.get(key)) is not None:
            return hit
        response = yield from self._authorized(
            "GET", credential_path(tenant_id, line_id), None, workflow_id, run_id
        )
        if response.status_code != 200:
            if response.status_code in (403, 404, 410, 423):
                self.cache.drop(key)
            raise error_for(response)
        cred = Credential.from_json(response.json())
        self.cache.put(key, cred)
        return cred

    def invalidate(self, tenant_id: str | None, line_id: str | None) -> None:
        self.cache.drop((tenant_id, line_id) if tenant_id and line_id else None)

    def _authorized(
        self,
        method: str,
        url: str,
        body: Mapping[str, Any] | None,
        workflow_id: str | None,
        run_id: str | None,
    ) -> Flow[httpx.Response]:
        """One request with the runner's token (renewed once on 401) and run headers."""
        extra = {"X-Workflow-Id": workflow_id or self.workflow_id, "X-Run-Id": run_id}
        for renewed in (False, True):
            token = yield NeedToken(renew=renewed)
            headers = bearer(token) | {name: value for name, value in extra.items() if value}
            response: httpx.Response = yield Call(method, url, headers=headers, json=body)
            if response.status_code != 401:
                break
        return response

    # -- use without reveal (the secret stays in the vault) ------------------------------

    def sign_flow(
        self,
        tenant_id: str,
        line_id: str,
        message: str,
        *,
        workflow_id: str | None,
        run_id: str | None,
    ) -> Flow[Signature]:
        """``POST .../sign`` (widget lines): never cached, each call is audited."""
        response = yield from self._authorized(
            "POST", line_path(tenant_id, line_id, "sign"), {"message": message}, workflow_id, run_id
        )
        if response.status_code != 200:
            raise error_for(response)
        return Signature.from_json(response.json())

    def proof_flow(
        self, tenant_id: str, line_id: str, *, workflow_id: str | None, run_id: str | None
    ) -> Flow[AppSecretProof]:
        """``POST .../appsecret-proof`` (Instagram, Messenger lines with an app secret)."""
        response = yield from self._authorized(
            "POST", line_path(tenant_id, line_id, "appsecret-proof"), None, workflow_id, run_id
        )
        if response.status_code != 200:
            raise error_for(response)
        return AppSecretProof.from_json(response.json())
