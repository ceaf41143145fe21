"""Two server processes on one PostgreSQL: a suspension through one is refused at once by
the other.

Process B serves a runner's fetches first, so its in-memory decision cache holds the
allowing row; then a user suspends the line (and later the tenant) through process A.
The very next fetch through B, sent after A's response, must be 423 ``suspended``: the
suspension moved the authorization epoch, so B's cached decision is not used.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.e2e.test_multiprocess import BOT_TOKEN, _login, pg_url  # noqa: F401 (fixture)
from tests.support.server import ServerProcess, free_port, running_server

pytestmark = pytest.mark.slow


def _setup(a: httpx.Client, auth: dict[str, str]) -> tuple[str, str, dict[str, str]]:
    """A tenant, a telegram line and a runner granted it, all through ``a``."""
    tenant_id = a.post("/v1/tenants", json={"name": "mp"}, headers=auth).json()["id"]
    line = a.post(
        f"/v1/tenants/{tenant_id}/lines",
        json={"type": "telegram", "name": "bot", "credential": {"bot_token": BOT_TOKEN}},
        headers=auth,
    )
    assert line.status_code == 201, line.text
    runner = a.post("/v1/runners", json={"name": "r"}, headers=auth).json()
    granted = a.post(
        f"/v1/tenants/{tenant_id}/grants",
        json={"runner_id": runner["id"], "lines": ["*"]},
        headers=auth,
    )
    assert granted.status_code == 201, granted.text
    return tenant_id, line.json()["id"], runner


def _runner_auth(http: httpx.Client, runner: dict[str, str]) -> dict[str, str]:
    token = http.post(
        "/v1/runner/token",
        data={
            "grant_type": "client_credentials",
            "client_id": runner["client_id"],
            "client_secret": runner["client_secret"],
        },
    ).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def _warm(http: httpx.Client, path: str, headers: dict[str, str]) -> None:
    """Served twice: the second answer comes from the process's decision cache."""
    for _ in range(2):
        answer = http.get(path, headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.json()["credential"]["bot_token"] == BOT_TOKEN


def _refused(http: httpx.Client, path: str, headers: dict[str, str]) -> None:
    for _ in range(3):
        answer = http.get(path, headers=headers)
        assert answer.status_code == 423, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert answer.json()["code"] == "suspended"


def test_a_suspension_through_one_process_is_refused_at_once_by_the_other(
    tmp_path: Path,
    pg_url: str,  # noqa: F811
) -> None:
    used: set[str] = set()
    with running_server(tmp_path, database_url=pg_url) as (first, admin):
        second = ServerProcess(first.data_dir, pg_url, free_port(), {})
        second.start()
        try:
            a = httpx.Client(base_url=first.url, timeout=30)
            b = httpx.Client(base_url=second.url, timeout=30)
            auth = {"Authorization": f"Bearer {_login(a, admin, used)}"}
            tenant_id, line_id, runner = _setup(a, auth)
            runner_a, runner_b = _runner_auth(a, runner), _runner_auth(b, runner)
            path = f"/v1/tenants/{tenant_id}/lines/{line_id}/credential"
            line_path = f"/v1/tenants/{tenant_id}/lines/{line_id}"

            # --- the line: suspended through A, refused by B's next request.
            _warm(b, path, runner_b)
            suspended = a.post(f"{line_path}/suspend", json={"reason": "mp"}, headers=auth)
            assert suspended.json()["status"] == "suspended", suspended.text
            _refused(b, path, runner_b)
            resumed = a.post(f"{line_path}/resume", json={}, headers=auth)  # MFA-fresh
            assert resumed.json()["status"] == "active", resumed.text
            _warm(b, path, runner_b)

            # --- the tenant: suspended through B, refused by A's next request.
            _warm(a, path, runner_a)
            tenant = b.post(f"/v1/tenants/{tenant_id}/suspend", headers=auth)
            assert tenant.json() == {"id": tenant_id, "status": "suspended"}, tenant.text
            _refused(a, path, runner_a)
            _refused(b, path, runner_b)
            back = b.post(f"/v1/tenants/{tenant_id}/resume", json={}, headers=auth)
            assert back.json() == {"id": tenant_id, "status": "active"}, back.text
            _warm(a, path, runner_a)

            # --- both processes wrote one chain, with every change and refusal in it.
            verify = a.get("/v1/audit/verify", headers=auth).json()
            assert verify["ok"] is True, verify
            refusals = b.get(
                "/v1/audit/events",
                params={"action": "credential.fetch", "outcome": "denied", "limit": 100},
                headers=auth,
            ).json()["events"]
            assert len(refusals) == 9
            assert {e["reason"] for e in refusals} == {"suspended"}
            for action in ("credential.suspend", "credential.resume"):
                assert _actions(a, auth, action) == ["success"]
            for action in ("tenant.suspend", "tenant.resume"):
                assert _actions(b, auth, action) == ["success"]
        finally:
            second.stop()


def _actions(http: httpx.Client, auth: dict[str, str], action: str) -> list[str]:
    page = http.get("/v1/audit/events", params={"action": action}, headers=auth).json()
    return [e["outcome"] for e in page["events"]]
