"""Data exports: everything the vault knows about a tenant, or about one person, minus
the secrets.

The export is metadata only: tenant, lines (the same metadata the API shows), grants,
members and the tenant's audit events in the contract's event shape. The document is
built field by field from an allow-list, so credential envelopes, key material, password
hashes and TOTP secrets can never slip into it. The export itself is audited
(``tenant.export``) in the same unit of work, committed before the response is sent.

A person's own export (``GET /v1/me/export``, GDPR Art. 15 and 20) is their profile,
their memberships, their sessions (live or not: when and from where they signed in) and
the audit events in which they are the actor, also built from allow-lists (no password
hash, TOTP secret, recovery code or session token hash) and audited as ``user.export``.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.audit.events import Actor, AuditEvent, RequestContext
from vault.audit.trail import AuditTrail
from vault.authz import Permission, UserPrincipal, authorize
from vault.clock import Clock, rfc3339
from vault.errors import NotFound
from vault.lines.service import line_view, load_tenant
from vault.privacy.events import tenant_event, tenant_failures_audited
from vault.storage.models import (
    AuditEventRow,
    Grant,
    GrantLine,
    Line,
    Membership,
    Tenant,
    User,
)
from vault.storage.models import Session as SessionRow

__all__ = [
    "EXPORT_FORMAT",
    "USER_EXPORT_FORMAT",
    "TenantExporter",
    "UserExporter",
    "audit_event_dict",
]

EXPORT_FORMAT = "linevault.tenant-export.v1"
USER_EXPORT_FORMAT = "linevault.user-export.v1"


def audit_event_dict(row: AuditEventRow) -> dict[str, Any]:
    """One stored event in the contract's shape (plus its ``details``)."""
    return {
        "seq": row.seq,
        "ts": row.ts,
        "action": row.action,
        "outcome": row.outcome,
        "actor": {"type": row.actor_type, "id": row.actor_id},
        "tenant_id": row.tenant_id,
        "resource": {"type": row.resource_type, "id": row.resource_id},
        "reason": row.reason,
        "request_id": row.request_id,
        "ip": row.ip,
        "user_agent": row.user_agent,
        "workflow_id": row.workflow_id,
        "run_id": row.run_id,
        "details": json.loads(row.details) if row.details else None,
        "prev_hash": row.prev_hash,
        "hash": row.hash,
    }


class TenantExporter:
    def __init__(self, session: Session, *, audit: AuditTrail, clock: Clock) -> None:
        self._session = session
        self._audit = audit
        self._clock = clock

    def export(
        self,
        principal: UserPrincipal,
        tenant_id: str,
        *,
        context: RequestContext,
    ) -> dict[str, Any]:
        """The tenant's metadata as one JSON-ready document; MFA checked after access."""
        session = self._session
        with tenant_failures_audited(
            session,
            self._audit,
            action="tenant.export",
            principal=principal,
            tenant_id=tenant_id,
            context=context,
        ):
            authorize(principal, tenant_id, Permission.TENANT_EXPORT)
            tenant = load_tenant(session, tenant_id)
        lines = session.execute(
            select(Line).where(Line.tenant_id == tenant_id).order_by(Line.created_at, Line.id)
        ).scalars()
        grants = self._grants(tenant_id)
        members = self._members(tenant_id)
        events = self._events(tenant_id)
        document: dict[str, Any] = {
            "format": EXPORT_FORMAT,
            "exported_at": rfc3339(self._clock.now()),
            "tenant": {
                "id": tenant.id,
                "name": tenant.name,
                "created_at": rfc3339(tenant.created_at),
                "active_kek_version": tenant.active_kek_version,
            },
            "lines": [line_view(line).to_dict() for line in lines],
            "grants": grants,
            "members": members,
            "audit_events": events,
        }
        counts = {
            name: len(document[name]) for name in ("lines", "grants", "members", "audit_events")
        }
        self._audit.record(
            session, tenant_event("tenant.export", principal, tenant_id, context, counts)
        )
        return document

    def _grants(self, tenant_id: str) -> list[dict[str, Any]]:
        grant_lines: dict[str, list[str]] = {}
        for gl in self._session.execute(
            select(GrantLine).where(GrantLine.tenant_id == tenant_id).order_by(GrantLine.line_id)
        ).scalars():
            grant_lines.setdefault(gl.grant_id, []).append(gl.line_id)
        return [
            {
                "id": g.id,
                "runner_id": g.runner_id,
                "lines": ["*"] if g.all_lines else grant_lines.get(g.id, []),
                "access": g.access,
                "created_at": rfc3339(g.created_at),
            }
            for g in self._session.execute(
                select(Grant).where(Grant.tenant_id == tenant_id).order_by(Grant.created_at)
            ).scalars()
        ]

    def _members(self, tenant_id: str) -> list[dict[str, Any]]:
        return [
            {
                "user_id": m.user_id,
                "email": email,
                "role": m.role,
                "created_at": rfc3339(m.created_at),
            }
            for m, email in self._session.execute(
                select(Membership, User.email)
                .join(User, User.id == Membership.user_id)
                .where(Membership.tenant_id == tenant_id)
                .order_by(Membership.created_at, Membership.user_id)
            ).all()
        ]

    def _events(self, tenant_id: str) -> list[dict[str, Any]]:
        return [
            audit_event_dict(row)
            for row in self._session.execute(
                select(AuditEventRow)
                .where(AuditEventRow.tenant_id == tenant_id)
                .order_by(AuditEventRow.seq)
            ).scalars()
        ]


def _time(value: Any) -> str | None:
    return rfc3339(value) if value is not None else None


class UserExporter:
    """The signed-in person's own data (module docstring)."""

    def __init__(self, session: Session, *, audit: AuditTrail, clock: Clock) -> None:
        self._session = session
        self._audit = audit
        self._clock = clock

    def export(self, principal: UserPrincipal, *, context: RequestContext) -> dict[str, Any]:
        user = self._session.get(User, principal.user_id)
        if user is None:
            raise NotFound()
        document: dict[str, Any] = {
            "format": USER_EXPORT_FORMAT,
            "exported_at": rfc3339(self._clock.now()),
            "profile": {
                "id": user.id,
                "email": user.email,
                "platform_role": user.platform_role,
                "totp_enrolled": user.totp_enrolled,
                "created_at": rfc3339(user.created_at),
                "credentials_changed_at": rfc3339(user.credentials_changed_at),
                "disabled_at": _time(user.disabled_at),
            },
            "memberships": self._memberships(user.id),
            "sessions": self._sessions(user.id, current=principal.session_id),
            "audit_events": [
                audit_event_dict(row)
                for row in self._session.execute(
                    select(AuditEventRow)
                    .where(AuditEventRow.actor_type == "user", AuditEventRow.actor_id == user.id)
                    .order_by(AuditEventRow.seq)
                ).scalars()
            ],
        }
        counts = {n: len(document[n]) for n in ("memberships", "sessions", "audit_events")}
        self._audit.record(
            self._session,
            AuditEvent.by(
                Actor("user", user.id),
                "user.export",
                resource_type="user",
                resource_id=user.id,
                context=context,
                details=counts,
            ),
        )
        return document

    def _memberships(self, user_id: str) -> list[dict[str, Any]]:
        rows = self._session.execute(
            select(Membership, Tenant.name)
            .join(Tenant, Tenant.id == Membership.tenant_id)
            .where(Membership.user_id == user_id, Tenant.deleted_at.is_(None))
            .order_by(Membership.created_at, Membership.tenant_id)
        ).all()
        return [
            {
                "tenant_id": m.tenant_id,
                "tenant_name": name,
                "role": m.role,
                "created_at": rfc3339(m.created_at),
            }
            for m, name in rows
        ]

    def _sessions(self, user_id: str, *, current: str) -> list[dict[str, Any]]:
        rows = self._session.execute(
            select(SessionRow)
            .where(SessionRow.user_id == user_id)
            .order_by(SessionRow.created_at, SessionRow.id)
        ).scalars()
        return [
            {
                "id": r.id,
                "created_at": rfc3339(r.created_at),
                "last_seen_at": rfc3339(r.last_seen_at),
                "expires_at": rfc3339(r.expires_at),
                "revoked_at": _time(r.revoked_at),
                "ip": r.ip,
                "user_agent": r.user_agent,
                "current": r.id == current,
            }
            for r in rows
        ]
