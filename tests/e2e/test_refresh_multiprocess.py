"""Instagram refresh from two real server processes on one PostgreSQL (issue 16).

- 50 Instagram lines, a forced refresh of each fired at both processes at the same
  moment: exactly one upstream refresh call per line, every line at version 2 (none
  lost, none doubled), and every fetch made meanwhile (through both processes) returns
  a token the platform stand-in handed out.
- kill -9 of the lease holder after the platform issued the new token and before the
  commit: the other process takes the lease once it lapses and finishes; one commit.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.e2e.test_multiprocess import _login
from tests.support.lines import planted
from tests.support.platforms import PlatformStandIn, platform_standin
from tests.support.server import Admin, ServerProcess, free_port, running_server
from vault.storage.engine import make_engine
from vault.storage.models import AuditEventRow, RefreshLease

pytestmark = pytest.mark.slow

LINES = 50


def _env(standin: PlatformStandIn) -> dict[str, str]:
    return {
        "LINEVAULT_PROVIDER_CHECKS": "on",
        "LINEVAULT_TELEGRAM_API_URL": standin.url,
        "LINEVAULT_GRAPH_API_URL": standin.url,
        "LINEVAULT_INSTAGRAM_API_URL": standin.url,
        "LINEVAULT_CONNECTOR_CONNECT_TIMEOUT_SECONDS": "1",
        "LINEVAULT_CONNECTOR_READ_TIMEOUT_SECONDS": "2",
        "LINEVAULT_INSTAGRAM_REFRESH_INTERVAL_SECONDS": "0",  # forced refreshes only
        "LINEVAULT_INSTAGRAM_REFRESH_LEASE_SECONDS": "4",
    }


@contextmanager
def two_servers(
    tmp_path: Path, pg_url: str, standin: PlatformStandIn
) -> Iterator[tuple[ServerProcess, ServerProcess, Admin]]:
    env = _env(standin)
    with running_server(tmp_path, database_url=pg_url, env=env) as (a, admin):
        b = ServerProcess(a.data_dir, pg_url, free_port(), dict(env))
        b.start()
        try:
            yield a, b, admin
        finally:
            b.stop()


def _setup(
    http: httpx.Client, admin: Admin, n: int
) -> tuple[dict[str, str], str, dict[str, str], dict[str, str]]:
    """A tenant with ``n`` Instagram lines and a runner granted all of them:
    (user auth, tenant, {line_id: original token}, runner auth)."""
    auth = {"Authorization": f"Bearer {_login(http, admin, set())}"}
    tenant = http.post("/v1/tenants", json={"name": "ig"}, headers=auth).json()["id"]
    tokens: dict[str, str] = {}
    for i in range(n):
        cred = planted("instagram")
        r = http.post(
            f"/v1/tenants/{tenant}/lines",
            json={"type": "instagram", "name": f"ig{i}", "credential": cred},
            headers=auth,
        )
        assert r.status_code == 201, r.text
        tokens[r.json()["id"]] = cred["access_token"]
    runner = http.post("/v1/runners", json={"name": "r"}, headers=auth).json()
    granted = http.post(
        f"/v1/tenants/{tenant}/grants",
        json={"runner_id": runner["id"], "lines": ["*"]},
        headers=auth,
    )
    assert granted.status_code == 201, granted.text
    access = http.post(
        "/v1/runner/token",
        data={
            "grant_type": "client_credentials",
            "client_id": runner["client_id"],
            "client_secret": runner["client_secret"],
        },
    ).json()["access_token"]
    return auth, tenant, tokens, {"Authorization": f"Bearer {access}"}


def _db(pg_url: str) -> tuple[dict[str, int], int]:
    """(fencing per line, successful credential.refresh events)."""
    engine = make_engine(pg_url, pool_size=1)
    try:
        with Session(engine) as session:
            rows = session.execute(select(RefreshLease.line_id, RefreshLease.fencing)).all()
            fencing = dict(rows)
            done = session.execute(
                select(func.count())
                .select_from(AuditEventRow)
                .where(AuditEventRow.action == "credential.refresh")
                .where(AuditEventRow.outcome == "success")
            ).scalar_one()
            return {str(k): int(v) for k, v in fencing.items()}, int(done)
    finally:
        engine.dispose()


def test_forced_refreshes_at_both_processes_call_the_platform_once_per_line(
    tmp_path: Path, postgres_db_url: str
) -> None:
    with (
        platform_standin() as standin,
        two_servers(tmp_path, postgres_db_url, standin) as (
            a,
            b,
            admin,
        ),
    ):
        http_a = httpx.Client(base_url=a.url, timeout=60)
        http_b = httpx.Client(base_url=b.url, timeout=60)
        auth, tenant, tokens, runner = _setup(http_a, admin, LINES)
        standin.fail, standin.slow_seconds = "slow", 0.3  # each refresh is in flight a while
        stop, bad, fetched = threading.Event(), [], [0]

        def fetch_loop(http: httpx.Client) -> None:
            ids = list(tokens)
            i = 0
            while not stop.is_set():
                line_id = ids[i % len(ids)]
                i += 1
                r = http.get(f"/v1/tenants/{tenant}/lines/{line_id}/credential", headers=runner)
                token = r.json().get("credential", {}).get("access_token")
                if r.status_code != 200 or (
                    token != tokens[line_id] and token not in standin.issued
                ):
                    bad.append(f"{r.status_code} {line_id}")
                fetched[0] += 1

        def refresh_both(line_id: str) -> list[httpx.Response]:
            """The line's refresh fired at both processes at the same moment."""
            barrier = threading.Barrier(2)

            def one(http: httpx.Client) -> httpx.Response:
                barrier.wait(10)
                return http.post(f"/v1/tenants/{tenant}/lines/{line_id}/refresh", headers=auth)

            with ThreadPoolExecutor(2) as pair:
                return list(pair.map(one, (http_a, http_b)))

        fetchers = [threading.Thread(target=fetch_loop, args=(h,)) for h in (http_a, http_b)]
        for t in fetchers:
            t.start()
        try:
            # 6 lines at a time: 6 refreshes in flight per process, within the outbound
            # slots (LINEVAULT_CONNECTOR_MAX_CONCURRENT, 8).
            with ThreadPoolExecutor(6) as pool:
                answers = [r for pair in pool.map(refresh_both, tokens) for r in pair]
        finally:
            stop.set()
            for t in fetchers:
                t.join(30)
        assert [r.status_code for r in answers] == [200] * (2 * LINES), [
            r.text for r in answers if r.status_code != 200
        ][:3]
        assert {r.json()["version"] for r in answers} == {2}
        assert standin.calls["instagram.refresh"] == LINES
        assert standin.queries and not bad and fetched[0] > 0, bad[:5]
        fencing, done = _db(postgres_db_url)
        assert done == LINES and set(fencing) == set(tokens)
        for line_id in tokens:
            view = http_b.get(f"/v1/tenants/{tenant}/lines/{line_id}", headers=auth).json()
            assert view["version"] == 2
            got = http_a.get(
                f"/v1/tenants/{tenant}/lines/{line_id}/credential", headers=runner
            ).json()
            assert got["credential"]["access_token"] in standin.issued


def test_kill_9_between_the_platform_answer_and_the_commit(
    tmp_path: Path, postgres_db_url: str
) -> None:
    with (
        platform_standin() as standin,
        two_servers(tmp_path, postgres_db_url, standin) as (
            a,
            b,
            admin,
        ),
    ):
        http_a = httpx.Client(base_url=a.url, timeout=60)
        http_b = httpx.Client(base_url=b.url, timeout=60)
        auth, tenant, tokens, runner = _setup(http_a, admin, 1)
        (line_id,) = tokens
        path = f"/v1/tenants/{tenant}/lines/{line_id}/refresh"
        standin.hold_first_refresh = True
        doomed = threading.Thread(target=_post_quietly, args=(http_a, path, auth), daemon=True)
        doomed.start()
        assert standin.refresh_held.wait(30), "A never asked the platform"
        a.kill()  # the platform issued A's token; A never commits it
        standin.release_refresh.set()
        started = time.monotonic()
        r = http_b.post(path, headers=auth)  # waits for A's lease to lapse, then refreshes
        assert r.status_code == 200, r.text
        assert r.json()["version"] == 2
        assert time.monotonic() - started < 30
        assert standin.calls["instagram.refresh"] == 2  # A's (lost) and B's
        fencing, done = _db(postgres_db_url)
        assert fencing[line_id] == 2 and done == 1  # A's claim, B's claim; one commit
        got = http_b.get(f"/v1/tenants/{tenant}/lines/{line_id}/credential", headers=runner)
        assert got.json()["credential"]["access_token"] == standin.issued[1]


def _post_quietly(http: httpx.Client, path: str, auth: dict[str, str]) -> None:
    with contextlib.suppress(httpx.HTTPError):  # the server is killed under the request
        http.post(path, headers=auth)
