"""Suspending and resuming lines and tenants (restriction of processing, GDPR Art. 18).

The one home of these four changes. Suspending keeps the secret and stops serving it:
the fetch answers 423 ``suspended`` (:func:`vault.lines.status.state_refusal`). It needs
no second factor, because it only takes access away; resuming gives access back, so it
needs MFA (the permission table's "needs MFA" column, checked by ``authorize``).

Each change is one transaction with its audit event (``credential.suspend``,
``credential.resume``, ``tenant.suspend``, ``tenant.resume``); every refused attempt is
audited too (:func:`vault.lines.guard.attempt_audited`). A line's new status is
stamped with its MAC (:mod:`vault.keys.integrity`), so a status edited by hand is
refused by the fetch. Both ``lines.status`` and ``tenants`` rows move the authorization
epoch by trigger (migration 0002), so every server process's cached fetch decisions
are stale from the commit on: the next fetch in any process reads the new state.

A real change also writes its webhook event (``line.suspended``, ``line.resumed``,
``tenant.suspended``) to the outbox in the same transaction
(:func:`vault.webhooks.outbox.enqueue`); a repeated suspend or resume emits nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.audit.events import Actor, AuditEvent, RequestContext, sanitize
from vault.audit.trail import AuditTrail
from vault.authz import Permission, UserPrincipal, authorize
from vault.clock import Clock
from vault.errors import Conflict, NotFound, Unprocessable
from vault.keys.integrity import row_macs, stamp_line
from vault.keys.system import SystemKeys
from vault.lines.guard import attempt_audited
from vault.lines.service import (
    MAX_REASON,
    LineView,
    line_event,
    line_view,
    load_line,
    load_tenant,
)
from vault.lines.status import ACTIVE, REVOKED, SUSPENDED
from vault.storage.models import Line, Tenant
from vault.webhooks.outbox import enqueue

if TYPE_CHECKING:  # the runtime builds the services that use this module
    from vault.runtime import Runtime

__all__ = ["LineStates", "TenantState", "line_states_for"]

LINE_SUSPEND = "credential.suspend"
LINE_RESUME = "credential.resume"
TENANT_SUSPEND = "tenant.suspend"
TENANT_RESUME = "tenant.resume"
# The tenant's new status -> its audited action and the permission row that allows it.
_TENANT_CHANGES = {
    SUSPENDED: (TENANT_SUSPEND, Permission.TENANT_SUSPEND),
    ACTIVE: (TENANT_RESUME, Permission.TENANT_RESUME),
}


@dataclass(frozen=True, slots=True)
class TenantState:
    """The answer of a tenant's suspend or resume: ``{"id", "status"}``."""

    id: str
    status: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status}


def _clean_reason(reason: str | None) -> str | None:
    if reason is not None and len(reason) > MAX_REASON:
        raise Unprocessable(
            f"invalid value for: reason (at most {MAX_REASON} characters)", field="reason"
        )
    return sanitize(reason, MAX_REASON) if reason else None


class LineStates:
    """Suspend and resume lines and tenants, audited, for one unit of work."""

    def __init__(
        self, session: Session, *, system_keys: SystemKeys, audit: AuditTrail, clock: Clock
    ) -> None:
        self._session = session
        self._system_keys = system_keys
        self._audit = audit
        self._clock = clock
        self._attempt = partial(attempt_audited, session, audit)

    # -- lines ------------------------------------------------------------------------

    def suspend_line(
        self,
        principal: UserPrincipal,
        tenant_id: str,
        line_id: str,
        *,
        reason: str | None,
        context: RequestContext,
    ) -> LineView:
        """Stop serving the line; its secret is kept. A revoked line: 409. Idempotent."""
        with self._attempt(
            LINE_SUSPEND,
            principal,
            tenant_id=tenant_id,
            resource=("line", line_id),
            context=context,
        ):
            authorize(principal, tenant_id, Permission.LINE_SUSPEND)
            load_tenant(self._session, tenant_id)
            line = load_line(self._session, tenant_id, line_id, lock=True)
            cleaned = _clean_reason(reason)
            if line.status == REVOKED:
                raise Conflict("the line is revoked; a revoked line cannot be suspended")
        if line.status == SUSPENDED:
            return self._record_line(LINE_SUSPEND, principal, line, context, "already_suspended")
        self._set_line(line, SUSPENDED)
        return self._record_line(LINE_SUSPEND, principal, line, context, cleaned)

    def resume_line(
        self, principal: UserPrincipal, tenant_id: str, line_id: str, *, context: RequestContext
    ) -> LineView:
        """Serve the line again (MFA). A revoked line: 409. Resuming an active line: 200."""
        with self._attempt(
            LINE_RESUME, principal, tenant_id=tenant_id, resource=("line", line_id), context=context
        ):
            authorize(principal, tenant_id, Permission.LINE_RESUME)
            load_tenant(self._session, tenant_id)
            line = load_line(self._session, tenant_id, line_id, lock=True)
            if line.status == REVOKED:
                raise Conflict("the line is revoked; create a new line instead")
        if line.status == ACTIVE:
            return self._record_line(LINE_RESUME, principal, line, context, "already_active")
        self._set_line(line, ACTIVE)
        return self._record_line(LINE_RESUME, principal, line, context, None)

    def _set_line(self, line: Line, status: str) -> None:
        now = self._clock.now()
        line.status = status
        line.updated_at = now
        stamp_line(line, row_macs(self._system_keys))
        self._session.flush()
        enqueue(
            self._session,
            tenant_id=line.tenant_id,
            event_type="line.suspended" if status == SUSPENDED else "line.resumed",
            data={"line_id": line.id, "version": line.version},
            now=now,
        )

    def _record_line(
        self,
        action: str,
        principal: UserPrincipal,
        line: Line,
        context: RequestContext,
        reason: str | None,
    ) -> LineView:
        self._audit.record(
            self._session, line_event(action, principal, line, context, reason=reason)
        )
        return line_view(line)

    # -- tenants ----------------------------------------------------------------------

    def suspend_tenant(
        self,
        principal: UserPrincipal,
        tenant_id: str,
        *,
        reason: str | None,
        context: RequestContext,
    ) -> TenantState:
        """Stop serving every line of the tenant (tenant owner or platform admin)."""
        return self._set_tenant(principal, tenant_id, SUSPENDED, context=context, reason=reason)

    def resume_tenant(
        self, principal: UserPrincipal, tenant_id: str, *, context: RequestContext
    ) -> TenantState:
        """Serve the tenant's lines again (their own states still apply); needs MFA."""
        return self._set_tenant(principal, tenant_id, ACTIVE, context=context)

    def _set_tenant(
        self,
        principal: UserPrincipal,
        tenant_id: str,
        status: str,
        *,
        context: RequestContext,
        reason: str | None = None,
    ) -> TenantState:
        action, permission = _TENANT_CHANGES[status]
        with self._attempt(
            action, principal, tenant_id=tenant_id, resource=("tenant", tenant_id), context=context
        ):
            authorize(principal, tenant_id, permission)
            tenant = self._tenant_for_update(tenant_id)
            cleaned = _clean_reason(reason)
        if tenant.status == status:
            cleaned = f"already_{status}"
        else:
            tenant.status = status
            self._session.flush()
            if status == SUSPENDED:
                enqueue(
                    self._session,
                    tenant_id=tenant_id,
                    event_type="tenant.suspended",
                    data={},
                    now=self._clock.now(),
                )
        self._audit.record(
            self._session,
            AuditEvent.by(
                Actor("user", principal.user_id),
                action,
                tenant_id=tenant_id,
                resource_type="tenant",
                resource_id=tenant_id,
                reason=cleaned,
                context=context,
            ),
        )
        return TenantState(id=tenant.id, status=tenant.status)

    def _tenant_for_update(self, tenant_id: str) -> Tenant:
        tenant = self._session.execute(
            select(Tenant)
            .where(Tenant.id == tenant_id, Tenant.deleted_at.is_(None))
            .with_for_update()
        ).scalar_one_or_none()
        if tenant is None:
            raise NotFound()
        return tenant


def line_states_for(runtime: Runtime, session: Session) -> LineStates:
    """The suspend/resume service of one request or command (the API's ``States``, tests)."""
    return LineStates(
        session, system_keys=runtime.system_keys, audit=runtime.audit, clock=runtime.clock
    )
