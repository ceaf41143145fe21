"""Tenant deletion by crypto-shredding, and the erasure of a person's account.

Deleting a tenant destroys every version of its KEK (the rows stay as tombstones with
``wrapped`` NULL, so rotations and the audit trail can still name them), nulls every
credential envelope, and deletes the tenant's lines, grants, memberships, rotation
records and the tenant row itself, so every later lookup is a plain 404 everywhere,
without each capability having to remember a ``deleted_at`` filter. The audit history is
kept (events name the tenant by id only). All of it, and the ``tenant.delete`` event,
commit in one transaction.

What this does not reach: database backups and WAL archives taken before the deletion
still hold the wrapped KEKs. They stay unreadable only as long as the root key is not
restored alongside them; erasure is complete once those backups age out or the root key
is rotated with the old root destroyed (see docs/lines.md).

Erasing a user (``DELETE /v1/users/{id}`` by a platform admin, ``DELETE /v1/me`` by the
user) deletes the user row with its email, password hash and sealed TOTP secret, every
session, MFA challenge, recovery code and membership of the user, in one transaction
with the ``user.delete`` event. Audit events keep the opaque user id only (no event ever
carries an email). A user who is the last owner of a tenant is not erased (409): the
tenant would be left without anyone who may manage it. On SQLite the caller runs
:func:`vault.privacy.scrub.scrub_after_shred` after the commit, so the old row's bytes
leave the WAL too (``secure_delete`` zeroes the freed pages of the database file).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, aliased

from vault.audit.events import Actor, AuditEvent, RequestContext
from vault.audit.trail import AuditTrail
from vault.authz import Permission, PlatformPermission, UserPrincipal, authorize, authorize_platform
from vault.clock import Clock
from vault.errors import Conflict, NotFound
from vault.keys.cache import KekCache
from vault.keys.shred import shred_tenant_keys
from vault.lines.guard import failures_audited
from vault.lines.service import load_tenant
from vault.privacy.events import tenant_event, tenant_failures_audited
from vault.storage.models import (
    Grant,
    GrantLine,
    KeyRotation,
    Line,
    Membership,
    MfaChallenge,
    RecoveryCode,
    Tenant,
    User,
)
from vault.storage.models import Session as SessionRow
from vault.webhooks.outbox import enqueue, forget_tenant_webhooks

__all__ = ["DeletedTenant", "TenantEraser", "UserEraser", "sole_owner_of"]


@dataclass(frozen=True, slots=True)
class DeletedTenant:
    id: str
    deleted_at: datetime
    keys_destroyed: int
    lines_deleted: int


class TenantEraser:
    def __init__(
        self, session: Session, *, kek_cache: KekCache, audit: AuditTrail, clock: Clock
    ) -> None:
        self._session = session
        self._cache = kek_cache
        self._audit = audit
        self._clock = clock

    def delete(
        self,
        principal: UserPrincipal,
        tenant_id: str,
        *,
        context: RequestContext,
    ) -> DeletedTenant:
        """Shred and delete ``tenant_id``; MFA (the table's column) after the access checks."""
        session = self._session
        with tenant_failures_audited(
            session,
            self._audit,
            action="tenant.delete",
            principal=principal,
            tenant_id=tenant_id,
            context=context,
        ):
            authorize(principal, tenant_id, Permission.TENANT_DELETE)
            load_tenant(session, tenant_id)
        # Lock the tenant row: concurrent line writers hold FOR SHARE on it.
        session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
        now = self._clock.now()
        lines = int(
            session.execute(
                select(func.count()).select_from(Line).where(Line.tenant_id == tenant_id)
            ).scalar_one()
        )
        keys = shred_tenant_keys(session, tenant_id=tenant_id, now=now, cache=self._cache)
        # The tenant's own webhooks go with it (their secrets were sealed under the KEKs
        # just destroyed); the platform's webhooks still hear of the deletion.
        forget_tenant_webhooks(session, tenant_id)
        for stmt in (
            delete(GrantLine).where(GrantLine.tenant_id == tenant_id),
            delete(Grant).where(Grant.tenant_id == tenant_id),
            delete(Line).where(Line.tenant_id == tenant_id),
            delete(Membership).where(Membership.tenant_id == tenant_id),
            delete(KeyRotation).where(KeyRotation.tenant_id == tenant_id),
            delete(Tenant).where(Tenant.id == tenant_id),
        ):
            session.execute(stmt.execution_options(synchronize_session=False))
        session.expire_all()
        session.flush()
        # Keys forgotten again after the flush: a racing reader may have re-cached one.
        self._cache.forget_tenant(tenant_id)
        details = {"keys_destroyed": keys, "lines_deleted": lines, "shredded": True}
        self._audit.record(
            session, tenant_event("tenant.delete", principal, tenant_id, context, details)
        )
        enqueue(session, tenant_id=tenant_id, event_type="tenant.deleted", data={}, now=now)
        return DeletedTenant(id=tenant_id, deleted_at=now, keys_destroyed=keys, lines_deleted=lines)


def sole_owner_of(session: Session, user_id: str) -> list[str]:
    """The live tenants whose only owner is ``user_id``."""
    other = aliased(Membership)
    others = (
        select(func.count())
        .select_from(other)
        .where(other.tenant_id == Membership.tenant_id, other.role == "owner")
        .scalar_subquery()
    )
    rows = session.execute(
        select(Membership.tenant_id)
        .join(Tenant, Tenant.id == Membership.tenant_id)
        .where(
            Membership.user_id == user_id,
            Membership.role == "owner",
            Tenant.deleted_at.is_(None),
            others <= 1,
        )
        .order_by(Membership.tenant_id)
    ).scalars()
    return [str(t) for t in rows]


class UserEraser:
    """Erase a person's account (module docstring); the caller commits."""

    def __init__(self, session: Session, *, audit: AuditTrail, clock: Clock) -> None:
        self._session = session
        self._audit = audit
        self._clock = clock

    def delete_by(self, principal: UserPrincipal, user_id: str, *, context: RequestContext) -> int:
        """A platform admin erases ``user_id`` (MFA); returns the sessions ended."""
        with failures_audited(
            self._session,
            self._audit,
            action="user.delete",
            principal=principal,
            tenant_id=None,
            resource_type="user",
            resource_id=user_id,
            context=context,
        ):
            authorize_platform(principal, PlatformPermission.USER_DELETE)
            if user_id == principal.user_id:
                raise Conflict("to delete your own account use DELETE /v1/me")
            self.check_erasable(user_id)
        return self.erase(user_id, actor=Actor("user", principal.user_id), context=context)

    def check_erasable(self, user_id: str) -> None:
        """NotFound for no such user; Conflict when they are a tenant's last owner."""
        if self._session.get(User, user_id) is None:
            raise NotFound()
        sole = sole_owner_of(self._session, user_id)
        if sole:
            raise Conflict(
                "the user is the last owner of tenant(s) "
                + ", ".join(sole)
                + ": make someone else an owner first (POST /v1/tenants/{tenant_id}/members)"
            )

    def erase(self, user_id: str, *, actor: Actor, context: RequestContext) -> int:
        """Delete the user and everything that is only theirs; audited as ``user.delete``."""
        session = self._session
        session.execute(select(User.id).where(User.id == user_id).with_for_update())
        self.check_erasable(user_id)  # again, under the lock: a racing demotion
        now = self._clock.now()
        live = int(
            session.execute(
                select(func.count())
                .select_from(SessionRow)
                .where(
                    SessionRow.user_id == user_id,
                    SessionRow.revoked_at.is_(None),
                    SessionRow.expires_at > now,
                )
            ).scalar_one()
        )
        memberships = int(
            session.execute(
                select(func.count()).select_from(Membership).where(Membership.user_id == user_id)
            ).scalar_one()
        )
        for table in (SessionRow, MfaChallenge, RecoveryCode, Membership):
            session.execute(
                delete(table)
                .where(table.user_id == user_id)
                .execution_options(synchronize_session=False)
            )
        session.execute(
            delete(User).where(User.id == user_id).execution_options(synchronize_session=False)
        )
        session.expire_all()
        details = {"sessions_ended": live, "memberships_removed": memberships, "erased": True}
        self._audit.record(
            session,
            AuditEvent.by(
                actor,
                "user.delete",
                resource_type="user",
                resource_id=user_id,
                context=context,
                details=details,
            ),
        )
        return live
