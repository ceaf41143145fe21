"""The whole user journey against a real server process over HTTP, on both backends:
init, login with TOTP, tenant, members, lines, grants, runner fetch, replace, revoke,
audit review, verify, export, tenant deletion."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import pyotp
import pytest

from tests.support.server import LINEVAULT, Admin, running_server

pytestmark = pytest.mark.slow

BOT_TOKEN = "123456789:AAE_e2eSecretBotToken-abcdefghijklmnop"
BOT_TOKEN_2 = "123456789:AAE_e2eSecondBotToken-qrstuvwxyz0123456"


def _fresh_code(secret: str, used: set[str]) -> str:
    """A TOTP code not used before in this test (codes are single-use per user)."""
    totp = pyotp.TOTP(secret)
    for _ in range(70):
        code = totp.now()
        if code not in used:
            used.add(code)
            return code
        time.sleep(0.5)
    raise AssertionError("no fresh TOTP code within 35 s")


def login(http: httpx.Client, admin: Admin, used: set[str]) -> str:
    first = http.post("/v1/auth/login", json={"email": admin.email, "password": admin.password})
    assert first.status_code == 200, first.text
    assert first.json()["mfa_required"] is True
    second = http.post(
        "/v1/auth/mfa",
        json={"mfa_token": first.json()["mfa_token"], "code": _fresh_code(admin.totp_secret, used)},
    )
    assert second.status_code == 200, second.text
    return str(second.json()["session_token"])


def test_full_journey(tmp_path: Path, db_url: str) -> None:
    used: set[str] = set()
    with running_server(tmp_path, database_url=db_url) as (server, admin):
        http = httpx.Client(base_url=server.url, timeout=30)
        token = login(http, admin, used)
        auth = {"Authorization": f"Bearer {token}"}

        me = http.get("/v1/me", headers=auth).json()
        assert me["platform_role"] == "admin" and me["totp_enrolled"] is True

        # A tenant, an owner and a member.
        tenant = http.post("/v1/tenants", json={"name": "Acme"}, headers=auth)
        assert tenant.status_code == 201, tenant.text
        tenant_id = tenant.json()["id"]
        member = http.post(
            "/v1/users", json={"email": "m@acme.test", "platform_role": None}, headers=auth
        )
        assert member.status_code == 201, member.text
        assert member.json()["initial_password"]
        added = http.post(
            f"/v1/tenants/{tenant_id}/members",
            json={"user_id": member.json()["id"], "role": "member"},
            headers=auth,
        )
        assert added.status_code == 201, added.text

        # Lines: a Telegram bot and a widget whose secret the vault generates.
        line = http.post(
            f"/v1/tenants/{tenant_id}/lines",
            json={
                "type": "telegram",
                "name": "support bot",
                "credential": {"bot_token": BOT_TOKEN},
            },
            headers=auth,
        )
        assert line.status_code == 201, line.text
        line_id = line.json()["id"]
        assert BOT_TOKEN not in line.text
        widget = http.post(
            f"/v1/tenants/{tenant_id}/lines",
            json={"type": "widget", "name": "site", "credential": {}},
            headers=auth,
        )
        assert widget.status_code == 201, widget.text
        assert widget.json()["generated"]["signing_secret"]
        listed = http.get(f"/v1/tenants/{tenant_id}/lines", headers=auth)
        assert {ln["id"] for ln in listed.json()["lines"]} == {line_id, widget.json()["id"]}
        assert BOT_TOKEN not in listed.text

        # A runner, a grant, a token and an audited fetch.
        runner = http.post("/v1/runners", json={"name": "flows"}, headers=auth)
        assert runner.status_code == 201, runner.text
        grant = http.post(
            f"/v1/tenants/{tenant_id}/grants",
            json={"runner_id": runner.json()["id"], "lines": [line_id]},
            headers=auth,
        )
        assert grant.status_code == 201, grant.text
        issued = http.post(
            "/v1/runner/token",
            data={
                "grant_type": "client_credentials",
                "client_id": runner.json()["client_id"],
                "client_secret": runner.json()["client_secret"],
            },
        )
        assert issued.status_code == 200, issued.text
        runner_auth = {
            "Authorization": f"Bearer {issued.json()['access_token']}",
            "X-Workflow-Id": "wf-onboarding",
            "X-Run-Id": "run-42",
        }
        fetched = http.get(
            f"/v1/tenants/{tenant_id}/lines/{line_id}/credential", headers=runner_auth
        )
        assert fetched.status_code == 200, fetched.text
        assert fetched.json()["credential"]["bot_token"] == BOT_TOKEN
        assert fetched.headers["cache-control"] == "no-store"
        # The widget is not granted: denied without revealing it.
        denied = http.get(
            f"/v1/tenants/{tenant_id}/lines/{widget.json()['id']}/credential", headers=runner_auth
        )
        assert denied.status_code in (403, 404)
        # Humans never read a secret back.
        assert (
            http.get(
                f"/v1/tenants/{tenant_id}/lines/{line_id}/credential", headers=auth
            ).status_code
            == 403
        )

        # Replace: version 2, the runner sees the new secret.
        replaced = http.put(
            f"/v1/tenants/{tenant_id}/lines/{line_id}/credential",
            json={"credential": {"bot_token": BOT_TOKEN_2}},
            headers=auth,
        )
        assert replaced.status_code == 200, replaced.text
        assert replaced.json()["version"] == 2
        again = http.get(f"/v1/tenants/{tenant_id}/lines/{line_id}/credential", headers=runner_auth)
        assert again.json()["credential"]["bot_token"] == BOT_TOKEN_2
        assert again.json()["version"] == 2

        # Revoke: a member may not; the admin's session is MFA-fresh (made by /v1/auth/mfa
        # less than 5 minutes ago), so no code is needed. Every later fetch is 410.
        revoked = http.post(
            f"/v1/tenants/{tenant_id}/lines/{line_id}/revoke",
            json={"reason": "rotated"},
            headers=auth,
        )
        assert revoked.status_code == 200, revoked.text
        assert revoked.json()["status"] == "revoked"
        gone = http.get(f"/v1/tenants/{tenant_id}/lines/{line_id}/credential", headers=runner_auth)
        assert gone.status_code == 410
        assert gone.json()["code"] == "revoked"

        # Audit review: the fetches are there with workflow and run ids, nothing secret.
        events = http.get(
            "/v1/audit/events",
            params={"tenant_id": tenant_id, "action": "credential.fetch", "limit": 100},
            headers=auth,
        )
        assert events.status_code == 200, events.text
        fetch_events = events.json()["events"]
        assert [e["outcome"] for e in fetch_events].count("success") == 2
        assert any(
            e["workflow_id"] == "wf-onboarding" and e["run_id"] == "run-42" for e in fetch_events
        )
        assert BOT_TOKEN not in events.text and BOT_TOKEN_2 not in events.text
        verify = http.get("/v1/audit/verify", headers=auth)
        assert verify.status_code == 200 and verify.json()["ok"] is True

        # Tenant deletion shreds its keys; the tenant is gone, the audit stays verifiable.
        deleted = http.delete(f"/v1/tenants/{tenant_id}", headers=auth)
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["shredded"] is True
        assert http.get(f"/v1/tenants/{tenant_id}/lines", headers=auth).status_code == 404
        assert http.get("/v1/audit/verify", headers=auth).json()["ok"] is True

        logout = http.post("/v1/auth/logout", headers=auth)
        assert logout.status_code == 204
        assert http.get("/v1/me", headers=auth).status_code == 401

    # Offline: verify and export straight from the database, then verify the export.
    env_args = {"LINEVAULT_DATABASE_URL": db_url, "LINEVAULT_DATA_DIR": str(tmp_path / "var")}
    import os

    env = {**os.environ, **env_args}
    verify_cli = subprocess.run(
        [LINEVAULT, "audit", "verify"], env=env, capture_output=True, text=True, timeout=120
    )
    assert verify_cli.returncode == 0, verify_cli.stdout + verify_cli.stderr
    out = tmp_path / "audit.jsonl"
    export = subprocess.run(
        [LINEVAULT, "audit", "export", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert export.returncode == 0, export.stderr
    text = out.read_text()
    assert BOT_TOKEN not in text and admin.password not in text
    assert all(json.loads(line) for line in text.splitlines())
    public_key = subprocess.run(
        [LINEVAULT, "audit", "public-key", "--raw"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.strip()
    check = subprocess.run(
        [LINEVAULT, "audit", "verify-export", str(out), "--public-key", public_key],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
