"""The webhook routes: create (MFA, secret once), list, test, delivery log, delete;
bad input refused with a clear 4xx and nothing changed; a slow receiver slows nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests.support.identity import add_membership, bearer, make_tenant, make_user, new_session
from tests.support.lines import planted
from tests.support.webhooks import Receiver, receiver, webhook_settings
from vault.runtime import Runtime
from vault.settings import Settings
from vault.storage.engine import unit_of_work
from vault.storage.models import AuditEventRow, Webhook


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return webhook_settings(
        tmp_path,
        db_url,
        webhook_poll_seconds=0.05,
        webhook_max_per_tenant=3,
        webhook_timeout_seconds=5.0,
        webhook_lease_seconds=10.0,
    )


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with receiver() as r:
        yield r


@pytest.fixture
def tenant(runtime: Runtime) -> str:
    return make_tenant(runtime)


def _owner(runtime: Runtime, tenant: str, *, fresh: bool = True) -> dict[str, str]:
    user = make_user(runtime, f"owner-{time.monotonic_ns()}@example.test")
    add_membership(runtime, tenant, user.id, "owner")
    return bearer(new_session(runtime, user.id, mfa_fresh=fresh))


def _count(runtime: Runtime) -> int:
    with unit_of_work(runtime.sessions) as session:
        return int(session.execute(select(func.count()).select_from(Webhook)).scalar_one())


def test_create_list_test_log_delete(
    client: TestClient, runtime: Runtime, tenant: str, hook: Receiver
) -> None:
    auth = _owner(runtime, tenant)
    base = f"/v1/tenants/{tenant}/webhooks"
    created = client.post(base, json={"url": hook.url, "events": ["line.revoked"]}, headers=auth)
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) >= {"id", "url", "events", "secret"}
    assert body["secret"].startswith("whsec_") and body["events"] == ["line.revoked"]
    listed = client.get(base, headers=auth).json()["webhooks"]
    assert [w["id"] for w in listed] == [body["id"]]
    assert "secret" not in listed[0] and body["secret"] not in client.get(base, headers=auth).text

    sent = client.post(f"{base}/{body['id']}/test", headers=auth)
    assert sent.status_code == 202, sent.text
    (delivery,) = hook.wait_for(1)
    assert delivery.verify(body["secret"])["type"] == "webhook.test"
    assert delivery.headers["webhook-id"] == sent.json()["event_id"]
    log = []
    for _ in range(100):
        log = client.get(f"{base}/{body['id']}/deliveries", headers=auth).json()["deliveries"]
        if log and log[0]["state"] == "delivered":
            break
        time.sleep(0.05)
    assert log[0]["event_id"] == sent.json()["event_id"] and log[0]["type"] == "webhook.test"
    assert log[0]["state"] == "delivered" and log[0]["attempts"][0]["status_code"] == 200
    assert log[0]["attempts"][0]["attempt"] == 1

    assert client.delete(f"{base}/{body['id']}", headers=auth).status_code == 204
    assert client.get(base, headers=auth).json()["webhooks"] == []
    assert client.get(f"{base}/{body['id']}/deliveries", headers=auth).status_code == 404
    with unit_of_work(runtime.sessions) as session:
        actions = set(
            session.execute(
                select(AuditEventRow.action).where(AuditEventRow.resource_id == body["id"])
            ).scalars()
        )
    assert {"webhook.create", "webhook.test", "webhook.delete"} <= actions


def test_creating_needs_mfa(client: TestClient, runtime: Runtime, tenant: str) -> None:
    stale = _owner(runtime, tenant, fresh=False)
    r = client.post(
        f"/v1/tenants/{tenant}/webhooks",
        json={"url": "https://127.0.0.1:9/x", "events": ["line.revoked"]},
        headers=stale,
    )
    assert r.status_code == 403 and r.json()["code"] == "mfa_required"
    assert _count(runtime) == 0


@pytest.mark.parametrize(
    ("payload", "status", "field"),
    [
        ({"url": "ftp://hooks.example.test/x", "events": ["line.revoked"]}, 422, "url"),
        ({"url": "https://user:pw@hooks.example.test/x", "events": ["line.revoked"]}, 422, "url"),
        ({"url": "http://93.184.216.34/x", "events": ["line.revoked"]}, 422, "url"),
        ({"url": "https://127.0.0.1/x", "events": ["line.exploded"]}, 422, "events"),
        ({"url": "https://127.0.0.1/x", "events": []}, 422, None),
        ({"url": "https://127.0.0.1/x"}, 422, None),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(
    client: TestClient, runtime: Runtime, tenant: str, payload: dict, status: int, field: str | None
) -> None:
    r = client.post(f"/v1/tenants/{tenant}/webhooks", json=payload, headers=_owner(runtime, tenant))
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    if field:
        assert field in r.text
    assert _count(runtime) == 0


def test_too_many_webhooks_is_409(client: TestClient, runtime: Runtime, tenant: str) -> None:
    auth = _owner(runtime, tenant)
    hook = {"url": "https://127.0.0.1:9/x", "events": ["line.revoked"]}
    for _ in range(3):
        assert (
            client.post(f"/v1/tenants/{tenant}/webhooks", json=hook, headers=auth).status_code
            == 201
        )
    r = client.post(f"/v1/tenants/{tenant}/webhooks", json=hook, headers=auth)
    assert r.status_code == 409 and "at most 3" in r.json()["detail"]
    assert _count(runtime) == 3


def test_slow_receiver_never_slows_a_request(
    client: TestClient, runtime: Runtime, tenant: str, hook: Receiver
) -> None:
    auth = _owner(runtime, tenant)
    r = client.post(
        f"/v1/tenants/{tenant}/webhooks",
        json={"url": hook.url, "events": ["line.created"]},
        headers=auth,
    )
    assert r.status_code == 201
    hook.delay = 3.0
    took = []
    for i in range(3):
        started = time.monotonic()
        created = client.post(
            f"/v1/tenants/{tenant}/lines",
            json={"type": "telegram", "name": f"b{i}", "credential": planted("telegram")},
            headers=auth,
        )
        took.append(time.monotonic() - started)
        assert created.status_code == 201
    assert max(took) < 1.5, took
    assert len(hook.wait_for(3, timeout=30)) == 3  # delivered all the same, later


class TestSsrfAtCreation:
    """Without LINEVAULT_WEBHOOK_ALLOW_PRIVATE, private targets are refused (v4 and v6)."""

    @pytest.fixture
    def settings(self, tmp_path: Path, db_url: str) -> Settings:
        return webhook_settings(tmp_path, db_url, webhook_allow_private=False)

    @pytest.mark.parametrize(
        "url",
        [
            "https://127.0.0.1/x",
            "https://10.1.2.3/x",
            "https://192.168.0.10/x",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/x",
            "https://[fe80::1]/x",
            "https://[fd00::1]/x",
            "https://[::ffff:127.0.0.1]/x",
            "https://[::ffff:a9fe:a9fe]/x",
            "https://[64:ff9b::a00:1]/x",
            "https://0.0.0.0/x",
            "https://localhost/x",
            "http://127.0.0.1/x",
        ],
    )
    def test_private_targets_refused(
        self, client: TestClient, runtime: Runtime, tenant: str, url: str
    ) -> None:
        r = client.post(
            f"/v1/tenants/{tenant}/webhooks",
            json={"url": url, "events": ["line.revoked"]},
            headers=_owner(runtime, tenant),
        )
        assert r.status_code == 422, r.text
        assert _count(runtime) == 0

    def test_public_target_accepted(
        self, client: TestClient, runtime: Runtime, tenant: str
    ) -> None:
        r = client.post(
            f"/v1/tenants/{tenant}/webhooks",
            json={"url": "https://93.184.216.34/hook", "events": ["line.revoked"]},
            headers=_owner(runtime, tenant),
        )
        assert r.status_code == 201, r.text
