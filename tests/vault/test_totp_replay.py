"""A TOTP code is accepted at most once per user: sequentially, concurrently, any endpoint."""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.support.identity import bearer, make_user, new_session, totp_code
from vault.identity.recovery import RecoveryCodes
from vault.identity.totp import consume_step
from vault.runtime import Runtime
from vault.storage.engine import unit_of_work
from vault.storage.models import User


def test_consume_step_is_compare_and_set(runtime: Runtime) -> None:
    user = make_user(runtime, "cas@example.test", totp=True)
    with unit_of_work(runtime.sessions) as session:
        assert consume_step(session, user_id=user.id, step=1000)
        assert not consume_step(session, user_id=user.id, step=1000)  # same code again
        assert not consume_step(session, user_id=user.id, step=999)  # an older code
        assert consume_step(session, user_id=user.id, step=1001)
    with unit_of_work(runtime.sessions) as session:
        assert (
            session.execute(select(User.totp_last_step).where(User.id == user.id)).scalar() == 1001
        )


def test_concurrent_consumers_on_separate_connections_accept_once(runtime: Runtime) -> None:
    user = make_user(runtime, "race@example.test", totp=True)
    workers = 8
    barrier = threading.Barrier(workers)

    def attempt(_: int) -> bool:
        session = runtime.sessions()
        try:
            barrier.wait()
            won = consume_step(session, user_id=user.id, step=4242)
            session.commit()
            return won
        finally:
            session.close()

    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(attempt, range(workers)))
    assert results.count(True) == 1


def test_same_code_twice_over_http_sequential_and_concurrent(
    runtime: Runtime, client: TestClient
) -> None:
    user = make_user(runtime, "http@example.test", totp=True)
    assert user.totp_secret
    tokens = [new_session(runtime, user.id) for _ in range(6)]
    code = totp_code(user.totp_secret, runtime)
    first = client.post("/v1/auth/step-up", json={"code": code}, headers=bearer(tokens[0]))
    assert first.status_code == 200, first.text
    again = client.post("/v1/auth/step-up", json={"code": code}, headers=bearer(tokens[1]))
    assert again.status_code == 401 and again.json()["code"] == "mfa_invalid"

    # Concurrently: a fresh code (next step) sent by five sessions at once.
    code = totp_code(user.totp_secret, runtime, steps=1)
    barrier = threading.Barrier(5)

    def step_up(token: str) -> int:
        barrier.wait()
        return client.post(
            "/v1/auth/step-up", json={"code": code}, headers=bearer(token)
        ).status_code

    with ThreadPoolExecutor(5) as pool:
        statuses = list(pool.map(step_up, tokens[1:]))
    # Exactly one session gets the code; the others are refused (401 mfa_invalid, or 429
    # once their reservations, counted before any check, reach the throttle).
    assert statuses.count(200) == 1
    assert sorted(s for s in statuses if s != 200) in ([401] * 4, [401] * 3 + [429])


def test_recovery_code_works_once(runtime: Runtime) -> None:
    user = make_user(runtime, "rc@example.test", totp=True)
    codes = RecoveryCodes(system_keys=runtime.system_keys)
    now = runtime.clock.now()
    with unit_of_work(runtime.sessions) as session:
        issued = codes.issue(session, user_id=user.id)
    assert len(issued) == 10 and len(set(issued)) == 10
    # ASVS 5.0 6.5.2: >= 112 bits, so a keyed standard hash is an allowed way to store them.
    assert all(len(c.replace("-", "")) * math.log2(31) >= 112 for c in issued)
    with unit_of_work(runtime.sessions) as session:
        assert codes.consume(session, user_id=user.id, code=issued[0].upper(), now=now)
        assert not codes.consume(session, user_id=user.id, code=issued[0], now=now)
        assert not codes.consume(session, user_id="usr_other", code=issued[1], now=now)
        assert codes.consume(session, user_id=user.id, code=issued[1], now=now)
