"""The transactional outbox: the one way a change emits a webhook event.

Call :func:`enqueue` with the session of the change, before it commits::

    enqueue(session, tenant_id=line.tenant_id, event_type="line.suspended",
            data={"line_id": line.id, "version": line.version}, now=clock.now())

It writes one ``webhook_deliveries`` row per subscribed webhook (the tenant's and the
platform's) in that same transaction: if the change rolls back, so does the event, and
a committed change always has its event. Nothing is sent here; every server process's
dispatcher (:mod:`vault.webhooks.dispatcher`) delivers the rows later, off the request
path. Without a subscribed webhook this is one indexed SELECT and writes nothing.

``data`` is metadata only (ids, versions, times, reasons chosen from a fixed list): the
body is readable by the receiver and stored in clear, so it must never hold a secret.
``tenant_id`` is added to ``data`` here. A line's events carry ``line_id`` and are
delivered in order per line and webhook; other events are ordered per tenant.

Wired today into line created, replaced and revoked (``vault/lines/service.py``),
suspended and resumed, tenant suspended (``vault/lines/states.py``), grant deleted
(``vault/runners/grants.py``) and tenant deleted (``vault/privacy/erasure.py``).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.orm import Session

from vault.clock import rfc3339
from vault.storage.engine import SessionFactory, unit_of_work
from vault.storage.models import Webhook, WebhookAttempt, WebhookDedupe, WebhookDelivery
from vault.webhooks.events import EVENT_TYPES

__all__ = [
    "PENDING",
    "enqueue",
    "enqueue_once",
    "forget_tenant_webhooks",
    "new_event_id",
    "prune_finished",
]

PENDING = "pending"


def new_event_id() -> str:
    """A ``webhook-id``: unique per event, the same on every retry of it."""
    return "msg_" + secrets.token_urlsafe(18)


def event_body(
    event_type: str, tenant_id: str | None, data: Mapping[str, Any], now: datetime
) -> str:
    """The JSON body: ``{"type", "timestamp", "data": {"tenant_id", ...}}``."""
    body = {"type": event_type, "timestamp": rfc3339(now), "data": {"tenant_id": tenant_id, **data}}
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def enqueue(
    session: Session,
    *,
    tenant_id: str,
    event_type: str,
    data: Mapping[str, Any],
    now: datetime,
) -> str | None:
    """Write the event for every webhook subscribed to it; its id, or None if nobody is."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type!r}")
    webhook_ids = list(
        session.execute(
            select(Webhook.id)
            .where(
                or_(Webhook.tenant_id == tenant_id, Webhook.tenant_id.is_(None)),
                Webhook.events.contains(f",{event_type},"),
            )
            .order_by(Webhook.id)
        ).scalars()
    )
    return write_deliveries(
        session, webhook_ids, tenant_id=tenant_id, event_type=event_type, data=data, now=now
    )


def enqueue_once(
    session: Session,
    key: str,
    *,
    tenant_id: str,
    event_type: str,
    data: Mapping[str, Any],
    now: datetime,
) -> bool:
    """:func:`enqueue` unless an event with ``key`` was enqueued before (True if now)."""
    if session.get(WebhookDedupe, key) is not None:
        return False
    session.add(WebhookDedupe(key=key, created_at=now))
    session.flush()  # a concurrent twin fails here on the primary key and rolls back
    enqueue(session, tenant_id=tenant_id, event_type=event_type, data=data, now=now)
    return True


def write_deliveries(
    session: Session,
    webhook_ids: list[str],
    *,
    tenant_id: str | None,
    event_type: str,
    data: Mapping[str, Any],
    now: datetime,
) -> str | None:
    """One pending delivery of one new event per webhook in ``webhook_ids``."""
    if not webhook_ids:
        return None
    event_id = new_event_id()
    payload = event_body(event_type, tenant_id, data, now)
    order_key = str(data.get("line_id") or tenant_id or "platform")
    session.execute(
        insert(WebhookDelivery),
        [
            {
                "event_id": event_id,
                "webhook_id": webhook_id,
                "tenant_id": tenant_id,
                "event_type": event_type,
                "order_key": order_key,
                "payload": payload,
                "state": PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for webhook_id in webhook_ids
        ],
    )
    return event_id


def forget_tenant_webhooks(session: Session, tenant_id: str) -> None:
    """Tenant deletion: drop its webhooks, their outbox rows and log, secrets first.

    Their secrets are sealed under the tenant's KEKs, destroyed in the same transaction;
    the envelope columns are nulled as well, before the rows go.
    """
    own = select(Webhook.id).where(Webhook.tenant_id == tenant_id).scalar_subquery()
    session.execute(
        update(Webhook)
        .where(Webhook.tenant_id == tenant_id)
        .values(wrapped_dek=None, secret_ciphertext=None, kek_version=None)
        .execution_options(synchronize_session=False)
    )
    for stmt in (
        delete(WebhookAttempt).where(WebhookAttempt.webhook_id.in_(own)),
        delete(WebhookDelivery).where(WebhookDelivery.webhook_id.in_(own)),
        delete(Webhook).where(Webhook.tenant_id == tenant_id),
    ):
        session.execute(stmt.execution_options(synchronize_session=False))


def prune_finished(sessions: SessionFactory, *, before: datetime) -> int:
    """Delete delivered and dead deliveries finished before ``before``, with their
    attempts (the delivery log's retention); pending ones are never touched."""
    with unit_of_work(sessions) as session:
        old = (
            select(WebhookDelivery.seq)
            .where(WebhookDelivery.state != PENDING, WebhookDelivery.finished_at < before)
            .scalar_subquery()
        )
        session.execute(
            delete(WebhookAttempt)
            .where(WebhookAttempt.delivery_seq.in_(old))
            .execution_options(synchronize_session=False)
        )
        result = session.execute(
            delete(WebhookDelivery)
            .where(WebhookDelivery.state != PENDING, WebhookDelivery.finished_at < before)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)
