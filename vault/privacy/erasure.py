"""Tenant deletion by crypto-shredding.

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
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from vault.audit.events import RequestContext
from vault.audit.trail import AuditTrail
from vault.authz import Permission, UserPrincipal, authorize
from vault.clock import Clock
from vault.keys.cache import KekCache
from vault.keys.shred import shred_tenant_keys
from vault.lines.service import load_tenant
from vault.privacy.events import tenant_event, tenant_failures_audited
from vault.storage.models import Grant, GrantLine, KeyRotation, Line, Membership, Tenant
from vault.webhooks.outbox import enqueue, forget_tenant_webhooks

__all__ = ["DeletedTenant", "TenantEraser"]


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
