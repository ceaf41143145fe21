"""The synchronous driver of the sans-I/O core (``httpx.Client``, a thread lock)."""

from __future__ import annotations

import threading
from typing import TypeVar

import httpx
import stamina

from linevault_client._core import (
    AppSecretProof,
    Call,
    Core,
    Credential,
    Flow,
    NeedToken,
    RetryableResponse,
    Signature,
)

__all__ = ["RunnerClient"]

T = TypeVar("T")


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
        self._core = Core(
            client_id, client_secret, max_retries=max_retries, backoff=backoff,
            max_backoff=max_backoff, cache_size=cache_size, workflow_id=workflow_id,
        )  # fmt: skip
        self._http = http or httpx.Client(base_url=base_url, timeout=timeout)
        self._lock = threading.Lock()

    def __enter__(self) -> RunnerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, call: Call) -> httpx.Response:
        core = self._core
        try:
            for attempt in stamina.retry_context(**core.retry_options()):
                with attempt:
                    return core.check(
                        self._http.request(
                            call.method,
                            call.url,
                            headers=call.headers,
                            data=call.data,
                            json=call.json,
                        )
                    )
        except RetryableResponse as exc:
            return exc.response
        except httpx.TransportError as exc:
            raise core.unreachable(exc) from None
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _run(self, flow: Flow[T]) -> T:
        try:
            step = next(flow)
            while True:
                if isinstance(step, NeedToken):
                    step = flow.send(self.token(renew=step.renew))
                else:
                    step = flow.send(self._send(step))
        except StopIteration as done:
            result: T = done.value
            return result

    def token(self, *, renew: bool = False) -> str:
        """A valid access token, fetched or renewed when needed."""
        with self._lock:
            if not renew and (token := self._core.valid_token()) is not None:
                return token
            return self._run(self._core.token_flow())

    def fetch(
        self,
        tenant_id: str,
        line_id: str,
        *,
        workflow_id: str | None = None,
        run_id: str | None = None,
        use_cache: bool = True,
    ) -> Credential:
        """The line's current credential (from the lease cache when still valid)."""
        return self._run(
            self._core.fetch_flow(
                tenant_id, line_id, workflow_id=workflow_id, run_id=run_id, use_cache=use_cache
            )
        )

    def sign(
        self,
        tenant_id: str,
        line_id: str,
        message: str,
        *,
        workflow_id: str | None = None,
        run_id: str | None = None,
    ) -> Signature:
        """Have the vault sign ``message`` (UTF-8) with a widget line's signing secret:
        hex HMAC-SHA256. Works with a ``use`` grant, whose fetch has no signing secret."""
        return self._run(
            self._core.sign_flow(
                tenant_id, line_id, message, workflow_id=workflow_id, run_id=run_id
            )
        )

    def appsecret_proof(
        self,
        tenant_id: str,
        line_id: str,
        *,
        workflow_id: str | None = None,
        run_id: str | None = None,
    ) -> AppSecretProof:
        """Meta's ``appsecret_proof`` for an Instagram or Messenger line, computed by the
        vault with the line's app secret (which a ``use`` grant's fetch leaves out)."""
        return self._run(
            self._core.proof_flow(tenant_id, line_id, workflow_id=workflow_id, run_id=run_id)
        )

    def invalidate(self, tenant_id: str | None = None, line_id: str | None = None) -> None:
        """Forget one cached credential, or all of them."""
        self._core.invalidate(tenant_id, line_id)

    def close(self) -> None:
        """Give the token up (best effort) and close the connection pool."""
        call = self._core.release_call()
        try:
            if call is not None:
                self._http.request(call.method, call.url, headers=call.headers)
        except httpx.HTTPError:
            pass
        finally:
            self._http.close()
