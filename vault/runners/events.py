"""The audit events of runners, grants and the credential fetch, built in one place.

Each kind of event names its actor and resource the same way wherever it is recorded:
a fetch is about a line and made by a runner (or refused to a user), a token event is
about the runner that is also its actor, an administrator's change is about a runner or
a grant.
"""

from __future__ import annotations

from typing import Literal

from vault.audit.events import AuditEvent, Outcome, RequestContext
from vault.runners.usage import FETCH_ACTION

__all__ = ["fetch_event", "grant_event", "runner_event", "token_event"]

Details = dict[str, str | int | bool | None]


def fetch_event(
    actor_id: str | None,
    tenant_id: str,
    line_id: str,
    context: RequestContext,
    *,
    outcome: Outcome,
    reason: str | None,
    details: Details | None = None,
    actor_type: Literal["runner", "user"] = "runner",
    action: str = FETCH_ACTION,
) -> AuditEvent:
    """``credential.fetch``: served (``success``), refused (``denied``) or failed.

    ``credential.sign`` and ``credential.proof`` (a use of the secret without revealing
    it, vault/runners/use.py) are the same event under their own ``action``."""
    return AuditEvent(
        action=action,
        outcome=outcome,
        actor_type=actor_type,
        actor_id=actor_id,
        tenant_id=tenant_id,
        resource_type="line",
        resource_id=line_id,
        reason=reason,
        context=context,
        details=details,
    )


def token_event(
    action: str,
    outcome: Outcome,
    runner_id: str | None,
    context: RequestContext,
    *,
    reason: str | None = None,
    details: Details | None = None,
) -> AuditEvent:
    """A token event: the runner is both the actor and the resource."""
    return AuditEvent(
        action=action,
        outcome=outcome,
        actor_type="runner",
        actor_id=runner_id,
        resource_type="runner",
        resource_id=runner_id,
        reason=reason,
        context=context,
        details=details,
    )


def runner_event(
    action: str, *, actor_id: str, runner_id: str, context: RequestContext, details: Details
) -> AuditEvent:
    """A platform administrator's change to a runner."""
    return AuditEvent(
        action=action,
        outcome="success",
        actor_type="user",
        actor_id=actor_id,
        resource_type="runner",
        resource_id=runner_id,
        context=context,
        details=details or None,
    )


def grant_event(
    action: str,
    *,
    actor_id: str,
    tenant_id: str,
    grant_id: str,
    runner_id: str,
    context: RequestContext,
    details: Details,
) -> AuditEvent:
    """A tenant administrator's change to a grant; ``details`` name its runner first."""
    return AuditEvent(
        action=action,
        outcome="success",
        actor_type="user",
        actor_id=actor_id,
        tenant_id=tenant_id,
        resource_type="grant",
        resource_id=grant_id,
        context=context,
        details={"runner_id": runner_id, **details},
    )
