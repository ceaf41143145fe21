"""A stolen session past its MFA freshness (sudo mode, docs/security.md).

The thief holds a platform admin's (or a tenant owner's) session token but not their
second factor. Every sensitive action answers 403 ``mfa_required``, so the chain "new
runner -> grant -> fetch" that would read a stored secret breaks at its first step, and
the thief cannot mint another platform admin either. With a current code (body
``mfa_code`` or ``X-MFA-Code``) each step works, once per code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.support.identity import (
    add_membership,
    bearer,
    make_tenant,
    make_user,
    new_session,
    totp_code,
)
from tests.support.runners import grant, make_line, make_runner
from vault.runtime import Runtime
from vault.storage.engine import unit_of_work
from vault.storage.models import AuditEventRow


@dataclass
class Scene:
    runtime: Runtime
    admin_id: str
    admin_secret: str
    owner_id: str
    tenant_id: str
    line_id: str

    def stale(self, user_id: str | None = None) -> dict[str, str]:
        """A session that is past (or never had) its MFA freshness."""
        return bearer(new_session(self.runtime, user_id or self.admin_id, mfa_fresh=False))

    def code(self, steps: int = 0) -> str:
        return totp_code(self.admin_secret, self.runtime, steps=steps)


@pytest.fixture
def scene(runtime: Runtime) -> Scene:
    admin = make_user(runtime, "root@stolen.test", platform_role="admin", totp=True)
    owner = make_user(runtime, "owner@stolen.test", totp=True)
    tenant = make_tenant(runtime, "Victim")
    add_membership(runtime, tenant, owner.id, "owner")
    assert admin.totp_secret is not None
    return Scene(runtime, admin.id, admin.totp_secret, owner.id, tenant, make_line(runtime, tenant))


def _sensitive(scene: Scene, tag: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every sensitive action, each with a request that is otherwise allowed."""
    t, ln = scene.tenant_id, scene.line_id
    runner_id = make_runner(scene.runtime, "victim-runner")[0]
    grant_id = grant(scene.runtime, t, runner_id, ["*"])
    admin_member = make_user(scene.runtime, f"adm{tag}@stolen.test")
    add_membership(scene.runtime, t, admin_member.id, "admin")
    newcomer = make_user(scene.runtime, f"new{tag}@stolen.test")
    token = "12345:" + "A" * 35
    return [
        ("POST", "/v1/runners", {"name": "thief"}),
        ("POST", f"/v1/runners/{runner_id}/rotate-secret", None),
        ("DELETE", f"/v1/runners/{runner_id}", None),
        ("POST", f"/v1/tenants/{t}/grants", {"runner_id": runner_id, "lines": ["*"]}),
        ("DELETE", f"/v1/tenants/{t}/grants/{grant_id}", None),
        ("POST", "/v1/users", {"email": "a@stolen.test", "platform_role": "admin"}),
        ("POST", "/v1/users", {"email": "b@stolen.test", "platform_role": "auditor"}),
        ("POST", "/v1/users", {"email": "c@stolen.test", "platform_role": None}),
        ("POST", f"/v1/tenants/{t}/members", {"user_id": newcomer.id, "role": "owner"}),
        ("POST", f"/v1/tenants/{t}/members", {"user_id": newcomer.id, "role": "admin"}),
        ("POST", f"/v1/tenants/{t}/members", {"user_id": admin_member.id, "role": "member"}),
        ("PUT", f"/v1/tenants/{t}/lines/{ln}/credential", {"credential": {"bot_token": token}}),
        ("POST", f"/v1/tenants/{t}/lines/{ln}/revoke", {"reason": "thief"}),
        ("POST", f"/v1/tenants/{t}/keys/rotate", None),
        ("GET", f"/v1/tenants/{t}/export", None),
        ("DELETE", f"/v1/tenants/{t}", None),
    ]


def test_a_stale_session_can_do_no_sensitive_action(client: TestClient, scene: Scene) -> None:
    for owner_too in (False, True):
        for method, url, body in _sensitive(scene, str(owner_too)):
            if owner_too and not url.startswith("/v1/tenants/"):
                continue
            who = scene.owner_id if owner_too else scene.admin_id
            r = client.request(method, url, json=body, headers=scene.stale(who))
            assert r.status_code == 403, (method, url, owner_too, r.text)
            problem = r.json()
            assert problem["code"] == "mfa_required", (method, url)
            # The detail names both ways out.
            assert "mfa_code" in problem["detail"] and "X-MFA-Code" in problem["detail"]
            assert "/v1/auth/step-up" in problem["detail"]
    # Each refusal is in the audit trail, denied, with its reason.
    with unit_of_work(scene.runtime.sessions) as session:
        denied = {
            action
            for action, reason in session.execute(
                select(AuditEventRow.action, AuditEventRow.reason).where(
                    AuditEventRow.outcome == "denied"
                )
            )
            if reason and "mfa_required" in reason
        }
    assert {
        "runner.create",
        "runner.rotate_secret",
        "runner.disable",
        "grant.create",
        "grant.delete",
        "user.create",
        "member.add",
        "credential.replace",
        "credential.revoke",
        "tenant.delete",
        "tenant.export",
    } <= denied, denied
    # Nothing happened: the line still holds its secret, the tenant still exists.
    line = client.get(f"/v1/tenants/{scene.tenant_id}/lines/{scene.line_id}", headers=scene.stale())
    assert line.status_code == 200 and line.json()["status"] == "active"


def test_a_plain_member_or_auditor_is_added_without_mfa(client: TestClient, scene: Scene) -> None:
    for role in ("member", "auditor"):
        someone = make_user(scene.runtime, f"{role}@stolen.test")
        r = client.post(
            f"/v1/tenants/{scene.tenant_id}/members",
            json={"user_id": someone.id, "role": role},
            headers=scene.stale(),
        )
        assert r.status_code == 201, r.text


def test_the_runner_grant_fetch_chain_needs_fresh_codes(client: TestClient, scene: Scene) -> None:
    stale = scene.stale()
    t, ln = scene.tenant_id, scene.line_id
    assert client.post("/v1/runners", json={"name": "thief"}, headers=stale).status_code == 403
    # Even a runner that exists already cannot be granted the tenant's lines.
    existing = make_runner(scene.runtime, "existing")[0]
    grant_body = {"runner_id": existing, "lines": ["*"]}
    refused = client.post(f"/v1/tenants/{t}/grants", json=grant_body, headers=stale)
    assert refused.json()["code"] == "mfa_required"
    # With a wrong code: 401 mfa_invalid, and still no runner.
    bad = client.post("/v1/runners", json={"name": "t", "mfa_code": "000000"}, headers=stale)
    assert bad.status_code == 401 and bad.json()["code"] == "mfa_invalid"

    # The owner of the second factor: one code per request, each once.
    first = scene.code()
    made = client.post("/v1/runners", json={"name": "legit", "mfa_code": first}, headers=stale)
    assert made.status_code == 201, made.text
    runner = made.json()
    again = client.post(
        f"/v1/tenants/{t}/grants", json={"runner_id": runner["id"], "lines": ["*"]}, headers=stale
    )
    assert again.json()["code"] == "mfa_required"  # the code did not make the session fresh
    replay = client.post(
        f"/v1/tenants/{t}/grants",
        json={"runner_id": runner["id"], "lines": ["*"], "mfa_code": first},
        headers=stale,
    )
    assert replay.status_code == 401  # single use
    granted = client.post(
        f"/v1/tenants/{t}/grants",
        json={"runner_id": runner["id"], "lines": ["*"], "mfa_code": scene.code(1)},
        headers=stale,
    )
    assert granted.status_code == 201, granted.text
    token = client.post(
        "/v1/runner/token",
        data={
            "grant_type": "client_credentials",
            "client_id": runner["client_id"],
            "client_secret": runner["client_secret"],
        },
    ).json()["access_token"]
    fetched = client.get(f"/v1/tenants/{t}/lines/{ln}/credential", headers=bearer(token))
    assert fetched.status_code == 200


def test_x_mfa_code_authorizes_a_delete_without_a_body(client: TestClient, scene: Scene) -> None:
    runner_id = make_runner(scene.runtime, "to-drop")[0]
    grant_id = grant(scene.runtime, scene.tenant_id, runner_id, ["*"])
    url = f"/v1/tenants/{scene.tenant_id}/grants/{grant_id}"
    assert client.delete(url, headers=scene.stale()).status_code == 403
    ok = client.delete(url, headers={**scene.stale(), "X-MFA-Code": scene.code()})
    assert ok.status_code == 204


def test_a_stale_platform_admin_cannot_create_a_platform_admin(
    client: TestClient, scene: Scene
) -> None:
    body = {"email": "second-root@stolen.test", "platform_role": "admin"}
    r = client.post("/v1/users", json=body, headers=scene.stale())
    assert (r.status_code, r.json()["code"]) == (403, "mfa_required")
    listed = client.get("/v1/users", headers=scene.stale())
    if listed.status_code == 200:  # the route may not exist in this version
        assert "second-root@stolen.test" not in listed.text
    with unit_of_work(scene.runtime.sessions) as session:
        reasons = session.execute(
            select(AuditEventRow.reason).where(
                AuditEventRow.action == "user.create", AuditEventRow.outcome == "denied"
            )
        ).scalars()
        assert "mfa_required" in list(reasons)
    ok = client.post("/v1/users", json={**body, "mfa_code": scene.code()}, headers=scene.stale())
    assert ok.status_code == 201, ok.text


def test_refused_member_changes_are_audited(client: TestClient, scene: Scene) -> None:
    newcomer = make_user(scene.runtime, "n2@stolen.test")
    r = client.post(
        f"/v1/tenants/{scene.tenant_id}/members",
        json={"user_id": newcomer.id, "role": "admin"},
        headers=scene.stale(scene.owner_id),
    )
    assert r.status_code == 403
    with unit_of_work(scene.runtime.sessions) as session:
        last = session.execute(
            select(AuditEventRow)
            .where(AuditEventRow.action == "member.add")
            .order_by(AuditEventRow.seq.desc())
            .limit(1)
        ).scalar_one()
        assert (last.outcome, last.reason) == ("denied", "member.write_manager mfa_required")
