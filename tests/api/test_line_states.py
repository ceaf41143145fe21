"""Suspending and resuming lines and tenants over HTTP (contract: "Line states and
restricting processing"), on SQLite and PostgreSQL.

A suspended line, or any line of a suspended tenant, is refused to runners with 423
``suspended``; its secret is kept, so resuming (with MFA) serves it again. Every attempt,
allowed or not, leaves an audit event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from tests.support.audit import event_rows
from tests.support.identity import add_membership, bearer, make_user, new_session, totp_code
from tests.support.runners import TELEGRAM, grant, issue_token, make_line, make_runner
from tests.support.runners import make_tenant as make_tenant_direct
from vault.runtime import Runtime
from vault.storage.engine import unit_of_work
from vault.storage.models import Line, Tenant


@dataclass
class World:
    runtime: Runtime
    tenant: str
    lines: tuple[str, str]
    owner: dict[str, str]  # a session past its MFA freshness
    fresh_owner: dict[str, str]
    owner_totp: str
    admin: dict[str, str]  # tenant admin, MFA-fresh
    member: dict[str, str]
    stranger: dict[str, str]
    runner: dict[str, str]

    def fetch_path(self, line: str) -> str:
        return f"/v1/tenants/{self.tenant}/lines/{line}/credential"

    def line_path(self, line: str, action: str) -> str:
        return f"/v1/tenants/{self.tenant}/lines/{line}/{action}"


@pytest.fixture
def world(runtime: Runtime) -> World:
    tenant = make_tenant_direct(runtime)
    other = make_tenant_direct(runtime, "Other")
    lines = (make_line(runtime, tenant), make_line(runtime, tenant))
    owner = make_user(runtime, "owner@example.test", totp=True)
    admin = make_user(runtime, "tenant-admin@example.test")
    member = make_user(runtime, "member@example.test")
    stranger = make_user(runtime, "stranger@example.test")
    add_membership(runtime, tenant, owner.id, "owner")
    add_membership(runtime, tenant, admin.id, "admin")
    add_membership(runtime, tenant, member.id, "member")
    add_membership(runtime, other, stranger.id, "owner")
    runner_id, client_id, secret = make_runner(runtime)
    grant(runtime, tenant, runner_id, ["*"])
    assert owner.totp_secret
    return World(
        runtime=runtime,
        tenant=tenant,
        lines=lines,
        owner=bearer(new_session(runtime, owner.id)),
        fresh_owner=bearer(new_session(runtime, owner.id, mfa_fresh=True)),
        owner_totp=owner.totp_secret,
        admin=bearer(new_session(runtime, admin.id, mfa_fresh=True)),
        member=bearer(new_session(runtime, member.id, mfa_fresh=True)),
        stranger=bearer(new_session(runtime, stranger.id, mfa_fresh=True)),
        runner=bearer(issue_token(runtime, client_id, secret)),
    )


def problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    return body


def events(runtime: Runtime, action: str) -> list[dict[str, Any]]:
    return [e for e in event_rows(runtime.engine) if e["action"] == action]


def test_suspend_refuses_fetch_and_resume_restores_it(client: TestClient, world: World) -> None:
    w, line = world, world.lines[0]
    assert client.get(w.fetch_path(line), headers=w.runner).status_code == 200  # cached now
    suspended = client.post(w.line_path(line, "suspend"), json={"reason": "pause"}, headers=w.owner)
    assert suspended.status_code == 200, suspended.text
    assert suspended.json()["status"] == "suspended"
    assert suspended.json()["version"] == 1
    body = problem(client.get(w.fetch_path(line), headers=w.runner), 423, "suspended")
    assert body["status"] == 423
    # The other line of the tenant is untouched.
    assert client.get(w.fetch_path(w.lines[1]), headers=w.runner).status_code == 200
    got = client.get(f"/v1/tenants/{w.tenant}/lines/{line}", headers=w.owner)
    assert got.json()["status"] == "suspended"

    resumed = client.post(w.line_path(line, "resume"), json={}, headers=w.fresh_owner)
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["status"] == "active"
    fetched = client.get(w.fetch_path(line), headers=w.runner)
    assert fetched.status_code == 200
    assert fetched.json()["credential"] == TELEGRAM  # the secret was kept

    (suspend,) = events(w.runtime, "credential.suspend")
    assert (suspend["outcome"], suspend["resource_id"], suspend["reason"]) == (
        "success",
        line,
        "pause",
    )
    (resume,) = events(w.runtime, "credential.resume")
    assert resume["outcome"] == "success"
    refused = [e for e in events(w.runtime, "credential.fetch") if e["reason"] == "suspended"]
    assert [(e["outcome"], e["resource_id"]) for e in refused] == [("denied", line)]


def test_suspend_needs_no_mfa_resume_does(client: TestClient, world: World) -> None:
    w, line = world, world.lines[0]
    # A stale session may suspend (protective), and twice is idempotent.
    assert client.post(w.line_path(line, "suspend"), headers=w.owner).status_code == 200
    again = client.post(w.line_path(line, "suspend"), headers=w.owner)
    assert again.json()["status"] == "suspended"
    problem(client.post(w.line_path(line, "resume"), json={}, headers=w.owner), 403, "mfa_required")
    wrong = client.post(w.line_path(line, "resume"), json={"mfa_code": "000000"}, headers=w.owner)
    assert wrong.status_code in (401, 403)
    problem(client.get(w.fetch_path(line), headers=w.runner), 423, "suspended")
    code = totp_code(w.owner_totp, w.runtime)
    ok = client.post(w.line_path(line, "resume"), json={"mfa_code": code}, headers=w.owner)
    assert ok.status_code == 200, ok.text
    assert ok.json()["status"] == "active"
    reasons = [(e["outcome"], e["reason"]) for e in events(w.runtime, "credential.resume")]
    assert ("denied", "mfa_required") in reasons
    assert reasons[-1] == ("success", None)
    assert [e["reason"] for e in events(w.runtime, "credential.suspend")] == [
        None,
        "already_suspended",
    ]


def test_roles_and_strangers(client: TestClient, world: World) -> None:
    w, line = world, world.lines[0]
    problem(client.post(w.line_path(line, "suspend"), headers=w.member), 403, "forbidden")
    problem(client.post(w.line_path(line, "suspend"), headers=w.stranger), 404, "not_found")
    problem(client.post(f"/v1/tenants/{w.tenant}/suspend", headers=w.admin), 403, "forbidden")
    problem(client.post(f"/v1/tenants/{w.tenant}/suspend", headers=w.stranger), 404, "not_found")
    assert client.post(w.line_path(line, "suspend"), headers=w.admin).status_code == 200
    assert client.post(w.line_path(line, "resume"), headers=w.admin).status_code == 200
    denied = [e for e in events(w.runtime, "credential.suspend") if e["outcome"] == "denied"]
    assert sorted(e["reason"] for e in denied) == ["forbidden", "not_found"]
    assert all(e["outcome"] == "denied" for e in events(w.runtime, "tenant.suspend"))


def test_suspending_a_revoked_line_is_409(client: TestClient, world: World) -> None:
    w, line = world, world.lines[0]
    revoked = client.post(w.line_path(line, "revoke"), json={}, headers=w.fresh_owner)
    assert revoked.status_code == 200
    problem(client.post(w.line_path(line, "suspend"), headers=w.owner), 409, "conflict")
    problem(client.post(w.line_path(line, "resume"), headers=w.fresh_owner), 409, "conflict")
    problem(client.get(w.fetch_path(line), headers=w.runner), 410, "revoked")
    (event,) = events(w.runtime, "credential.suspend")
    assert (event["outcome"], event["reason"]) == ("error", "conflict")


def test_a_suspended_line_can_be_replaced_and_stays_suspended(
    client: TestClient, world: World
) -> None:
    w, line = world, world.lines[0]
    client.post(w.line_path(line, "suspend"), headers=w.owner)
    new = {"bot_token": "654321:" + "B" * 35}
    replaced = client.put(
        f"/v1/tenants/{w.tenant}/lines/{line}/credential",
        json={"credential": new},
        headers=w.fresh_owner,
    )
    assert replaced.status_code == 200, replaced.text
    assert (replaced.json()["status"], replaced.json()["version"]) == ("suspended", 2)
    problem(client.get(w.fetch_path(line), headers=w.runner), 423, "suspended")
    client.post(w.line_path(line, "resume"), headers=w.fresh_owner)
    assert client.get(w.fetch_path(line), headers=w.runner).json()["credential"] == new


def test_tenant_suspension_blocks_all_its_lines(client: TestClient, world: World) -> None:
    w = world
    for line in w.lines:
        assert client.get(w.fetch_path(line), headers=w.runner).status_code == 200
    client.post(w.line_path(w.lines[1], "suspend"), headers=w.owner)  # its own suspension
    answer = client.post(f"/v1/tenants/{w.tenant}/suspend", json={"reason": "x"}, headers=w.owner)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"id": w.tenant, "status": "suspended"}
    for line in w.lines:
        problem(client.get(w.fetch_path(line), headers=w.runner), 423, "suspended")
    # The lines' own metadata is unchanged; humans still manage the tenant.
    listed = client.get(f"/v1/tenants/{w.tenant}/lines", headers=w.owner).json()["lines"]
    assert sorted(x["status"] for x in listed) == ["active", "suspended"]

    resume = f"/v1/tenants/{w.tenant}/resume"
    problem(client.post(resume, json={}, headers=w.owner), 403, "mfa_required")
    code = totp_code(w.owner_totp, w.runtime)
    resumed = client.post(resume, json={"mfa_code": code}, headers=w.owner)
    assert resumed.json() == {"id": w.tenant, "status": "active"}
    assert client.get(w.fetch_path(w.lines[0]), headers=w.runner).status_code == 200
    # A line suspended on its own stays suspended after the tenant resumes.
    problem(client.get(w.fetch_path(w.lines[1]), headers=w.runner), 423, "suspended")
    outcomes = [(e["outcome"], e["reason"]) for e in events(w.runtime, "tenant.resume")]
    assert outcomes == [("denied", "mfa_required"), ("success", None)]
    assert [e["outcome"] for e in events(w.runtime, "tenant.suspend")] == ["success"]


def test_suspended_tenant_of_a_platform_admin(client: TestClient, world: World) -> None:
    admin = make_user(world.runtime, "platform@example.test", platform_role="admin")
    headers = bearer(new_session(world.runtime, admin.id, mfa_fresh=True))
    path = f"/v1/tenants/{world.tenant}"
    assert client.post(f"{path}/suspend", headers=headers).json()["status"] == "suspended"
    assert client.post(f"{path}/suspend", headers=headers).json()["status"] == "suspended"
    assert client.post(f"{path}/resume", headers=headers).json()["status"] == "active"
    reasons = [e["reason"] for e in events(world.runtime, "tenant.suspend")]
    assert reasons == [None, "already_suspended"]


def test_a_status_edited_in_the_database_is_refused(client: TestClient, world: World) -> None:
    """Someone with write access to the database but not the root key flips a suspended
    line back to active: its status MAC no longer holds and the fetch refuses it."""
    w, line = world, world.lines[0]
    client.post(w.line_path(line, "suspend"), headers=w.owner)
    with unit_of_work(w.runtime.sessions) as session:
        session.execute(update(Line).where(Line.id == line).values(status="active"))
    problem(client.get(w.fetch_path(line), headers=w.runner), 404, "not_found")
    alarms = events(w.runtime, "integrity.violation")
    assert [(e["resource_id"], e["reason"]) for e in alarms] == [(line, "line_integrity")]


def test_tenant_status_is_stored(client: TestClient, world: World) -> None:
    client.post(f"/v1/tenants/{world.tenant}/suspend", headers=world.owner)
    with unit_of_work(world.runtime.sessions) as session:
        status = session.execute(select(Tenant.status).where(Tenant.id == world.tenant))
        assert status.scalar_one() == "suspended"


def test_owners_and_admins_list_runners_to_grant_them(client: TestClient, world: World) -> None:
    for headers in (world.owner, world.admin):
        listed = client.get("/v1/runners", headers=headers)
        assert listed.status_code == 200, listed.text
        (runner,) = listed.json()["runners"]
        assert set(runner) == {"id", "name", "created_at", "status"}
        assert runner["status"] == "active"
    problem(client.get("/v1/runners", headers=world.member), 403, "forbidden")
    problem(client.post("/v1/runners", json={"name": "x"}, headers=world.owner), 403, "forbidden")
    admin = make_user(world.runtime, "platform@example.test", platform_role="admin")
    full = client.get("/v1/runners", headers=bearer(new_session(world.runtime, admin.id)))
    assert {"client_id", "status", "disabled_at"} <= set(full.json()["runners"][0])
