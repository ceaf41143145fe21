"""Grants: a tenant's owners and admins decide which runner may fetch which lines, and
whether it receives the whole credential (``access: "full"``) or may only use it
(``"use"``: no signing material in the fetch; signatures through the vault)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from api.deps import Grants
from vault.clock import rfc3339
from vault.runners import GrantView

__all__ = ["router"]

router = APIRouter(tags=["grants"])


class GrantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    runner_id: str = Field(min_length=1, max_length=40)
    lines: list[str] = Field(
        min_length=1,
        max_length=1000,
        description='["*"] for every line of the tenant (present and future), or line ids.',
    )
    access: Literal["full", "use"] = Field(
        default="full",
        description='"full": the fetch returns the whole credential. "use": the fetch leaves '
        "out the signing material (app_secret, signing_secret); the runner calls sign or "
        "appsecret-proof instead.",
    )
    mfa_code: str | None = Field(default=None, max_length=32, description="sudo mode")


class GrantOut(BaseModel):
    id: str
    tenant_id: str
    runner_id: str
    lines: list[str]
    access: str
    created_at: str | None


class GrantList(BaseModel):
    grants: list[GrantOut]


def _out(view: GrantView) -> GrantOut:
    return GrantOut(
        id=view.id,
        tenant_id=view.tenant_id,
        runner_id=view.runner_id,
        lines=view.lines,
        access=view.access,
        created_at=rfc3339(view.created_at),
    )


@router.post("/v1/tenants/{tenant_id}/grants", status_code=201, response_model=GrantOut)
def create_grant(tenant_id: str, body: GrantCreate, grants: Grants) -> GrantOut:
    """Grant a runner lines of this tenant.

    `lines` is `["*"]` for every line of the tenant or a list of line ids; `access` is
    `full` (default) or `use` (the fetch leaves out `app_secret` and `signing_secret`; the
    runner signs through `sign` and `appsecret-proof`). Owner or admin; needs a fresh
    second factor: send `mfa_code` or step up first."""
    return _out(
        grants.create(tenant_id, runner_id=body.runner_id, lines=body.lines, access=body.access)
    )


@router.get("/v1/tenants/{tenant_id}/grants", response_model=GrantList)
def list_grants(tenant_id: str, grants: Grants) -> GrantList:
    """List this tenant's grants.

    Owners, admins and auditors of the tenant."""
    return GrantList(grants=[_out(v) for v in grants.list(tenant_id)])


@router.delete("/v1/tenants/{tenant_id}/grants/{grant_id}", status_code=204)
def delete_grant(tenant_id: str, grant_id: str, grants: Grants) -> Response:
    """Delete a grant.

    Effective on the next fetch in every server process (owner or admin; needs a fresh
    second factor: the `X-MFA-Code` header or a stepped-up session)."""
    grants.delete(tenant_id, grant_id)
    return Response(status_code=204)
