"""Two server processes on one PostgreSQL: shared state really is shared.

- a TOTP code sent to both processes at once is accepted exactly once;
- runners fetching through both processes while a user revokes: no fetch that starts
  after the revoke response returns the secret;
- the audit chain written by both processes verifies, one event per served fetch.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pyotp
import pytest

from tests.support.server import ServerProcess, free_port, running_server

pytestmark = pytest.mark.slow

BOT_TOKEN = "424242:AAE_multiProcessSecret-0123456789abcdefgh"


@pytest.fixture
def pg_url(postgres_db_url: str) -> str:
    """Several server processes share one PostgreSQL (SQLite is single-host by design)."""
    return postgres_db_url


def _wait_new_step(secret: str, used: set[str]) -> str:
    totp = pyotp.TOTP(secret)
    for _ in range(80):
        code = totp.now()
        if code not in used:
            used.add(code)
            return code
        time.sleep(0.5)
    raise AssertionError("no fresh TOTP code")


def _login(http: httpx.Client, admin, used: set[str]) -> str:
    first = http.post("/v1/auth/login", json={"email": admin.email, "password": admin.password})
    assert first.status_code == 200, first.text
    second = http.post(
        "/v1/auth/mfa",
        json={
            "mfa_token": first.json()["mfa_token"],
            "code": _wait_new_step(admin.totp_secret, used),
        },
    )
    assert second.status_code == 200, second.text
    return str(second.json()["session_token"])


def test_two_processes_share_totp_replay_revocation_and_audit(tmp_path: Path, pg_url: str) -> None:
    used: set[str] = set()
    with running_server(tmp_path, database_url=pg_url) as (first, admin):
        second = ServerProcess(first.data_dir, pg_url, free_port(), {})
        second.start()
        try:
            a = httpx.Client(base_url=first.url, timeout=30)
            b = httpx.Client(base_url=second.url, timeout=30)

            # --- TOTP replay across processes: two pending logins, one code, both servers.
            pending = []
            for http in (a, b):
                r = http.post(
                    "/v1/auth/login", json={"email": admin.email, "password": admin.password}
                )
                pending.append(r.json()["mfa_token"])
            code = _wait_new_step(admin.totp_secret, used)
            results: list[int] = []
            barrier = threading.Barrier(2)

            def submit(http: httpx.Client, token: str) -> None:
                barrier.wait()
                results.append(
                    http.post("/v1/auth/mfa", json={"mfa_token": token, "code": code}).status_code
                )

            threads = [
                threading.Thread(target=submit, args=(h, t))
                for h, t in zip((a, b), pending, strict=True)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(results) == [200, 401]

            # --- set up a tenant, a line, a runner with a grant (through process A).
            token = _login(a, admin, used)
            auth = {"Authorization": f"Bearer {token}"}
            tenant_id = a.post("/v1/tenants", json={"name": "mp"}, headers=auth).json()["id"]
            line = a.post(
                f"/v1/tenants/{tenant_id}/lines",
                json={"type": "telegram", "name": "bot", "credential": {"bot_token": BOT_TOKEN}},
                headers=auth,
            )
            line_id = line.json()["id"]
            runner = a.post("/v1/runners", json={"name": "r"}, headers=auth).json()
            assert (
                a.post(
                    f"/v1/tenants/{tenant_id}/grants",
                    json={"runner_id": runner["id"], "lines": ["*"]},
                    headers=auth,
                ).status_code
                == 201
            )
            access = b.post(
                "/v1/runner/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": runner["client_id"],
                    "client_secret": runner["client_secret"],
                },
            ).json()["access_token"]
            runner_auth = {"Authorization": f"Bearer {access}"}
            path = f"/v1/tenants/{tenant_id}/lines/{line_id}/credential"

            # --- fetch through both processes while revoking through A.
            revoked_at: list[float] = []
            stop = threading.Event()
            violations: list[str] = []
            served = {"ok": 0}
            lock = threading.Lock()

            def fetch_loop(http: httpx.Client) -> None:
                while not stop.is_set():
                    started = time.monotonic()
                    r = http.get(path, headers=runner_auth)
                    with lock:
                        if r.status_code == 200:
                            served["ok"] += 1
                            if revoked_at and started > revoked_at[0]:
                                violations.append(f"secret served after revoke ({http.base_url})")
                        elif r.status_code != 410:
                            violations.append(f"unexpected {r.status_code}")

            loops = [threading.Thread(target=fetch_loop, args=(h,)) for h in (a, b, a, b)]
            for t in loops:
                t.start()
            time.sleep(1.5)
            revoke = a.post(
                f"/v1/tenants/{tenant_id}/lines/{line_id}/revoke",
                json={"reason": "incident"},  # the session is MFA-fresh (made by /v1/auth/mfa)
                headers=auth,
            )
            with lock:
                revoked_at.append(time.monotonic())
            assert revoke.status_code == 200, revoke.text
            time.sleep(1.0)
            stop.set()
            for t in loops:
                t.join()
            assert violations == []
            assert served["ok"] > 0
            assert b.get(path, headers=runner_auth).status_code == 410

            # --- one chain, one success event per served fetch, written by both processes.
            verify = a.get("/v1/audit/verify", headers=auth).json()
            assert verify["ok"] is True, verify
            count, cursor = 0, None
            while True:
                params = {"action": "credential.fetch", "outcome": "success", "limit": 1000}
                if cursor:
                    params["cursor"] = cursor
                page = b.get("/v1/audit/events", params=params, headers=auth).json()
                count += len(page["events"])
                cursor = page["next_cursor"]
                if not cursor:
                    break
            assert count == served["ok"]
        finally:
            second.stop()
