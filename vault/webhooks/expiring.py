"""``line.expiring``: once per line and expiry, as an active line enters the window.

The dispatcher of every server process scans now and then (``webhook_expiry_scan_seconds``)
for active lines whose ``expires_at`` is within ``webhook_expiring_window_seconds``,
only in tenants with a webhook subscribed to the event (or in every tenant when a
platform webhook is). Each event is keyed ``line.expiring:<line>:<expires_at>`` in
``webhook_dedupe``, inserted in the transaction that writes the event: two processes
scanning at once cannot both emit it (the second fails on the key and rolls back), and
a replacement with a new expiry gets a new notice.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from vault.clock import rfc3339
from vault.storage.engine import SessionFactory, unit_of_work
from vault.storage.models import Line, Webhook, WebhookDedupe
from vault.webhooks.outbox import enqueue_once

__all__ = ["EXPIRING", "scan_expiring"]

EXPIRING = "line.expiring"


def _key(line_id: str, expires_at: datetime) -> str:
    return f"{EXPIRING}:{line_id}:{rfc3339(expires_at)}"


def scan_expiring(sessions: SessionFactory, *, now: datetime, window: timedelta) -> int:
    """Emit the events due; how many this call emitted."""
    with unit_of_work(sessions) as session:
        scopes = set(
            session.execute(
                select(Webhook.tenant_id).where(Webhook.events.contains(f",{EXPIRING},"))
            ).scalars()
        )
        if not scopes:
            return 0
        stmt = select(Line.id, Line.tenant_id, Line.version, Line.expires_at).where(
            Line.status == "active",
            Line.expires_at.is_not(None),
            Line.expires_at <= now + window,
        )
        if None not in scopes:
            stmt = stmt.where(Line.tenant_id.in_([s for s in scopes if s is not None]))
        due = [r for r in session.execute(stmt) if r.expires_at is not None]
        done = (
            set(
                session.execute(
                    select(WebhookDedupe.key).where(
                        WebhookDedupe.key.in_([_key(r.id, r.expires_at) for r in due])
                    )
                ).scalars()
            )
            if due
            else set()
        )
    emitted = 0
    for row in due:
        key = _key(row.id, row.expires_at)
        if key in done:
            continue
        try:
            with unit_of_work(sessions) as session:
                data = {
                    "line_id": row.id,
                    "version": row.version,
                    "expires_at": rfc3339(row.expires_at),
                }
                if enqueue_once(
                    session, key, tenant_id=row.tenant_id, event_type=EXPIRING, data=data, now=now
                ):
                    emitted += 1
        except IntegrityError:
            continue  # another process emitted it first
    return emitted
