"""Tenants and their members.

Creating a tenant creates its first key-encryption key (version 1, wrapped by the root)
in the same transaction, so a tenant never exists without a key. Access is decided by
``vault.authz`` only; a caller with no role in a tenant gets ``NotFound``. Every denied
attempt is audited through the group-commit writer after the request's transaction is
rolled back (on SQLite its write lock would otherwise block the writer).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from vault.audit.events import Actor, AuditEvent, Outcome, RequestContext
from vault.audit.trail import AuditTrail
from vault.authz import (
    TENANT_ROLES,
    Permission,
    PlatformPermission,
    UserPrincipal,
    authorize,
    authorize_platform,
    can_assign_role,
    effective_role,
    member_permission,
    platform_allows,
)
from vault.clock import Clock
from vault.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    MfaInvalid,
    MfaRequired,
    NotFound,
    Unprocessable,
    VaultError,
)
from vault.ids import new_id
from vault.keys.keyring import KeyRing
from vault.storage.models import Membership, Tenant, User
from vault.validation import clean_display_name

__all__ = ["MemberView", "TenantService", "TenantView"]


@dataclass(frozen=True, slots=True)
class TenantView:
    id: str
    name: str
    created_at: datetime
    role: str | None


@dataclass(frozen=True, slots=True)
class MemberView:
    tenant_id: str
    user_id: str
    email: str | None
    role: str
    created_at: datetime


class TenantService:
    def __init__(
        self,
        session: Session,
        *,
        keyring: KeyRing,
        audit: AuditTrail,
        clock: Clock,
        ctx: RequestContext,
    ) -> None:
        self._session = session
        self._keyring = keyring
        self._audit = audit
        self._clock = clock
        self._ctx = ctx

    def _event(
        self,
        action: str,
        outcome: Outcome,
        principal: UserPrincipal,
        *,
        tenant_id: str | None,
        resource: tuple[str, str] | None,
        reason: str,
    ) -> AuditEvent:
        return AuditEvent.by(
            Actor("user", principal.user_id),
            action,
            outcome,
            tenant_id=tenant_id,
            resource_type=resource[0] if resource else None,
            resource_id=resource[1] if resource else None,
            reason=reason,
            context=self._ctx,
        )

    def _deny(self, event: AuditEvent, error: VaultError) -> VaultError:
        self._session.rollback()
        self._audit.emit(event)
        return error

    def _live_tenant(self, tenant_id: str) -> Tenant:
        tenant = self._session.get(Tenant, tenant_id)
        if tenant is None or tenant.deleted_at is not None:
            raise NotFound()
        return tenant

    def create(
        self, principal: UserPrincipal, *, name: str, owner_user_id: str | None
    ) -> TenantView:
        try:
            authorize_platform(principal, PlatformPermission.TENANT_CREATE)
        except Forbidden as exc:
            denied = self._event(
                "tenant.create",
                "denied",
                principal,
                tenant_id=None,
                resource=None,
                reason="platform admin required",
            )
            raise self._deny(denied, exc) from None
        cleaned = clean_display_name(name)
        if cleaned is None:
            raise Unprocessable(
                "invalid value for: name (1-200 characters, no control, bidi or invisible"
                " characters)",
                field="name",
            )
        name = cleaned
        now = self._clock.now()
        if owner_user_id is not None and self._session.get(User, owner_user_id) is None:
            raise InvalidRequest("owner_user_id does not name a user", field="owner_user_id")
        tenant = Tenant(id=new_id("tnt"), name=name, active_kek_version=1, created_at=now)
        self._session.add(tenant)
        self._session.flush()
        self._keyring.create_kek(self._session, tenant_id=tenant.id, version=1, now=now)
        if owner_user_id is not None:
            self._session.add(
                Membership(tenant_id=tenant.id, user_id=owner_user_id, role="owner", created_at=now)
            )
            self._session.flush()
        owner = f"; owner {owner_user_id}" if owner_user_id else ""
        self._audit.record(
            self._session,
            self._event(
                "tenant.create",
                "success",
                principal,
                tenant_id=tenant.id,
                resource=("tenant", tenant.id),
                reason=f"tenant created with KEK v1{owner}",
            ),
        )
        return TenantView(
            tenant.id, tenant.name, tenant.created_at, "owner" if owner_user_id else None
        )

    def list_for(self, principal: UserPrincipal) -> list[TenantView]:
        stmt = (
            select(Tenant).where(Tenant.deleted_at.is_(None)).order_by(Tenant.created_at, Tenant.id)
        )
        if not platform_allows(principal, PlatformPermission.TENANT_LIST_ALL):
            ids = list(principal.tenant_roles)
            if not ids:
                return []
            stmt = stmt.where(Tenant.id.in_(ids))
        return [
            TenantView(t.id, t.name, t.created_at, effective_role(principal, t.id))
            for t in self._session.execute(stmt).scalars()
        ]

    def _authorized(
        self, principal: UserPrincipal, tenant_id: str, permission: Permission, action: str
    ) -> str:
        try:
            role = authorize(principal, tenant_id, permission)
            self._live_tenant(tenant_id)
            return role
        except (NotFound, Forbidden, MfaRequired, MfaInvalid) as exc:
            why = {MfaRequired: "mfa_required", MfaInvalid: "mfa_invalid"}.get(type(exc), "refused")
            denied = self._event(
                action,
                "denied",
                principal,
                tenant_id=tenant_id,
                resource=("tenant", tenant_id),
                reason=f"{permission.value} {why}",
            )
            raise self._deny(denied, exc) from None

    def members(self, principal: UserPrincipal, tenant_id: str) -> list[MemberView]:
        self._authorized(principal, tenant_id, Permission.MEMBER_READ, "member.list")
        rows = self._session.execute(
            select(Membership, User.email)
            .join(User, User.id == Membership.user_id)
            .where(Membership.tenant_id == tenant_id)
            .order_by(Membership.created_at, Membership.user_id)
        ).all()
        return [
            MemberView(m.tenant_id, m.user_id, email, m.role, m.created_at) for m, email in rows
        ]

    def set_member(
        self, principal: UserPrincipal, tenant_id: str, *, user_id: str, role: str
    ) -> tuple[MemberView, bool]:
        """Add ``user_id`` with ``role`` (or change their role); True when newly added.

        Touching an owner or admin needs MFA (the table's ``member.write_manager`` row),
        checked after the role rules so a plain member hears 403, not "bring a code".
        The last owner cannot be demoted (409), whoever asks.
        """
        actor_role = self._authorized(principal, tenant_id, Permission.MEMBER_WRITE, "member.add")
        if role not in TENANT_ROLES:
            raise InvalidRequest("role must be owner, admin, member or auditor", field="role")
        user = self._session.get(User, user_id)
        if user is None:
            raise InvalidRequest("user_id does not name a user", field="user_id")
        existing = self._session.get(Membership, (tenant_id, user_id))
        current = existing.role if existing else None
        if not can_assign_role(actor_role, new_role=role, current_role=current):
            denied = self._event(
                "member.add",
                "denied",
                principal,
                tenant_id=tenant_id,
                resource=("user", user_id),
                reason=f"a tenant {actor_role} may not assign {role}",
            )
            raise self._deny(denied, Forbidden("only an owner may assign or change the owner role"))
        permission = member_permission(new_role=role, current_role=current)
        self._authorized(principal, tenant_id, permission, "member.add")
        if current == "owner" and role != "owner":
            self._keep_an_owner(principal, tenant_id, user_id, "member.update")
        visible = self._may_see_user(principal, user_id)
        now = self._clock.now()
        if existing is None:
            existing = Membership(tenant_id=tenant_id, user_id=user_id, role=role, created_at=now)
            self._session.add(existing)
        else:
            existing.role = role
        self._session.flush()
        change = f"role {current} -> {role}" if current else f"added as {role}"
        self._audit.record(
            self._session,
            self._event(
                "member.add" if current is None else "member.update",
                "success",
                principal,
                tenant_id=tenant_id,
                resource=("user", user_id),
                reason=change,
            ),
        )
        email = user.email if visible else None
        view = MemberView(tenant_id, user_id, email, role, existing.created_at)
        return view, current is None

    def _keep_an_owner(
        self, principal: UserPrincipal, tenant_id: str, user_id: str, action: str
    ) -> None:
        """Refuse (409, audited) to demote or remove the tenant's last owner.

        The tenant row is locked first (PostgreSQL), so two owners demoting each other at
        once are counted one after the other."""
        self._session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
        owners = self._session.execute(
            select(func.count())
            .select_from(Membership)
            .where(Membership.tenant_id == tenant_id, Membership.role == "owner")
        ).scalar_one()
        if owners <= 1:
            refused = self._event(
                action,
                "error",
                principal,
                tenant_id=tenant_id,
                resource=("user", user_id),
                reason="conflict: last owner",
            )
            raise self._deny(refused, Conflict("a tenant must keep at least one owner"))

    def _may_see_user(self, principal: UserPrincipal, user_id: str) -> bool:
        """Only a platform admin, or someone sharing a tenant with the user, learns their
        email: adding an id must not reveal who an outsider is."""
        if principal.platform_role == "admin" or user_id == principal.user_id:
            return True
        shared = self._session.execute(
            select(Membership.user_id)
            .where(
                Membership.user_id == user_id,
                Membership.tenant_id.in_(list(principal.tenant_roles)),
            )
            .limit(1)
        ).first()
        return shared is not None

    def update_member(
        self, principal: UserPrincipal, tenant_id: str, *, user_id: str, role: str
    ) -> MemberView:
        """Change the role of an existing member (404 when ``user_id`` is not one)."""
        self._authorized(principal, tenant_id, Permission.MEMBER_WRITE, "member.update")
        self._existing(principal, tenant_id, user_id, "member.update")
        view, _ = self.set_member(principal, tenant_id, user_id=user_id, role=role)
        return view

    def _existing(
        self, principal: UserPrincipal, tenant_id: str, user_id: str, action: str
    ) -> Membership:
        membership = self._session.get(Membership, (tenant_id, user_id))
        if membership is None:
            denied = self._event(
                action,
                "denied",
                principal,
                tenant_id=tenant_id,
                resource=("user", user_id),
                reason="not_found: no such member",
            )
            raise self._deny(denied, NotFound("no such member in this tenant"))
        return membership

    def remove_member(self, principal: UserPrincipal, tenant_id: str, *, user_id: str) -> None:
        """End ``user_id``'s membership. Only owners remove owners; removing an owner or
        admin needs MFA; the last owner stays (409). Sessions read memberships on every
        request, so the removed user's next request, in any process, is refused."""
        action = "member.remove"
        actor_role = self._authorized(principal, tenant_id, Permission.MEMBER_WRITE, action)
        current = self._existing(principal, tenant_id, user_id, action).role
        if not can_assign_role(actor_role, new_role=current, current_role=current):
            denied = self._event(
                action,
                "denied",
                principal,
                tenant_id=tenant_id,
                resource=("user", user_id),
                reason=f"a tenant {actor_role} may not remove a {current}",
            )
            raise self._deny(denied, Forbidden("only an owner may remove an owner"))
        permission = member_permission(new_role=None, current_role=current)
        self._authorized(principal, tenant_id, permission, action)
        if current == "owner":
            self._keep_an_owner(principal, tenant_id, user_id, action)
        self._session.execute(
            delete(Membership)
            .where(Membership.tenant_id == tenant_id, Membership.user_id == user_id)
            .execution_options(synchronize_session=False)
        )
        self._session.expire_all()
        self._audit.record(
            self._session,
            self._event(
                action,
                "success",
                principal,
                tenant_id=tenant_id,
                resource=("user", user_id),
                reason=f"{current} removed",
            ),
        )
