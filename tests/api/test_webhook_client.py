"""The runtime's webhook helper, fed by real deliveries of the server's dispatcher."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from linevault_client.webhooks import InvalidDelivery, WebhookReceiver
from tests.support.identity import add_membership, bearer, make_tenant, make_user, new_session
from tests.support.lines import planted
from tests.support.webhooks import Receiver, receiver, webhook_settings
from vault.runtime import Runtime
from vault.settings import Settings


class Cache:
    def __init__(self) -> None:
        self.dropped: list[tuple[str | None, str | None]] = []

    def invalidate(self, tenant_id: str | None = None, line_id: str | None = None) -> None:
        self.dropped.append((tenant_id, line_id))


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return webhook_settings(tmp_path, db_url, webhook_poll_seconds=0.05)


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with receiver() as r:
        yield r


def test_revocation_drops_the_cached_line_once(
    client: TestClient, runtime: Runtime, hook: Receiver
) -> None:
    tenant = make_tenant(runtime)
    owner = make_user(runtime, "o@example.test")
    add_membership(runtime, tenant, owner.id, "owner")
    auth = bearer(new_session(runtime, owner.id, mfa_fresh=True))
    made = client.post(
        f"/v1/tenants/{tenant}/webhooks",
        json={"url": hook.url, "events": ["line.created", "line.replaced", "line.revoked"]},
        headers=auth,
    ).json()
    line = client.post(
        f"/v1/tenants/{tenant}/lines",
        json={"type": "telegram", "name": "b", "credential": planted("telegram")},
        headers=auth,
    ).json()["id"]
    client.post(f"/v1/tenants/{tenant}/lines/{line}/revoke", json={"reason": "x"}, headers=auth)
    created, revoked = hook.wait_for(2)
    cache = Cache()
    helper = WebhookReceiver(made["secret"], cache=cache)
    assert helper.handle(created.body.encode(), created.headers)["type"] == "line.created"
    assert cache.dropped == []  # a new line is nothing to drop
    helper.handle(revoked.body.encode(), revoked.headers)
    helper.handle(revoked.body.encode(), revoked.headers)  # a redelivery: handled once
    assert cache.dropped == [(tenant, line)]
    tampered = revoked.body.replace(line, "ln_someoneelse")
    with pytest.raises(InvalidDelivery):
        helper.handle(tampered, revoked.headers)
    with pytest.raises(InvalidDelivery):
        WebhookReceiver("whsec_" + "A" * 43 + "=", cache=cache).handle(
            created.body, created.headers
        )
    assert cache.dropped == [(tenant, line)]


def test_the_helper_agrees_with_the_standardwebhooks_signer() -> None:
    """The client checks signatures with the standard library; the package the server
    signs with is the reference."""
    import base64
    import json
    import time
    from datetime import UTC, datetime, timedelta

    from standardwebhooks.webhooks import Webhook

    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    body = json.dumps({"type": "line.revoked", "data": {"tenant_id": "tn_1", "line_id": "ln_1"}})
    now = datetime.now(UTC)

    def headers(msg_id: str, when: datetime) -> dict[str, str]:
        signature = Webhook(secret).sign(msg_id, when, body)
        return {
            "Webhook-Id": msg_id,
            "Webhook-Timestamp": str(int(when.timestamp())),
            "Webhook-Signature": "v1,bm90IGl0 " + signature,  # a rotated-out key first
        }

    cache = Cache()
    helper = WebhookReceiver(secret, cache=cache)
    assert helper.handle(body, headers("msg_1", now))["type"] == "line.revoked"
    assert cache.dropped == [("tn_1", "ln_1")]
    stale = headers("msg_2", now - timedelta(minutes=10))
    with pytest.raises(InvalidDelivery, match="too far"):
        helper.handle(body, stale)
    with pytest.raises(InvalidDelivery, match="missing"):
        helper.handle(body, {"webhook-id": "msg_3", "webhook-timestamp": str(int(time.time()))})
    with pytest.raises(ValueError):
        WebhookReceiver("whsec_not base64!", cache=cache)
