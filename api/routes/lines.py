"""Lines and their credentials (docs/api.md, "Lines and their credentials").

Thin adapters: parse the body, call ``vault.lines.service.LineService``, return metadata.
The credential object is validated by the domain (``vault.lines.schemas``), which names
the offending field and never echoes its value; the route only checks the envelope.
No route here returns a stored secret; ``generated`` appears once, when the vault made
the secret in this very request.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Body, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from api.deps import Ctx, CurrentUser, Lines, Rt
from vault.lines.schemas import LineType
from vault.lines.service import LineView
from vault.privacy.scrub import scrub_after_shred

__all__ = ["LineCreatedOut", "LineOut", "router"]

router = APIRouter(tags=["lines"])


class CreateLineBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: LineType = Field(description="the platform the line connects")
    name: str = Field(max_length=1000, description="1-200 characters")
    credential: dict[str, Any] = Field(description="the type's credential object")


class ReplaceCredentialBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    credential: dict[str, Any]
    mfa_code: str | None = Field(default=None, max_length=32)


class RevokeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=500)
    mfa_code: str | None = Field(default=None, max_length=32)


class LineOut(BaseModel):
    id: str
    tenant_id: str
    type: LineType
    name: str
    status: Literal["active", "suspended", "revoked"]
    version: int
    fingerprint: str | None
    created_at: str
    updated_at: str
    expires_at: str | None
    revoked_at: str | None
    account: dict[str, str] | None = Field(
        default=None, description="what the platform says the credential belongs to"
    )
    provider_status: Literal["ok", "unverified", "invalid", "refresh_failing", "not_checked"]
    checked_at: str | None
    last_refreshed_at: str | None
    last_fetched_at: str | None = Field(description="not kept yet: always null")


class LineCreatedOut(LineOut):
    generated: dict[str, str] | None = Field(
        default=None, description="secrets the vault generated; shown in this response only"
    )


_CREATE_EXAMPLES: dict[str, Any] = {
    "telegram": {
        "summary": "A Telegram bot",
        "value": {
            "type": "telegram",
            "name": "Support bot",
            "credential": {"bot_token": "123456789:AAExampleExampleExampleExampleExam"},
        },
    },
    "instagram": {
        "summary": "An Instagram account (long-lived user access token)",
        "value": {
            "type": "instagram",
            "name": "Shop account",
            "credential": {
                "access_token": "IGAAExampleExampleExampleExampleExample",
                "expires_at": "2027-01-31T00:00:00Z",
                "user_id": "17841400000000000",
                "app_secret": "0123456789abcdef0123456789abcdef",
            },
        },
    },
    "messenger": {
        "summary": "A Facebook Messenger page",
        "value": {
            "type": "messenger",
            "name": "Support page",
            "credential": {
                "page_id": "104000000000000",
                "page_access_token": "EAAExampleExampleExampleExampleExample",
                "app_secret": "0123456789abcdef0123456789abcdef",
            },
        },
    },
    "widget": {
        "summary": "A website widget; the vault generates its signing secret",
        "value": {"type": "widget", "name": "Website chat", "credential": {}},
    },
    "widget_with_secret": {
        "summary": "A website widget with a signing secret of your own",
        "value": {
            "type": "widget",
            "name": "Website chat",
            "credential": {"signing_secret": "whsec-example-example-example-example"},
        },
    },
}


class LinesOut(BaseModel):
    lines: list[LineOut]


# The same credentials, as a replacement (with the one-request second factor).
_REPLACE_EXAMPLES: dict[str, Any] = {
    name: {
        "summary": example["summary"],
        "value": {"credential": example["value"]["credential"], "mfa_code": "123456"},
    }
    for name, example in _CREATE_EXAMPLES.items()
}


def _with_generated(view: LineView, status: int) -> JSONResponse:
    body = view.to_dict()
    if view.generated:
        body["generated"] = dict(view.generated)
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


@router.post(
    "/v1/tenants/{tenant_id}/lines",
    status_code=201,
    response_model=LineCreatedOut,
    responses={201: {"model": LineCreatedOut}},
)
def create_line(
    tenant_id: str,
    *,
    body: Annotated[CreateLineBody, Body(openapi_examples=_CREATE_EXAMPLES)],
    ctx: Ctx,
    user: CurrentUser,
    lines: Lines,
) -> JSONResponse:
    """Add a line and store its credential.

    The credential object depends on the line `type` (see the examples). A secret the vault
    generates (a widget's `signing_secret`) is returned once, in this response only, under
    `generated`. A malformed credential is 422 naming the field, never its value."""
    view = lines.create(
        user,
        tenant_id,
        line_type=body.type,
        name=body.name,
        credential=body.credential,
        context=ctx,
    )
    return _with_generated(view, 201)


@router.get("/v1/tenants/{tenant_id}/lines", response_model=LinesOut)
def list_lines(
    tenant_id: str,
    *,
    ctx: Ctx,
    user: CurrentUser,
    lines: Lines,
    expiring_within: Annotated[
        str | None,
        Query(max_length=16, description="only active lines expiring within e.g. 30m, 12h, 7d"),
    ] = None,
) -> dict[str, Any]:
    """List the tenant's lines.

    Metadata only (any member of the tenant); no endpoint for people ever returns a stored
    secret."""
    views = lines.list(user, tenant_id, expiring_within=expiring_within, context=ctx)
    return {"lines": [v.to_dict() for v in views]}


@router.get("/v1/tenants/{tenant_id}/lines/{line_id}", response_model=LineOut)
def get_line(
    tenant_id: str, line_id: str, *, ctx: Ctx, user: CurrentUser, lines: Lines
) -> dict[str, Any]:
    """Get one line's metadata.

    Any member of the tenant; never the secret."""
    return lines.get(user, tenant_id, line_id, context=ctx).to_dict()


@router.put(
    "/v1/tenants/{tenant_id}/lines/{line_id}/credential",
    response_model=LineCreatedOut,
    responses={200: {"model": LineCreatedOut}},
)
def replace_credential(
    tenant_id: str,
    line_id: str,
    *,
    body: Annotated[ReplaceCredentialBody, Body(openapi_examples=_REPLACE_EXAMPLES)],
    runtime: Rt,
    ctx: Ctx,
    user: CurrentUser,
    lines: Lines,
    tasks: BackgroundTasks,
) -> JSONResponse:
    """Replace a line's credential.

    The new credential gets `version` + 1 and the previous version is destroyed (owner or
    admin; needs a fresh second factor: `mfa_code` in the body or a stepped-up session)."""
    view = lines.replace(user, tenant_id, line_id, credential=body.credential, context=ctx)
    tasks.add_task(scrub_after_shred, runtime.engine)  # the old version's bytes, too
    return _with_generated(view, 200)


@router.post("/v1/tenants/{tenant_id}/lines/{line_id}/check", response_model=LineOut)
def check_line(
    tenant_id: str, line_id: str, *, ctx: Ctx, user: CurrentUser, lines: Lines
) -> dict[str, Any]:
    """Ask the line's platform about its credential again (docs/connectors.md).

    A sync route: FastAPI runs it in the thread pool, so the outbound call (bounded by
    the connector timeouts) never blocks the event loop."""
    return lines.check(user, tenant_id, line_id, context=ctx).to_dict()


@router.post("/v1/tenants/{tenant_id}/lines/{line_id}/refresh", response_model=LineOut)
def refresh_line(
    tenant_id: str, line_id: str, *, ctx: Ctx, user: CurrentUser, lines: Lines
) -> dict[str, Any]:
    """Refresh an Instagram line's token now.

    Asks Instagram for a new long-lived token at once (without the vault's own 24-hour
    wait) and seals it as `version` + 1; the old version is served until the new one
    commits. Once per line across all server processes: a refresh already in flight is
    waited for and its result answered. Owner or admin; other line types, and a platform
    refusal (its reason in `detail`), are 409 `conflict` (docs/connectors.md)."""
    return lines.refresh(user, tenant_id, line_id, context=ctx).to_dict()


@router.post("/v1/tenants/{tenant_id}/lines/{line_id}/revoke", response_model=LineOut)
def revoke_line(
    tenant_id: str,
    line_id: str,
    *,
    runtime: Rt,
    ctx: Ctx,
    user: CurrentUser,
    lines: Lines,
    tasks: BackgroundTasks,
    body: RevokeBody | None = None,
) -> dict[str, Any]:
    """Revoke a line.

    The secret and its data key are destroyed in the same transaction; every later fetch
    gets 410 `revoked` (owner or admin; needs a fresh second factor: `mfa_code` in the body
    or a stepped-up session). Revoking again answers the same metadata."""
    body = body or RevokeBody()  # its mfa_code is read by the principal (api/deps.py)
    view = lines.revoke(
        user,
        tenant_id,
        line_id,
        reason=body.reason,
        context=ctx,
    )
    tasks.add_task(scrub_after_shred, runtime.engine)  # runs after the commit
    return view.to_dict()
