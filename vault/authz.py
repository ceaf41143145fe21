"""Who may do what: the one permission table, deny by default.

Routes and services ask :func:`authorize` (a tenant's resources) or
:func:`authorize_platform` / :func:`platform_allows` (everything outside one tenant);
nothing else decides access, and a permission without a row is allowed to nobody. A
person with no role in a tenant gets ``NotFound`` (the tenant's resources are not
revealed), a member without the permission gets ``Forbidden``. Platform admins act as a
tenant owner everywhere; platform auditors as a tenant auditor everywhere.

Runners have no role: what they may do is the runner row below, and which lines they
may do it to is their grants'.
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
    "RUNNER_PERMISSIONS",
    "TENANT_PERMISSIONS",
    "TENANT_ROLES",
    "Permission",
    "PlatformPermission",
    "RunnerPermission",
    "UserPrincipal",
    "authorize",
    "authorize_platform",
    "can_assign_role",
    "effective_role",
    "platform_allows",
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
    RUNNER_CREATE = "platform.runner.create"
    RUNNER_READ = "platform.runner.read"
    RUNNER_ROTATE = "platform.runner.rotate"
    RUNNER_DISABLE = "platform.runner.disable"
    AUDIT_READ_ALL = "platform.audit.read_all"
    AUDIT_VERIFY = "platform.audit.verify"


_PLATFORM_ADMIN = frozenset({"admin"})
_PLATFORM_READERS = frozenset(PLATFORM_ROLES)

PLATFORM_PERMISSIONS: Mapping[PlatformPermission, frozenset[str]] = {
    PlatformPermission.TENANT_CREATE: _PLATFORM_ADMIN,
    PlatformPermission.TENANT_LIST_ALL: _PLATFORM_READERS,
    PlatformPermission.USER_CREATE: _PLATFORM_ADMIN,
    PlatformPermission.RUNNER_CREATE: _PLATFORM_ADMIN,
    PlatformPermission.RUNNER_READ: _PLATFORM_READERS,
    PlatformPermission.RUNNER_ROTATE: _PLATFORM_ADMIN,
    PlatformPermission.RUNNER_DISABLE: _PLATFORM_ADMIN,
    PlatformPermission.AUDIT_READ_ALL: _PLATFORM_READERS,
    PlatformPermission.AUDIT_VERIFY: _PLATFORM_READERS,
}


class RunnerPermission(StrEnum):
    """What a runner (a workflow's machine identity, holding a runner token) may do."""

    CREDENTIAL_FETCH = "runner.credential.fetch"


# A runner may fetch the current credential of a line its tenant granted it, and nothing
# else; a person never may (only runners receive stored secrets). The fetch checks the
# token, the runner and the grant in its one SQL read (vault/runners/statement.py), so
# no request looks this row up: it states the rule that read implements.
RUNNER_PERMISSIONS: frozenset[RunnerPermission] = frozenset({RunnerPermission.CREDENTIAL_FETCH})

_NOBODY: frozenset[str] = frozenset()

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


def effective_role(principal: UserPrincipal, tenant_id: str) -> str | None:
    role = principal.tenant_roles.get(tenant_id)
    if principal.platform_role == "admin":
        return "owner"
    if role is None and principal.platform_role == "auditor":
        return "auditor"
    return role


def authorize(principal: UserPrincipal, tenant_id: str, permission: Permission) -> str:
    """Return the caller's effective role in ``tenant_id`` or raise NotFound/Forbidden."""
    role = effective_role(principal, tenant_id)
    if role is None:
        raise NotFound()
    if role not in TENANT_PERMISSIONS.get(permission, _NOBODY):
        raise Forbidden()
    return role


def platform_allows(principal: UserPrincipal, permission: PlatformPermission) -> bool:
    """Does the user's platform role carry ``permission``? (For scoping what they see.)"""
    return principal.platform_role in PLATFORM_PERMISSIONS.get(permission, _NOBODY)


def authorize_platform(principal: UserPrincipal, permission: PlatformPermission) -> UserPrincipal:
    """Return the user if their platform role carries ``permission``; else ``Forbidden``."""
    if not platform_allows(principal, permission):
        raise Forbidden()
    return principal


def can_assign_role(actor_role: str, *, new_role: str, current_role: str | None) -> bool:
    """May a member with ``actor_role`` change someone from ``current_role`` to ``new_role``?"""
    allowed = _ASSIGNABLE_BY.get(actor_role, frozenset())
    return new_role in allowed and (current_role is None or current_role in allowed)
