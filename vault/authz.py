"""Who may do what: the one permission table, deny by default.

Routes and services ask :func:`authorize` (a tenant's resources) or
:func:`authorize_platform` / :func:`platform_allows` (everything outside one tenant);
nothing else decides access, and a permission without a row is allowed to nobody. A
person with no role in a tenant gets ``NotFound`` (the tenant's resources are not
revealed), a member without the permission gets ``Forbidden``. Platform admins act as a
tenant owner everywhere; platform auditors as a tenant auditor everywhere.

Each row also says whether it needs a fresh second factor ("sudo mode", the
``*_NEEDS_MFA`` columns): a sensitive action answers ``MfaRequired`` unless the session
is MFA-fresh or the request itself carries a valid unused TOTP code, checked through the
principal's ``second_factor`` (the API builds it from ``mfa_code`` / ``X-MFA-Code``).
The check runs after the role check, so a stranger still gets 404 and a member without
the permission 403 rather than a hint to bring a code; a stolen session past its
freshness therefore cannot register a runner, grant it lines and fetch them.

Runners have no role: what they may do is the runner row below, and which lines they
may do it to is their grants'.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, get_args

from vault.errors import (
    Forbidden,
    MfaEnrollmentRequired,
    MfaRequired,
    NotFound,
    PasswordChangeRequired,
)

__all__ = [
    "ACCOUNT_SETUP_PATHS",
    "PLATFORM_NEEDS_MFA",
    "PLATFORM_PERMISSIONS",
    "PLATFORM_ROLES",
    "RUNNER_PERMISSIONS",
    "TENANT_NEEDS_MFA",
    "TENANT_PERMISSIONS",
    "TENANT_ROLES",
    "Permission",
    "PlatformPermission",
    "PlatformRole",
    "RunnerPermission",
    "TenantRole",
    "UserPrincipal",
    "authorize",
    "authorize_platform",
    "can_assign_role",
    "check_account_ready",
    "effective_role",
    "member_permission",
    "needs_mfa",
    "platform_allows",
    "platform_forbidden",
    "require_second_factor",
    "runner_directory_allowed",
    "tenant_allows",
]

TenantRole = Literal["owner", "admin", "member", "auditor"]
PlatformRole = Literal["admin", "auditor"]
TENANT_ROLES: tuple[str, ...] = get_args(TenantRole)
PLATFORM_ROLES: tuple[str, ...] = get_args(PlatformRole)


class Permission(StrEnum):
    TENANT_READ = "tenant.read"
    TENANT_DELETE = "tenant.delete"
    TENANT_EXPORT = "tenant.export"
    MEMBER_READ = "member.read"
    MEMBER_WRITE = "member.write"
    MEMBER_WRITE_MANAGER = "member.write_manager"
    LINE_READ = "line.read"
    LINE_WRITE = "line.write"
    LINE_REPLACE = "line.replace"
    LINE_REVOKE = "line.revoke"
    LINE_SUSPEND = "line.suspend"
    LINE_RESUME = "line.resume"
    TENANT_SUSPEND = "tenant.suspend"
    TENANT_RESUME = "tenant.resume"
    RUNNER_DIRECTORY = "runner.directory"
    LINE_CHECK = "line.check"
    LINE_REFRESH = "line.refresh"
    GRANT_READ = "grant.read"
    GRANT_WRITE = "grant.write"
    KEY_READ = "key.read"
    KEY_ROTATE = "key.rotate"
    AUDIT_READ = "audit.read"
    AUDIT_EXPORT = "audit.export"  # the verifiable bundle, scoped to the tenant
    WEBHOOK_CREATE = "webhook.create"
    WEBHOOK_MANAGE = "webhook.manage"  # delete, send a test event
    WEBHOOK_READ = "webhook.read"  # list, the delivery log


_ALL = frozenset(TENANT_ROLES)
_MANAGERS = frozenset({"owner", "admin"})

TENANT_PERMISSIONS: Mapping[Permission, frozenset[str]] = {
    Permission.TENANT_READ: _ALL,
    Permission.TENANT_DELETE: frozenset({"owner"}),
    Permission.TENANT_EXPORT: frozenset({"owner"}),
    Permission.MEMBER_READ: _MANAGERS,
    Permission.MEMBER_WRITE: _MANAGERS,
    Permission.MEMBER_WRITE_MANAGER: _MANAGERS,
    Permission.LINE_READ: _ALL,
    Permission.LINE_WRITE: _MANAGERS,
    Permission.LINE_REPLACE: _MANAGERS,
    Permission.LINE_REVOKE: _MANAGERS,
    Permission.LINE_SUSPEND: _MANAGERS,
    Permission.LINE_RESUME: _MANAGERS,
    Permission.TENANT_SUSPEND: frozenset({"owner"}),
    Permission.TENANT_RESUME: frozenset({"owner"}),
    # Listing runners (id, name, created_at, status) so that they can be granted: a
    # manager of any one tenant (see runner_directory_allowed); registering them stays
    # with platform admins (PlatformPermission.RUNNER_CREATE).
    Permission.RUNNER_DIRECTORY: _MANAGERS,
    Permission.LINE_CHECK: _MANAGERS,
    Permission.LINE_REFRESH: _MANAGERS,
    Permission.GRANT_READ: _MANAGERS | {"auditor"},
    Permission.GRANT_WRITE: _MANAGERS,
    Permission.KEY_READ: _MANAGERS | {"auditor"},
    Permission.KEY_ROTATE: _MANAGERS,
    Permission.AUDIT_READ: frozenset({"owner", "auditor"}),
    Permission.AUDIT_EXPORT: frozenset({"owner", "auditor"}),
    Permission.WEBHOOK_CREATE: _MANAGERS,
    Permission.WEBHOOK_MANAGE: _MANAGERS,
    Permission.WEBHOOK_READ: _MANAGERS,
}


# The "needs MFA" column of the tenant table: every row states it (tests check that no
# row is left undecided). Irreversible or access-widening actions need it.
TENANT_NEEDS_MFA: Mapping[Permission, bool] = {
    Permission.TENANT_READ: False,
    Permission.TENANT_DELETE: True,
    Permission.TENANT_EXPORT: True,
    Permission.MEMBER_READ: False,
    Permission.MEMBER_WRITE: False,  # adding/changing a plain member or auditor
    Permission.MEMBER_WRITE_MANAGER: True,  # making, changing or unmaking an owner/admin
    Permission.LINE_READ: False,
    Permission.LINE_WRITE: False,
    Permission.LINE_REPLACE: True,
    Permission.LINE_REVOKE: True,
    # Suspending is protective (it only stops serving): no second factor, so a stale
    # session can stop a leak at once. Resuming widens access again: MFA.
    Permission.LINE_SUSPEND: False,
    Permission.LINE_RESUME: True,
    Permission.TENANT_SUSPEND: False,
    Permission.TENANT_RESUME: True,
    Permission.RUNNER_DIRECTORY: False,
    Permission.LINE_CHECK: False,  # asks the platform again; changes no secret
    # Asks the platform to renew its own token (Instagram): the caller supplies no secret,
    # sees none, and widens nobody's access; the vault does the same by itself before
    # expiry. Like the check, no second factor (docs/connectors.md).
    Permission.LINE_REFRESH: False,
    Permission.GRANT_READ: False,
    Permission.GRANT_WRITE: True,
    Permission.KEY_READ: False,
    Permission.KEY_ROTATE: True,
    Permission.AUDIT_READ: False,
    Permission.AUDIT_EXPORT: False,
    # A new webhook receives every lifecycle event of the tenant: sudo mode, like grants.
    Permission.WEBHOOK_CREATE: True,
    Permission.WEBHOOK_MANAGE: False,
    Permission.WEBHOOK_READ: False,
}


class PlatformPermission(StrEnum):
    """Actions outside any one tenant."""

    TENANT_CREATE = "platform.tenant.create"
    TENANT_LIST_ALL = "platform.tenant.list_all"
    USER_CREATE = "platform.user.create"
    USER_READ = "platform.user.read"
    USER_DELETE = "platform.user.delete"
    USER_DISABLE = "platform.user.disable"  # and enable again
    RUNNER_CREATE = "platform.runner.create"
    RUNNER_READ = "platform.runner.read"
    RUNNER_ROTATE = "platform.runner.rotate"
    RUNNER_DISABLE = "platform.runner.disable"
    AUDIT_READ_ALL = "platform.audit.read_all"
    AUDIT_VERIFY = "platform.audit.verify"
    WEBHOOK_CREATE = "platform.webhook.create"
    WEBHOOK_MANAGE = "platform.webhook.manage"
    WEBHOOK_READ = "platform.webhook.read"
    AUDIT_EXPORT = "platform.audit.export"


_PLATFORM_ADMIN = frozenset({"admin"})
_PLATFORM_READERS = frozenset(PLATFORM_ROLES)

PLATFORM_PERMISSIONS: Mapping[PlatformPermission, frozenset[str]] = {
    PlatformPermission.TENANT_CREATE: _PLATFORM_ADMIN,
    PlatformPermission.TENANT_LIST_ALL: _PLATFORM_READERS,
    PlatformPermission.USER_CREATE: _PLATFORM_ADMIN,
    PlatformPermission.USER_READ: _PLATFORM_READERS,
    PlatformPermission.USER_DELETE: _PLATFORM_ADMIN,
    PlatformPermission.USER_DISABLE: _PLATFORM_ADMIN,
    PlatformPermission.RUNNER_CREATE: _PLATFORM_ADMIN,
    PlatformPermission.RUNNER_READ: _PLATFORM_READERS,
    PlatformPermission.RUNNER_ROTATE: _PLATFORM_ADMIN,
    PlatformPermission.RUNNER_DISABLE: _PLATFORM_ADMIN,
    PlatformPermission.AUDIT_READ_ALL: _PLATFORM_READERS,
    PlatformPermission.AUDIT_VERIFY: _PLATFORM_READERS,
    PlatformPermission.WEBHOOK_CREATE: _PLATFORM_ADMIN,
    PlatformPermission.WEBHOOK_MANAGE: _PLATFORM_ADMIN,
    PlatformPermission.WEBHOOK_READ: _PLATFORM_READERS,
    PlatformPermission.AUDIT_EXPORT: _PLATFORM_READERS,
}

# The "needs MFA" column of the platform table.
PLATFORM_NEEDS_MFA: Mapping[PlatformPermission, bool] = {
    PlatformPermission.TENANT_CREATE: False,
    PlatformPermission.TENANT_LIST_ALL: False,
    PlatformPermission.USER_CREATE: True,
    PlatformPermission.USER_READ: False,
    PlatformPermission.USER_DELETE: True,
    PlatformPermission.USER_DISABLE: True,
    PlatformPermission.RUNNER_CREATE: True,
    PlatformPermission.RUNNER_READ: False,
    PlatformPermission.RUNNER_ROTATE: True,
    PlatformPermission.RUNNER_DISABLE: True,
    PlatformPermission.AUDIT_READ_ALL: False,
    PlatformPermission.AUDIT_VERIFY: False,
    PlatformPermission.WEBHOOK_CREATE: True,
    PlatformPermission.WEBHOOK_MANAGE: False,
    PlatformPermission.WEBHOOK_READ: False,
    PlatformPermission.AUDIT_EXPORT: False,
}


class RunnerPermission(StrEnum):
    """What a runner (a workflow's machine identity, holding a runner token) may do."""

    CREDENTIAL_FETCH = "runner.credential.fetch"
    CREDENTIAL_SIGN = "runner.credential.sign"
    CREDENTIAL_PROOF = "runner.credential.proof"


# A runner may fetch the current credential of a line its tenant granted it, and nothing
# else; a person never may (only runners receive stored secrets). The row covers both
# ways of asking: GET /v1/tenants/{t}/lines/{l}/credential and the Vault-compatible KV v2
# read GET /v1/lines/data/{t}/{l}, which runs the same fetch. (A runner's own token, its
# lookup-self and revoke-self, is the holder's own business, like a session's logout.)
# A runner may also use a granted line's signing material without receiving it (any
# grant, "full" or "use"): POST /v1/tenants/{t}/lines/{l}/sign (widget lines) and
# POST .../appsecret-proof (instagram, messenger), the fetch's own decision
# (vault/runners/use.py).
# The fetch checks the token, the runner and the grant in its one SQL read
# (vault/runners/statement.py), so no request looks these rows up: they state the rule
# that read implements.
RUNNER_PERMISSIONS: frozenset[RunnerPermission] = frozenset(
    {
        RunnerPermission.CREDENTIAL_FETCH,
        RunnerPermission.CREDENTIAL_SIGN,
        RunnerPermission.CREDENTIAL_PROOF,
    }
)

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
    # Account safety (check_account_ready): a second factor enrolled, and a password that
    # the vault generated for someone else still waiting to be changed.
    totp_enrolled: bool = False
    password_change_required: bool = False
    # Verifies the request's own one-time code (raises MfaRequired / MfaInvalid); set by
    # the API per request, None where no code can come with the request.
    second_factor: Callable[[], None] | None = field(default=None, compare=False, repr=False)


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
    allowed = TENANT_PERMISSIONS.get(permission, _NOBODY)
    if role not in allowed:
        raise Forbidden(_needs(f"tenant role {_roles(allowed)}", f"yours is {role}"))
    if needs_mfa(permission):
        require_second_factor(principal)
    return role


def _roles(allowed: frozenset[str]) -> str:
    names = [r for r in (*TENANT_ROLES, *PLATFORM_ROLES) if r in allowed]
    names = list(dict.fromkeys(names))
    return " or ".join(names) if names else "(none: nobody may)"


def _needs(what: str, have: str) -> str:
    """The 403 detail: the real reason, told only to someone already inside (a member of
    the tenant, a signed-in user for platform actions), so it reveals nothing to a stranger."""
    return f"this action needs {what}; {have}"


def needs_mfa(permission: Permission | PlatformPermission) -> bool:
    """The row's "needs MFA" column; a row without a decision needs it (deny by default)."""
    if isinstance(permission, PlatformPermission):
        return PLATFORM_NEEDS_MFA.get(permission, True)
    return TENANT_NEEDS_MFA.get(permission, True)


def require_second_factor(principal: UserPrincipal) -> None:
    """Pass if the session is MFA-fresh or the request's own code verifies; else raise."""
    if principal.mfa_fresh:
        return
    if principal.second_factor is None:
        raise MfaRequired()
    principal.second_factor()


def member_permission(*, new_role: str | None, current_role: str | None) -> Permission:
    """The row for changing a membership: touching an owner or admin needs MFA."""
    if {new_role, current_role} & _MANAGERS:
        return Permission.MEMBER_WRITE_MANAGER
    return Permission.MEMBER_WRITE


def tenant_allows(principal: UserPrincipal, tenant_id: str, permission: Permission) -> bool:
    """Does the user's role in ``tenant_id`` carry ``permission``? For what a page offers
    (the console hides a control the row denies); the action itself still calls
    :func:`authorize`, so hiding is never the protection."""
    role = effective_role(principal, tenant_id)
    return role is not None and role in TENANT_PERMISSIONS.get(permission, _NOBODY)


def platform_allows(principal: UserPrincipal, permission: PlatformPermission) -> bool:
    """Does the user's platform role carry ``permission``? (For scoping what they see.)"""
    return principal.platform_role in PLATFORM_PERMISSIONS.get(permission, _NOBODY)


def runner_directory_allowed(principal: UserPrincipal) -> bool:
    """May the user list runners? Platform readers (the full rows) or a member whose role
    in some tenant carries ``runner.directory`` (the table's row: owners and admins)."""
    if platform_allows(principal, PlatformPermission.RUNNER_READ):
        return True
    allowed = TENANT_PERMISSIONS.get(Permission.RUNNER_DIRECTORY, _NOBODY)
    return any(role in allowed for role in principal.tenant_roles.values())


def authorize_platform(principal: UserPrincipal, permission: PlatformPermission) -> UserPrincipal:
    """Return the user if their platform role carries ``permission``; else ``Forbidden``."""
    if not platform_allows(principal, permission):
        raise platform_forbidden(principal, permission)
    if needs_mfa(permission):
        require_second_factor(principal)
    return principal


def platform_forbidden(principal: UserPrincipal, permission: PlatformPermission) -> Forbidden:
    """The 403 for a platform action, naming the platform role it needs."""
    allowed = PLATFORM_PERMISSIONS.get(permission, _NOBODY)
    have = f"yours is {principal.platform_role}" if principal.platform_role else "you have none"
    return Forbidden(_needs(f"platform role {_roles(allowed)}", have))


def can_assign_role(actor_role: str, *, new_role: str, current_role: str | None) -> bool:
    """May a member with ``actor_role`` change someone from ``current_role`` to ``new_role``?"""
    allowed = _ASSIGNABLE_BY.get(actor_role, frozenset())
    return new_role in allowed and (current_role is None or current_role in allowed)


# Account safety: while a user is not yet compliant with the account policies (no second
# factor enrolled, or a generated password not yet changed) their sessions reach only
# these route paths, the ones that make them compliant (or end the session).
# The console's set-up pages (api/console/signin.py) are the same steps in a browser.
ACCOUNT_SETUP_PATHS: frozenset[str] = frozenset(
    {
        "/v1/me",
        "/v1/me/totp",
        "/v1/me/totp/confirm",
        "/v1/me/password",
        "/v1/auth/logout",
        "/ui/enrol",
        "/ui/enrol/confirm",
        "/ui/password",
        "/ui/logout",
    }
)


def check_account_ready(
    principal: UserPrincipal,
    route_path: str,
    *,
    require_mfa: bool,
    require_password_change: bool,
) -> None:
    """Raise ``PasswordChangeRequired`` / ``MfaEnrollmentRequired`` (403, saying what to do
    next) when a policy that is on is not yet met and ``route_path`` is not a set-up route.

    The generated password comes first: it was seen by whoever created the account.
    """
    if route_path in ACCOUNT_SETUP_PATHS:
        return
    if require_password_change and principal.password_change_required:
        then = (
            "; then enrol a second factor (POST /v1/me/totp, then POST /v1/me/totp/confirm)"
            if require_mfa and not principal.totp_enrolled
            else ""
        )
        raise PasswordChangeRequired(PasswordChangeRequired.default_detail + then)
    if require_mfa and not principal.totp_enrolled:
        raise MfaEnrollmentRequired()
