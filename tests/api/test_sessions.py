"""Session lifetimes with the injected clock, logout, MFA freshness and factor changes."""

from __future__ import annotations

import pyotp
from fastapi.testclient import TestClient

from tests.support.identity import (
    TEST_PASSWORD,
    bearer,
    make_user,
    new_session,
    totp_code,
)
from vault.audit.events import Actor
from vault.clock import FixedClock
from vault.identity.service import user_service_for
from vault.runtime import Runtime
from vault.storage.engine import unit_of_work


def _me(client: TestClient, token: str) -> int:
    return client.get("/v1/me", headers=bearer(token)).status_code


def test_idle_timeout_and_activity_keeps_alive(
    runtime: Runtime, client: TestClient, clock: FixedClock
) -> None:
    user = make_user(runtime, "idle@example.test")
    token = new_session(runtime, user.id)
    idle = runtime.settings.session_idle_minutes * 60
    for _ in range(3):  # activity every 2/3 of the idle limit keeps it alive
        clock.advance(idle * 2 / 3)
        assert _me(client, token) == 200
    clock.advance(idle + 1)
    response = client.get("/v1/me", headers=bearer(token))
    assert response.status_code == 401 and response.json()["code"] == "unauthenticated"


def test_absolute_lifetime_ends_an_active_session(
    runtime: Runtime, client: TestClient, clock: FixedClock
) -> None:
    user = make_user(runtime, "abs@example.test")
    token = new_session(runtime, user.id)
    absolute = runtime.settings.session_absolute_hours * 3600
    step = runtime.settings.session_idle_minutes * 60 / 2
    elapsed = 0.0
    while elapsed + step < absolute:
        clock.advance(step)
        elapsed += step
        assert _me(client, token) == 200
    clock.advance(absolute - elapsed)
    assert _me(client, token) == 401


def test_logout_ends_the_session_at_once(runtime: Runtime, client: TestClient) -> None:
    user = make_user(runtime, "out@example.test")
    token, other = new_session(runtime, user.id), new_session(runtime, user.id)
    assert client.post("/v1/auth/logout", headers=bearer(token)).status_code == 204
    assert _me(client, token) == 401
    assert client.post("/v1/auth/logout", headers=bearer(token)).status_code == 401
    assert _me(client, other) == 200  # only that session


def test_garbage_and_runner_like_tokens_are_401(client: TestClient) -> None:
    for header in ("Bearer lvs_garbage", "Bearer rt_abcdef", "Basic Zm9vOmJhcg==", "Bearer "):
        response = client.get("/v1/me", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert response.json()["code"] == "unauthenticated"
    assert client.get("/v1/me").status_code == 401


def test_mfa_freshness_window_and_per_request_code(
    runtime: Runtime, client: TestClient, clock: FixedClock
) -> None:
    user = make_user(runtime, "fresh@example.test", totp=True)
    assert user.totp_secret
    token = new_session(runtime, user.id, mfa_fresh=False)
    # Re-enrolling an enrolled user requires MFA.
    refused = client.post("/v1/me/totp", headers=bearer(token))
    assert refused.status_code == 403 and refused.json()["code"] == "mfa_required"
    # A per-request code authorizes that request only; the session does not become fresh.
    code = totp_code(user.totp_secret, runtime)
    ok = client.post("/v1/me/totp", json={"mfa_code": code}, headers=bearer(token))
    assert ok.status_code == 200, ok.text
    assert client.get("/v1/me", headers=bearer(token)).json()["mfa_fresh"] is False
    replay = client.post("/v1/me/totp", json={"mfa_code": code}, headers=bearer(token))
    assert replay.status_code == 401 and replay.json()["code"] == "mfa_invalid"
    # Step-up makes it fresh for five minutes.
    clock.advance(30)
    step = client.post(
        "/v1/auth/step-up",
        json={"code": totp_code(user.totp_secret, runtime)},
        headers=bearer(token),
    )
    assert step.status_code == 200
    assert step.json()["mfa_fresh_until"].endswith("Z")
    assert client.post("/v1/me/totp", headers=bearer(token)).status_code == 200
    clock.advance(runtime.settings.mfa_fresh_minutes * 60 + 1)
    assert client.post("/v1/me/totp", headers=bearer(token)).status_code == 403


def test_totp_enrollment_ends_other_sessions(runtime: Runtime, client: TestClient) -> None:
    user = make_user(runtime, "enroll@example.test")
    token, other = new_session(runtime, user.id), new_session(runtime, user.id)
    begin = client.post("/v1/me/totp", headers=bearer(token))
    assert begin.status_code == 200
    secret = begin.json()["secret"]
    assert begin.json()["otpauth_uri"].startswith("otpauth://totp/")
    assert begin.headers["cache-control"] == "no-store"
    wrong = client.post("/v1/me/totp/confirm", json={"code": "12345x"}, headers=bearer(token))
    assert wrong.status_code == 401
    code = pyotp.TOTP(secret).at(runtime.clock.now())
    done = client.post("/v1/me/totp/confirm", json={"code": code}, headers=bearer(token))
    assert done.status_code == 200, done.text
    assert len(done.json()["recovery_codes"]) == 10
    assert _me(client, other) == 401
    assert client.get("/v1/me", headers=bearer(token)).json()["totp_enrolled"] is True
    # The confirming code is spent: it cannot step up.
    assert (
        client.post("/v1/auth/step-up", json={"code": code}, headers=bearer(token)).status_code
        == 401
    )


def test_password_change_ends_other_sessions(runtime: Runtime, client: TestClient) -> None:
    user = make_user(runtime, "pw@example.test")
    token, other = new_session(runtime, user.id), new_session(runtime, user.id)
    new = "a brand new passphrase"
    short = client.post(
        "/v1/me/password",
        json={"current_password": TEST_PASSWORD, "new_password": "short"},
        headers=bearer(token),
    )
    assert short.status_code == 422
    changed = client.post(
        "/v1/me/password",
        json={"current_password": TEST_PASSWORD, "new_password": new},
        headers=bearer(token),
    )
    assert changed.status_code == 204
    assert _me(client, other) == 401 and _me(client, token) == 200
    login = client.post("/v1/auth/login", json={"email": user.email, "password": new})
    assert login.status_code == 200


def test_reset_mfa_ends_every_session_and_allows_recovery_login(
    runtime: Runtime, client: TestClient
) -> None:
    user = make_user(runtime, "reset@example.test", totp=True)
    tokens = [new_session(runtime, user.id) for _ in range(2)]
    with unit_of_work(runtime.sessions) as session:
        user_service_for(runtime, session).reset_mfa(
            email=user.email, actor=Actor("system", "test")
        )
    assert all(_me(client, t) == 401 for t in tokens)
    login = client.post("/v1/auth/login", json={"email": user.email, "password": TEST_PASSWORD})
    assert login.json()["mfa_required"] is False


def test_recovery_code_logs_in_once(runtime: Runtime, client: TestClient) -> None:
    user = make_user(runtime, "rec@example.test")
    token = new_session(runtime, user.id)
    secret = client.post("/v1/me/totp", headers=bearer(token)).json()["secret"]
    codes = client.post(
        "/v1/me/totp/confirm",
        json={"code": pyotp.TOTP(secret).at(runtime.clock.now())},
        headers=bearer(token),
    ).json()["recovery_codes"]

    def login_with(code: str) -> int:
        mfa_token = client.post(
            "/v1/auth/login", json={"email": user.email, "password": TEST_PASSWORD}
        ).json()["mfa_token"]
        return client.post("/v1/auth/mfa", json={"mfa_token": mfa_token, "code": code}).status_code

    assert login_with(codes[0]) == 200
    assert login_with(codes[0]) == 401
