"""POST /v1/tenants/{id}/keys/rotate and GET /v1/tenants/{id}/keys over HTTP."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from tests.support.identity import add_membership, bearer, make_user, new_session, totp_code
from tests.support.keys import make_tenant, open_all, seed_lines, uncached
from vault.keys.service import tenant_key_service_for
from vault.runtime import Runtime
from vault.settings import Settings
from vault.storage.engine import unit_of_work
from vault.storage.models import AuditEventRow


def _setup(runtime: Runtime, role: str = "owner", *, fresh: bool = True) -> tuple[str, str, object]:
    with unit_of_work(runtime.sessions) as session:
        tenant = make_tenant(session, runtime.keyring, now=runtime.clock.now())
    user = make_user(runtime, f"{role}-{fresh}@example.test", totp=True)
    add_membership(runtime, tenant, user.id, role)
    return tenant, new_session(runtime, user.id, mfa_fresh=fresh), user


def _events(runtime: Runtime, action: str) -> list[AuditEventRow]:
    with unit_of_work(runtime.sessions) as session:
        return list(
            session.execute(select(AuditEventRow).where(AuditEventRow.action == action)).scalars()
        )


def test_rotate_returns_202_and_the_rewrap_finishes_in_the_background(
    client: TestClient, runtime: Runtime
) -> None:
    tenant, token, _ = _setup(runtime)
    secrets = seed_lines(
        runtime.sessions, runtime.keyring, tenant_id=tenant, count=25, now=runtime.clock.now()
    )
    response = client.post(f"/v1/tenants/{tenant}/keys/rotate", headers=bearer(token), json={})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["kek_version"] == 2 and body["pending_rewrap"] == 25
    worker = client.app.state.rewrap_worker  # type: ignore[attr-defined]
    assert worker.wait_idle(timeout=30)
    keys = client.get(f"/v1/tenants/{tenant}/keys", headers=bearer(token))
    assert keys.status_code == 200
    data = keys.json()
    assert data["active_version"] == 2
    assert [(v["version"], v["state"]) for v in data["versions"]] == [
        (1, "destroyed"),
        (2, "active"),
    ]
    assert data["rotation"]["state"] == "done" and data["rotation"]["rewrapped"] == 25
    assert '"wrapped"' not in keys.text and "root_key_id" not in keys.text
    assert open_all(runtime.engine, uncached(runtime.provider), tenant) == secrets
    (event,) = _events(runtime, "key.rotate")
    assert event.outcome == "success" and event.tenant_id == tenant
    assert _events(runtime, "key.destroy")


def test_rotate_needs_mfa_and_accepts_a_code_in_the_body(
    client: TestClient, runtime: Runtime
) -> None:
    tenant, token, user = _setup(runtime, fresh=False)
    refused = client.post(f"/v1/tenants/{tenant}/keys/rotate", headers=bearer(token))
    assert refused.status_code == 403 and refused.json()["code"] == "mfa_required"
    with unit_of_work(runtime.sessions) as session:
        assert tenant_key_service_for(runtime, session).status(tenant).active_version == 1
    code = totp_code(user.totp_secret, runtime)  # type: ignore[attr-defined]
    ok = client.post(
        f"/v1/tenants/{tenant}/keys/rotate", headers=bearer(token), json={"mfa_code": code}
    )
    assert ok.status_code == 202, ok.text
    assert [e.outcome for e in _events(runtime, "key.rotate")] == ["denied", "success"]


def test_roles_and_tenant_isolation(client: TestClient, runtime: Runtime) -> None:
    tenant, _, _ = _setup(runtime)
    member = make_user(runtime, "member@example.test")
    add_membership(runtime, tenant, member.id, "member")
    auditor = make_user(runtime, "auditor@example.test")
    add_membership(runtime, tenant, auditor.id, "auditor")
    stranger = make_user(runtime, "stranger@example.test")
    member_t = new_session(runtime, member.id, mfa_fresh=True)
    auditor_t = new_session(runtime, auditor.id, mfa_fresh=True)
    stranger_t = new_session(runtime, stranger.id, mfa_fresh=True)
    url = f"/v1/tenants/{tenant}/keys"
    assert client.post(url + "/rotate", headers=bearer(member_t)).json()["code"] == "forbidden"
    assert client.post(url + "/rotate", headers=bearer(auditor_t)).status_code == 403
    assert client.post(url + "/rotate", headers=bearer(stranger_t)).status_code == 404
    assert client.get(url, headers=bearer(stranger_t)).status_code == 404
    assert client.get(url, headers=bearer(member_t)).status_code == 403
    assert client.get(url, headers=bearer(auditor_t)).status_code == 200
    assert client.post(url + "/rotate").status_code == 401
    assert (
        client.post("/v1/tenants/tnt_nope/keys/rotate", headers=bearer(stranger_t)).status_code
        == 404
    )
    assert all(e.outcome == "denied" for e in _events(runtime, "key.rotate"))


def test_server_start_resumes_a_pending_rotation(runtime: Runtime, settings: Settings) -> None:
    with unit_of_work(runtime.sessions) as session:
        tenant = make_tenant(session, runtime.keyring, now=runtime.clock.now())
    secrets = seed_lines(
        runtime.sessions, runtime.keyring, tenant_id=tenant, count=9, now=runtime.clock.now()
    )
    with unit_of_work(runtime.sessions) as session:  # as if the server died after the 202
        view = tenant_key_service_for(runtime, session).rotate(
            tenant, actor_type="system", actor_id="t"
        )
    assert view.pending_rewrap == 9
    with TestClient(create_app(settings, runtime=runtime)) as client:
        assert client.app.state.rewrap_worker.wait_idle(timeout=30)  # type: ignore[attr-defined]
    with unit_of_work(runtime.sessions) as session:
        status = tenant_key_service_for(runtime, session).status(tenant)
    assert status.rotation is not None and status.rotation.state == "done"
    assert open_all(runtime.engine, uncached(runtime.provider), tenant) == secrets
