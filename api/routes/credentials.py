"""``GET /v1/tenants/{tenant_id}/lines/{line_id}/credential``: runners fetch a secret;
``POST .../sign`` and ``POST .../appsecret-proof``: runners use one without receiving it.

The hot path. The route is ``async``: a fetch served from the decision cache reads
nothing and awaits the audit group commit as a future, so no worker thread is held (or
woken) for it; only a cache miss runs its one SQL read in a thread. It takes nothing
from dependency injection but the request and writes its JSON by hand; everything that
decides access lives in :class:`vault.runners.CredentialFetcher` (``runtime.fetcher``).
(Measured against a sync route in the thread pool: see docs/benchmarks.md.)

The uses without reveal (:mod:`vault.runners.use`) run the same fetcher through
:meth:`~vault.runners.CredentialFetcher.use`, so their denials, rate limit and audit are
the fetch's; only the action (``credential.sign``, ``credential.proof``) and the answer
differ. A line of another type (or without an ``app_secret``) is 409 ``conflict``.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.concurrency import run_in_threadpool

from api.deps import credentials_for, get_runtime, request_context
from api.metrics import FETCHES
from api.problems import problem_for, problem_response
from kms.errors import KmsError
from vault.audit.events import RequestContext
from vault.clock import rfc3339
from vault.errors import Unauthenticated, Unavailable, VaultError
from vault.identity.sessions import SESSION_TOKEN_PREFIX
from vault.runners.fetch import FetchedCredential
from vault.runners.usage import FETCH_ACTION
from vault.runners.use import PROOF, LineUse, UsedCredential, sign_use
from vault.runtime import Runtime
from vault.storage.engine import unit_of_work

__all__ = ["FETCH_PATH", "answer_fetch", "answer_use", "router", "run_fetch", "run_use"]

FETCH_PATH = "/v1/tenants/{tenant_id}/lines/{line_id}/credential"
SIGN_PATH = "/v1/tenants/{tenant_id}/lines/{line_id}/sign"
PROOF_PATH = "/v1/tenants/{tenant_id}/lines/{line_id}/appsecret-proof"

_T = TypeVar("_T")

router = APIRouter(tags=["credentials"])


class CredentialOut(BaseModel):
    line_id: str
    tenant_id: str
    type: str
    version: int
    credential: dict[str, object] = Field(description="The secret fields of this line type.")
    expires_at: str | None = Field(description="When the credential itself expires, if known.")
    lease_ttl: int = Field(description="Seconds a client may cache this answer.")


def _refuse_humans(
    runtime: Runtime,
    token: str,
    tenant_id: str,
    line_id: str,
    ctx: RequestContext,
    *,
    action: str = FETCH_ACTION,
) -> None:
    """A live human session gets 403 (audited); anything else falls through to 401."""
    with unit_of_work(runtime.readonly_sessions) as session:
        human = runtime.authenticator.store.resolve(session, token, now=runtime.clock.now())
    if human is not None:
        runtime.fetcher.refuse_user(
            user_id=human.user_id, tenant_id=tenant_id, line_id=line_id, context=ctx, action=action
        )


async def _as_runner(
    runtime: Runtime,
    serve: Callable[[], Awaitable[_T]],
    *,
    token: str | None,
    ids: tuple[str, str],
    ctx: RequestContext,
    api: str,
    action: str,
) -> _T:
    """``serve`` for a runner: a human session is refused (audited) first; timed."""
    start, outcome = time.perf_counter(), "success"
    try:
        if token and token.startswith(SESSION_TOKEN_PREFIX):
            await run_in_threadpool(_refuse_humans, runtime, token, *ids, ctx, action=action)
        return await serve()
    except Exception as exc:
        outcome = type(exc).__name__
        raise
    finally:
        FETCHES(api, outcome).observe(time.perf_counter() - start)


async def run_fetch(
    runtime: Runtime,
    *,
    token: str | None,
    tenant_id: str,
    line_id: str,
    ctx: RequestContext,
    api: str = "native",
) -> FetchedCredential:
    """The fetch as every API that hands out secrets runs it (this route, the fast path
    and the Vault-compatible KV read): a human session is refused (audited), then
    :class:`vault.runners.CredentialFetcher` decides, audits and returns the secret, or
    raises the typed error each API renders in its own shape."""
    return await _as_runner(
        runtime,
        lambda: runtime.fetcher.fetch(
            token=token, tenant_id=tenant_id, line_id=line_id, context=ctx
        ),
        token=token,
        ids=(tenant_id, line_id),
        ctx=ctx,
        api=api,
        action=FETCH_ACTION,
    )


async def run_use(
    runtime: Runtime,
    how: LineUse,
    *,
    token: str | None,
    tenant_id: str,
    line_id: str,
    ctx: RequestContext,
) -> UsedCredential:
    """A use without reveal (sign, appsecret_proof), run exactly as :func:`run_fetch`."""
    return await _as_runner(
        runtime,
        lambda: runtime.fetcher.use(
            how, token=token, tenant_id=tenant_id, line_id=line_id, context=ctx
        ),
        token=token,
        ids=(tenant_id, line_id),
        ctx=ctx,
        api=how.action.partition(".")[2],
        action=how.action,
    )


async def answer_fetch(
    runtime: Runtime,
    *,
    tenant_id: str,
    line_id: str,
    authorization: str | None,
    ctx: RequestContext,
) -> Response:
    """The whole fetch, errors included, as one response.

    Shared by the documented route and by :class:`api.fastpath.FetchFastPath`, which
    answers fetches before FastAPI's routing and dependency machinery (most of a fetch's
    CPU otherwise; see docs/benchmarks.md), so both give byte-identical answers.
    """
    token = credentials_for("bearer", authorization)
    try:
        got = await run_fetch(runtime, token=token, tenant_id=tenant_id, line_id=line_id, ctx=ctx)
    except (VaultError, KmsError, DBAPIError, PoolTimeout) as exc:
        return _refusal(exc)
    # The credential is the stored canonical JSON object, spliced in as is.
    body = b"".join(
        (
            _head(got.line_id, got.tenant_id, got.type, got.version),
            got.credential_json,
            _tail(got.expires_at, got.lease_ttl),
        )
    )
    return CredentialResponse(body)


def _refusal(exc: Exception) -> Response:
    """A fetch's (or use's) typed error as the problem the runner gets."""
    if isinstance(exc, Unauthenticated):
        return problem_response(
            401,
            "unauthenticated",
            "Authentication required",
            exc.detail,
            headers={"WWW-Authenticate": 'Bearer realm="linevault", error="invalid_token"'},
        )
    if isinstance(exc, VaultError | KmsError):
        return problem_for(exc)
    # A refusal's own database work (throttle, flood).
    return problem_for(Unavailable("the database is unavailable"))


async def answer_use(
    runtime: Runtime,
    how: LineUse,
    *,
    tenant_id: str,
    line_id: str,
    authorization: str | None,
    ctx: RequestContext,
) -> Response:
    """A use without reveal, errors included (the fetch's problems), as one response."""
    token = credentials_for("bearer", authorization)
    try:
        got = await run_use(
            runtime, how, token=token, tenant_id=tenant_id, line_id=line_id, ctx=ctx
        )
    except (VaultError, KmsError, DBAPIError, PoolTimeout) as exc:
        return _refusal(exc)
    return JSONResponse(
        {"line_id": got.line_id, "version": got.version, **got.values},
        headers={"Cache-Control": "no-store"},
    )


class CredentialResponse(Response):
    """A 200 fetch answer: the same headers, in the same order, as
    ``Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})``
    without Starlette's per-response header building (this is the hot path)."""

    media_type = "application/json"

    def __init__(self, body: bytes) -> None:
        self.status_code = 200
        self.body = body
        self.background = None
        self.raw_headers = [
            (b"cache-control", b"no-store"),
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"application/json"),
        ]


# The parts of the answer around the credential repeat from fetch to fetch.
@functools.lru_cache(maxsize=4096)
def _head(line_id: str, tenant_id: str, type_: str, version: int) -> bytes:
    head = json.dumps(
        {"line_id": line_id, "tenant_id": tenant_id, "type": type_, "version": version},
        separators=(",", ":"),
    )
    return head[:-1].encode() + b',"credential":'


@functools.lru_cache(maxsize=1024)
def _tail(expires_at: datetime | None, lease_ttl: int) -> bytes:
    tail = json.dumps(
        {"expires_at": rfc3339(expires_at), "lease_ttl": lease_ttl}, separators=(",", ":")
    )
    return b"," + tail[1:].encode()


@router.get(
    FETCH_PATH,
    response_model=CredentialOut,
    responses={
        401: {"description": "no valid runner token"},
        403: {"description": "a human session (only runners receive secrets)"},
        404: {"description": "not granted to this runner (existence is not revealed)"},
        410: {"description": "revoked"},
        423: {"description": "suspended: the line or its tenant is suspended"},
        429: {"description": "rate limited (Retry-After)"},
        503: {"description": "audit_unavailable: no secret without a durable audit event"},
    },
    openapi_extra={"security": [{"RunnerToken": []}]},
)
async def fetch_credential(tenant_id: str, line_id: str, request: Request) -> Response:
    """Fetch a line's credential (runners only).

    With a runner's bearer token, for a line its tenant granted to the runner. The fetch
    is audited (`credential.fetch`, with `X-Workflow-Id` and `X-Run-Id`) before the secret
    is sent; if the event cannot be committed the answer is 503 `audit_unavailable` and no
    secret. Human sessions get 403; a revoked line 410 `revoked`."""
    return await answer_fetch(
        get_runtime(request),
        tenant_id=tenant_id,
        line_id=line_id,
        authorization=request.headers.get("authorization"),
        ctx=request_context(request),
    )


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: str = Field(max_length=65_536, description="The text to sign (its UTF-8 bytes).")


class SignOut(BaseModel):
    line_id: str
    version: int = Field(description="The credential version whose signing secret signed.")
    algorithm: str = Field(description='Always "HMAC-SHA256".')
    signature: str = Field(description="Lower-case hex HMAC-SHA256 of the message.")


class ProofOut(BaseModel):
    line_id: str
    version: int = Field(description="The credential version whose app secret was used.")
    appsecret_proof: str = Field(
        description="Lower-case hex HMAC-SHA256, key app_secret, over the access token."
    )


_USE_RESPONSES: dict[int | str, dict[str, object]] = {
    401: {"description": "no valid runner token"},
    403: {"description": "a human session (only runners use secrets)"},
    404: {"description": "not granted to this runner (existence is not revealed)"},
    409: {"description": "conflict: a line of another type, or without the secret needed"},
    410: {"description": "revoked"},
    422: {"description": "a malformed body"},
    423: {"description": "suspended: the line or its tenant is suspended"},
    429: {"description": "rate limited (Retry-After), the same limit as the fetch"},
    503: {"description": "audit_unavailable: no answer without a durable audit event"},
}


@router.post(
    SIGN_PATH,
    response_model=SignOut,
    responses=_USE_RESPONSES,
    openapi_extra={"security": [{"RunnerToken": []}]},
)
async def sign_message(tenant_id: str, line_id: str, body: SignIn, request: Request) -> Response:
    """Sign a message with a widget line's signing secret (runners only).

    For runners with any grant on the line, `use` grants included (their fetch leaves the
    `signing_secret` out): the answer is the hex HMAC-SHA256 of the message's UTF-8 bytes
    under the line's `signing_secret`, never the secret. The same denials, rate limit and
    audit as the fetch (`credential.sign`); a line that is not a widget line is 409
    `conflict`."""
    return await answer_use(
        get_runtime(request),
        sign_use(body.message),
        tenant_id=tenant_id,
        line_id=line_id,
        authorization=request.headers.get("authorization"),
        ctx=request_context(request),
    )


@router.post(
    PROOF_PATH,
    response_model=ProofOut,
    responses=_USE_RESPONSES,
    openapi_extra={"security": [{"RunnerToken": []}]},
)
async def appsecret_proof(tenant_id: str, line_id: str, request: Request) -> Response:
    """Compute Meta's appsecret_proof for an Instagram or Messenger line (runners only).

    For runners with any grant on the line, `use` grants included (their fetch leaves the
    `app_secret` out): the answer is the hex HMAC-SHA256 with the line's `app_secret` as
    key over its access token, as Meta defines `appsecret_proof`. The same denials, rate
    limit and audit as the fetch (`credential.proof`); another line type, or a line
    without an `app_secret`, is 409 `conflict`."""
    return await answer_use(
        get_runtime(request),
        PROOF,
        tenant_id=tenant_id,
        line_id=line_id,
        authorization=request.headers.get("authorization"),
        ctx=request_context(request),
    )
