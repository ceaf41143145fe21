"""A tenant's settings page (``/ui/tenants/{id}/settings``): its data export and its
deletion; and creating a tenant (``POST /ui/tenants``, platform admins).

The export is the API's (``TenantExporter``, as ``GET /v1/tenants/{id}/export``),
downloaded as a JSON file; it needs the form's "Authenticator code", so it is a POST (a
code never goes into a URL). Deletion runs ``api.routes.privacy.shred_tenant``, the
API's own path (the eraser, then the scrub after the commit), once the person has typed
the tenant's name: a name that does not match refuses before anything is touched.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Form, Request
from fastapi.responses import Response

from api.console.tenants import abilities, tenant_of
from api.console.web import (
    CONSOLE_PREFIX,
    ConsoleRoute,
    ConsoleUser,
    json_download,
    page,
    see_other,
)
from api.deps import Ctx, Rt, TenantErasure, TenantExport, Tenants
from api.routes.privacy import shred_tenant
from vault.errors import Forbidden, Unprocessable

__all__ = ["router"]

router = APIRouter(prefix=CONSOLE_PREFIX, route_class=ConsoleRoute, include_in_schema=False)

TenantName = Annotated[str, Form(max_length=400)]
OwnerId = Annotated[str, Form(max_length=40)]


@router.get("/tenants/{tenant_id}/settings")
def settings_page(
    tenant_id: str, request: Request, user: ConsoleUser, tenants: Tenants
) -> Response:
    """Offered to those whose role carries the export or the deletion (owners)."""
    tenant = tenant_of(tenants, user, tenant_id)
    can = abilities(user, tenant_id)
    if not (can["tenant_export"] or can["tenant_delete"]):
        raise Forbidden("this page needs tenant role owner")
    context = {"title": f"Settings · {tenant.name}", "tenant": tenant, "can": can}
    return page(request, "tenant_settings.html", context)


@router.post("/tenants/{tenant_id}/settings/export")
def export_tenant(tenant_id: str, *, ctx: Ctx, user: ConsoleUser, export: TenantExport) -> Response:
    document = export.export(user, tenant_id, context=ctx)
    return json_download(document, f"linevault-tenant-{tenant_id}.json")


@router.post("/tenants/{tenant_id}/settings/delete")
def delete_tenant(
    tenant_id: str,
    confirm_name: TenantName,
    *,
    runtime: Rt,
    ctx: Ctx,
    user: ConsoleUser,
    tenants: Tenants,
    erasure: TenantErasure,
    tasks: BackgroundTasks,
) -> Response:
    """Typing the name guards against the wrong tab; the eraser still authorizes (owner
    or platform admin) and asks for the second factor, like the API's DELETE."""
    tenant = tenant_of(tenants, user, tenant_id)
    if confirm_name.strip() != tenant.name:
        raise Unprocessable(
            "the name you typed is not this tenant's name; nothing was deleted",
            field="confirm_name",
        )
    shred_tenant(runtime, erasure, tasks, user, tenant_id, ctx=ctx)
    return see_other(f"{CONSOLE_PREFIX}/tenants")


@router.post("/tenants")
def create_tenant(
    name: TenantName, user: ConsoleUser, tenants: Tenants, owner_user_id: OwnerId = ""
) -> Response:
    """``POST /v1/tenants`` from a form (platform admins; the service decides)."""
    view = tenants.create(user, name=name, owner_user_id=owner_user_id.strip() or None)
    return see_other(f"{CONSOLE_PREFIX}/tenants/{view.id}")
