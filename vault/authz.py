"""Who may do what: the one permission table, deny by default.

Routes and services ask :func:`authorize`; nothing else decides access. A principal with
no role in a tenant gets ``NotFound`` (the tenant's resources are not revealed), a member
without the permission gets ``Forbidden``. Platform admins act as a tenant owner
everywhere; platform auditors as a tenant auditor everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from vault.errors import Forbidden, NotFound

__all__ = [
    "PLATFORM_PERMISSIONS",
    "PLATFORM_ROLES",
    "TENANT_PERMISSIONS",
    "TENANT_ROLES",
    "Permission",
    "PlatformPermission",
    "Principal",
    "RunnerPrincipal",
    "UserPrincipal",
    "authorize",
    "authorize_platform",
    "can_assign_role",
    "effective_role",
    "require_platform",
]

TENANT_ROLES = ("owner", "admin", "member", "auditor")
PLATFORM_ROLES = ("admin", "auditor")


class Permission(StrEnum):
    TENANT_READ = "tenant.read"
    TENANT_DELETE = "tenant.delete"
    TENANT_EXPORT = "tenant.export"
    MEMBER_READ = "member.read"
    MEMBER_WRITE = "member.write"
    LINE_READ = "line.read"
    LINE_WRITE = "line.write"
    LINE_REVOKE = "line.revoke"
    GRANT_READ = "grant.read"
    GRANT_WRITE = "grant.write"
    KEY_READ = "key.read"
    KEY_ROTATE = "key.rotate"
    AUDIT_READ = "audit.read"


_ALL = frozenset(TENANT_ROLES)
_MANAGERS = frozenset({"owner", "admin"})

TENANT_PERMISSIONS: Mapping[Permission, frozenset[str]] = {
    Permission.TENANT_READ: _ALL,
    Permission.TENANT_DELETE: frozenset({"owner"}),
    Permission.TENANT_EXPORT: frozenset({"owner"}),
    Permission.MEMBER_READ: _MANAGERS,
    Permission.MEMBER_WRITE: _MANAGERS,
    Permission.LINE_READ: _ALL,
    Permission.LINE_WRITE: _MANAGERS,
    Permission.LINE_REVOKE: _MANAGERS,
    Permission.GRANT_READ: _MANAGERS | {"auditor"},
    Permission.GRANT_WRITE: _MANAGERS,
    Permission.KEY_READ: _MANAGERS | {"auditor"},
    Permission.KEY_ROTATE: _MANAGERS,
    Permission.AUDIT_READ: frozenset({"owner", "auditor"}),
}


class PlatformPermission(StrEnum):
    """Actions outside any one tenant."""

    TENANT_CREATE = "platform.tenant.create"
    TENANT_LIST_ALL = "platform.tenant.list_all"
    USER_CREATE = "platform.user.create"


PLATFORM_PERMISSIONS: Mapping[PlatformPermission, frozenset[str]] = {
    PlatformPermission.TENANT_CREATE: frozenset({"admin"}),
    PlatformPermission.TENANT_LIST_ALL: frozenset({"admin", "auditor"}),
    PlatformPermission.USER_CREATE: frozenset({"admin"}),
}

# Who may hand out (or take away) each tenant role: an admin manages admins, members
# and auditors, but only an owner makes or unmakes owners, so an admin cannot raise
# themselves (or anyone) above their own role.
_ASSIGNABLE_BY: Mapping[str, frozenset[str]] = {
    "owner": frozenset({"owner", "admin", "member", "auditor"}),
    "admin": frozenset({"admin", "member", "auditor"}),
}


@dataclass(frozen=True, slots=True)
class UserPrincipal:
    user_id: str
    email: str
    platform_role: Literal["admin", "auditor"] | None
    session_id: str
    mfa_fresh: bool
    tenant_roles: Mapping[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> Literal["user"]:
        return "user"


@dataclass(frozen=True, slots=True)
class RunnerPrincipal:
    runner_id: str
    token_ref: str  # a keyed hash of the token, safe to log

    @property
    def kind(self) -> Literal["runner"]:
        return "runner"


Principal = UserPrincipal | RunnerPrincipal


def effective_role(principal: UserPrincipal, tenant_id: str) -> str | None:
    role = principal.tenant_roles.get(tenant_id)
    if principal.platform_role == "admin":
        return "owner"
    if role is None and principal.platform_role == "auditor":
        return "auditor"
    return role


def authorize(principal: Principal, tenant_id: str, permission: Permission) -> str:
    """Return the caller's effective role in ``tenant_id`` or raise NotFound/Forbidden."""
    if not isinstance(principal, UserPrincipal):
        raise NotFound()
    role = effective_role(principal, tenant_id)
    if role is None:
        raise NotFound()
    if role not in TENANT_PERMISSIONS[permission]:
        raise Forbidden()
    return role


def require_platform(principal: Principal, *roles: Literal["admin", "auditor"]) -> UserPrincipal:
    if not isinstance(principal, UserPrincipal) or principal.platform_role not in roles:
        raise Forbidden()
    return principal


def authorize_platform(principal: Principal, permission: PlatformPermission) -> UserPrincipal:
    """Return the user if their platform role carries ``permission``; else ``Forbidden``."""
    if (
        not isinstance(principal, UserPrincipal)
        or principal.platform_role not in PLATFORM_PERMISSIONS[permission]
    ):
        raise Forbidden()
    return principal


def can_assign_role(actor_role: str, *, new_role: str, current_role: str | None) -> bool:
    """May a member with ``actor_role`` change someone from ``current_role`` to ``new_role``?"""
    allowed = _ASSIGNABLE_BY.get(actor_role, frozenset())
    return new_role in allowed and (current_role is None or current_role in allowed)
