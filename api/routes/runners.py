"""Runner management (platform admins) and the OAuth 2.0 token endpoint for runners.

Tenant owners and admins may list runners (id, name, created_at, status) so that they
can grant them; everything else here is for platform admins (auditors read).

The token endpoint speaks RFC 6749, not problem+json: clients of section 4.4 expect
``{"error": "invalid_client"}`` with 401 and ``WWW-Authenticate`` (section 5.2), and
``Cache-Control: no-store`` on every answer that carries a token.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Literal, NamedTuple
from urllib.parse import parse_qs, unquote_plus

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from api.deps import Ctx, CurrentUser, Runners, RunnerTokens, credentials_for
from vault.authz import PlatformPermission, authorize_platform
from vault.clock import rfc3339
from vault.errors import Unauthenticated
from vault.runners.secrets import looks_like_runner_token
from vault.storage.models import Runner

__all__ = ["router"]

router = APIRouter(tags=["runners"])

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_FORM = "application/x-www-form-urlencoded"


class RunnerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    mfa_code: str | None = Field(default=None, max_length=32, description="sudo mode")


class RunnerSummary(BaseModel):
    """What a tenant owner or admin sees of a runner: enough to grant it."""

    id: str
    name: str
    created_at: str | None
    status: Literal["active", "disabled"]


class RunnerOut(RunnerSummary):
    client_id: str
    secret_rotated_at: str | None
    disabled_at: str | None


class RunnerSecretOut(BaseModel):
    id: str
    name: str
    client_id: str
    client_secret: str = Field(description="Shown this once; only a keyed hash is stored.")
    created_at: str | None


class RunnerList(BaseModel):
    runners: list[RunnerOut | RunnerSummary]


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "Bearer"  # noqa: S105 - the scheme name
    expires_in: int


class OAuthError(BaseModel):
    error: str
    error_description: str | None = None


def _status(runner: Runner) -> Literal["active", "disabled"]:
    return "active" if runner.disabled_at is None else "disabled"


def _out(runner: Runner) -> RunnerOut:
    return RunnerOut(
        id=runner.id,
        name=runner.name,
        client_id=runner.client_id,
        created_at=rfc3339(runner.created_at),
        status=_status(runner),
        secret_rotated_at=rfc3339(runner.secret_rotated_at),
        disabled_at=rfc3339(runner.disabled_at),
    )


def _summary(runner: Runner) -> RunnerSummary:
    return RunnerSummary(
        id=runner.id,
        name=runner.name,
        created_at=rfc3339(runner.created_at),
        status=_status(runner),
    )


def _ts(value: datetime | None) -> str | None:
    return rfc3339(value)


# -- management ---------------------------------------------------------------------------


def _secret_out(runner: Runner, client_secret: str) -> RunnerSecretOut:
    return RunnerSecretOut(
        id=runner.id,
        name=runner.name,
        client_id=runner.client_id,
        client_secret=client_secret,
        created_at=_ts(runner.created_at),
    )


@router.post("/v1/runners", status_code=201, response_model=RunnerSecretOut)
def create_runner(body: RunnerCreate, user: CurrentUser, runners: Runners) -> RunnerSecretOut:
    """Register a runner.

    Platform admin, fresh second factor. The `client_secret` is in this response only."""
    runners.authorize(user, PlatformPermission.RUNNER_CREATE, "runner.create")
    created = runners.register(name=body.name)
    return _secret_out(created.runner, created.client_secret)


@router.get("/v1/runners", response_model=RunnerList)
def list_runners(user: CurrentUser, runners: Runners) -> RunnerList:
    """List runners.

    Platform admins and auditors see every field; tenant owners and admins see id, name,
    created_at and status, so that they can grant runners."""
    rows, full = runners.visible_to(user)
    return RunnerList(runners=[_out(r) if full else _summary(r) for r in rows])


@router.get("/v1/runners/{runner_id}", response_model=RunnerOut)
def get_runner(runner_id: str, user: CurrentUser, runners: Runners) -> RunnerOut:
    """Get one runner.

    Platform admins and auditors; never its secret."""
    authorize_platform(user, PlatformPermission.RUNNER_READ)
    return _out(runners.get(runner_id))


@router.post("/v1/runners/{runner_id}/rotate-secret", response_model=RunnerSecretOut)
def rotate_runner_secret(runner_id: str, user: CurrentUser, runners: Runners) -> RunnerSecretOut:
    """Rotate a runner's client secret.

    A new client secret, shown this once; the old secret and every token of the runner
    stop working at once (platform admin, fresh second factor)."""
    runners.authorize(user, PlatformPermission.RUNNER_ROTATE, "runner.rotate_secret", runner_id)
    rotated = runners.rotate_secret(runner_id)
    return _secret_out(rotated.runner, rotated.client_secret)


@router.delete("/v1/runners/{runner_id}", status_code=204)
def disable_runner(runner_id: str, user: CurrentUser, runners: Runners) -> Response:
    """Disable a runner.

    Its tokens stop working at once and its secret is refused (platform admin, fresh second
    factor: the `X-MFA-Code` header or a stepped-up session)."""
    runners.authorize(user, PlatformPermission.RUNNER_DISABLE, "runner.disable", runner_id)
    runners.disable(runner_id)
    return Response(status_code=204)


# -- the token endpoint (RFC 6749 section 4.4) ------------------------------------------------


async def _form(request: Request) -> FormFields:
    """The request's content type and its form fields (read here, parsed without extras)."""
    body = await request.body()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fields = (
        parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        if content_type == _FORM
        else {}
    )
    return content_type or None, fields


FormFields = tuple[str | None, dict[str, list[str]]]
Form = Annotated[FormFields, Depends(_form)]


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    headers = dict(_NO_STORE)
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="linevault", charset="UTF-8"'
    return JSONResponse(
        {"error": error, "error_description": description}, status_code=status, headers=headers
    )


def _basic_credentials(header: str | None) -> tuple[str, str] | bool | None:
    """(client_id, secret) from HTTP Basic; None when absent, False when malformed."""
    value = credentials_for("basic", header)
    if value is None:
        return None
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        return False
    # RFC 6749 section 2.3.1: both parts are form-urlencoded before Basic encoding.
    return unquote_plus(client_id), unquote_plus(secret)


class _Refusal(NamedTuple):
    """A refused token request: audited (``reason`` = ``error``), then answered."""

    status: int
    error: str
    description: str
    client_id: str | None = None


def _form_refusal(request: Request, form: FormFields) -> _Refusal | None:
    """The request's shape, checked before any credential is looked at."""
    content_type, fields = form
    if "client_secret" in request.query_params:
        return _Refusal(400, "invalid_request", "credentials are never accepted in the URL")
    if content_type != _FORM:
        return _Refusal(400, "invalid_request", f"the body must be {_FORM}")
    if any(len(values) > 1 for values in fields.values()):
        return _Refusal(400, "invalid_request", "a parameter was given more than once")
    grant_type = fields.get("grant_type", [None])[0]
    if not grant_type:
        return _Refusal(400, "invalid_request", "grant_type is required")
    if grant_type != "client_credentials":
        return _Refusal(400, "unsupported_grant_type", "only client_credentials is supported")
    return None


def _client_credentials(
    request: Request, fields: dict[str, list[str]]
) -> tuple[str, str] | _Refusal:
    """(client_id, secret) from HTTP Basic or the form, one method only (RFC 6749 2.3.1)."""
    basic = _basic_credentials(request.headers.get("authorization"))
    form_id = fields.get("client_id", [None])[0]
    form_secret = fields.get("client_secret", [None])[0]
    if basic is False:
        return _Refusal(401, "invalid_client", "malformed HTTP Basic credentials")
    if isinstance(basic, tuple):
        if form_secret is not None:
            return _Refusal(400, "invalid_request", "use one client authentication method only")
        if form_id is not None and form_id != basic[0]:
            return _Refusal(
                400, "invalid_request", "client_id does not match the Basic credentials"
            )
        client_id, secret = basic
    else:
        client_id, secret = form_id or "", form_secret or ""
    if not client_id or not secret:
        return _Refusal(401, "invalid_client", "client authentication failed", client_id or None)
    return client_id, secret


@router.post(
    "/v1/runner/token",
    response_model=TokenOut,
    responses={400: {"model": OAuthError}, 401: {"model": OAuthError}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                _FORM: {
                    "schema": {
                        "type": "object",
                        "required": ["grant_type"],
                        "properties": {
                            "grant_type": {"type": "string", "enum": ["client_credentials"]},
                            "client_id": {"type": "string"},
                            "client_secret": {"type": "string", "format": "password"},
                        },
                    }
                }
            },
        }
    },
)
def runner_token(request: Request, form: Form, ctx: Ctx, tokens: RunnerTokens) -> JSONResponse:
    """Get a runner access token.

    OAuth 2.0 client credentials (RFC 6749 section 4.4): form fields
    `grant_type=client_credentials`, `client_id` and `client_secret`, or HTTP Basic. Errors
    follow RFC 6749 section 5.2 (`{"error": "invalid_client"}`)."""
    client = _form_refusal(request, form) or _client_credentials(request, form[1])
    if isinstance(client, _Refusal):
        tokens.deny(reason=client.error, client_id=client.client_id, context=ctx)
        return _oauth_error(client.status, client.error, client.description)
    client_id, secret = client
    try:
        issued = tokens.issue(client_id=client_id, client_secret=secret, context=ctx)
    except Unauthenticated:  # already audited by the issuer
        return _oauth_error(401, "invalid_client", "client authentication failed")
    return JSONResponse(
        {
            "access_token": issued.access_token,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
        },
        headers=_NO_STORE,
    )


@router.delete("/v1/runner/token", status_code=204)
def revoke_runner_token(request: Request, ctx: Ctx, tokens: RunnerTokens) -> Response:
    """Give up a runner access token.

    The runner gives its current bearer token up (e.g. on shutdown); always 204."""
    token = credentials_for("bearer", request.headers.get("authorization"))
    if token is not None and looks_like_runner_token(token):
        tokens.revoke(token, context=ctx)
    return Response(status_code=204)
