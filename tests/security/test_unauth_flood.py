"""Unauthenticated failures cannot flood the audit trail (issue: "240 durable audit events
a second"), and the limit holds across server processes.

Two runtimes on one database stand for two server processes (each with its own app and
memory; only the database is shared). One client address sends bad session tokens, bad
runner tokens, bad client credentials and failed logins to both, alternately: after
``limit`` failures in a window every further one is 429, whichever process answers; the
address's first failure is audited in full and the rest as ONE ``auth.failures`` event
with their count once the window has closed, written by exactly one process. Another
address is unaffected, and valid credentials from the limited address still work.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from tests.support.identity import bearer, make_user, new_session
from tests.support.runners import grant, issue_token, make_line, make_runner, make_tenant
from vault.bootstrap import BootstrapResult
from vault.clock import FixedClock
from vault.runtime import Runtime, open_runtime
from vault.settings import Settings
from vault.storage.engine import unit_of_work
from vault.storage.models import AuditEventRow

LIMIT = 6
ATTACKER = "203.0.113.9"


@pytest.fixture
def processes(
    settings: Settings, bootstrap: BootstrapResult, clock: FixedClock
) -> Iterator[list[Runtime]]:
    small = settings.model_copy(update={"unauth_failures_per_window": LIMIT})
    runtimes = [open_runtime(small, clock=clock) for _ in range(2)]
    yield runtimes
    for runtime in runtimes:
        runtime.close()


def _client(runtime: Runtime, address: str) -> TestClient:
    app = create_app(runtime.settings, runtime=runtime)
    return TestClient(app, client=(address, 40000), raise_server_exceptions=False)


def test_unauthenticated_failures_are_limited_and_aggregated_across_processes(
    processes: list[Runtime], clock: FixedClock
) -> None:
    first = processes[0]
    tenant = make_tenant(first)
    line = make_line(first, tenant)
    runner_id, client_id, secret = make_runner(first, "flooded")
    grant(first, tenant, runner_id, [line])
    token = issue_token(first, client_id, secret)
    user = make_user(first, "flood@example.test")
    session = bearer(new_session(first, user.id))
    fetch_url = f"/v1/tenants/{tenant}/lines/{line}/credential"
    attackers = [_client(r, ATTACKER) for r in processes]

    failures: list[Callable[[TestClient], object]] = [
        lambda c: c.get("/v1/me", headers=bearer("lvs_not-a-session")),
        lambda c: c.get(fetch_url, headers=bearer("lvrt_not-a-token")),
        lambda c: c.post(
            "/v1/runner/token",
            data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": "x"},
        ),
        lambda c: c.post("/v1/auth/login", json={"email": f"x{id(c)}@e.test", "password": "x"}),
    ]
    statuses = [
        failures[n % len(failures)](attackers[n % 2]).status_code  # type: ignore[attr-defined]
        for n in range(30)
    ]
    assert set(statuses[:LIMIT]) == {401}
    assert statuses[LIMIT:] == [429] * (30 - LIMIT)

    # Valid credentials from the same address: no cost, no refusal (the fetch's hot path
    # never looks at the failure counts).
    for client in attackers:
        assert client.get(fetch_url, headers=bearer(token)).status_code == 200
        assert client.get("/v1/me", headers=session).status_code == 200
    # Another address has its own count.
    assert _client(processes[1], "192.0.2.44").get("/v1/me").status_code == 401

    clock.advance(first.settings.unauth_window_seconds)
    assert sorted(r.flood.sweep() for r in processes) == [0, 1]  # claimed by one process
    with unit_of_work(first.sessions) as db:
        rows = db.execute(select(AuditEventRow).where(AuditEventRow.ip == ATTACKER)).scalars()
        denied = [r for r in rows if r.outcome == "denied"]
    aggregated = [r for r in denied if r.action == "auth.failures"]
    assert len(denied) == 2 and len(aggregated) == 1
    details = json.loads(aggregated[0].details or "{}")
    assert details["count"] == 29 and details["window_seconds"] == 60
