"""The tamper-evident, fail-closed audit trail."""

from __future__ import annotations

from vault.audit.events import AuditEvent, RequestContext
from vault.audit.trail import AuditTrail
from vault.audit.writer import AuditWriter

__all__ = ["AuditEvent", "AuditTrail", "AuditWriter", "RequestContext"]
