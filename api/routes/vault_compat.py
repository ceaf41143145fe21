"""The Vault-compatible read API: hvac, External Secrets Operator and vault-agent read
lines unchanged.

A runner is an AppRole (``role_id`` = ``client_id``, ``secret_id`` = ``client_secret``)
and its Vault token is its runner access token, sent as ``X-Vault-Token`` (or
``Authorization: Bearer``). Nothing here decides access: the login is
:meth:`vault.runners.TokenIssuer.issue`, the read is :func:`api.routes.credentials.run_fetch`
(the native fetch's own path: grants, rate limits, revocation and the
``credential.fetch`` audit event are the fetcher's), and refusals are rendered from
:data:`api.problems.VAULT_ERROR_TABLE`. The answers copy OpenBao's shapes, checked side by
side against a real OpenBao by tests/api/test_vault_compat_hvac.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.deps import Ctx, RunnerTokens, credentials_for, get_runtime, request_context
from api.problems import vault_error_response
from api.routes.credentials import run_fetch
from kms.errors import KmsError
from vault.audit.events import RequestContext
from vault.clock import rfc3339
from vault.errors import Unauthenticated, VaultError
from vault.runners.registry import TokenInfo
from vault.runtime import Runtime

__all__ = ["KV_MOUNT", "KV_PATH", "answer_kv_read", "router", "vault_token", "vault_token_of"]

router = APIRouter(tags=["vault-compatible"])

KV_MOUNT = "lines"
KV_PATH = f"/v1/{KV_MOUNT}/data/{{tenant_id}}/{{line_id}}"
POLICIES = ["linevault-runner"]
_NO_STORE = {"Cache-Control": "no-store"}
_LOGIN_REFUSED = {"errors": ["invalid role or secret ID"]}
# What every Vault answer carries around its ``data`` or ``auth``.
_ENVELOPE: dict[str, Any] = {
    "lease_id": "",
    "renewable": False,
    "lease_duration": 0,
    "data": None,
    "wrap_info": None,
    "warnings": None,
    "auth": None,
}


class VaultErrors(BaseModel):
    """Vault's error body (not problem+json: Vault clients read this shape)."""

    errors: list[str]


_RETRY_AFTER = {
    "Retry-After": {
        "required": True,
        "description": "seconds to wait",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}


def _errors(description: str, **extra: Any) -> dict[str, Any]:
    """An OpenAPI response entry for a Vault-shaped error."""
    return {"model": VaultErrors, "description": description, **extra}


PROBLEM_REF = "#/components/schemas/Problem"
_DENIED = _errors('a token that is not a live runner token: {"errors": ["permission denied"]}')
_LIMITED = _errors("rate limited (Retry-After)", headers=_RETRY_AFTER)
_DOWN = _errors("the database, the key provider or the audit trail is down")


def vault_token_of(headers: Mapping[bytes, str]) -> str | None:
    """``X-Vault-Token``, else a bearer token, as Vault itself accepts both (the first
    value of each header, keyed by lower-case name)."""
    return headers.get(b"x-vault-token") or credentials_for("bearer", headers.get(b"authorization"))


def vault_token(request: Request) -> str | None:
    return vault_token_of(
        {
            name: request.headers[name.decode()]
            for name in (b"x-vault-token", b"authorization")
            if name.decode() in request.headers
        }
    )


def _answer(ctx: RequestContext, **members: Any) -> JSONResponse:
    body = {"request_id": ctx.request_id or "", **_ENVELOPE, **members}
    return JSONResponse(body, headers=_NO_STORE)


async def _approle_body(request: Request) -> dict[str, Any]:
    """The login's JSON object (Vault reads the body whatever its content type)."""
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


@router.post(
    "/v1/auth/approle/login",
    responses={
        400: _errors('{"errors": ["invalid role or secret ID"]}, or a missing field'),
        429: _LIMITED,
        503: _DOWN,
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["role_id", "secret_id"],
                        "properties": {
                            "role_id": {"type": "string", "description": "the client_id"},
                            "secret_id": {"type": "string", "format": "password"},
                        },
                    }
                }
            },
        }
    },
)
def approle_login(
    ctx: Ctx, tokens: RunnerTokens, body: Annotated[dict[str, Any], Depends(_approle_body)]
) -> JSONResponse:
    """AppRole login: ``role_id`` is the runner's client_id, ``secret_id`` its secret."""
    role_id, secret_id = body.get("role_id"), body.get("secret_id")
    try:
        for name, value in (("role_id", role_id), ("secret_id", secret_id)):
            if not isinstance(value, str) or not value:
                tokens.deny(reason=f"missing_{name}", context=ctx)
                return JSONResponse({"errors": [f"missing {name}"]}, status_code=400)
        assert isinstance(role_id, str) and isinstance(secret_id, str)
        issued = tokens.issue(client_id=role_id, client_secret=secret_id, context=ctx)
    except Unauthenticated:  # already audited by the issuer
        return JSONResponse(_LOGIN_REFUSED, status_code=400, headers=_NO_STORE)
    except VaultError as exc:
        return vault_error_response(exc)
    auth = {
        "client_token": issued.access_token,
        "accessor": tokens.accessor(issued.access_token),
        "policies": POLICIES,
        "token_policies": POLICIES,
        "metadata": {"runner_id": issued.runner_id},
        "lease_duration": issued.expires_in,
        "renewable": False,
        "entity_id": "",
        "token_type": "service",
        "orphan": True,
        "num_uses": 0,
    }
    return _answer(ctx, auth=auth)


def _lookup_data(token: str, info: TokenInfo, now: datetime) -> dict[str, Any]:
    return {
        "accessor": info.accessor,
        "creation_time": int(info.created_at.timestamp()),
        "creation_ttl": int((info.expires_at - info.created_at).total_seconds()),
        "display_name": "approle",
        "entity_id": "",
        "expire_time": rfc3339(info.expires_at),
        "explicit_max_ttl": 0,
        "id": token,
        "issue_time": rfc3339(info.created_at),
        "meta": {"runner_id": info.runner_id, "runner_name": info.runner_name},
        "num_uses": 0,
        "orphan": True,
        "path": "auth/approle/login",
        "policies": POLICIES,
        "renewable": False,
        "ttl": max(0, int((info.expires_at - now).total_seconds())),
        "type": "service",
    }


@router.get(
    "/v1/auth/token/lookup-self",
    responses={403: _DENIED, 429: _LIMITED, 503: _DOWN},
)
def lookup_self(request: Request, ctx: Ctx, tokens: RunnerTokens) -> JSONResponse:
    """The caller's own token: ``type``, a numeric ``ttl`` and ``expire_time`` (ESO)."""
    token = vault_token(request)
    try:
        if not token:
            raise Unauthenticated()
        info = tokens.lookup(token, context=ctx)
    except VaultError as exc:
        return vault_error_response(exc)
    now = get_runtime(request).clock.now()
    return _answer(ctx, data=_lookup_data(token, info, now))


@router.post(
    "/v1/auth/token/revoke-self",
    status_code=204,
    responses={403: _DENIED, 503: _DOWN},
)
def revoke_self(request: Request, ctx: Ctx, tokens: RunnerTokens) -> Response:
    """The caller's token stops working at once (audited as ``runner.token_revoke``)."""
    token = vault_token(request)
    if not token or not tokens.revoke(token, context=ctx):
        return vault_error_response(Unauthenticated())
    return Response(status_code=204, headers=_NO_STORE)


@router.get(
    KV_PATH,
    responses={
        403: _errors('bad token or a human session: {"errors": ["permission denied"]}'),
        404: _errors(
            'not granted, unknown or revoked: {"errors": []} (a malformed id: a problem)',
            content={"application/problem+json": {"schema": {"$ref": PROBLEM_REF}}},
        ),
        429: _LIMITED,
        503: _errors("no secret without a durable audit event, or a dependency down"),
    },
)
async def read_line(tenant_id: str, line_id: str, request: Request) -> Response:
    """A line's credential as a KV v2 secret version (audited as ``credential.fetch``)."""
    return await answer_kv_read(
        get_runtime(request),
        tenant_id=tenant_id,
        line_id=line_id,
        token=vault_token(request),
        ctx=request_context(request),
    )


async def answer_kv_read(
    runtime: Runtime, *, tenant_id: str, line_id: str, token: str | None, ctx: RequestContext
) -> Response:
    """The KV v2 read, errors included, as one response: shared by the route above and
    :class:`api.fastpath.FetchFastPath`, which answers it before FastAPI's routing."""
    try:
        got = await run_fetch(
            runtime, token=token, tenant_id=tenant_id, line_id=line_id, ctx=ctx, api="vault_kv"
        )
    except (VaultError, KmsError) as exc:
        return vault_error_response(exc)
    metadata = {
        "created_time": rfc3339(got.updated_at) or "",
        "custom_metadata": None,
        "deletion_time": "",
        "destroyed": False,
        "version": got.version,
    }
    return _answer(ctx, data={"data": got.credential, "metadata": metadata})
