"""Account safety: LINEVAULT_REQUIRE_MFA and LINEVAULT_REQUIRE_PASSWORD_CHANGE, each in
both states, over HTTP, with the exact problem codes and a detail that says what to do.

Every other test builds its settings with both policies off (tests/support/settings.py);
here the ``policy`` parameter turns them on or leaves them off. Across two server
processes: tests/e2e/test_people.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyotp
import pytest
from fastapi.testclient import TestClient

from tests.support.identity import TEST_PASSWORD, bearer, make_user, new_session, totp_code
from tests.support.settings import make_settings
from vault.audit.events import Actor
from vault.authz import ACCOUNT_SETUP_PATHS
from vault.identity.service import user_service_for
from vault.runtime import Runtime
from vault.settings import Settings
from vault.storage.engine import unit_of_work
from vault.storage.models import User


@dataclass(frozen=True)
class Policy:
    mfa: bool
    password: bool


@pytest.fixture(
    params=[Policy(True, True), Policy(False, False), Policy(True, False), Policy(False, True)],
    ids=["both-on", "both-off", "mfa-only", "password-only"],
)
def policy(request: pytest.FixtureRequest) -> Policy:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def settings(tmp_path: Path, db_url: str, policy: Policy) -> Settings:
    return make_settings(
        tmp_path / "var", db_url, require_mfa=policy.mfa, require_password_change=policy.password
    )


def test_the_defaults_are_on() -> None:
    defaults = Settings()
    assert defaults.require_mfa is True and defaults.require_password_change is True


def test_without_totp_only_the_setup_routes_answer(
    client: TestClient, runtime: Runtime, policy: Policy
) -> None:
    user = make_user(runtime, "no-totp@example.test")
    token = new_session(runtime, user.id)
    refused = client.get("/v1/tenants", headers=bearer(token))
    if not policy.mfa:
        assert refused.status_code == 200
        return
    assert refused.status_code == 403
    problem = refused.json()
    assert problem["code"] == "mfa_enrollment_required"
    assert "POST /v1/me/totp" in problem["detail"] and "/v1/me/totp/confirm" in problem["detail"]
    for method, path in (
        ("GET", "/v1/me/sessions"),
        ("GET", "/v1/me/export"),
        ("GET", "/v1/users"),
    ):
        response = client.request(method, path, headers=bearer(token))
        assert (response.status_code, response.json()["code"]) == (403, "mfa_enrollment_required")
    # The allow-list answers: profile, enrolment, confirmation.
    assert client.get("/v1/me", headers=bearer(token)).status_code == 200
    begun = client.post("/v1/me/totp", headers=bearer(token))
    assert begun.status_code == 200
    code = pyotp.TOTP(begun.json()["secret"]).at(runtime.clock.now())
    confirmed = client.post("/v1/me/totp/confirm", json={"code": code}, headers=bearer(token))
    assert confirmed.status_code == 200, confirmed.text
    assert client.get("/v1/tenants", headers=bearer(token)).status_code == 200
    # The refusal was audited, naming the reason.
    admin = make_user(runtime, "pa@example.test", platform_role="admin", totp=True)
    events = client.get(
        "/v1/audit/events",
        params={"actor_id": user.id, "action": "auth.session"},
        headers=bearer(new_session(runtime, admin.id)),
    ).json()["events"]
    assert any(e["reason"] == "account not ready: mfa enrollment required" for e in events)


def _expect(response: Any, code: str | None) -> None:
    if code is None:
        assert response.status_code == 200, response.text
    else:
        assert (response.status_code, response.json()["code"]) == (403, code), response.text


def test_a_generated_password_must_be_changed_first(
    client: TestClient, runtime: Runtime, policy: Policy
) -> None:
    admin = make_user(runtime, "creator@example.test", platform_role="admin", totp=True)
    fresh = new_session(runtime, admin.id, mfa_fresh=True)
    created = client.post(
        "/v1/users",
        json={"email": "new@example.test", "platform_role": None},
        headers=bearer(fresh),
    )
    assert created.status_code == 201, created.text
    initial = created.json()["initial_password"]
    login = client.post("/v1/auth/login", json={"email": "new@example.test", "password": initial})
    token = login.json()["session_token"]
    enrol = "mfa_enrollment_required" if policy.mfa else None
    first = client.get("/v1/tenants", headers=bearer(token))
    _expect(first, "password_change_required" if policy.password else enrol)
    if policy.password:
        detail = first.json()["detail"]
        assert "POST /v1/me/password" in detail
        assert ("POST /v1/me/totp" in detail) == policy.mfa  # what comes next, if anything
    assert client.get("/v1/me", headers=bearer(token)).status_code == 200
    changed = client.post(
        "/v1/me/password",
        json={"current_password": initial, "new_password": TEST_PASSWORD + " mine"},
        headers=bearer(token),
    )
    assert changed.status_code == 204
    _expect(client.get("/v1/tenants", headers=bearer(token)), enrol)  # the factor is next


def test_the_cli_path_flags_a_generated_password(runtime: Runtime) -> None:
    """``linevault users create`` calls this service method: the flag is set there too."""
    with unit_of_work(runtime.sessions) as session:
        user, _ = user_service_for(runtime, session).create(
            email="cli-made@example.test", platform_role=None, actor=Actor("system", "test")
        )
        assert session.get(User, user.id).password_change_required is True  # type: ignore[union-attr]


def test_mfa_required_names_both_ways(client: TestClient, runtime: Runtime) -> None:
    admin = make_user(runtime, "stale@example.test", platform_role="admin", totp=True)
    assert admin.totp_secret is not None
    stale = new_session(runtime, admin.id)
    response = client.post("/v1/runners", json={"name": "r"}, headers=bearer(stale))
    assert (response.status_code, response.json()["code"]) == (403, "mfa_required")
    assert "mfa_code" in response.json()["detail"]
    assert "POST /v1/auth/step-up" in response.json()["detail"]
    ok = client.post(
        "/v1/runners",
        json={"name": "r", "mfa_code": totp_code(admin.totp_secret, runtime)},
        headers=bearer(stale),
    )
    assert ok.status_code == 201


def test_the_allow_list_is_the_contracts() -> None:
    assert {
        "/v1/me",
        "/v1/me/totp",
        "/v1/me/totp/confirm",
        "/v1/me/password",
        "/v1/auth/logout",
        # The console's set-up pages and sign-out (api/console/signin.py), the same four.
        "/ui/enrol",
        "/ui/enrol/confirm",
        "/ui/password",
        "/ui/logout",
    } == ACCOUNT_SETUP_PATHS
