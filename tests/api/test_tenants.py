"""Tenant creation (with its KEK v1), listing, members and role assignment rules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyotp
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.support.identity import add_membership, bearer, make_tenant, make_user, new_session
from vault.runtime import Runtime
from vault.storage.engine import unit_of_work
from vault.storage.models import AuditEventRow, Kek, Membership, User

LINEVAULT = str(Path(sys.executable).with_name("linevault"))


def test_create_tenant_with_kek_owner_and_audit(runtime: Runtime, client: TestClient) -> None:
    admin = make_user(runtime, "padmin@example.test", platform_role="admin")
    owner = make_user(runtime, "owner@example.test")
    token = new_session(runtime, admin.id)
    created = client.post(
        "/v1/tenants", json={"name": "Acme", "owner_user_id": owner.id}, headers=bearer(token)
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) == {"id", "name", "created_at"} and body["id"].startswith("tnt_")
    tenant_id = body["id"]
    with unit_of_work(runtime.sessions) as session:
        kek = session.get(Kek, (tenant_id, 1))
        assert kek is not None and kek.state == "active" and kek.wrapped
        assert session.get(Membership, (tenant_id, owner.id)).role == "owner"  # type: ignore[union-attr]
        actions = list(
            session.execute(
                select(AuditEventRow.action).where(AuditEventRow.tenant_id == tenant_id)
            ).scalars()
        )
    assert actions == ["tenant.create"]
    owner_view = client.get("/v1/tenants", headers=bearer(new_session(runtime, owner.id))).json()
    assert [t["id"] for t in owner_view["tenants"]] == [tenant_id]
    stranger = make_user(runtime, "stranger@example.test")
    assert client.get("/v1/tenants", headers=bearer(new_session(runtime, stranger.id))).json() == {
        "tenants": []
    }
    bad = client.post(
        "/v1/tenants", json={"name": "X", "owner_user_id": "usr_nope"}, headers=bearer(token)
    )
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_request"


def test_admin_cannot_make_owners_owner_can(runtime: Runtime, client: TestClient) -> None:
    tenant = make_tenant(runtime)
    owner, admin, target = (make_user(runtime, f"{n}@example.test") for n in ("o", "a", "t"))
    add_membership(runtime, tenant, owner.id, "owner")
    add_membership(runtime, tenant, admin.id, "admin")
    as_admin = bearer(new_session(runtime, admin.id))
    url = f"/v1/tenants/{tenant}/members"
    refused = client.post(url, json={"user_id": target.id, "role": "owner"}, headers=as_admin)
    assert refused.status_code == 403
    refused = client.post(url, json={"user_id": owner.id, "role": "member"}, headers=as_admin)
    assert refused.status_code == 403  # an admin cannot demote an owner
    added = client.post(url, json={"user_id": target.id, "role": "member"}, headers=as_admin)
    assert added.status_code == 201 and added.json()["role"] == "member"
    as_owner = bearer(new_session(runtime, owner.id, mfa_fresh=True))  # owners: sudo mode
    promoted = client.post(url, json={"user_id": target.id, "role": "owner"}, headers=as_owner)
    assert promoted.status_code == 200 and promoted.json()["role"] == "owner"
    bad_role = client.post(url, json={"user_id": target.id, "role": "god"}, headers=as_owner)
    assert bad_role.status_code == 422
    members = client.get(url, headers=as_owner).json()["members"]
    assert {m["user_id"]: m["role"] for m in members} == {
        owner.id: "owner",
        admin.id: "admin",
        target.id: "owner",
    }
    me = client.get("/v1/me", headers=bearer(new_session(runtime, target.id))).json()
    assert me["tenants"] == [{"id": tenant, "role": "owner"}]


def test_create_user_over_http(runtime: Runtime, client: TestClient) -> None:
    admin = make_user(runtime, "ua@example.test", platform_role="admin")
    token = bearer(new_session(runtime, admin.id, mfa_fresh=True))
    made = client.post(
        "/v1/users", json={"email": "New@Example.test", "platform_role": "auditor"}, headers=token
    )
    assert made.status_code == 201 and made.headers["cache-control"] == "no-store"
    body = made.json()
    assert body["email"] == "new@example.test" and len(body["initial_password"]) >= 20
    dup = client.post("/v1/users", json={"email": "new@example.test"}, headers=token)
    assert dup.status_code == 409
    bad = client.post(
        "/v1/users", json={"email": "x@example.test", "platform_role": "root"}, headers=token
    )
    assert bad.status_code == 422
    with unit_of_work(runtime.sessions) as session:
        user = session.get(User, body["id"])
        assert user is not None and user.password_hash.startswith("$argon2id$")
        assert body["initial_password"] not in user.password_hash


def test_cli_users_create_and_reset_mfa(tmp_path: Path, db_url: str) -> None:
    env = {"LINEVAULT_DATABASE_URL": db_url, "PATH": "/usr/bin:/bin"}
    data = str(tmp_path / "var")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [LINEVAULT, *args, "--data-dir", data],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    init = run("init", "--admin-email", "root@example.test", "--json")
    assert init.returncode == 0, init.stderr
    assert pyotp.TOTP(json.loads(init.stdout)["admin_totp_secret"]).now()
    made = run(
        "users", "create", "--email", "ops@example.test", "--platform-role", "auditor", "--json"
    )
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["email"] == "ops@example.test"
    assert run("users", "create", "--email", "ops@example.test").returncode == 1
    reset = run("users", "reset-mfa", "--email", "root@example.test")
    assert reset.returncode == 0, reset.stderr
    assert run("users", "reset-mfa", "--email", "ghost@example.test").returncode == 1
    disabled = run("users", "disable", "--email", "ops@example.test")
    assert disabled.returncode == 0, disabled.stderr
    assert run("users", "enable", "--email", "ops@example.test").returncode == 0
    assert run("users", "disable", "--email", "ghost@example.test").returncode == 1
    from sqlalchemy import create_engine

    engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(AuditEventRow.action, AuditEventRow.actor_type).order_by(AuditEventRow.seq)
            ).all()
            enrolled = conn.execute(
                select(User.totp_enrolled).where(User.email == "root@example.test")
            ).scalar()
            ops = conn.execute(
                select(User.password_change_required, User.disabled_at).where(
                    User.email == "ops@example.test"
                )
            ).one()
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows][-4:] == [
        ("user.create", "system"),
        ("user.mfa_reset", "system"),
        ("user.disable", "system"),
        ("user.enable", "system"),
    ]
    assert enrolled is False
    assert tuple(ops) == (True, None)  # a generated password: to be changed; enabled again


def test_the_last_owner_cannot_demote_themselves(runtime: Runtime, client: TestClient) -> None:
    owner = make_user(runtime, "solo@example.test")
    tenant = make_tenant(runtime, "Solo")
    add_membership(runtime, tenant, owner.id, "owner")
    fresh = bearer(new_session(runtime, owner.id, mfa_fresh=True))
    for role in ("admin", "member", "auditor"):
        r = client.post(
            f"/v1/tenants/{tenant}/members", json={"user_id": owner.id, "role": role}, headers=fresh
        )
        assert (r.status_code, r.json()["code"]) == (409, "conflict"), r.text
    with unit_of_work(runtime.sessions) as session:
        assert session.get(Membership, (tenant, owner.id)).role == "owner"  # type: ignore[union-attr]
        last = session.execute(
            select(AuditEventRow).order_by(AuditEventRow.seq.desc()).limit(1)
        ).scalar_one()
        assert (last.action, last.outcome) == ("member.update", "error")
    # With a second owner, the first may step down.
    other = make_user(runtime, "second@example.test")
    made = client.post(
        f"/v1/tenants/{tenant}/members", json={"user_id": other.id, "role": "owner"}, headers=fresh
    )
    assert made.status_code == 201, made.text
    down = client.post(
        f"/v1/tenants/{tenant}/members", json={"user_id": owner.id, "role": "admin"}, headers=fresh
    )
    assert down.status_code == 200, down.text


def test_adding_a_member_reveals_nothing_about_outsiders(
    runtime: Runtime, client: TestClient
) -> None:
    owner = make_user(runtime, "own@example.test")
    tenant, elsewhere = make_tenant(runtime, "Mine"), make_tenant(runtime, "Theirs")
    add_membership(runtime, tenant, owner.id, "owner")
    outsider = make_user(runtime, "secret-identity@example.test")
    add_membership(runtime, elsewhere, outsider.id, "member")
    loner = make_user(runtime, "loner@example.test")  # in no tenant at all
    headers = bearer(new_session(runtime, owner.id))
    for user in (outsider, loner):
        r = client.post(
            f"/v1/tenants/{tenant}/members",
            json={"user_id": user.id, "role": "member"},
            headers=headers,
        )
        assert r.status_code == 201, r.text
        assert r.json()["email"] is None and user.email not in r.text
    unknown = client.post(
        f"/v1/tenants/{tenant}/members",
        json={"user_id": "usr_" + "0" * 32, "role": "member"},
        headers=headers,
    )
    assert unknown.status_code == 422 and "@" not in unknown.text
    # Once a colleague, the email is theirs to see (GET .../members shows it anyway).
    colleague = make_user(runtime, "colleague@example.test")
    add_membership(runtime, tenant, colleague.id, "member")
    again = client.post(
        f"/v1/tenants/{tenant}/members",
        json={"user_id": colleague.id, "role": "auditor"},
        headers=headers,
    )
    assert again.json()["email"] == "colleague@example.test"
    # A platform admin sees it.
    admin = make_user(runtime, "pa@example.test", platform_role="admin")
    stranger = make_user(runtime, "stranger2@example.test")
    seen = client.post(
        f"/v1/tenants/{tenant}/members",
        json={"user_id": stranger.id, "role": "member"},
        headers=bearer(new_session(runtime, admin.id)),
    )
    assert seen.json()["email"] == "stranger2@example.test"
