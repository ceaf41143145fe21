"""The event names a webhook may subscribe to (the contract's list)."""

from __future__ import annotations

__all__ = ["EVENT_TYPES", "TEST_EVENT"]

TEST_EVENT = "webhook.test"

EVENT_TYPES: frozenset[str] = frozenset(
    {
        "line.created",
        "line.replaced",
        "line.refreshed",
        "line.suspended",
        "line.resumed",
        "line.revoked",
        "line.expiring",
        "line.refresh_failed",
        "grant.deleted",
        "tenant.suspended",
        "tenant.deleted",
        TEST_EVENT,
    }
)
