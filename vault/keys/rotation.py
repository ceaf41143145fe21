"""Tenant KEK rotation: switch new DEKs to a fresh KEK version at once, rewrap the rest later.

A rotation has three durable steps, each its own transaction, so a crash between any
two leaves every credential openable and the rotation resumable:

1. **start** (:meth:`TenantKeyService.rotate`, in the caller's unit of work): create KEK
   version ``n+1`` (``active``), mark the previous versions ``retired``, point
   ``tenants.active_kek_version`` at ``n+1`` and insert a ``key_rotations`` row
   (``running``). From the commit on, every new DEK is wrapped by ``n+1``.
2. **rewrap** (:class:`vault.keys.rewrap.Rewrapper`, batches of ``rewrap_batch_size``):
   each batch rewraps the DEKs of some lines from an old version to ``n+1`` and bumps the
   rotation's counter in one short transaction. A line is always at either version.
3. **finish**: once no line references an old version, the old versions are destroyed
   (``wrapped`` NULL, state ``destroyed``) and the rotation is ``done``.

Only one rotation per tenant runs at a time: asking again while one runs resumes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from vault.audit.events import Actor, AuditEvent, RequestContext
from vault.audit.trail import AuditTrail
from vault.authz import Permission, UserPrincipal, authorize
from vault.clock import Clock
from vault.errors import NotFound, VaultError
from vault.ids import new_id
from vault.keys.keyring import KeyRing
from vault.storage.models import Kek, KeyRotation, Line, Tenant

__all__ = [
    "ROTATE_ACTION",
    "KeyVersionView",
    "RotationView",
    "TenantKeyService",
    "TenantKeysView",
    "key_resource",
    "pending_rewrap",
]

ROTATE_ACTION = "key.rotate"
RUNNING = "running"


def key_resource(tenant_id: str, version: int) -> str:
    """The audit ``resource_id`` of one KEK version (never key material)."""
    return f"{tenant_id}/kek/{version}"


@dataclass(frozen=True, slots=True)
class RotationView:
    id: str
    tenant_id: str
    from_version: int
    to_version: int
    state: str
    rewrapped: int
    pending_rewrap: int
    started_at: datetime
    finished_at: datetime | None
    resumed: bool = False


@dataclass(frozen=True, slots=True)
class KeyVersionView:
    version: int
    state: str
    root_key_id: str | None
    created_at: datetime
    destroyed_at: datetime | None


@dataclass(frozen=True, slots=True)
class TenantKeysView:
    tenant_id: str
    active_version: int
    versions: list[KeyVersionView]
    rotation: RotationView | None


def pending_rewrap(session: Session, *, tenant_id: str, to_version: int) -> int:
    """Lines of the tenant whose DEK is still wrapped by a version older than ``to_version``."""
    return int(
        session.execute(
            select(func.count())
            .select_from(Line)
            .where(
                Line.tenant_id == tenant_id,
                Line.kek_version < to_version,
                Line.wrapped_dek.is_not(None),
            )
        ).scalar_one()
    )


def rotation_view(session: Session, row: KeyRotation, *, resumed: bool = False) -> RotationView:
    pending = (
        pending_rewrap(session, tenant_id=row.tenant_id, to_version=row.to_version)
        if row.state == RUNNING
        else 0
    )
    return RotationView(
        id=row.id,
        tenant_id=row.tenant_id,
        from_version=row.from_version,
        to_version=row.to_version,
        state=row.state,
        rewrapped=row.rewrapped,
        pending_rewrap=pending,
        started_at=row.started_at,
        finished_at=row.finished_at,
        resumed=resumed,
    )


class TenantKeyService:
    """Starts rotations and reports key state inside the caller's unit of work.

    Flushes, never commits: the route's (or CLI's) unit of work commits the new version
    together with its ``key.rotate`` audit event.
    """

    def __init__(
        self, session: Session, *, keyring: KeyRing, audit: AuditTrail, clock: Clock
    ) -> None:
        self._session = session
        self._keyring = keyring
        self._audit = audit
        self._clock = clock

    # -- as a user (HTTP) -------------------------------------------------------------

    def rotate_as(
        self,
        principal: UserPrincipal,
        tenant_id: str,
        *,
        context: RequestContext,
    ) -> RotationView:
        """Authorize (owner/admin), check MFA, then :meth:`rotate`; refusals are audited."""
        try:
            authorize(principal, tenant_id, Permission.KEY_ROTATE)
            self._tenant(tenant_id, lock=False)
        except VaultError as exc:
            self._session.rollback()
            self._audit.emit(
                AuditEvent.by(
                    Actor("user", principal.user_id),
                    ROTATE_ACTION,
                    "denied",
                    tenant_id=tenant_id,
                    resource_type="tenant",
                    resource_id=tenant_id,
                    reason=type(exc).__name__,
                    context=context,
                )
            )
            raise
        return self.rotate(
            tenant_id, actor_type="user", actor_id=principal.user_id, context=context
        )

    def status_as(self, principal: UserPrincipal, tenant_id: str) -> TenantKeysView:
        authorize(principal, tenant_id, Permission.KEY_READ)
        return self.status(tenant_id)

    # -- the operations ---------------------------------------------------------------

    def rotate(
        self,
        tenant_id: str,
        *,
        actor_type: Literal["user", "system"],
        actor_id: str,
        context: RequestContext | None = None,
    ) -> RotationView:
        """Start a rotation (new version active at commit), or resume the running one."""
        session = self._session
        tenant = self._tenant(tenant_id, lock=True)
        running = self._running(tenant_id)
        if running is not None:
            view = rotation_view(session, running, resumed=True)
        else:
            view = rotation_view(session, self._start(tenant))
        self._audit.record(
            session,
            AuditEvent.by(
                Actor(actor_type, actor_id),
                ROTATE_ACTION,
                tenant_id=tenant_id,
                resource_type="key",
                resource_id=key_resource(tenant_id, view.to_version),
                reason="resumed the running rotation" if view.resumed else None,
                context=context or RequestContext(),
                details={
                    "rotation_id": view.id,
                    "from_version": view.from_version,
                    "to_version": view.to_version,
                    "pending_rewrap": view.pending_rewrap,
                    "resumed": view.resumed,
                },
            ),
        )
        return view

    def status(self, tenant_id: str) -> TenantKeysView:
        tenant = self._tenant(tenant_id, lock=False)
        rows = self._session.execute(
            select(Kek).where(Kek.tenant_id == tenant_id).order_by(Kek.version)
        ).scalars()
        versions = [
            KeyVersionView(
                version=r.version,
                state=r.state,
                root_key_id=r.root_key_id,
                created_at=r.created_at,
                destroyed_at=r.destroyed_at,
            )
            for r in rows
        ]
        running = self._running(tenant_id)
        if running is None:
            running = self._session.execute(
                select(KeyRotation)
                .where(KeyRotation.tenant_id == tenant_id)
                .order_by(KeyRotation.started_at.desc(), KeyRotation.to_version.desc())
                .limit(1)
            ).scalar_one_or_none()
        return TenantKeysView(
            tenant_id=tenant_id,
            active_version=tenant.active_kek_version,
            versions=versions,
            rotation=rotation_view(self._session, running) if running is not None else None,
        )

    # -- helpers ----------------------------------------------------------------------

    def _start(self, tenant: Tenant) -> KeyRotation:
        """Retire the active version, make ``n+1`` active and insert the running rotation."""
        session = self._session
        now = self._clock.now()
        old_version = tenant.active_kek_version
        newest = session.execute(
            select(func.max(Kek.version)).where(Kek.tenant_id == tenant.id)
        ).scalar_one()
        new_version = max(int(newest or 0), old_version) + 1
        session.execute(
            update(Kek)
            .where(Kek.tenant_id == tenant.id, Kek.state == "active")
            .values(state="retired")
            .execution_options(synchronize_session=False)
        )
        self._keyring.create_kek(session, tenant_id=tenant.id, version=new_version, now=now)
        tenant.active_kek_version = new_version
        row = KeyRotation(
            id=new_id("rot"),
            tenant_id=tenant.id,
            from_version=old_version,
            to_version=new_version,
            state=RUNNING,
            rewrapped=0,
            started_at=now,
        )
        session.add(row)
        session.flush()
        return row

    def _tenant(self, tenant_id: str, *, lock: bool) -> Tenant:
        stmt = select(Tenant).where(Tenant.id == tenant_id, Tenant.deleted_at.is_(None))
        if lock:
            # Line writers hold the tenant row FOR SHARE while sealing: the switch waits
            # for them, and seals after it see the new version.
            stmt = stmt.with_for_update()
        tenant = self._session.execute(stmt).scalar_one_or_none()
        if tenant is None:
            raise NotFound()
        return tenant

    def _running(self, tenant_id: str) -> KeyRotation | None:
        return self._session.execute(
            select(KeyRotation)
            .where(KeyRotation.tenant_id == tenant_id, KeyRotation.state == RUNNING)
            .order_by(KeyRotation.to_version.desc())
            .limit(1)
        ).scalar_one_or_none()
