"""Audit events and their canonical encoding.

The hash of an event is SHA-256 over a domain-separation tag and the canonical JSON of
every contract field plus ``prev_hash`` (sorted keys, no whitespace, UTF-8). Any change
to a stored field, or to the order of events, changes a hash downstream.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

__all__ = [
    "GENESIS_HASH",
    "AuditEvent",
    "Outcome",
    "RequestContext",
    "canonical_bytes",
    "event_hash",
    "sanitize",
]

Outcome = Literal["success", "denied", "error"]
GENESIS_HASH = "0" * 64
_HASH_TAG = b"linevault/audit-event/v1\n"
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")

# Field name -> maximum stored length (mirrors the column sizes).
_LIMITS: Mapping[str, int] = {
    "action": 64,
    "actor_id": 128,
    "tenant_id": 40,
    "resource_type": 32,
    "resource_id": 128,
    "reason": 500,
    "request_id": 64,
    "ip": 64,
    "user_agent": 300,
    "workflow_id": 128,
    "run_id": 128,
}


def sanitize(value: str | None, limit: int) -> str | None:
    """Make client-supplied text safe to store and to print in a log line.

    Control characters (newlines included) become ``?`` so a value can never forge a
    second log line or event, and the text is cut to the column size.
    """
    if value is None:
        return None
    cleaned = _CONTROL.sub("?", value)
    return cleaned[:limit]


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who is calling and from where; built by the API for each request."""

    request_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    workflow_id: str | None = None
    run_id: str | None = None


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audit record before it is placed in the chain."""

    action: str
    outcome: Outcome
    actor_type: Literal["user", "runner", "system"]
    actor_id: str | None
    tenant_id: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    reason: str | None = None
    context: RequestContext = field(default_factory=RequestContext)
    details: Mapping[str, str | int | bool | None] | None = None

    def with_context(self, context: RequestContext) -> AuditEvent:
        return replace(self, context=context)

    def to_row(self, *, seq: int, ts: str, prev_hash: str) -> dict[str, Any]:
        """The stored row (without ``hash``), every free-text field sanitized."""
        ctx = self.context
        row: dict[str, Any] = {
            "seq": seq,
            "ts": ts,
            "action": self.action,
            "outcome": self.outcome,
            "actor_type": self.actor_type,
            "actor_id": self.actor_id,
            "tenant_id": self.tenant_id,
            "resource_type": self.resource_type,
            "resource_id": self.resource_id,
            "reason": self.reason,
            "request_id": ctx.request_id,
            "ip": ctx.ip,
            "user_agent": ctx.user_agent,
            "workflow_id": ctx.workflow_id,
            "run_id": ctx.run_id,
        }
        for name, limit in _LIMITS.items():
            row[name] = sanitize(row[name], limit)
        row["details"] = (
            json.dumps(
                dict(self.details), sort_keys=True, separators=(",", ":"), ensure_ascii=False
            )
            if self.details
            else None
        )
        row["prev_hash"] = prev_hash
        return row


HASHED_FIELDS = (
    "seq",
    "ts",
    "action",
    "outcome",
    "actor_type",
    "actor_id",
    "tenant_id",
    "resource_type",
    "resource_id",
    "reason",
    "request_id",
    "ip",
    "user_agent",
    "workflow_id",
    "run_id",
    "details",
    "prev_hash",
)


def canonical_bytes(row: Mapping[str, Any]) -> bytes:
    """The exact bytes that are hashed; offline verifiers reimplement only this."""
    doc = {name: row[name] for name in HASHED_FIELDS}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def event_hash(row: Mapping[str, Any]) -> str:
    return hashlib.sha256(_HASH_TAG + canonical_bytes(row)).hexdigest()
