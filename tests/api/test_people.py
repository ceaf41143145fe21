"""Members, users, sessions and one's own data (docs/privacy.md maps each right here).

- members: change a role, remove; only owners touch owners; the last owner stays (409);
  a removed member's very next request is refused;
- users: list, disable/enable (sessions end at once), delete = erasure: the email is
  nowhere in the database afterwards (SQLite file + WAL, or a pg_dump), the sessions are
  dead, the audit events keep the opaque id and the chain still verifies;
- the caller's own sessions (list, end one) and data (export, delete).
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi.testclient import TestClient

from tests.support.db import database_bytes
from tests.support.identity import (
    TEST_PASSWORD,
    SeededUser,
    add_membership,
    bearer,
    make_tenant,
    make_user,
    new_session,
    totp_code,
)
from vault.runtime import Runtime
from vault.settings import Settings
from vault.storage.engine import unit_of_work
from vault.storage.models import User


def _code(response: Any) -> str:
    return str(response.json().get("code"))


def _events(client: TestClient, admin: str, **params: str) -> list[dict[str, Any]]:
    response = client.get("/v1/audit/events", params=params, headers=bearer(admin))
    assert response.status_code == 200, response.text
    return list(response.json()["events"])


def _platform_admin(runtime: Runtime) -> tuple[SeededUser, str]:
    admin = make_user(runtime, f"pa-{secrets.token_hex(3)}@example.test", platform_role="admin")
    return admin, new_session(runtime, admin.id, mfa_fresh=True)


def test_members_change_role_remove_and_last_owner(client: TestClient, runtime: Runtime) -> None:
    tenant = make_tenant(runtime)
    people = {r: make_user(runtime, f"{r}@members.test") for r in ("owner", "admin", "member")}
    for role, person in people.items():
        add_membership(runtime, tenant, person.id, role)
    owner = new_session(runtime, people["owner"].id, mfa_fresh=True)
    admin_stale = new_session(runtime, people["admin"].id)
    admin_fresh = new_session(runtime, people["admin"].id, mfa_fresh=True)
    member = new_session(runtime, people["member"].id)
    base = f"/v1/tenants/{tenant}/members"
    o, a, m = (people[r].id for r in ("owner", "admin", "member"))

    changed = client.patch(f"{base}/{m}", json={"role": "auditor"}, headers=bearer(admin_stale))
    assert changed.status_code == 200 and changed.json()["role"] == "auditor", changed.text
    stranger = make_user(runtime, "stranger@members.test")
    missing = client.patch(f"{base}/{stranger.id}", json={"role": "member"}, headers=bearer(owner))
    assert missing.status_code == 404
    # Making someone an admin needs MFA; only an owner touches an owner.
    up = client.patch(f"{base}/{m}", json={"role": "admin"}, headers=bearer(admin_stale))
    assert (up.status_code, _code(up)) == (403, "mfa_required")
    assert "mfa_code" in up.json()["detail"] and "/v1/auth/step-up" in up.json()["detail"]
    assert (
        client.patch(
            f"{base}/{o}", json={"role": "member"}, headers=bearer(admin_fresh)
        ).status_code
        == 403
    )
    assert client.delete(f"{base}/{o}", headers=bearer(admin_fresh)).status_code == 403
    # The last owner can be neither demoted nor removed, even by themselves.
    demote = client.patch(f"{base}/{o}", json={"role": "admin"}, headers=bearer(owner))
    assert (demote.status_code, _code(demote)) == (409, "conflict")
    assert client.delete(f"{base}/{o}", headers=bearer(owner)).status_code == 409
    # Removing: the member's very next request is refused (404: no role any more).
    assert client.get(f"/v1/tenants/{tenant}/lines", headers=bearer(member)).status_code == 200
    assert client.delete(f"{base}/{m}", headers=bearer(admin_stale)).status_code == 204
    assert client.get(f"/v1/tenants/{tenant}/lines", headers=bearer(member)).status_code == 404
    assert client.delete(f"{base}/{m}", headers=bearer(admin_stale)).status_code == 404
    # Removing an admin needs MFA; with a second owner, the first may go.
    gone = client.delete(f"{base}/{a}", headers=bearer(admin_stale))
    assert (gone.status_code, _code(gone)) == (403, "mfa_required")
    assert (
        client.patch(f"{base}/{a}", json={"role": "owner"}, headers=bearer(owner)).status_code
        == 200
    )
    assert client.delete(f"{base}/{o}", headers=bearer(owner)).status_code == 204
    _, platform = _platform_admin(runtime)
    actions = [e["action"] for e in _events(client, platform, tenant_id=tenant)]
    assert actions.count("member.remove") >= 2 and "member.update" in actions


def test_users_listed_disabled_and_enabled(client: TestClient, runtime: Runtime) -> None:
    admin, fresh = _platform_admin(runtime)
    stale = new_session(runtime, admin.id)
    target = make_user(runtime, "target@users.test")
    target_session = new_session(runtime, target.id)
    auditor = make_user(runtime, "aud@users.test", platform_role="auditor")

    listed = client.get("/v1/users", headers=bearer(new_session(runtime, auditor.id)))
    assert listed.status_code == 200
    row = next(u for u in listed.json()["users"] if u["id"] == target.id)
    assert {"id", "email", "platform_role", "totp_enrolled", "created_at"} <= set(row)
    assert row["email"] == "target@users.test" and row["totp_enrolled"] is False
    assert client.get("/v1/users", headers=bearer(target_session)).status_code == 403

    refused = client.post(f"/v1/users/{target.id}/disable", headers=bearer(stale))
    assert (refused.status_code, _code(refused)) == (403, "mfa_required")
    assert client.get("/v1/me", headers=bearer(target_session)).status_code == 200
    disabled = client.post(f"/v1/users/{target.id}/disable", headers=bearer(fresh))
    assert disabled.status_code == 200 and disabled.json()["disabled"] is True
    assert client.get("/v1/me", headers=bearer(target_session)).status_code == 401
    login = {"email": "target@users.test", "password": TEST_PASSWORD}
    assert client.post("/v1/auth/login", json=login).status_code == 401
    assert client.post(f"/v1/users/{admin.id}/disable", headers=bearer(fresh)).status_code == 409
    assert client.post("/v1/users/usr_nobody/disable", headers=bearer(fresh)).status_code == 404

    enabled = client.post(f"/v1/users/{target.id}/enable", headers=bearer(fresh))
    assert enabled.status_code == 200 and enabled.json()["disabled"] is False
    assert client.get("/v1/me", headers=bearer(target_session)).status_code == 401  # ended
    assert client.post("/v1/auth/login", json=login).status_code == 200
    outcomes = [e["outcome"] for e in _events(client, fresh, action="user.disable")]
    assert outcomes == ["denied", "success", "error", "denied"]  # mfa, done, self, unknown


def test_delete_user_erases_the_email_everywhere(
    client: TestClient, runtime: Runtime, settings: Settings
) -> None:
    admin = make_user(runtime, "eraser@example.test", platform_role="admin", totp=True)
    stale = new_session(runtime, admin.id)
    email = f"erase-{secrets.token_hex(6)}@example.test"
    target = make_user(runtime, email)
    tenant = make_tenant(runtime)
    add_membership(runtime, tenant, target.id, "owner")
    session = new_session(runtime, target.id)
    # Events where the target is the actor: a login and a read of the tenant's lines.
    assert (
        client.post("/v1/auth/login", json={"email": email, "password": TEST_PASSWORD}).status_code
        == 200
    )
    assert client.get(f"/v1/tenants/{tenant}/lines", headers=bearer(session)).status_code == 200
    url = settings.sqlalchemy_url
    assert any(email.encode() in blob for blob in database_bytes(url))  # the scan sees it

    last = client.delete(
        f"/v1/users/{target.id}",
        headers={**bearer(stale), "X-MFA-Code": totp_code(admin.totp_secret, runtime)},
    )
    assert (last.status_code, _code(last)) == (409, "conflict")  # the tenant's last owner
    add_membership(runtime, tenant, admin.id, "owner")
    no_code = client.delete(f"/v1/users/{target.id}", headers=bearer(stale))
    assert (no_code.status_code, _code(no_code)) == (403, "mfa_required")
    code = totp_code(admin.totp_secret, runtime, steps=1)
    deleted = client.delete(f"/v1/users/{target.id}", headers={**bearer(stale), "X-MFA-Code": code})
    assert deleted.status_code == 204, deleted.text

    assert client.get("/v1/me", headers=bearer(session)).status_code == 401
    assert (
        client.post("/v1/auth/login", json={"email": email, "password": TEST_PASSWORD}).status_code
        == 401
    )
    fresh = new_session(runtime, admin.id, mfa_fresh=True)
    assert target.id not in client.get("/v1/users", headers=bearer(fresh)).text
    assert client.delete(f"/v1/users/{target.id}", headers=bearer(fresh)).status_code == 404
    with unit_of_work(runtime.sessions) as db:
        assert db.get(User, target.id) is None
    for blob in database_bytes(url):
        assert email.encode() not in blob and email.encode("utf-16-le") not in blob
    kept = _events(client, fresh, actor_id=target.id)
    assert {e["action"] for e in kept} >= {"auth.login"}
    erased = _events(client, fresh, action="user.delete", outcome="success")
    assert [e["resource"]["id"] for e in erased] == [target.id]
    verify = client.get("/v1/audit/verify", headers=bearer(fresh)).json()
    assert verify["ok"] is True, verify


def test_my_sessions_listed_and_ended(client: TestClient, runtime: Runtime) -> None:
    me = make_user(runtime, "sessions@example.test")
    other = make_user(runtime, "other@example.test")
    login = client.post(
        "/v1/auth/login",
        json={"email": "sessions@example.test", "password": TEST_PASSWORD},
        headers={"User-Agent": "phone-browser/1.0"},
    )
    phone = login.json()["session_token"]
    laptop = new_session(runtime, me.id)
    foreign = new_session(runtime, other.id)

    listed = client.get("/v1/me/sessions", headers=bearer(laptop))
    assert listed.status_code == 200
    sessions = listed.json()["sessions"]
    assert len(sessions) == 2
    assert all(
        set(s) == {"id", "created_at", "last_seen_at", "ip", "user_agent", "current"}
        for s in sessions
    )
    assert [s["current"] for s in sessions].count(True) == 1
    phone_row = next(s for s in sessions if s["user_agent"] == "phone-browser/1.0")
    assert phone_row["ip"] and phone_row["current"] is False
    for token in (phone, laptop):  # the id is not the token, nor a part of it
        assert token not in listed.text and token[4:20] not in listed.text
        assert not any(s["id"] in token for s in sessions)
    # Another user's session id: 404, and that session lives on.
    foreign_id = client.get("/v1/me/sessions", headers=bearer(foreign)).json()["sessions"][0]["id"]
    assert client.delete(f"/v1/me/sessions/{foreign_id}", headers=bearer(laptop)).status_code == 404
    assert client.get("/v1/me", headers=bearer(foreign)).status_code == 200
    # Ending the phone's session from the laptop.
    ended = client.delete(f"/v1/me/sessions/{phone_row['id']}", headers=bearer(laptop))
    assert ended.status_code == 204
    assert client.get("/v1/me", headers=bearer(phone)).status_code == 401
    assert (
        client.delete(f"/v1/me/sessions/{phone_row['id']}", headers=bearer(laptop)).status_code
        == 404
    )
    assert len(client.get("/v1/me/sessions", headers=bearer(laptop)).json()["sessions"]) == 1


def test_my_export_is_my_data_only(client: TestClient, runtime: Runtime) -> None:
    me = make_user(runtime, "export@example.test")
    someone = make_user(runtime, "someone@example.test")
    tenant = make_tenant(runtime, "Exported")
    add_membership(runtime, tenant, me.id, "admin")
    token = new_session(runtime, me.id)
    for email in ("export@example.test", "someone@example.test"):  # an event each
        login = {"email": email, "password": TEST_PASSWORD}
        assert client.post("/v1/auth/login", json=login).status_code == 200

    response = client.get("/v1/me/export", headers=bearer(token))
    assert response.status_code == 200
    doc = response.json()
    assert doc["profile"]["id"] == me.id and doc["profile"]["email"] == "export@example.test"
    assert doc["memberships"] == [
        {
            "tenant_id": tenant,
            "tenant_name": "Exported",
            "role": "admin",
            "created_at": doc["memberships"][0]["created_at"],
        }
    ]
    assert sorted(s["current"] for s in doc["sessions"]) == [False, True]
    assert doc["audit_events"] and all(e["actor"]["id"] == me.id for e in doc["audit_events"])
    text = response.text
    for forbidden in ("password_hash", "totp_secret", "token_hash", "argon2", someone.id):
        assert forbidden not in text
    again = client.get("/v1/me/export", headers=bearer(token)).json()
    assert "user.export" in [e["action"] for e in again["audit_events"]]


def test_delete_me_proves_both_factors_and_keeps_an_owner(
    client: TestClient, runtime: Runtime
) -> None:
    me = make_user(runtime, "leaving@example.test", totp=True)
    assert me.totp_secret is not None
    tenant = make_tenant(runtime)
    add_membership(runtime, tenant, me.id, "owner")
    token = new_session(runtime, me.id, mfa_fresh=True)

    wrong = client.request(
        "DELETE", "/v1/me", json={"password": "not it", "mfa_code": "000000"}, headers=bearer(token)
    )
    assert (wrong.status_code, _code(wrong)) == (401, "unauthenticated")
    no_code = client.request(
        "DELETE", "/v1/me", json={"password": TEST_PASSWORD}, headers=bearer(token)
    )
    assert (no_code.status_code, _code(no_code)) == (403, "mfa_required")  # even when fresh
    owner = client.request(
        "DELETE",
        "/v1/me",
        json={"password": TEST_PASSWORD, "mfa_code": totp_code(me.totp_secret, runtime)},
        headers=bearer(token),
    )
    assert (owner.status_code, _code(owner)) == (409, "conflict")
    assert tenant in owner.json()["detail"]
    assert client.get("/v1/me", headers=bearer(token)).status_code == 200  # nothing changed

    other = make_user(runtime, "successor@example.test")
    add_membership(runtime, tenant, other.id, "owner")
    done = client.request(
        "DELETE",
        "/v1/me",
        json={"password": TEST_PASSWORD, "mfa_code": totp_code(me.totp_secret, runtime, steps=1)},
        headers=bearer(token),
    )
    assert done.status_code == 204, done.text
    assert client.get("/v1/me", headers=bearer(token)).status_code == 401
    with unit_of_work(runtime.sessions) as db:
        assert db.get(User, me.id) is None
