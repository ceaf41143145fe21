"""Data-subject export: everything the vault knows about a tenant, minus the secrets.

The export is metadata only: tenant, lines (the same metadata the API shows), grants,
members and the tenant's audit events in the contract's event shape. The document is
built field by field from an allow-list, so credential envelopes, key material, password
hashes and TOTP secrets can never slip into it. The export itself is audited
(``tenant.export``) in the same unit of work, committed before the response is sent.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.audit.events import RequestContext
from vault.audit.trail import AuditTrail
from vault.authz import Permission, UserPrincipal, authorize
from vault.clock import Clock, rfc3339
from vault.lines.service import line_view, load_tenant
from vault.privacy.events import tenant_event, tenant_failures_audited
from vault.storage.models import AuditEventRow, Grant, GrantLine, Line, Membership, User

__all__ = ["EXPORT_FORMAT", "TenantExporter", "audit_event_dict"]

EXPORT_FORMAT = "linevault.tenant-export.v1"


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
