"""The tenants a person belongs to, and one tenant's page: its lines in a table.

Reads through the same services as ``GET /v1/tenants`` and ``GET /v1/tenants/{id}/lines``
(so the same authorization and audit); what the page offers follows the person's role
(``vault.authz.tenant_allows``), while every action still authorizes on its own.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.console.web import CONSOLE_PREFIX, ConsoleRoute, ConsoleUser, page
from api.deps import Ctx, Lines, Rt, Tenants
from vault.authz import (
    Permission,
    PlatformPermission,
    UserPrincipal,
    platform_allows,
    tenant_allows,
)
from vault.errors import NotFound
from vault.identity.tenants import TenantView

__all__ = ["router"]

router = APIRouter(prefix=CONSOLE_PREFIX, route_class=ConsoleRoute, include_in_schema=False)


def tenant_of(tenants: Tenants, user: UserPrincipal, tenant_id: str) -> TenantView:
    """The tenant as this person sees it; 404 for a tenant they have no role in."""
    for view in tenants.list_for(user):
        if view.id == tenant_id:
            return view
    raise NotFound()


def abilities(user: UserPrincipal, tenant_id: str) -> dict[str, bool]:
    """What the tenant's pages offer this person, one flag per permission row."""
    return {p.name.lower(): tenant_allows(user, tenant_id, p) for p in Permission}


def expiring_soon(expires_at: datetime | None, *, now: datetime, window: float) -> bool:
    return expires_at is not None and expires_at <= now + timedelta(seconds=window)


@router.get("/tenants")
def tenant_list(request: Request, user: ConsoleUser, tenants: Tenants) -> Response:
    views = tenants.list_for(user)
    can_create = platform_allows(user, PlatformPermission.TENANT_CREATE)
    context = {"title": "Tenants", "tenants": views, "can_create": can_create}
    return page(request, "tenants.html", context)


@router.get("/tenants/{tenant_id}")
def tenant_page(
    tenant_id: str,
    request: Request,
    *,
    runtime: Rt,
    ctx: Ctx,
    user: ConsoleUser,
    tenants: Tenants,
    lines: Lines,
) -> Response:
    views = lines.list(user, tenant_id, context=ctx)
    tenant = tenant_of(tenants, user, tenant_id)
    now = runtime.clock.now()
    window = runtime.settings.webhook_expiring_window_seconds
    soon = {
        v.id
        for v in views
        if v.status == "active" and expiring_soon(v.expires_at, now=now, window=window)
    }
    context = {
        "title": tenant.name,
        "tenant": tenant,
        "lines": views,
        "soon": soon,
        "can": abilities(user, tenant_id),
    }
    return page(request, "tenant.html", context)
