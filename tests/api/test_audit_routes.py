"""GET /v1/audit/events and /v1/audit/verify over HTTP: scoping, pagination, the
contract's event shape, and 503 audit_unavailable with no events when the read's own
event cannot be written."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from tests.support.audit import fill_chain
from tests.vault.test_audit_failclosed import audit_inserts_rejected
from vault.bootstrap import create_user_row
from vault.runtime import Runtime
from vault.storage.engine import unit_of_work
from vault.storage.models import Membership, Tenant

EVENT_KEYS = {
    "seq", "ts", "action", "outcome", "actor", "tenant_id", "resource", "reason",
    "request_id", "ip", "user_agent", "workflow_id", "run_id", "prev_hash", "hash",
}  # fmt: skip


def _user(
    runtime: Runtime, email: str, *, platform: str | None = None, tenant_role: str | None = None
) -> str:
    now = datetime.now(UTC)
    with unit_of_work(runtime.sessions) as s:
        if s.get(Tenant, "tnt_a") is None:
            s.add(Tenant(id="tnt_a", name="A", created_at=now, active_kek_version=1))
            s.add(Tenant(id="tnt_b", name="B", created_at=now, active_kek_version=1))
            s.flush()
        user = create_user_row(s, email=email, password_hash="x", platform_role=platform, now=now)
        if tenant_role:
            s.add(Membership(tenant_id="tnt_a", user_id=user.id, role=tenant_role, created_at=now))
        issued = runtime.authenticator.store.create(s, user_id=user.id, now=now, mfa_fresh=False)
    return issued.token


@pytest.fixture
def tokens(runtime: Runtime) -> dict[str, str]:
    fill_chain(runtime, 10)  # events of tenants tnt_a and (none) tnt_b
    return {
        "auditor": _user(runtime, "aud@x.test", platform="auditor"),
        "owner": _user(runtime, "own@x.test", tenant_role="owner"),
        "member": _user(runtime, "mem@x.test", tenant_role="member"),
    }


def _get(client: TestClient, path: str, token: str, **params: object):  # type: ignore[no-untyped-def]
    return client.get(path, params=params, headers={"Authorization": f"Bearer {token}"})


def test_platform_auditor_lists_and_pages(client: TestClient, tokens: dict[str, str]) -> None:
    seqs: list[int] = []
    cursor = None
    while True:
        params = {"limit": 4} | ({"cursor": cursor} if cursor else {})
        r = _get(client, "/v1/audit/events", tokens["auditor"], **params)
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"] == "no-store"
        body = r.json()
        seqs += [e["seq"] for e in body["events"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seqs == sorted(seqs) and seqs[0] == 1 and len(seqs) == len(set(seqs))
    event = body["events"][-1]
    assert set(event) >= EVENT_KEYS
    assert event["action"] == "audit.read" and event["actor"]["type"] == "user"
    datetime.fromisoformat(event["ts"].replace("Z", "+00:00"))


def test_tenant_scoping_over_http(client: TestClient, tokens: dict[str, str]) -> None:
    r = _get(client, "/v1/audit/events", tokens["owner"], tenant_id="tnt_a")
    assert r.status_code == 200 and r.json()["events"]
    assert {e["tenant_id"] for e in r.json()["events"]} == {"tnt_a"}
    assert _get(client, "/v1/audit/events", tokens["owner"]).status_code == 422
    assert _get(client, "/v1/audit/events", tokens["owner"], tenant_id="tnt_b").status_code == 404
    r = _get(client, "/v1/audit/events", tokens["member"], tenant_id="tnt_a")
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    assert _get(client, "/v1/audit/verify", tokens["owner"]).status_code == 403
    assert client.get("/v1/audit/events").status_code == 401
    r = _get(client, "/v1/audit/events", tokens["auditor"], cursor="nonsense")
    assert r.status_code == 422 and r.json()["code"] == "invalid_request"


def test_filters_over_http(client: TestClient, tokens: dict[str, str]) -> None:
    r = _get(
        client,
        "/v1/audit/events",
        tokens["auditor"],
        action="credential.fetch",
        outcome="success",
        actor_type="runner",
        line_id="ln_1",
    )
    assert r.status_code == 200
    events = r.json()["events"]
    assert events and all(
        e["action"] == "credential.fetch"
        and e["actor"]["type"] == "runner"
        and e["resource"]["id"] == "ln_1"
        for e in events
    )
    since = _get(client, "/v1/audit/events", tokens["auditor"], since="2999-01-01T00:00:00Z")
    assert since.status_code == 200 and since.json()["events"] == []
    assert _get(client, "/v1/audit/events", tokens["auditor"], outcome="maybe").status_code == 422


def test_verify_over_http(client: TestClient, tokens: dict[str, str], runtime: Runtime) -> None:
    r = _get(client, "/v1/audit/verify", tokens["auditor"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ok"] is True and body["first_bad_seq"] is None and body["problem"] is None
    assert body["events_checked"] == body["head"]["seq"] and len(body["head"]["hash"]) == 64
    with runtime.engine.begin() as conn:
        from sqlalchemy import text

        conn.execute(text("UPDATE audit_events SET reason='rewritten' WHERE seq=3"))
    body = _get(client, "/v1/audit/verify", tokens["auditor"]).json()
    assert body["ok"] is False and body["first_bad_seq"] == 3 and body["problem"]


def test_events_refused_with_503_when_the_read_cannot_be_audited(
    client: TestClient, tokens: dict[str, str], runtime: Runtime
) -> None:
    with audit_inserts_rejected(runtime.engine):
        r = _get(client, "/v1/audit/events", tokens["auditor"])
        assert r.status_code == 503
        assert r.json()["code"] == "audit_unavailable"
        assert "events" not in r.json() and "hash" not in r.text
        r = _get(client, "/v1/audit/verify", tokens["auditor"])
        assert r.status_code == 503 and r.json()["code"] == "audit_unavailable"
    assert _get(client, "/v1/audit/events", tokens["auditor"]).status_code == 200
