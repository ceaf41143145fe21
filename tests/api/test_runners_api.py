"""The runner, token, grant and credential-fetch endpoints over HTTP (both backends)."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.support.audit import action_events as audit
from tests.support.runners import TELEGRAM, make_line, make_tenant, revoke_line
from vault.clock import FixedClock
from vault.ids import new_id
from vault.runtime import Runtime
from vault.storage.engine import unit_of_work
from vault.storage.models import Membership, Runner

PROBLEM = "application/problem+json"


def session_token(runtime: Runtime, *, platform_role: str | None = "admin", tenant=None, role=None):
    """A live human session (and user) made through the identity session store."""
    from vault.bootstrap import create_user_row

    now = runtime.clock.now()
    with unit_of_work(runtime.sessions) as session:
        if platform_role == "admin":
            from vault.storage.models import User

            user_id = session.execute(
                select(User.id).where(User.platform_role == "admin")
            ).scalar_one()
        else:
            user_id = create_user_row(
                session,
                email=f"{new_id('u')}@example.test",
                password_hash="x",
                platform_role=platform_role,
                now=now,
            ).id
            if tenant is not None:
                session.add(
                    Membership(tenant_id=tenant, user_id=user_id, role=role, created_at=now)
                )
        issued = runtime.authenticator.store.create(
            session, user_id=user_id, now=now, mfa_fresh=True
        )
    return issued.token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def admin(runtime: Runtime) -> dict[str, str]:
    return bearer(session_token(runtime))


@pytest.fixture
def setup(client: TestClient, runtime: Runtime, admin) -> dict[str, str]:
    tenant = make_tenant(runtime)
    line = make_line(runtime, tenant)
    other = make_line(runtime, tenant)
    r = client.post("/v1/runners", json={"name": "wf"}, headers=admin)
    assert r.status_code == 201, r.text
    runner = r.json()
    g = client.post(
        f"/v1/tenants/{tenant}/grants",
        json={"runner_id": runner["id"], "lines": [line]},
        headers=admin,
    )
    assert g.status_code == 201, g.text
    t = client.post(
        "/v1/runner/token",
        data={
            "grant_type": "client_credentials",
            "client_id": runner["client_id"],
            "client_secret": runner["client_secret"],
        },
    )
    assert t.status_code == 200, t.text
    return {
        "tenant": tenant, "line": line, "other": other, "runner": runner["id"],
        "client_id": runner["client_id"], "secret": runner["client_secret"],
        "grant": g.json()["id"], "token": t.json()["access_token"],
    }  # fmt: skip


def url(s: dict[str, str], line: str | None = None, tenant: str | None = None) -> str:
    return f"/v1/tenants/{tenant or s['tenant']}/lines/{line or s['line']}/credential"


# -- runners -------------------------------------------------------------------------------


def test_register_runner_shows_secret_once(client: TestClient, runtime: Runtime, admin) -> None:
    r = client.post("/v1/runners", json={"name": "workflow runtime"}, headers=admin)
    assert r.status_code == 201
    body = r.json()
    assert {"id", "name", "client_id", "client_secret"} <= body.keys()
    assert body["id"].startswith("rnr_") and body["name"] == "workflow runtime"
    assert r.headers["cache-control"] == "no-store"
    listed = client.get("/v1/runners", headers=admin).json()["runners"]
    assert [x["id"] for x in listed] == [body["id"]]
    assert body["client_secret"] not in client.get(f"/v1/runners/{body['id']}", headers=admin).text
    with unit_of_work(runtime.sessions) as session:
        row = session.get(Runner, body["id"])
        assert row is not None and body["client_secret"].encode() not in row.secret_hash
    [event] = audit(runtime, "runner.create")
    assert body["client_secret"] not in (event.details or "")


def test_runner_management_needs_a_platform_admin(client: TestClient, runtime: Runtime) -> None:
    assert client.post("/v1/runners", json={"name": "x"}).status_code == 401
    plain = bearer(session_token(runtime, platform_role=None))
    r = client.post("/v1/runners", json={"name": "x"}, headers=plain)
    assert r.status_code == 403 and r.headers["content-type"].startswith(PROBLEM)
    auditor = bearer(session_token(runtime, platform_role="auditor"))
    assert client.get("/v1/runners", headers=auditor).status_code == 200
    assert client.post("/v1/runners", json={"name": "x"}, headers=auditor).status_code == 403


def test_bad_runner_body_is_422(client: TestClient, admin) -> None:
    for body in ({}, {"name": ""}, {"name": "x", "extra": 1}, {"name": "x" * 201}):
        r = client.post("/v1/runners", json=body, headers=admin)
        assert r.status_code == 422 and r.json()["code"] == "invalid_request"


def test_disable_runner_stops_tokens_at_once(client: TestClient, setup, admin) -> None:
    assert client.get(url(setup), headers=bearer(setup["token"])).status_code == 200
    assert client.delete(f"/v1/runners/{setup['runner']}", headers=admin).status_code == 204
    r = client.get(url(setup), headers=bearer(setup["token"]))
    assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
    assert client.delete(f"/v1/runners/{setup['runner']}", headers=admin).status_code == 404
    assert client.delete("/v1/runners/rnr_nope", headers=admin).status_code == 404


def test_rotate_secret(client: TestClient, setup, admin) -> None:
    r = client.post(f"/v1/runners/{setup['runner']}/rotate-secret", headers=admin)
    assert r.status_code == 200
    new_secret = r.json()["client_secret"]
    assert client.get(url(setup), headers=bearer(setup["token"])).status_code == 401
    form = {"grant_type": "client_credentials", "client_id": setup["client_id"]}
    assert (
        client.post("/v1/runner/token", data={**form, "client_secret": setup["secret"]}).status_code
        == 401
    )
    ok = client.post("/v1/runner/token", data={**form, "client_secret": new_secret})
    assert ok.status_code == 200


# -- the token endpoint --------------------------------------------------------------------


def test_token_response_per_rfc6749(client: TestClient, runtime: Runtime, setup) -> None:
    r = client.post(
        "/v1/runner/token",
        data={
            "grant_type": "client_credentials",
            "client_id": setup["client_id"],
            "client_secret": setup["secret"],
        },
    )
    body = r.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == runtime.settings.runner_token_ttl_seconds
    assert r.headers["cache-control"] == "no-store" and r.headers["pragma"] == "no-cache"


def test_token_with_http_basic(client: TestClient, setup) -> None:
    raw = f"{setup['client_id']}:{setup['secret']}".encode()
    r = client.post(
        "/v1/runner/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": "Basic " + base64.b64encode(raw).decode()},
    )
    assert r.status_code == 200
    assert client.get(url(setup), headers=bearer(r.json()["access_token"])).status_code == 200


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        (
            {"grant_type": "client_credentials", "client_secret": "lvcs_wrong"},
            401,
            "invalid_client",
        ),
        (
            {"grant_type": "client_credentials", "client_id": "rnc_nope", "client_secret": "s"},
            401,
            "invalid_client",
        ),
        ({"grant_type": "client_credentials"}, 401, "invalid_client"),
        ({"grant_type": "password", "client_secret": "x"}, 400, "unsupported_grant_type"),
        ({"client_secret": "x"}, 400, "invalid_request"),
    ],
)
def test_token_errors_per_rfc6749(
    client: TestClient, runtime: Runtime, setup, form, status, error
) -> None:
    form = {"client_id": setup["client_id"], **form} if "client_id" not in form else form
    r = client.post("/v1/runner/token", data=form)
    assert r.status_code == status
    assert r.json()["error"] == error
    assert r.headers["cache-control"] == "no-store"
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Basic")
    assert "lvcs_wrong" not in r.text
    denied = [e for e in audit(runtime, "runner.token") if e.outcome == "denied"]
    assert len(denied) == 1


def test_token_refuses_secret_in_url_json_body_and_repeats(client: TestClient, setup) -> None:
    q = client.post(
        f"/v1/runner/token?client_secret={setup['secret']}",
        data={"grant_type": "client_credentials", "client_id": setup["client_id"]},
    )
    assert q.status_code == 400 and q.json()["error"] == "invalid_request"
    as_json = client.post(
        "/v1/runner/token",
        json={
            "grant_type": "client_credentials",
            "client_id": setup["client_id"],
            "client_secret": setup["secret"],
        },
    )
    assert as_json.status_code == 400 and as_json.json()["error"] == "invalid_request"
    repeated = client.post(
        "/v1/runner/token",
        content=f"grant_type=client_credentials&grant_type=client_credentials&client_id={setup['client_id']}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert repeated.status_code == 400


def test_runner_can_give_its_token_up(client: TestClient, setup) -> None:
    assert client.delete("/v1/runner/token", headers=bearer(setup["token"])).status_code == 204
    assert client.get(url(setup), headers=bearer(setup["token"])).status_code == 401


# -- grants --------------------------------------------------------------------------------


def test_grants_list_and_delete_effective_at_once(
    client: TestClient, runtime: Runtime, setup, admin
) -> None:
    listed = client.get(f"/v1/tenants/{setup['tenant']}/grants", headers=admin).json()["grants"]
    assert [(g["id"], g["runner_id"], g["lines"]) for g in listed] == [
        (setup["grant"], setup["runner"], [setup["line"]])
    ]
    assert listed[0]["created_at"].endswith("Z")
    assert client.get(url(setup), headers=bearer(setup["token"])).status_code == 200
    d = client.delete(f"/v1/tenants/{setup['tenant']}/grants/{setup['grant']}", headers=admin)
    assert d.status_code == 204
    assert client.get(url(setup), headers=bearer(setup["token"])).status_code == 404
    assert [e.outcome for e in audit(runtime, "grant.create")] == ["success"]
    assert [e.outcome for e in audit(runtime, "grant.delete")] == ["success"]


def test_grant_permissions(client: TestClient, runtime: Runtime, setup) -> None:
    body = {"runner_id": setup["runner"], "lines": ["*"]}
    path = f"/v1/tenants/{setup['tenant']}/grants"
    owner = bearer(session_token(runtime, platform_role=None, tenant=setup["tenant"], role="owner"))
    member = bearer(
        session_token(runtime, platform_role=None, tenant=setup["tenant"], role="member")
    )
    auditor = bearer(
        session_token(runtime, platform_role=None, tenant=setup["tenant"], role="auditor")
    )
    outsider = bearer(session_token(runtime, platform_role=None))
    assert client.post(path, json=body, headers=member).status_code == 403
    assert client.post(path, json=body, headers=outsider).status_code == 404
    assert client.get(path, headers=outsider).status_code == 404
    assert client.get(path, headers=auditor).status_code == 200
    assert client.post(path, json=body, headers=auditor).status_code == 403
    r = client.post(path, json=body, headers=owner)
    assert r.status_code == 201 and r.json()["lines"] == ["*"]
    assert client.get(url(setup, setup["other"]), headers=bearer(setup["token"])).status_code == 200
    assert client.post(path, json=body).status_code == 401


def test_grant_bad_input_is_4xx(client: TestClient, setup, admin) -> None:
    path = f"/v1/tenants/{setup['tenant']}/grants"
    for body in (
        {"runner_id": setup["runner"], "lines": []},
        {"runner_id": setup["runner"], "lines": ["*", setup["line"]]},
        {"runner_id": "rnr_nope", "lines": ["*"]},
        {"runner_id": setup["runner"], "lines": ["ln_elsewhere"]},
        {"runner_id": setup["runner"]},
    ):
        r = client.post(path, json=body, headers=admin)
        assert r.status_code == 422 and r.json()["code"] == "invalid_request", body
    assert (
        client.post(
            "/v1/tenants/tnt_nope/grants",
            json={"runner_id": setup["runner"], "lines": ["*"]},
            headers=admin,
        ).status_code
        == 404
    )


# -- the fetch -----------------------------------------------------------------------------


def test_fetch_contract(client: TestClient, runtime: Runtime, setup) -> None:
    r = client.get(
        url(setup),
        headers={**bearer(setup["token"]), "X-Workflow-Id": "wf-1", "X-Run-Id": "run-9"},
    )
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert set(body) == {
        "line_id",
        "tenant_id",
        "type",
        "version",
        "credential",
        "expires_at",
        "lease_ttl",
    }
    assert body["credential"] == TELEGRAM
    assert (body["line_id"], body["tenant_id"], body["type"], body["version"]) == (
        setup["line"], setup["tenant"], "telegram", 1,
    )  # fmt: skip
    assert body["lease_ttl"] == runtime.settings.lease_ttl_seconds
    [event] = audit(runtime, "credential.fetch")
    assert (event.outcome, event.workflow_id, event.run_id) == ("success", "wf-1", "run-9")
    assert TELEGRAM["bot_token"] not in (event.details or "")


def test_ungranted_and_cross_tenant_fetches_are_404_and_audited(
    client: TestClient, runtime: Runtime, setup
) -> None:
    elsewhere = make_tenant(runtime, "Other")
    foreign = make_line(runtime, elsewhere)
    for path in (url(setup, setup["other"]), url(setup, foreign, elsewhere), url(setup, foreign)):
        r = client.get(path, headers=bearer(setup["token"]))
        assert r.status_code == 404 and r.json()["code"] == "not_found"
        assert TELEGRAM["bot_token"] not in r.text
    assert [e.outcome for e in audit(runtime, "credential.fetch")] == ["denied"] * 3


def test_human_sessions_get_403(client: TestClient, runtime: Runtime, setup, admin) -> None:
    r = client.get(url(setup), headers=admin)
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    assert TELEGRAM["bot_token"] not in r.text
    [event] = audit(runtime, "credential.fetch")
    assert (event.actor_type, event.outcome) == ("user", "denied")


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer nonsense"}, {"Authorization": "Basic abc"}]
)
def test_no_valid_token_is_401(client: TestClient, setup, headers) -> None:
    r = client.get(url(setup), headers=headers)
    assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_expired_token_is_401(
    client: TestClient, runtime: Runtime, setup, clock: FixedClock
) -> None:
    clock.advance(runtime.settings.runner_token_ttl_seconds)
    assert client.get(url(setup), headers=bearer(setup["token"])).status_code == 401


def test_revoked_is_410(client: TestClient, runtime: Runtime, setup) -> None:
    revoke_line(runtime, setup["line"])
    r = client.get(url(setup), headers=bearer(setup["token"]))
    assert r.status_code == 410 and r.json()["code"] == "revoked"


def test_audit_failure_is_503_without_secret(client: TestClient, runtime: Runtime, setup) -> None:
    runtime.audit_writer.stop()
    r = client.get(url(setup), headers=bearer(setup["token"]))
    assert r.status_code == 503 and r.json()["code"] == "audit_unavailable"
    assert TELEGRAM["bot_token"] not in r.text
    assert "credential" not in r.json()


def test_rate_limit_is_429_with_retry_after(
    client: TestClient, runtime: Runtime, setup, clock
) -> None:
    runtime.fetcher._limit = 2  # the setting, as a server would read it at start
    clock.advance(60 - clock.now().timestamp() % 60)
    for _ in range(2):
        assert client.get(url(setup), headers=bearer(setup["token"])).status_code == 200
    r = client.get(url(setup), headers=bearer(setup["token"]))
    assert r.status_code == 429 and r.json()["code"] == "rate_limited"
    assert r.headers["retry-after"] == "60"
