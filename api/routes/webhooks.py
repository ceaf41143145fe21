"""Webhooks of a tenant (owners, admins; creating needs MFA) and of the platform.

``POST`` answers 201 with the signing secret (``whsec_...``), shown this once; lists
never show it. See docs/webhooks.md for events, signatures, retries and the SSRF guard.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from api.deps import Webhooks

__all__ = ["router"]

router = APIRouter(tags=["webhooks"])


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=1, max_length=2048)
    events: list[str] = Field(min_length=1, max_length=32)
    mfa_code: str | None = Field(default=None, max_length=32, description="sudo mode")


class WebhookOut(BaseModel):
    id: str
    tenant_id: str | None
    url: str
    events: list[str]
    created_at: str | None


class WebhookCreated(WebhookOut):
    secret: str = Field(description="whsec_...: shown this once")


class WebhookList(BaseModel):
    webhooks: list[WebhookOut]


class TestSent(BaseModel):
    event_id: str


class DeliveryList(BaseModel):
    deliveries: list[dict[str, Any]]


# -- a tenant's webhooks ---------------------------------------------------------------


@router.post("/v1/tenants/{tenant_id}/webhooks", status_code=201, response_model=WebhookCreated)
def create_webhook(tenant_id: str, body: WebhookCreate, webhooks: Webhooks) -> Any:
    """Create a tenant webhook.

    Owners and admins, with a fresh second factor. The signing secret (`whsec_...`) is
    in this answer only; the URL must be https and must not resolve to a private
    address."""
    return webhooks.create(tenant_id, url=body.url, events=body.events).to_dict()


@router.get("/v1/tenants/{tenant_id}/webhooks", response_model=WebhookList)
def list_webhooks(tenant_id: str, webhooks: Webhooks) -> Any:
    """List a tenant's webhooks.

    Owners and admins; never the secrets."""
    return {"webhooks": [v.to_dict() for v in webhooks.list(tenant_id)]}


@router.delete("/v1/tenants/{tenant_id}/webhooks/{webhook_id}", status_code=204)
def delete_webhook(tenant_id: str, webhook_id: str, webhooks: Webhooks) -> Response:
    """Delete a tenant webhook.

    Its pending deliveries and its delivery log go with it."""
    webhooks.delete(tenant_id, webhook_id)
    return Response(status_code=204)


@router.post(
    "/v1/tenants/{tenant_id}/webhooks/{webhook_id}/test", status_code=202, response_model=TestSent
)
def test_webhook(tenant_id: str, webhook_id: str, webhooks: Webhooks) -> Any:
    """Send a test event.

    Queues a signed `webhook.test` event for this webhook; the answer names the event
    id."""
    return {"event_id": webhooks.test(tenant_id, webhook_id)}


@router.get("/v1/tenants/{tenant_id}/webhooks/{webhook_id}/deliveries", response_model=DeliveryList)
def list_deliveries(tenant_id: str, webhook_id: str, webhooks: Webhooks) -> Any:
    """List a webhook's deliveries.

    Each event with its state, attempts, status codes or error classes and next retry,
    newest first."""
    return {"deliveries": [d.to_dict() for d in webhooks.deliveries(tenant_id, webhook_id)]}


# -- the platform's webhooks (every tenant) ----------------------------------------------


@router.post("/v1/webhooks", status_code=201, response_model=WebhookCreated)
def create_platform_webhook(body: WebhookCreate, webhooks: Webhooks) -> Any:
    """Create a platform webhook.

    Platform admins, with a fresh second factor: it hears the events of every tenant.
    The secret is in this answer only."""
    return webhooks.create(None, url=body.url, events=body.events).to_dict()


@router.get("/v1/webhooks", response_model=WebhookList)
def list_platform_webhooks(webhooks: Webhooks) -> Any:
    """List platform webhooks.

    Platform admins and auditors; never the secrets."""
    return {"webhooks": [v.to_dict() for v in webhooks.list(None)]}


@router.delete("/v1/webhooks/{webhook_id}", status_code=204)
def delete_platform_webhook(webhook_id: str, webhooks: Webhooks) -> Response:
    """Delete a platform webhook.

    Its pending deliveries and its delivery log go with it."""
    webhooks.delete(None, webhook_id)
    return Response(status_code=204)


@router.post("/v1/webhooks/{webhook_id}/test", status_code=202, response_model=TestSent)
def test_platform_webhook(webhook_id: str, webhooks: Webhooks) -> Any:
    """Send a test event to a platform webhook.

    Queues a signed `webhook.test` event; the answer names the event id."""
    return {"event_id": webhooks.test(None, webhook_id)}


@router.get("/v1/webhooks/{webhook_id}/deliveries", response_model=DeliveryList)
def list_platform_deliveries(webhook_id: str, webhooks: Webhooks) -> Any:
    """List a platform webhook's deliveries.

    Each event with its state, attempts and next retry, newest first."""
    return {"deliveries": [d.to_dict() for d in webhooks.deliveries(None, webhook_id)]}
