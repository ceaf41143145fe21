"""Two real server processes on one PostgreSQL: people's changes hold in both at once.

- the account policies (on by default): a user made through process A with a generated
  password is refused by B with ``password_change_required``; once the password is
  changed through A, B answers ``mfa_enrollment_required``; once TOTP is enrolled through
  A, B lets them through; with both policies off, B lets them through at once;
- a member removed through A is refused by B on their very next request;
- a user deleted through A has no working session in B;
- the bootstrap admin's recovery codes (printed once by ``init``) sign in, once.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pyotp
import pytest

from tests.support.server import Admin, ServerProcess, free_port, running_server

pytestmark = pytest.mark.slow

POLICIES_OFF = {"LINEVAULT_REQUIRE_MFA": "false", "LINEVAULT_REQUIRE_PASSWORD_CHANGE": "false"}


def _fresh_code(secret: str, used: set[str]) -> str:
    totp = pyotp.TOTP(secret)
    for _ in range(80):
        code = totp.now()
        if code not in used:
            used.add(code)
            return code
        time.sleep(0.5)
    raise AssertionError("no fresh TOTP code")


def _admin_session(http: httpx.Client, admin: Admin, used: set[str]) -> dict[str, str]:
    first = http.post("/v1/auth/login", json={"email": admin.email, "password": admin.password})
    second = http.post(
        "/v1/auth/mfa",
        json={"mfa_token": first.json()["mfa_token"], "code": _fresh_code(admin.totp_secret, used)},
    )
    assert second.status_code == 200, second.text
    return {"Authorization": f"Bearer {second.json()['session_token']}"}


def _new_user(
    http: httpx.Client, auth: dict[str, str], email: str
) -> tuple[str, dict[str, str], str]:
    """A user made by POST /v1/users, signed in: id, session headers, initial password."""
    created = http.post("/v1/users", json={"email": email, "platform_role": None}, headers=auth)
    assert created.status_code == 201, created.text
    initial = created.json()["initial_password"]
    login = http.post("/v1/auth/login", json={"email": email, "password": initial})
    assert login.status_code == 200, login.text
    token = login.json()["session_token"]
    return created.json()["id"], {"Authorization": f"Bearer {token}"}, initial


def _code(response: httpx.Response) -> str | None:
    return response.json().get("code") if response.status_code >= 400 else None


def test_policies_and_removal_hold_across_two_processes(
    tmp_path: Path, postgres_db_url: str
) -> None:
    used: set[str] = set()
    with running_server(tmp_path, database_url=postgres_db_url) as (first, admin):
        second = ServerProcess(first.data_dir, postgres_db_url, free_port(), {})
        second.start()
        try:
            a = httpx.Client(base_url=first.url, timeout=30)
            b = httpx.Client(base_url=second.url, timeout=30)
            auth = _admin_session(a, admin, used)
            user_id, user, initial = _new_user(a, auth, "new@people.test")
            listed = a.get("/v1/users", headers=auth).json()["users"]
            assert any(u["id"] == user_id for u in listed)

            # A generated password: refused in B (and A) until changed.
            assert _code(b.get("/v1/tenants", headers=user)) == "password_change_required"
            assert _code(a.get("/v1/tenants", headers=user)) == "password_change_required"
            assert b.get("/v1/me", headers=user).status_code == 200
            # The password is changed through A: B asks for the second factor next.
            password = a.post(
                "/v1/me/password",
                json={"current_password": initial, "new_password": "a new long password"},
                headers=user,
            )
            assert password.status_code == 204, password.text
            assert _code(b.get("/v1/tenants", headers=user)) == "mfa_enrollment_required"
            secret = a.post("/v1/me/totp", headers=user).json()["secret"]
            confirm = a.post(
                "/v1/me/totp/confirm", json={"code": _fresh_code(secret, used)}, headers=user
            )
            assert confirm.status_code == 200, confirm.text
            assert b.get("/v1/tenants", headers=user).status_code == 200

            # Member removal through A: refused by B on the very next request.
            tenant = a.post("/v1/tenants", json={"name": "people"}, headers=auth).json()["id"]
            added = a.post(
                f"/v1/tenants/{tenant}/members",
                json={"user_id": user_id, "role": "member"},
                headers=auth,
            )
            assert added.status_code == 201, added.text
            lines = f"/v1/tenants/{tenant}/lines"
            assert b.get(lines, headers=user).status_code == 200
            removed = a.delete(f"/v1/tenants/{tenant}/members/{user_id}", headers=auth)
            assert removed.status_code == 204, removed.text
            assert b.get(lines, headers=user).status_code == 404

            # User deletion through A: their session is dead in B.
            deleted = a.delete(f"/v1/users/{user_id}", headers=auth)  # fresh admin session
            assert deleted.status_code == 204, deleted.text
            assert b.get("/v1/me", headers=user).status_code == 401
            assert b.get("/v1/audit/verify", headers=auth).json()["ok"] is True

            # The bootstrap admin's recovery codes sign in, each once.
            assert len(admin.recovery_codes) == 10
            for expect in (200, 401):
                pending = b.post(
                    "/v1/auth/login", json={"email": admin.email, "password": admin.password}
                ).json()["mfa_token"]
                answer = b.post(
                    "/v1/auth/mfa", json={"mfa_token": pending, "code": admin.recovery_codes[0]}
                )
                assert answer.status_code == expect, answer.text
        finally:
            second.stop()


def test_with_policies_off_a_new_user_goes_straight_in(
    tmp_path: Path, postgres_db_url: str
) -> None:
    used: set[str] = set()
    with running_server(tmp_path, database_url=postgres_db_url, env=POLICIES_OFF) as (
        first,
        admin,
    ):
        second = ServerProcess(first.data_dir, postgres_db_url, free_port(), dict(POLICIES_OFF))
        second.start()
        try:
            a = httpx.Client(base_url=first.url, timeout=30)
            b = httpx.Client(base_url=second.url, timeout=30)
            auth = _admin_session(a, admin, used)
            _, user, _ = _new_user(a, auth, "relaxed@people.test")
            assert b.get("/v1/tenants", headers=user).status_code == 200
            assert a.get("/v1/tenants", headers=user).status_code == 200
        finally:
            second.stop()
