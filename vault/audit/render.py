"""The contract's JSON shape of an event, and back to the hashed values.

The API and the export share this shape, so a reviewer verifies exactly what the API
showed: ``{"seq", "ts", "action", "outcome", "actor": {"type", "id"}, "tenant_id",
"resource": {"type", "id"}, "reason", "request_id", "ip", "user_agent", "workflow_id",
"run_id", "details", "prev_hash", "hash"}``. ``details`` is the small JSON object of
extra facts (or null); it is hashed as canonical JSON text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from vault.audit.events import SORTED_FIELDS

__all__ = ["EVENT_COLUMNS", "event_json", "row_from_json"]

# Stored column order used by every Core query here: the hashed fields sorted, then hash.
EVENT_COLUMNS = (*SORTED_FIELDS, "hash")


def event_json(row: Mapping[str, Any]) -> dict[str, Any]:
    details = row["details"]
    return {
        "seq": int(row["seq"]),
        "ts": row["ts"],
        "action": row["action"],
        "outcome": row["outcome"],
        "actor": {"type": row["actor_type"], "id": row["actor_id"]},
        "tenant_id": row["tenant_id"],
        "resource": {"type": row["resource_type"], "id": row["resource_id"]},
        "reason": row["reason"],
        "request_id": row["request_id"],
        "ip": row["ip"],
        "user_agent": row["user_agent"],
        "workflow_id": row["workflow_id"],
        "run_id": row["run_id"],
        "details": json.loads(details) if details else None,
        "prev_hash": row["prev_hash"],
        "hash": row["hash"],
    }


def row_from_json(doc: Mapping[str, Any]) -> tuple[Any, ...]:
    """The stored values (in :data:`EVENT_COLUMNS` order) that an exported event claims.

    Raises ``KeyError``/``TypeError``/``AttributeError`` on a malformed document.
    """
    actor = doc["actor"]
    resource = doc["resource"]
    details = doc.get("details")
    flat = {
        "seq": doc["seq"],
        "ts": doc["ts"],
        "action": doc["action"],
        "outcome": doc["outcome"],
        "actor_type": actor["type"],
        "actor_id": actor["id"],
        "tenant_id": doc["tenant_id"],
        "resource_type": resource["type"],
        "resource_id": resource["id"],
        "reason": doc["reason"],
        "request_id": doc["request_id"],
        "ip": doc["ip"],
        "user_agent": doc["user_agent"],
        "workflow_id": doc["workflow_id"],
        "run_id": doc["run_id"],
        "details": (
            json.dumps(details, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            if details
            else None
        ),
        "prev_hash": doc["prev_hash"],
        "hash": doc["hash"],
    }
    return tuple(flat[name] for name in EVENT_COLUMNS)
