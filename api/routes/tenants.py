"""Tenants and members (docs/api.md, "Tenants and members"): add, change, remove.

DELETE and export live in ``api/routes/privacy.py``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from api.deps import CurrentUser, Tenants
from vault.authz import TenantRole
from vault.clock import rfc3339
from vault.identity.tenants import MemberView

__all__ = ["router"]

router = APIRouter(tags=["tenants"])


class NewTenantBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    owner_user_id: str | None = Field(default=None, max_length=40)


class MemberBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(min_length=1, max_length=40)
    role: TenantRole = Field(description="the member's role in the tenant")
    mfa_code: str | None = Field(default=None, max_length=32, description="sudo mode")


class RoleBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str = Field(min_length=1, max_length=16)
    mfa_code: str | None = Field(default=None, max_length=32, description="sudo mode")


def _member(view: MemberView) -> dict[str, Any]:
    return {
        "tenant_id": view.tenant_id,
        "user_id": view.user_id,
        "email": view.email,
        "role": view.role,
        "created_at": rfc3339(view.created_at),
    }


@router.post("/v1/tenants", status_code=201)
def create_tenant(body: NewTenantBody, user: CurrentUser, tenants: Tenants) -> dict[str, Any]:
    """Create a tenant.

    Platform admin. The tenant gets its first key-encryption key; `owner_user_id` makes
    that user its owner."""
    view = tenants.create(user, name=body.name, owner_user_id=body.owner_user_id)
    return {"id": view.id, "name": view.name, "created_at": rfc3339(view.created_at)}


@router.get("/v1/tenants")
def list_tenants(user: CurrentUser, tenants: Tenants) -> dict[str, Any]:
    """List my tenants.

    The tenants the caller belongs to, every tenant for platform admins and auditors."""
    views = tenants.list_for(user)
    return {
        "tenants": [
            {"id": v.id, "name": v.name, "created_at": rfc3339(v.created_at), "role": v.role}
            for v in views
        ]
    }


@router.get("/v1/tenants/{tenant_id}/members")
def list_members(tenant_id: str, user: CurrentUser, tenants: Tenants) -> dict[str, Any]:
    """List a tenant's members.

    Owners and admins of the tenant."""
    views = tenants.members(user, tenant_id)
    return {"members": [_member(v) for v in views]}


@router.post(
    "/v1/tenants/{tenant_id}/members",
    status_code=201,
    responses={200: {"description": "the user was a member already: their role was changed"}},
)
def add_member(
    tenant_id: str, *, body: MemberBody, user: CurrentUser, tenants: Tenants
) -> JSONResponse:
    """Add or change a member.

    `role` is one of owner, admin, member, auditor (owner or admin; only owners hand out
    the owner role; making or changing an owner or admin needs a fresh second factor)."""
    view, created = tenants.set_member(user, tenant_id, user_id=body.user_id, role=body.role)
    return JSONResponse(_member(view), status_code=201 if created else 200)


@router.patch("/v1/tenants/{tenant_id}/members/{user_id}")
def change_member(
    tenant_id: str, user_id: str, *, body: RoleBody, user: CurrentUser, tenants: Tenants
) -> dict[str, Any]:
    """Change a member's role.

    Owners and admins; only owners change owners; touching an owner or admin needs a
    fresh second factor; demoting the last owner is 409."""
    view = tenants.update_member(user, tenant_id, user_id=user_id, role=body.role)
    return _member(view)


@router.delete("/v1/tenants/{tenant_id}/members/{user_id}", status_code=204)
def remove_member(
    tenant_id: str,
    user_id: str,
    *,
    user: CurrentUser,
    tenants: Tenants,
    mfa_code: Annotated[str | None, Header(alias="X-MFA-Code", max_length=32)] = None,
) -> Response:
    """Remove a member.

    Owners and admins; only owners remove owners; removing the last owner is 409. Access
    ends on the removed user's next request."""
    del mfa_code  # declared for the docs; the principal reads it (api/deps.py)
    tenants.remove_member(user, tenant_id, user_id=user_id)
    return Response(status_code=204)
