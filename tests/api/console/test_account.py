"""The account page (/ui/account): what it shows, ending a session, the data download
and re-enrolment, each through the same calls and audit events as /v1/me*."""

from __future__ import annotations

import json
import re

import pyotp
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.support.console_forms import post_form, sign_in_by_cookie
from tests.support.identity import add_membership, bearer, make_tenant, make_user, new_session
from vault.runtime import Runtime
from vault.storage.engine import unit_of_work
from vault.storage.models import AuditEventRow


def _actions(runtime: Runtime, action: str) -> list[AuditEventRow]:
    with unit_of_work(runtime.sessions) as db:
        rows = db.execute(select(AuditEventRow).where(AuditEventRow.action == action)).scalars()
        return list(rows)


def _session_id(runtime: Runtime, token: str) -> str:
    with unit_of_work(runtime.sessions) as db:
        found = runtime.authenticator.store.resolve(db, token, now=runtime.clock.now())
    assert found is not None
    return found.session_id


def test_account_page_shows_profile_memberships_and_sessions(
    client: TestClient, runtime: Runtime
) -> None:
    user = make_user(runtime, "me@console.test", totp=True)
    tenant_id = make_tenant(runtime, "Blue Shop")
    add_membership(runtime, tenant_id, user.id, "admin")
    other = new_session(runtime, user.id)
    token = sign_in_by_cookie(client, runtime, user.id)
    page = client.get("/ui/account")
    assert page.status_code == 200
    text = page.text
    assert "me@console.test" in text and "authenticator app enrolled" in text
    assert "Blue Shop" in text and f"/ui/tenants/{tenant_id}" in text
    assert _session_id(runtime, other) in text and _session_id(runtime, token) in text
    assert "this browser" in text
    assert token not in text and other not in text  # ids only, never tokens
    assert 'href="/ui/account/export"' in text and 'href="/ui/password"' in text
    assert 'name="mfa_code"' in text  # re-enrolling needs the current code


def test_ending_a_session_is_the_api_action(client: TestClient, runtime: Runtime) -> None:
    user = make_user(runtime, "ends@console.test", totp=True)
    other = new_session(runtime, user.id)
    token = sign_in_by_cookie(client, runtime, user.id)
    other_id = _session_id(runtime, other)
    reply = post_form(client, f"/ui/account/sessions/{other_id}/end", {})
    assert reply.status_code == 303 and reply.headers["location"] == "/ui/account"
    assert client.get("/v1/me", headers=bearer(other)).status_code == 401
    events = _actions(runtime, "auth.session_revoke")
    assert [(e.actor_id, e.resource_id, e.outcome) for e in events] == [
        (user.id, other_id, "success")
    ]
    # Again: already ended, a 404 page as the API answers.
    assert post_form(client, f"/ui/account/sessions/{other_id}/end", {}).status_code == 404
    # Someone else's session: 404, and it goes on.
    someone = make_user(runtime, "someone@console.test")
    theirs = new_session(runtime, someone.id)
    url = f"/ui/account/sessions/{_session_id(runtime, theirs)}/end"
    assert post_form(client, url, {}).status_code == 404
    assert client.get("/v1/me", headers=bearer(theirs)).status_code == 200
    # Its own session: signed out.
    reply = post_form(client, f"/ui/account/sessions/{_session_id(runtime, token)}/end", {})
    assert reply.status_code == 303 and reply.headers["location"] == "/ui/login"
    assert client.get("/ui/account", follow_redirects=False).status_code == 303


def test_download_my_data_is_the_api_export(client: TestClient, runtime: Runtime) -> None:
    user = make_user(runtime, "data@console.test", totp=True)
    token = sign_in_by_cookie(client, runtime, user.id)
    reply = client.get("/ui/account/export")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.headers["content-disposition"] == ('attachment; filename="linevault-my-data.json"')
    assert reply.headers["cache-control"] == "no-store"
    mine = json.loads(reply.text)
    via_api = client.get("/v1/me/export", headers=bearer(token)).json()
    assert mine.keys() == via_api.keys()
    assert json.dumps(mine, sort_keys=True).count("data@console.test") >= 1
    assert len(_actions(runtime, "user.export")) == 2  # the console's and the API's


def test_re_enrolling_needs_the_current_code(client: TestClient, runtime: Runtime) -> None:
    user = make_user(runtime, "again@console.test", totp=True)
    assert user.totp_secret is not None
    sign_in_by_cookie(client, runtime, user.id)  # not MFA-fresh
    refused = post_form(client, "/ui/enrol", {"back": "/ui/account"})
    assert refused.status_code in (401, 403)
    assert 'href="/ui/account"' in refused.text  # back to the account page
    assert "<svg" not in refused.text
    wrong = post_form(client, "/ui/enrol", {"mfa_code": "000000", "back": "/ui/account"})
    assert wrong.status_code == 401 and "<svg" not in wrong.text
    code = pyotp.TOTP(user.totp_secret).at(runtime.clock.now())
    scan = post_form(client, "/ui/enrol", {"mfa_code": code, "back": "/ui/account"})
    assert scan.status_code == 200 and "<svg" in scan.text
    secret = re.search(r"<code>([A-Z2-7]{16,})</code>", scan.text)
    assert secret and secret.group(1) != user.totp_secret
