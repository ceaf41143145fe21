"""Grants: a tenant's owners and admins decide which runner may fetch which lines."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from api.auth import CurrentUser
from api.deps import Ctx, Db, Rt
from vault.audit.events import RequestContext
from vault.authz import UserPrincipal
from vault.clock import rfc3339
from vault.runners import GrantService, GrantView
from vault.runtime import Runtime

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


class GrantOut(BaseModel):
    id: str
    tenant_id: str
    runner_id: str
    lines: list[str]
    created_at: str | None


class GrantList(BaseModel):
    grants: list[GrantOut]


def _service(runtime: Runtime, db: Db, user: UserPrincipal, ctx: RequestContext) -> GrantService:
    return GrantService(db, audit=runtime.audit, clock=runtime.clock, principal=user, context=ctx)


def _out(view: GrantView) -> GrantOut:
    return GrantOut(
        id=view.id,
        tenant_id=view.tenant_id,
        runner_id=view.runner_id,
        lines=view.lines,
        created_at=rfc3339(view.created_at),
    )


@router.post("/v1/tenants/{tenant_id}/grants", status_code=201, response_model=GrantOut)
def create_grant(
    tenant_id: str, body: GrantCreate, *, runtime: Rt, db: Db, ctx: Ctx, user: CurrentUser
) -> GrantOut:
    view = _service(runtime, db, user, ctx).create(
        tenant_id, runner_id=body.runner_id, lines=body.lines
    )
    return _out(view)


@router.get("/v1/tenants/{tenant_id}/grants", response_model=GrantList)
def list_grants(tenant_id: str, runtime: Rt, db: Db, ctx: Ctx, user: CurrentUser) -> GrantList:
    return GrantList(grants=[_out(v) for v in _service(runtime, db, user, ctx).list(tenant_id)])


@router.delete("/v1/tenants/{tenant_id}/grants/{grant_id}", status_code=204)
def delete_grant(
    tenant_id: str, grant_id: str, *, runtime: Rt, db: Db, ctx: Ctx, user: CurrentUser
) -> Response:
    """Effective on the next fetch in every server process."""
    _service(runtime, db, user, ctx).delete(tenant_id, grant_id)
    return Response(status_code=204)
