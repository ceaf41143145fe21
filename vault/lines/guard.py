"""Auditing the attempts that fail: denied (403/404/MFA) and refused (422/409) requests.

A failed request changes nothing, so its unit of work is rolled back first (on SQLite its
write lock would otherwise block the audit writer), and the event goes through the
group-commit writer in its own durable transaction before the error reaches the caller.
Reasons name the error kind and, for invalid input, the field; never a submitted value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from sqlalchemy.orm import Session

from vault.audit.events import Actor, AuditEvent, Outcome, RequestContext
from vault.audit.trail import AuditTrail
from vault.authz import UserPrincipal
from vault.errors import (
    Conflict,
    CredentialRejected,
    Forbidden,
    InvalidRequest,
    MfaInvalid,
    MfaRequired,
    NotFound,
    VaultError,
)

__all__ = ["MfaCheck", "attempt_audited", "failures_audited", "no_mfa_check"]

MfaCheck = Callable[[], None]

_DENIED: tuple[type[VaultError], ...] = (Forbidden, NotFound, MfaRequired, MfaInvalid)
_REFUSED: tuple[type[VaultError], ...] = (InvalidRequest, Conflict)
_REASONS: dict[type[VaultError], str] = {
    Forbidden: "forbidden",
    NotFound: "not_found",
    MfaRequired: "mfa_required",
    MfaInvalid: "mfa_invalid",
    Conflict: "conflict",
}


def no_mfa_check() -> None:
    """For callers (tests, the CLI) that have verified the second factor themselves."""


def _reason(exc: VaultError) -> str:
    if isinstance(exc, CredentialRejected):
        return f"credential_rejected: {exc.field}"
    if isinstance(exc, InvalidRequest):
        return f"invalid_request: {exc.field}" if exc.field else "invalid_request"
    for cls, reason in _REASONS.items():
        if isinstance(exc, cls):
            return reason
    return "error"


@contextmanager
def failures_audited(
    session: Session,
    audit: AuditTrail,
    *,
    action: str,
    principal: UserPrincipal,
    tenant_id: str | None,
    resource_type: str,
    resource_id: str | None,
    context: RequestContext,
) -> Iterator[None]:
    try:
        yield
    except VaultError as exc:
        outcome: Outcome
        if isinstance(exc, _DENIED):
            outcome = "denied"
        elif isinstance(exc, _REFUSED):
            outcome = "error"
        else:
            raise
        session.rollback()
        audit.emit(
            AuditEvent.by(
                Actor("user", principal.user_id),
                action,
                outcome,
                tenant_id=tenant_id,
                resource_type=resource_type,
                resource_id=resource_id,
                reason=_reason(exc),
                context=context,
            )
        )
        raise


def attempt_audited(
    session: Session,
    audit: AuditTrail,
    action: str,
    principal: UserPrincipal,
    *,
    tenant_id: str,
    resource: tuple[str, str],
    context: RequestContext,
) -> AbstractContextManager[None]:
    """:func:`failures_audited` for a resource given as (type, id), as services hold it."""
    return failures_audited(
        session,
        audit,
        action=action,
        principal=principal,
        tenant_id=tenant_id,
        resource_type=resource[0],
        resource_id=resource[1],
        context=context,
    )
