"""Guessing over HTTP, as an attacker would: passwords, TOTP codes, runner secrets.

docs/security.md promises (RFC 4226 §7, ASVS 6.1.1/6.3.1): failures are counted per
account and per client address; from the 5th failure on each failure doubles a block
(1 s, 2 s, 4 s, ...) capped at 15 minutes; a blocked attempt gets 429 ``rate_limited``
with ``Retry-After`` and costs no argon2 work; the right secret works again once the
block has passed; a success resets the account counter but not the address one. Time
moves by the injected FixedClock, never by sleeping.

Runner client secrets are 256-bit random values checked by a keyed hash, so the token
endpoint does not throttle them (guessing is hopeless; see docs/runners.md); what it
must do is answer every kind of wrong client identically, so nothing can be learned.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.support.identity import (
    TEST_PASSWORD,
    add_membership,
    bearer,
    make_tenant,
    make_user,
    new_session,
    totp_code,
)
from tests.support.runners import make_line, make_runner
from vault.clock import FixedClock
from vault.runtime import Runtime
from vault.storage.engine import unit_of_work
from vault.storage.models import AuditEventRow, Line

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _from(client: TestClient, address: str) -> TestClient:
    """Another client of the same app, seen from ``address``."""
    return TestClient(client.app, client=(address, 40000), raise_server_exceptions=False)


def _login(c: TestClient, email: str, password: str) -> Any:
    return c.post("/v1/auth/login", json={"email": email, "password": password})


def _count_argon2(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count password verifications (the argon2 work) behind the login route."""
    calls = [0]
    real = runtime.passwords.verify

    def counting(stored: str | None, password: str) -> bool:
        calls[0] += 1
        return real(stored, password)

    monkeypatch.setattr(runtime.passwords, "verify", counting)
    return calls


def _blocked(response: Any) -> int:
    assert response.status_code == 429, response.text
    assert response.json()["code"] == "rate_limited"
    assert response.headers["content-type"].startswith("application/problem+json")
    return int(response.headers["Retry-After"])


def test_password_guessing_on_one_account_backs_off_and_the_owner_gets_back_in(
    runtime: Runtime, client: TestClient, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = make_user(runtime, "victim@example.test")
    free = runtime.settings.throttle_free_failures
    cap = runtime.settings.throttle_max_delay_seconds
    argon2 = _count_argon2(runtime, monkeypatch)
    owner = _from(client, "192.0.2.10")
    # A botnet: every guess from a new address, so only the account counter can stop it.
    addresses = iter(f"198.51.100.{i}" for i in range(1, 250))
    for _ in range(free):
        assert _login(_from(client, next(addresses)), victim.email, "guess").status_code == 401
    assert argon2[0] == free

    delays = []
    while not delays or delays[-1] < cap or len(delays) < 3 or delays[-2] < cap:
        retry_after = _blocked(_login(_from(client, next(addresses)), victim.email, "guess"))
        # The owner is blocked too (that is the price of a per-account counter), even with
        # the right password: and no argon2 work is done for a blocked attempt.
        before = argon2[0]
        assert _blocked(_login(owner, victim.email, TEST_PASSWORD)) == retry_after
        assert argon2[0] == before
        delays.append(retry_after)
        clock.advance(retry_after - 1)
        _blocked(_login(_from(client, next(addresses)), victim.email, "guess"))  # not yet
        clock.advance(1)
        if delays[-1] < cap or len(delays) < 3 or delays[-2] < cap:
            assert _login(_from(client, next(addresses)), victim.email, "guess").status_code == 401
        assert len(delays) < 20
    # 1 s, 2 s, 4 s, ... doubling, then capped at 15 minutes: never a permanent lockout.
    grown = [d for d in delays if d < cap]
    assert grown == [2**i for i in range(len(grown))]
    assert delays[-2:] == [cap, cap] and cap == 900

    # The block has passed: the right password works, and resets the account counter.
    response = _login(owner, victim.email, TEST_PASSWORD)
    assert response.status_code == 200, response.text
    for _ in range(free - 1):
        assert _login(_from(client, next(addresses)), victim.email, "guess").status_code == 401
    assert _login(owner, victim.email, TEST_PASSWORD).status_code == 200


def test_password_spraying_from_one_address_is_throttled_and_cannot_be_laundered(
    runtime: Runtime, client: TestClient, clock: FixedClock
) -> None:
    """Many accounts, one address: the address counter stops it; logging into one's own
    account does not reset it; other addresses are not affected."""
    attacker = _from(client, "203.0.113.66")
    own = make_user(runtime, "attacker@example.test")
    targets = [make_user(runtime, f"t{i}@example.test").email for i in range(3)]
    targets += ["nobody1@example.test", "nobody2@example.test"]  # unknown emails count alike
    for email in targets:
        assert _login(attacker, email, "Winter2025!").status_code == 401
    # Sixth account, never tried before: blocked by the address counter, right password too.
    fresh = make_user(runtime, "fresh@example.test")
    assert _blocked(_login(attacker, fresh.email, TEST_PASSWORD)) == 1
    assert _login(_from(client, "192.0.2.20"), fresh.email, TEST_PASSWORD).status_code == 200
    clock.advance(1)
    # The attacker's own, successful login does not launder the address...
    assert _login(attacker, own.email, TEST_PASSWORD).status_code == 200
    assert _login(attacker, targets[0], "Spring2025!").status_code == 401
    assert _blocked(_login(attacker, targets[1], "Spring2025!")) == 2  # ...the delay grows.


def _wrong_code(secret: str, runtime: Runtime, n: int) -> str:
    valid = {totp_code(secret, runtime, steps=s) for s in (-1, 0, 1)}
    return [c for c in (f"{i:06d}" for i in range(100000, 100100)) if c not in valid][n]


def test_totp_guessing_is_counted_across_every_endpoint_that_takes_a_code(
    runtime: Runtime, client: TestClient, clock: FixedClock
) -> None:
    """Wrong codes at step-up, at /v1/auth/mfa and as a per-request ``mfa_code`` all count
    against one per-account counter; a blocked attempt neither succeeds nor burns the
    right code, which works once the block has passed."""
    user = make_user(runtime, "otp@example.test", totp=True)
    assert user.totp_secret
    tenant = make_tenant(runtime)
    add_membership(runtime, tenant, user.id, "owner")
    line = make_line(runtime, tenant)
    session = bearer(new_session(runtime, user.id))  # not MFA-fresh
    guesses = iter(range(100))

    def guess() -> str:
        return _wrong_code(user.totp_secret or "", runtime, next(guesses))

    def step_up(code: str) -> Any:
        return client.post("/v1/auth/step-up", json={"code": code}, headers=session)

    def mfa(code: str) -> Any:
        token = _login(client, user.email, TEST_PASSWORD).json()["mfa_token"]
        return client.post("/v1/auth/mfa", json={"mfa_token": token, "code": code})

    def revoke(code: str) -> Any:
        return client.post(
            f"/v1/tenants/{tenant}/lines/{line}/revoke", json={"mfa_code": code}, headers=session
        )

    endpoints: list[Callable[[str], Any]] = [step_up, step_up, mfa, mfa, revoke]
    assert len(endpoints) == runtime.settings.throttle_free_failures
    for call in endpoints:
        response = call(guess())
        assert response.status_code == 401 and response.json()["code"] == "mfa_invalid"

    right = totp_code(user.totp_secret, runtime)
    for call in (step_up, revoke):
        assert _blocked(call(right)) == 1
    with unit_of_work(runtime.sessions) as db:
        assert db.get(Line, line).status == "active"  # type: ignore[union-attr]
    # Logging in still works (the password counter is separate) but the code step is shut.
    assert _blocked(mfa(right)) == 1

    clock.advance(1)
    assert step_up(guess()).status_code == 401
    assert _blocked(step_up(right)) == 2  # the block grows with each failure
    clock.advance(2)
    # The code that was refused while blocked was never consumed: it still works now.
    assert step_up(right).status_code == 200
    assert revoke(guess()).status_code == 200  # MFA-fresh now: the code is not even read
    # Every attempt left an audit event; the blocked ones say so; no code is in any.
    with unit_of_work(runtime.sessions) as db:
        rows = (
            db.execute(select(AuditEventRow).where(AuditEventRow.actor_id == user.id))
            .scalars()
            .all()
        )
    # (Refusals made before any session exists, /v1/auth/mfa here, are counted per address
    # and aggregated after the first: see test_unauth_flood.py.)
    assert sum(1 for r in rows if r.outcome == "denied" and r.reason == "rate limited") >= 3
    assert not any(right in str(vars(r)) for r in rows)


def test_totp_guessing_across_accounts_from_one_address_is_throttled(
    runtime: Runtime, client: TestClient
) -> None:
    attacker = _from(client, "203.0.113.77")
    users = [make_user(runtime, f"otp{i}@example.test", totp=True) for i in range(3)]
    sessions = [bearer(new_session(runtime, u.id)) for u in users]
    for n in range(runtime.settings.throttle_free_failures):
        i = n % 2
        code = _wrong_code(users[i].totp_secret or "", runtime, n)
        response = attacker.post("/v1/auth/step-up", json={"code": code}, headers=sessions[i])
        assert response.status_code == 401
    # The third account has no failures of its own: the address counter blocks it.
    right = totp_code(users[2].totp_secret or "", runtime)
    assert _blocked(attacker.post("/v1/auth/step-up", json={"code": right}, headers=sessions[2]))
    other = _from(client, "192.0.2.30")
    ok = other.post("/v1/auth/step-up", json={"code": right}, headers=sessions[2])
    assert ok.status_code == 200, ok.text


# -- runner client secrets ----------------------------------------------------------------


def _token(c: TestClient, client_id: str, secret: str, *, basic: bool = False) -> Any:
    if basic:
        raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        return c.post(
            "/v1/runner/token",
            content="grant_type=client_credentials",
            headers={**FORM, "Authorization": f"Basic {raw}"},
        )
    return c.post(
        "/v1/runner/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )


def test_runner_secret_guessing_gets_one_uniform_answer(
    runtime: Runtime, client: TestClient, clock: FixedClock
) -> None:
    """Unknown client, wrong secret, another runner's secret, a disabled runner, no secret:
    the same status, body and headers, so a guess reveals nothing, not even which client
    ids exist. Secrets carry 256 bits, so there is no throttle to test: 200 wrong guesses
    later the right secret still works (no lockout for an attacker to cause)."""
    runner_id, client_id, secret = make_runner(runtime, "real")
    _, other_id, other_secret = make_runner(runtime, "other")
    dead_id, dead_client, dead_secret = make_runner(runtime, "disabled")
    admin = make_user(runtime, "radmin@example.test", platform_role="admin")
    headers = bearer(new_session(runtime, admin.id, mfa_fresh=True))
    assert client.delete(f"/v1/runners/{dead_id}", headers=headers).status_code == 204
    assert secret.startswith("lvcs_") and len(secret) == len("lvcs_") + 43  # 256 bits

    wrong = "lvcs_" + "A" * 43
    attempts = [
        _token(client, "lvc_unknown", wrong),
        _token(client, client_id, wrong),
        _token(client, client_id, secret[:-1]),
        _token(client, client_id, other_secret),
        _token(client, other_id, secret),
        _token(client, dead_client, dead_secret),
        _token(client, client_id, wrong, basic=True),
        _token(client, "lvc_unknown", wrong, basic=True),
        _token(client, dead_client, dead_secret, basic=True),
        client.post(
            "/v1/runner/token", data={"grant_type": "client_credentials", "client_id": client_id}
        ),
    ]

    def shape(response: Any) -> tuple[Any, ...]:
        kept = {k: v for k, v in response.headers.items() if k not in ("date", "x-request-id")}
        return response.status_code, response.content, tuple(sorted(kept.items()))

    first = shape(attempts[0])
    assert first[0] == 401
    assert attempts[0].json() == {
        "error": "invalid_client",
        "error_description": "client authentication failed",
    }
    assert attempts[0].headers["WWW-Authenticate"].startswith("Basic")
    assert attempts[0].headers["Cache-Control"] == "no-store"
    for response in attempts[1:]:
        assert shape(response) == first

    # 200 more wrong guesses from one address: past the per-address limit of
    # unauthenticated failures they get 429 (and no audit event of their own), yet no
    # lockout: the right secret still works, from there too.
    limit = runtime.settings.unauth_failures_per_window
    statuses = [_token(client, client_id, wrong).status_code for _ in range(200)]
    assert set(statuses[: limit - len(attempts)]) == {401}
    assert statuses[-1] == 429 and set(statuses) == {401, 429}
    ok = _token(client, client_id, secret)
    assert ok.status_code == 200, ok.text
    # The address's first failure was audited in full; the rest as ONE aggregated event
    # for the window, with their count, once the window has closed.
    clock.advance(runtime.settings.unauth_window_seconds)
    assert runtime.flood.sweep() == 1
    with unit_of_work(runtime.sessions) as db:
        rows = (
            db.execute(
                select(AuditEventRow).where(
                    AuditEventRow.action.in_(["runner.token", "auth.failures"])
                )
            )
            .scalars()
            .all()
        )
    denied = [r for r in rows if r.outcome == "denied" and r.action == "runner.token"]
    assert len(denied) == 1
    (aggregate,) = [r for r in rows if r.action == "auth.failures"]
    assert json.loads(aggregate.details or "{}")["count"] == len(attempts) + 200 - 1
    assert aggregate.ip == "testclient"
    text = "\n".join(str(vars(r)) for r in rows)
    for value in (wrong, secret, other_secret, dead_secret, secret[:-1]):
        assert value not in text
    assert runner_id
