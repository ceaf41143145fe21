"""Every authentication attempt leaves one audit event, and no event carries a secret."""

from __future__ import annotations

import json
import time

from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.support.identity import TEST_PASSWORD, bearer, make_user, new_session, totp_code
from vault.bootstrap import BootstrapResult
from vault.clock import FixedClock
from vault.runtime import Runtime
from vault.storage.engine import unit_of_work
from vault.storage.models import AuditEventRow


def _events(runtime: Runtime) -> list[AuditEventRow]:
    with unit_of_work(runtime.sessions) as session:
        return list(session.execute(select(AuditEventRow).order_by(AuditEventRow.seq)).scalars())


def _wait_for(runtime: Runtime, count: int) -> list[AuditEventRow]:
    deadline = time.monotonic() + 5
    while True:
        rows = _events(runtime)
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.01)


def test_each_attempt_is_audited_without_secrets(
    runtime: Runtime, client: TestClient, bootstrap: BootstrapResult, clock: FixedClock
) -> None:
    user = make_user(runtime, "audited@example.test", totp=True)
    assert user.totp_secret
    secrets: list[str] = [TEST_PASSWORD, bootstrap.admin_password, user.totp_secret]
    before = len(_events(runtime))

    def call(method: str, path: str, **kwargs: object) -> dict[str, object]:
        response = client.request(method, path, **kwargs)  # type: ignore[arg-type]
        return response.json() if response.content else {}

    call("POST", "/v1/auth/login", json={"email": user.email, "password": "wrong-" + TEST_PASSWORD})
    call("POST", "/v1/auth/login", json={"email": "ghost@example.test", "password": "pw-ghost"})
    secrets += ["wrong-" + TEST_PASSWORD, "pw-ghost"]
    body = call("POST", "/v1/auth/login", json={"email": user.email, "password": TEST_PASSWORD})
    mfa_token = str(body["mfa_token"])
    code = totp_code(user.totp_secret, runtime)
    wrong = "000000" if code != "000000" else "111111"
    call("POST", "/v1/auth/mfa", json={"mfa_token": mfa_token, "code": wrong})
    body = call("POST", "/v1/auth/mfa", json={"mfa_token": mfa_token, "code": code})
    session_token = str(body["session_token"])
    secrets += [mfa_token, session_token, code]
    call("POST", "/v1/auth/step-up", json={"code": code}, headers=bearer(session_token))  # replay
    call("GET", "/v1/me", headers=bearer("lvs_not-a-real-session-token-at-all"))
    other = new_session(runtime, user.id)
    secrets.append(other)
    call("POST", "/v1/auth/logout", headers=bearer(other))

    # Refusals made before any session exists are unauthenticated failures: the address's
    # first in a window is recorded in full, the repeats (the unknown email, the wrong
    # code, the bad session token) as one aggregated event once the window has closed.
    clock.advance(runtime.settings.unauth_window_seconds)
    assert runtime.flood.sweep() == 1
    expected = [
        ("auth.login", "denied"),
        ("auth.login", "success"),
        ("auth.mfa", "success"),
        ("auth.step_up", "denied"),
        ("auth.logout", "success"),
        ("auth.failures", "denied"),
    ]
    rows = _wait_for(runtime, before + len(expected))[before:]
    assert [(r.action, r.outcome) for r in rows] == expected
    assert rows[0].actor_id == user.id
    assert json.loads(rows[-1].details or "{}")["count"] == 3
    assert all(r.ip == "testclient" for r in rows)
    for row in _events(runtime):
        text = " ".join(str(getattr(row, c.name)) for c in AuditEventRow.__table__.columns)
        for secret in secrets:
            assert secret not in text, (row.action, "leaks a secret")
        assert "ghost@example.test" not in text  # a mistyped password may sit in the email
