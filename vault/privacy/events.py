"""Privacy's audit events: an export or an erasure acts on a whole tenant.

Both actions name the tenant as their resource, for refusals and for successes alike.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from sqlalchemy.orm import Session

from vault.audit.events import Actor, AuditEvent, Details, RequestContext
from vault.audit.trail import AuditTrail
from vault.authz import UserPrincipal
from vault.lines.guard import failures_audited

__all__ = ["tenant_event", "tenant_failures_audited"]


def tenant_failures_audited(
    session: Session,
    audit: AuditTrail,
    *,
    action: str,
    principal: UserPrincipal,
    tenant_id: str,
    context: RequestContext,
) -> AbstractContextManager[None]:
    """:func:`~vault.lines.guard.failures_audited` with the tenant as the resource."""
    return failures_audited(
        session,
        audit,
        action=action,
        principal=principal,
        tenant_id=tenant_id,
        resource_type="tenant",
        resource_id=tenant_id,
        context=context,
    )


def tenant_event(
    action: str, principal: UserPrincipal, tenant_id: str, context: RequestContext, details: Details
) -> AuditEvent:
    """The success event of ``action`` on the tenant, by the signed-in user."""
    return AuditEvent.by(
        Actor("user", principal.user_id),
        action,
        tenant_id=tenant_id,
        resource_type="tenant",
        resource_id=tenant_id,
        context=context,
        details=details,
    )
