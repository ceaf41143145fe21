"""Suspending and resuming lines and tenants (docs/lines.md, "Line states").

Thin adapters over :class:`vault.lines.states.LineStates`. Suspending needs no second
factor (it only takes access away); resuming does, through ``mfa_code`` in the body or
an MFA-fresh session (read by the principal, api/deps.py, checked by ``vault.authz``).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from api.deps import Ctx, CurrentUser, States
from api.routes.lines import LineOut

__all__ = ["router"]

router = APIRouter(tags=["lines"])


class SuspendBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=500, description="recorded in the audit")
    mfa_code: str | None = Field(default=None, max_length=32, description="not needed")


class ResumeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mfa_code: str | None = Field(default=None, max_length=32, description="sudo mode")


class TenantStateOut(BaseModel):
    id: str
    status: Literal["active", "suspended"]


@router.post("/v1/tenants/{tenant_id}/lines/{line_id}/suspend", response_model=LineOut)
def suspend_line(
    tenant_id: str,
    line_id: str,
    *,
    ctx: Ctx,
    user: CurrentUser,
    states: States,
    body: SuspendBody | None = None,
) -> dict[str, Any]:
    """Stop serving the line's credential (423 ``suspended`` on fetch); the secret is kept."""
    body = body or SuspendBody()
    return states.suspend_line(user, tenant_id, line_id, reason=body.reason, context=ctx).to_dict()


@router.post("/v1/tenants/{tenant_id}/lines/{line_id}/resume", response_model=LineOut)
def resume_line(
    tenant_id: str,
    line_id: str,
    *,
    ctx: Ctx,
    user: CurrentUser,
    states: States,
    body: ResumeBody | None = None,
) -> dict[str, Any]:
    """Serve the line again; needs a second factor."""
    del body  # its mfa_code is read by the principal (api/deps.py)
    return states.resume_line(user, tenant_id, line_id, context=ctx).to_dict()


@router.post("/v1/tenants/{tenant_id}/suspend", response_model=TenantStateOut)
def suspend_tenant(
    tenant_id: str,
    *,
    ctx: Ctx,
    user: CurrentUser,
    states: States,
    body: SuspendBody | None = None,
) -> dict[str, Any]:
    """Stop serving every line of the tenant (tenant owner or platform admin)."""
    body = body or SuspendBody()
    return states.suspend_tenant(user, tenant_id, reason=body.reason, context=ctx).to_dict()


@router.post("/v1/tenants/{tenant_id}/resume", response_model=TenantStateOut)
def resume_tenant(
    tenant_id: str,
    *,
    ctx: Ctx,
    user: CurrentUser,
    states: States,
    body: ResumeBody | None = None,
) -> dict[str, Any]:
    """Serve the tenant's lines again (each line's own state still applies); needs MFA."""
    del body
    return states.resume_tenant(user, tenant_id, context=ctx).to_dict()
