"""Tenant deletion and the data-subject export (docs/api.md, "Tenants and members").

``DELETE /v1/tenants/{tenant_id}`` crypto-shreds the tenant (owner or platform admin,
MFA); ``GET /v1/tenants/{tenant_id}/export`` returns its metadata without secrets (owner,
MFA). A GET has no body, so its one-request code may come in the ``X-MFA-Code`` header
(never in the query string: codes do not belong in URLs or access logs).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Header
from pydantic import BaseModel, ConfigDict, Field

from api.deps import Ctx, CurrentUser, Rt, TenantErasure, TenantExport
from vault.audit.events import RequestContext
from vault.authz import UserPrincipal
from vault.clock import rfc3339
from vault.privacy.erasure import DeletedTenant, TenantEraser
from vault.privacy.scrub import scrub_after_shred
from vault.runtime import Runtime

__all__ = ["router", "shred_tenant"]

router = APIRouter(tags=["tenants"])


class MfaBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mfa_code: str | None = Field(default=None, max_length=32)


class TenantDeletedOut(BaseModel):
    id: str
    deleted_at: str
    shredded: bool


@router.delete("/v1/tenants/{tenant_id}", response_model=TenantDeletedOut)
def delete_tenant(
    tenant_id: str,
    *,
    runtime: Rt,
    ctx: Ctx,
    user: CurrentUser,
    erasure: TenantErasure,
    tasks: BackgroundTasks,
    body: MfaBody | None = None,
) -> dict[str, Any]:
    """Delete a tenant and shred its keys.

    Every key of the tenant is destroyed, so its stored credentials can never be opened
    again (tenant owner or platform admin; fresh second factor)."""
    # The code (body.mfa_code) reaches the eraser through the principal (api/deps.py).
    deleted = shred_tenant(runtime, erasure, tasks, user, tenant_id, ctx=ctx)
    return {"id": deleted.id, "deleted_at": rfc3339(deleted.deleted_at), "shredded": True}


def shred_tenant(
    runtime: Runtime,
    erasure: TenantEraser,
    tasks: BackgroundTasks,
    user: UserPrincipal,
    tenant_id: str,
    *,
    ctx: RequestContext,
) -> DeletedTenant:
    """Delete the tenant (the eraser authorizes, asks for the second factor and audits),
    then scrub the freed pages once the request's transaction has committed. The one
    way both ``DELETE /v1/tenants/{id}`` and the console's settings page delete."""
    deleted = erasure.delete(user, tenant_id, context=ctx)
    tasks.add_task(scrub_after_shred, runtime.engine)  # runs after the commit
    return deleted


@router.get("/v1/tenants/{tenant_id}/export")
def export_tenant(
    tenant_id: str,
    *,
    ctx: Ctx,
    user: CurrentUser,
    export: TenantExport,
    mfa_code: Annotated[str | None, Header(alias="X-MFA-Code", max_length=32)] = None,
) -> dict[str, Any]:
    """Export a tenant's data.

    Tenant metadata, members, lines (metadata only), grants and the tenant's audit events
    (tenant owner; fresh second factor: the `X-MFA-Code` header or a stepped-up session)."""
    del mfa_code  # declared for the docs; the principal reads it (api/deps.py)
    return export.export(user, tenant_id, context=ctx)
