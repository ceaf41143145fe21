"""A tenant's members (``/ui/tenants/{id}/members``): list, add, change role, remove.

The same ``TenantService`` calls as ``api/routes/tenants.py``, so the role rules (only
owners make or unmake owners; touching an owner or admin needs the form's
"Authenticator code"; the last owner stays, a 409 shown as a message) and the audit
events are the API's. Members are added by user id, as the API takes them: the vault
does not look people up by email for tenant managers (that would tell them who has an
account).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from api.console.tenants import abilities, tenant_of
from api.console.web import CONSOLE_PREFIX, ConsoleRoute, ConsoleUser, page, see_other
from api.deps import Tenants
from vault.authz import TENANT_ROLES

__all__ = ["router"]

router = APIRouter(prefix=CONSOLE_PREFIX, route_class=ConsoleRoute, include_in_schema=False)

UserId = Annotated[str, Form(min_length=1, max_length=40)]
Role = Annotated[str, Form(min_length=1, max_length=16)]


def _members_url(tenant_id: str) -> str:
    return f"{CONSOLE_PREFIX}/tenants/{tenant_id}/members"


@router.get("/tenants/{tenant_id}/members")
def member_list(tenant_id: str, request: Request, user: ConsoleUser, tenants: Tenants) -> Response:
    views = tenants.members(user, tenant_id)
    tenant = tenant_of(tenants, user, tenant_id)
    # Only an owner hands out (or takes back) the owner role (vault.authz).
    roles = [r for r in TENANT_ROLES if r != "owner" or tenant.role == "owner"]
    context = {
        "title": f"Members · {tenant.name}",
        "tenant": tenant,
        "members": views,
        "roles": roles,
        "can": abilities(user, tenant_id),
    }
    return page(request, "members.html", context)


@router.post("/tenants/{tenant_id}/members")
def add_member(
    tenant_id: str, user_id: UserId, role: Role, user: ConsoleUser, tenants: Tenants
) -> Response:
    tenants.set_member(user, tenant_id, user_id=user_id.strip(), role=role)
    return see_other(_members_url(tenant_id))


@router.post("/tenants/{tenant_id}/members/{user_id}/role")
def change_role(
    tenant_id: str, user_id: str, role: Role, user: ConsoleUser, tenants: Tenants
) -> Response:
    tenants.update_member(user, tenant_id, user_id=user_id, role=role)
    return see_other(_members_url(tenant_id))


@router.post("/tenants/{tenant_id}/members/{user_id}/remove")
def remove_member(tenant_id: str, user_id: str, user: ConsoleUser, tenants: Tenants) -> Response:
    tenants.remove_member(user, tenant_id, user_id=user_id)
    return see_other(_members_url(tenant_id))
