"""Use without reveal over HTTP (contract: "Platform checks, refresh and use without
reveal"), on SQLite and PostgreSQL.

A grant with ``access: "use"`` fetches the credential without ``app_secret`` and
``signing_secret`` (native fetch and the Vault-compatible KV read), and the runner asks
the vault to sign instead: ``POST .../sign`` (widget lines) and
``POST .../appsecret-proof`` (Meta's definition). Both are the fetch's own decision:
audited (``credential.sign``, ``credential.proof``), 404 when not granted, 410 revoked,
423 suspended, rate-limited under the fetch's limit; the grant MAC binds the access.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.support.audit import event_rows
from tests.support.identity import add_membership, bearer, make_user, new_session
from tests.support.runners import TELEGRAM, issue_token, make_line, make_runner, make_tenant
from tests.support.settings import make_settings
from vault.runtime import Runtime
from vault.settings import Settings

RATE_LIMIT = 12
SIGNING = secrets.token_urlsafe(32)
WIDGET = {"signing_secret": SIGNING}
MESSENGER = {
    "page_id": "1029384756",
    "page_access_token": "EAAGm0PX4ZCps" + secrets.token_urlsafe(20),
    "app_secret": secrets.token_hex(16),
}
INSTAGRAM = {
    "access_token": "IGQWR" + secrets.token_urlsafe(24),
    "user_id": "17841400000000000",
    "app_secret": secrets.token_hex(16),
}
INSTAGRAM_NO_SECRET = {"access_token": "IGQWR" + secrets.token_urlsafe(24)}
SECRETS = (SIGNING, MESSENGER["app_secret"], INSTAGRAM["app_secret"])


@dataclass
class World:
    runtime: Runtime
    tenant: str
    lines: dict[str, str]
    admin: dict[str, str]
    runner_id: str
    runner: dict[str, str]
    client_id: str
    client_secret: str

    def path(self, kind: str, action: str, tenant: str | None = None) -> str:
        return f"/v1/tenants/{tenant or self.tenant}/lines/{self.lines[kind]}/{action}"


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return make_settings(tmp_path / "var", db_url, runner_rate_limit_per_minute=RATE_LIMIT)


def _grant(client: TestClient, w: World, lines: list[str], access: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"runner_id": w.runner_id, "lines": lines}
    if access is not None:
        body["access"] = access
    r = client.post(f"/v1/tenants/{w.tenant}/grants", json=body, headers=w.admin)
    assert r.status_code == 201, r.text
    return dict(r.json())


@pytest.fixture
def world(runtime: Runtime) -> World:
    tenant = make_tenant(runtime)
    lines = {
        "widget": make_line(runtime, tenant, line_type="widget", credential=WIDGET),
        "messenger": make_line(runtime, tenant, line_type="messenger", credential=MESSENGER),
        "instagram": make_line(runtime, tenant, line_type="instagram", credential=INSTAGRAM),
        "bare_ig": make_line(
            runtime, tenant, line_type="instagram", credential=INSTAGRAM_NO_SECRET
        ),
        "telegram": make_line(runtime, tenant, credential=TELEGRAM),
        "ungranted": make_line(runtime, tenant, line_type="widget", credential=WIDGET),
    }
    admin = make_user(runtime, "tenant-admin@example.test")
    add_membership(runtime, tenant, admin.id, "admin")
    runner_id, client_id, client_secret = make_runner(runtime)
    return World(
        runtime=runtime,
        tenant=tenant,
        lines=lines,
        admin=bearer(new_session(runtime, admin.id, mfa_fresh=True)),
        runner_id=runner_id,
        runner=bearer(issue_token(runtime, client_id, client_secret)),
        client_id=client_id,
        client_secret=client_secret,
    )


@pytest.fixture
def use_world(client: TestClient, world: World) -> World:
    """``world`` with one ``use`` grant on every line but ``ungranted``."""
    granted = [v for k, v in world.lines.items() if k != "ungranted"]
    made = _grant(client, world, granted, "use")
    assert made["access"] == "use"
    return world


def events(runtime: Runtime, action: str) -> list[dict[str, Any]]:
    return [e for e in event_rows(runtime.engine) if e["action"] == action]


def sign(client: TestClient, w: World, kind: str, message: str, **kw: Any) -> Any:
    return client.post(w.path(kind, "sign"), json={"message": message}, headers=w.runner, **kw)


def proof(client: TestClient, w: World, kind: str) -> Any:
    return client.post(w.path(kind, "appsecret-proof"), headers=w.runner)


def meta_proof(app_secret: str, token: str) -> str:
    """Meta's definition: hex HMAC-SHA256, key the app secret, message the access token."""
    return hmac.new(app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()


def problem(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code


# -- the fetch of a "use" grant ------------------------------------------------------------


def test_a_use_grant_fetches_no_signing_material(client: TestClient, use_world: World) -> None:
    w = use_world
    cases = (("widget", WIDGET), ("messenger", MESSENGER), ("instagram", INSTAGRAM))
    for kind, stored in cases:
        r = client.get(w.path(kind, "credential"), headers=w.runner)
        assert r.status_code == 200, r.text
        got = r.json()["credential"]
        expected = {k: v for k, v in stored.items() if k not in ("app_secret", "signing_secret")}
        assert got == expected, kind
        assert not any(s in r.text for s in SECRETS)
        kv = client.get(
            f"/v1/lines/data/{w.tenant}/{w.lines[kind]}",
            headers={"X-Vault-Token": w.runner["Authorization"].split()[1]},
        )
        assert kv.status_code == 200, kv.text
        assert kv.json()["data"]["data"] == expected, kind
        assert not any(s in kv.text for s in SECRETS)
    # Telegram has no signing material: the whole credential.
    r = client.get(w.path("telegram", "credential"), headers=w.runner)
    assert r.json()["credential"] == TELEGRAM
    listed = client.get(f"/v1/tenants/{w.tenant}/grants", headers=w.admin).json()["grants"]
    assert [g["access"] for g in listed] == ["use"]


def test_a_full_grant_still_fetches_everything_and_may_sign(
    client: TestClient, world: World
) -> None:
    w = world
    made = _grant(client, w, [w.lines["widget"], w.lines["messenger"]], None)
    assert made["access"] == "full"  # the default, as in v1
    got = client.get(w.path("widget", "credential"), headers=w.runner).json()["credential"]
    assert got == WIDGET
    got = client.get(w.path("messenger", "credential"), headers=w.runner).json()["credential"]
    assert got == MESSENGER
    r = sign(client, w, "widget", "full grants too")
    assert r.status_code == 200, r.text
    expected = hmac.new(SIGNING.encode(), b"full grants too", hashlib.sha256).hexdigest()
    assert r.json()["signature"] == expected
    assert proof(client, w, "messenger").status_code == 200


def test_a_full_grant_wins_over_a_use_grant_on_the_same_line(
    client: TestClient, world: World
) -> None:
    w = world
    _grant(client, w, ["*"], "use")
    assert "signing_secret" not in client.get(w.path("widget", "credential"), headers=w.runner).text
    _grant(client, w, [w.lines["widget"]], "full")
    got = client.get(w.path("widget", "credential"), headers=w.runner).json()["credential"]
    assert got == WIDGET


def test_bad_access_is_422(client: TestClient, world: World) -> None:
    body = {"runner_id": world.runner_id, "lines": ["*"], "access": "sign"}
    r = client.post(f"/v1/tenants/{world.tenant}/grants", json=body, headers=world.admin)
    problem(r, 422, "invalid_request")


# -- sign and appsecret-proof ---------------------------------------------------------------


def test_sign_is_the_hmac_of_the_message_under_the_signing_secret(
    client: TestClient, use_world: World
) -> None:
    w = use_world
    for message in ("hello", "", "pâté ✓ \n{}", "x" * 5000):
        r = sign(client, w, "widget", message)
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"] == "no-store"
        expected = hmac.new(SIGNING.encode(), message.encode(), hashlib.sha256).hexdigest()
        assert r.json() == {
            "line_id": w.lines["widget"],
            "version": 1,
            "algorithm": "HMAC-SHA256",
            "signature": expected,
        }
    signed = events(w.runtime, "credential.sign")
    assert len(signed) == 4
    e = signed[0]
    assert (e["outcome"], e["actor_type"], e["actor_id"]) == ("success", "runner", w.runner_id)
    assert (e["tenant_id"], e["resource_type"], e["resource_id"]) == (
        w.tenant,
        "line",
        w.lines["widget"],
    )
    assert json.loads(e["details"]) == {"version": 1}
    assert not any(SIGNING in json.dumps(x, default=str) for x in event_rows(w.runtime.engine))


def test_appsecret_proof_follows_metas_definition(client: TestClient, use_world: World) -> None:
    w = use_world
    for kind, stored, token_field in (
        ("messenger", MESSENGER, "page_access_token"),
        ("instagram", INSTAGRAM, "access_token"),
    ):
        r = proof(client, w, kind)
        assert r.status_code == 200, r.text
        assert r.json() == {
            "line_id": w.lines[kind],
            "version": 1,
            "appsecret_proof": meta_proof(stored["app_secret"], stored[token_field]),
        }
    proofs = events(w.runtime, "credential.proof")
    assert [(e["outcome"], e["resource_id"]) for e in proofs] == [
        ("success", w.lines["messenger"]),
        ("success", w.lines["instagram"]),
    ]


def test_wrong_line_type_or_no_app_secret_is_409_and_audited(
    client: TestClient, use_world: World
) -> None:
    w = use_world
    problem(sign(client, w, "telegram", "m"), 409, "conflict")
    problem(sign(client, w, "messenger", "m"), 409, "conflict")
    problem(proof(client, w, "widget"), 409, "conflict")
    problem(proof(client, w, "bare_ig"), 409, "conflict")
    assert [(e["outcome"], e["reason"]) for e in events(w.runtime, "credential.sign")] == [
        ("denied", "wrong_line_type"),
        ("denied", "wrong_line_type"),
    ]
    assert [(e["outcome"], e["reason"]) for e in events(w.runtime, "credential.proof")] == [
        ("denied", "wrong_line_type"),
        ("denied", "no_app_secret"),
    ]


def test_denied_like_the_fetch(client: TestClient, use_world: World) -> None:
    """Not granted 404, another tenant 404, no token 401, a human 403: each audited."""
    w = use_world
    problem(sign(client, w, "ungranted", "m"), 404, "not_found")
    other = make_tenant(w.runtime, "Other")
    r = client.post(w.path("widget", "sign", tenant=other), json={"message": "m"}, headers=w.runner)
    problem(r, 404, "not_found")
    r = client.post(w.path("messenger", "appsecret-proof"))
    problem(r, 401, "unauthenticated")
    problem(client.post(w.path("messenger", "appsecret-proof"), headers=w.admin), 403, "forbidden")
    signs = [(e["outcome"], e["reason"]) for e in events(w.runtime, "credential.sign")]
    assert signs == [("denied", "not_granted"), ("denied", "not_granted")]
    proofs = [(e["outcome"], e["reason"]) for e in events(w.runtime, "credential.proof")]
    assert proofs == [("denied", "invalid_token"), ("denied", "not_a_runner")]
    problem(
        client.post(w.path("widget", "sign"), json={}, headers=w.runner), 422, "invalid_request"
    )


def test_revoked_is_410_and_suspended_is_423(client: TestClient, use_world: World) -> None:
    w = use_world
    for kind in ("widget", "messenger"):
        r = client.post(w.path(kind, "suspend"), json={"reason": "pause"}, headers=w.admin)
        assert r.status_code == 200, r.text
    problem(sign(client, w, "widget", "m"), 423, "suspended")
    problem(proof(client, w, "messenger"), 423, "suspended")
    from tests.support.runners import revoke_line

    revoke_line(w.runtime, w.lines["instagram"])
    problem(proof(client, w, "instagram"), 410, "revoked")
    reasons = [
        (e["action"], e["reason"])
        for e in event_rows(w.runtime.engine)
        if e["action"] in ("credential.sign", "credential.proof")
    ]
    assert reasons == [
        ("credential.sign", "suspended"),
        ("credential.proof", "suspended"),
        ("credential.proof", "revoked"),
    ]


def test_sign_and_proof_share_the_fetch_rate_limit(client: TestClient, use_world: World) -> None:
    w = use_world
    for i in range(RATE_LIMIT):
        if i % 3 == 0:
            r = client.get(w.path("widget", "credential"), headers=w.runner)
        elif i % 3 == 1:
            r = sign(client, w, "widget", str(i))
        else:
            r = proof(client, w, "messenger")
        assert r.status_code == 200, (i, r.text)
    for r in (
        sign(client, w, "widget", "over"),
        proof(client, w, "messenger"),
        client.get(w.path("widget", "credential"), headers=w.runner),
    ):
        problem(r, 429, "rate_limited")
        assert r.headers["retry-after"]
    assert events(w.runtime, "credential.sign")[-1]["reason"] == "rate_limited"


# -- the grant MAC binds the access ---------------------------------------------------------


def test_widening_use_to_full_by_sql_is_refused_with_an_integrity_event(
    client: TestClient, use_world: World, caplog: pytest.LogCaptureFixture
) -> None:
    w = use_world
    assert sign(client, w, "widget", "before").status_code == 200  # cached decision
    with w.runtime.engine.begin() as conn:
        changed = conn.execute(
            text("UPDATE grant_lines SET access = 'full' WHERE runner_id = :r"),
            {"r": w.runner_id},
        ).rowcount
        conn.execute(
            text("UPDATE grants SET access = 'full' WHERE runner_id = :r"), {"r": w.runner_id}
        )
    assert changed == len(w.lines) - 1
    with caplog.at_level(logging.WARNING, logger="linevault.integrity"):
        r = client.get(w.path("widget", "credential"), headers=w.runner)
        problem(r, 404, "not_found")
        assert SIGNING not in r.text
        problem(sign(client, w, "widget", "after"), 404, "not_found")
    alarms = events(w.runtime, "integrity.violation")
    assert len(alarms) == 2
    assert {(a["resource_type"], a["reason"]) for a in alarms} == {("grant", "grant_integrity")}
    fetches = events(w.runtime, "credential.fetch")
    assert (fetches[-1]["outcome"], fetches[-1]["reason"]) == ("denied", "grant_integrity")
    assert events(w.runtime, "credential.sign")[-1]["reason"] == "grant_integrity"
    assert all(SIGNING not in r.getMessage() for r in caplog.records)


# -- the runner SDK against this server -----------------------------------------------------


def test_the_sdk_signs_and_proves_against_the_server(client: TestClient, use_world: World) -> None:
    from linevault_client import NotGranted, RunnerClient

    w = use_world
    sdk = RunnerClient("http://testserver", w.client_id, w.client_secret, http=client)
    fetched = sdk.fetch(w.tenant, w.lines["widget"])
    assert "signing_secret" not in fetched.credential
    signed = sdk.sign(w.tenant, w.lines["widget"], "über", run_id="run-42")
    expected = hmac.new(SIGNING.encode(), "über".encode(), hashlib.sha256).hexdigest()
    assert (signed.signature, signed.algorithm, signed.version) == (expected, "HMAC-SHA256", 1)
    proof = sdk.appsecret_proof(w.tenant, w.lines["messenger"])
    expected = meta_proof(MESSENGER["app_secret"], MESSENGER["page_access_token"])
    assert proof.appsecret_proof == expected
    with pytest.raises(NotGranted):
        sdk.sign(w.tenant, w.lines["ungranted"], "m")
    [event] = [e for e in events(w.runtime, "credential.sign") if e["outcome"] == "success"]
    assert event["run_id"] == "run-42"
