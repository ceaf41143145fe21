"""Login, the TOTP step and throttling of failed passwords and codes (RFC 4226 §7)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.support.identity import TEST_PASSWORD, bearer, make_user, new_session, totp_code
from vault.bootstrap import BootstrapResult
from vault.clock import FixedClock
from vault.identity.throttle import Throttler
from vault.runtime import Runtime
from vault.storage.engine import unit_of_work
from vault.storage.models import Throttle, User


def _login(client: TestClient, email: str, password: str) -> object:
    return client.post("/v1/auth/login", json={"email": email, "password": password})


def test_delay_grows_and_is_capped() -> None:
    throttler = Throttler(free_failures=5, max_delay_seconds=900)
    delays = [throttler.delay_for(n) for n in range(1, 20)]
    assert delays[:4] == [0, 0, 0, 0]
    assert delays[4:9] == [1, 2, 4, 8, 16]
    assert max(delays) == 900 and delays[-1] == 900


def test_wrong_password_and_unknown_email_fail_alike(
    client: TestClient, bootstrap: BootstrapResult, runtime: Runtime, monkeypatch
) -> None:
    """Same body, and the same work: exactly one argon2id verification on either path.

    Counting verifications instead of timing them keeps the test deterministic on a busy
    machine; the work per verification is fixed by the argon2 parameters.
    """
    real = runtime.passwords._hasher
    calls: list[str] = []

    class CountingHasher:
        def verify(self, stored: str, password: str) -> bool:
            calls.append(stored.split("$")[3])  # the parameters, e.g. m=19456,t=2,p=1
            return real.verify(stored, password)

        def __getattr__(self, name: str):
            return getattr(real, name)

    monkeypatch.setattr(runtime.passwords, "_hasher", CountingHasher())
    bodies = {}
    work = {}
    for label, email in (("known", bootstrap.admin_email), ("unknown", "nobody@example.test")):
        calls.clear()
        response = client.post(
            "/v1/auth/login", json={"email": email, "password": "wrong-password"}
        )
        assert response.status_code == 401
        body = response.json()
        bodies[label] = {k: body[k] for k in ("code", "detail", "title", "status")}
        work[label] = list(calls)
    assert bodies["known"] == bodies["unknown"]
    assert bodies["known"]["code"] == "unauthenticated"
    assert len(work["known"]) == len(work["unknown"]) == 1
    assert work["known"] == work["unknown"]  # same argon2id parameters, same cost


def test_login_without_totp_gives_a_session_and_rehashes_old_params(
    runtime: Runtime, client: TestClient
) -> None:
    user = make_user(runtime, "plain@example.test")
    weak = "$argon2id$v=19$m=19456,t=2,p=1$"  # same params: no rehash needed
    with unit_of_work(runtime.sessions) as session:
        stored = session.get(User, user.id)
        assert stored is not None and stored.password_hash.startswith(weak)
        # Simulate an older, costlier-to-keep parameter set: t=3.
        from argon2 import PasswordHasher

        stored.password_hash = PasswordHasher(time_cost=3, memory_cost=19_456).hash(TEST_PASSWORD)
    response = client.post("/v1/auth/login", json={"email": user.email, "password": TEST_PASSWORD})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["mfa_required"] is False and body["session_token"].startswith("lvs_")
    assert body["expires_at"].endswith("Z")
    assert client.get("/v1/me", headers=bearer(body["session_token"])).json()["email"] == user.email
    with unit_of_work(runtime.sessions) as session:
        assert session.get(User, user.id).password_hash.startswith(weak)  # type: ignore[union-attr]


def test_mfa_flow_and_wrong_codes(
    runtime: Runtime, client: TestClient, bootstrap: BootstrapResult
) -> None:
    response = client.post(
        "/v1/auth/login",
        json={"email": bootstrap.admin_email, "password": bootstrap.admin_password},
    )
    body = response.json()
    assert body["mfa_required"] is True and "session_token" not in body
    token = body["mfa_token"]
    bad = client.post("/v1/auth/mfa", json={"mfa_token": token, "code": "000000"})
    if bad.status_code == 200:  # one chance in 333k that 000000 is the code
        pytest.skip("000000 happened to be valid")
    assert bad.status_code == 401 and bad.json()["code"] == "mfa_invalid"
    assert (
        client.post("/v1/auth/mfa", json={"mfa_token": "lvm_nope", "code": "123456"}).json()["code"]
        == "mfa_invalid"
    )
    code = totp_code(bootstrap.admin_totp_secret, runtime)
    good = client.post("/v1/auth/mfa", json={"mfa_token": token, "code": code})
    assert good.status_code == 200, good.text
    assert client.get("/v1/me", headers=bearer(good.json()["session_token"])).json()["mfa_fresh"]
    # The mfa_token is single use, whatever the code.
    again = client.post("/v1/auth/mfa", json={"mfa_token": token, "code": code})
    assert again.status_code == 401


def test_password_throttle_429_with_retry_after_then_recovers(
    runtime: Runtime, client: TestClient, clock: FixedClock
) -> None:
    user = make_user(runtime, "victim@example.test")
    free = runtime.settings.throttle_free_failures
    for _ in range(free):
        assert _login(client, user.email, "nope").status_code == 401  # type: ignore[attr-defined]
    blocked = client.post("/v1/auth/login", json={"email": user.email, "password": TEST_PASSWORD})
    assert blocked.status_code == 429
    assert blocked.json()["code"] == "rate_limited"
    assert int(blocked.headers["Retry-After"]) >= 1
    clock.advance(int(blocked.headers["Retry-After"]))
    ok = client.post("/v1/auth/login", json={"email": user.email, "password": TEST_PASSWORD})
    assert ok.status_code == 200
    with unit_of_work(runtime.sessions) as session:
        keys = set(session.execute(select(Throttle.key)).scalars())
    # The account counter was reset by the success; the client-address one remains.
    assert not any(k.startswith("pw:acct:") for k in keys)
    assert any(k.startswith("pw:ip:") for k in keys)
    assert not any(user.email in k for k in keys)


def test_code_throttle_per_account(runtime: Runtime, client: TestClient, clock: FixedClock) -> None:
    user = make_user(runtime, "codes@example.test", totp=True)
    assert user.totp_secret
    token = new_session(runtime, user.id)
    valid = {totp_code(user.totp_secret, runtime, steps=s) for s in (-1, 0, 1)}
    wrong = next(c for c in ("111111", "222222", "333333", "444444") if c not in valid)
    for _ in range(runtime.settings.throttle_free_failures):
        response = client.post("/v1/auth/step-up", json={"code": wrong}, headers=bearer(token))
        assert response.status_code == 401
    blocked = client.post(
        "/v1/auth/step-up",
        json={"code": totp_code(user.totp_secret, runtime)},
        headers=bearer(token),
    )
    assert blocked.status_code == 429 and "Retry-After" in blocked.headers
    clock.advance(31)  # past the 1 s block and into a new step
    ok = client.post(
        "/v1/auth/step-up",
        json={"code": totp_code(user.totp_secret, runtime)},
        headers=bearer(token),
    )
    assert ok.status_code == 200, ok.text


def test_throttle_counters_are_shared_through_the_database(runtime: Runtime) -> None:
    """Two throttlers (as in two processes) see each other's failures."""
    now = runtime.clock.now()
    first, second = Throttler(free_failures=2), Throttler(free_failures=2)
    with unit_of_work(runtime.sessions) as session:
        assert first.fail(session, ["k"], now=now) == 0
    with unit_of_work(runtime.sessions) as session:
        assert second.fail(session, ["k"], now=now) == 1
        assert first.fail(session, ["k"], now=now) == 2
    from vault.errors import RateLimited

    with unit_of_work(runtime.sessions) as session, pytest.raises(RateLimited):
        second.check(session, ["k"], now=now)
