"""Fault injection against a real ``linevault serve`` process (issue 8, "Proving ground").

1. SIGKILL of the server process group during a KEK rotation's online rewrap, a burst of
   revocations, and audit group commits under load; then a restart on the same data dir
   and database. Nothing may be lost: every line is active and opens, or revoked with its
   envelope destroyed; the rotation finishes after the restart; the offline verifier
   accepts the chain; every request answered 2xx before the kill has its audit event.
2. The database going away and coming back under the same server process (PostgreSQL:
   a TCP proxy that is cut and restored; SQLite: another process holding the write lock).
3. A full SQLite volume (a small tmpfs as the data dir).

Requests carry their own ``X-Request-Id``, so each answer is matched to its event.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from tests.support.faults import (
    Served,
    assert_problem,
    audit_verify,
    events_by_request,
    runner_token,
    seed_tenant,
    serve,
    wait_for,
)
from tests.support.keys import open_all, open_line, uncached
from tests.support.server import Admin, init_data_dir
from vault.storage.engine import unit_of_work
from vault.storage.models import AuditEventRow, Kek, KeyRotation, Line

pytestmark = pytest.mark.slow

_ids = itertools.count()


def rid(kind: str) -> str:
    return f"req_fault_{kind}_{next(_ids)}_{random.getrandbits(32):08x}"


@pytest.fixture
def initialised(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> tuple[Path, Admin, str | None]:
    database_url = request.getfixturevalue("db_url") if backend == "postgresql" else None
    data_dir = tmp_path / "var"
    admin = init_data_dir(data_dir, database_url=database_url)
    return data_dir, admin, database_url


def fetch_all(
    served: Served, token: str, tenant_id: str, line_ids: list[str]
) -> dict[str, httpx.Response]:
    headers = {"Authorization": f"Bearer {token}"}

    def one(client: httpx.Client, line_id: str) -> tuple[str, httpx.Response]:
        url = f"{served.url}/v1/tenants/{tenant_id}/lines/{line_id}/credential"
        return line_id, client.get(url, headers=headers)

    with httpx.Client(timeout=30) as client, ThreadPoolExecutor(8) as pool:
        return dict(pool.map(lambda ln: one(client, ln), line_ids))


def assert_verified(served: Served) -> None:
    result = audit_verify(served.server)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["ok"] is True


class Fetcher(threading.Thread):
    """Fetches random lines until stopped; records what came back for each request id."""

    def __init__(self, served: Served, token: str, tenant_id: str, line_ids: list[str]) -> None:
        super().__init__(daemon=True)
        self.url = served.url
        self.token, self.tenant_id, self.line_ids = token, tenant_id, line_ids
        self.answers: dict[str, tuple[str, int, bytes]] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                line_id = random.choice(self.line_ids)
                request_id = rid("fetch")
                try:
                    resp = client.get(
                        f"{self.url}/v1/tenants/{self.tenant_id}/lines/{line_id}/credential",
                        headers={
                            "Authorization": f"Bearer {self.token}",
                            "X-Request-Id": request_id,
                        },
                    )
                except httpx.HTTPError:
                    continue  # the server is gone: this request was never answered
                self.answers[request_id] = (line_id, resp.status_code, resp.content)


# -- 1a. SIGKILL during a rotation's online rewrap -----------------------------------------


def _rotation(served: Served, tenant_id: str) -> KeyRotation | None:
    with unit_of_work(served.runtime.readonly_sessions) as session:
        row = session.execute(
            select(KeyRotation).where(KeyRotation.tenant_id == tenant_id)
        ).scalar_one_or_none()
        if row is not None:
            session.expunge(row)
        return row


def _kill_when_rewrapped_past(served: Served, tenant_id: str, floor: int) -> int:
    """SIGKILL the server as soon as the rewrap has gone past ``floor`` DEKs."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        row = _rotation(served, tenant_id)
        if row is not None and row.rewrapped > floor:
            served.server.kill()
            return row.rewrapped
        time.sleep(0.002)
    raise AssertionError("the rewrap did not progress")


def test_sigkill_during_rotation_rewrap(initialised: tuple[Path, Admin, str | None]) -> None:
    data_dir, admin, database_url = initialised
    count = 400
    env = {"LINEVAULT_REWRAP_BATCH_SIZE": "4"}
    with serve(data_dir, admin, database_url=database_url, env=env) as served:
        tenant_id, secrets = seed_tenant(served.runtime, count)
        lines = sorted(secrets)
        token = runner_token(served, tenant_id)
        fetcher = Fetcher(served, token, tenant_id, lines)
        fetcher.start()

        rotate_id = rid("rotate")
        resp = httpx.post(
            f"{served.url}/v1/tenants/{tenant_id}/keys/rotate",
            headers={**served.auth(), "X-Request-Id": rotate_id},
            timeout=30,
        )
        assert resp.status_code == 202, resp.text
        assert resp.json()["kek_version"] == 2

        # Kill twice mid-rewrap: once in the first run, once in the resumed one.
        _kill_when_rewrapped_past(served, tenant_id, 0)
        first = _rotation(served, tenant_id)
        assert first is not None and first.state == "running", "the kill missed the rewrap"
        assert first.rewrapped < count
        # Poll from the moment the process starts: the server resumes the rewrap in its
        # start-up, possibly before its health check first answers.
        served.server.start(wait=False)
        _kill_when_rewrapped_past(served, tenant_id, first.rewrapped + 4)
        second = _rotation(served, tenant_id)
        assert second is not None and second.state == "running", "the kill missed the resume"
        # In between, every credential opens under version 1 or 2 (nothing half-written).
        assert open_all(served.runtime.engine, uncached(served.runtime.provider), tenant_id) == (
            secrets
        )

        served.restart()  # the server resumes the rotation on its own
        wait_for(
            lambda: (r := _rotation(served, tenant_id)) is not None and r.state == "done",
            timeout=60,
            what="the resumed rotation to finish",
        )
        fetcher.stop.set()
        fetcher.join(15)

        runtime = served.runtime
        assert open_all(runtime.engine, uncached(runtime.provider), tenant_id) == secrets
        with unit_of_work(runtime.readonly_sessions) as session:
            versions = set(
                session.execute(select(Line.kek_version).where(Line.tenant_id == tenant_id))
                .scalars()
                .all()
            )
            keks = dict(
                session.execute(
                    select(Kek.version, Kek.state).where(Kek.tenant_id == tenant_id)
                ).all()
            )
        assert versions == {2}
        assert keks == {1: "destroyed", 2: "active"}

        fetched = fetch_all(served, token, tenant_id, random.sample(lines, 100))
        for line_id, got in fetched.items():
            assert got.status_code == 200, got.text
            assert json.dumps(got.json()["credential"], sort_keys=True, separators=(",", ":")) == (
                secrets[line_id].decode()
            )

        # Every answered request has its event; each 200 carried the right secret.
        answered = dict(fetcher.answers)
        assert sum(1 for _, status, _ in answered.values() if status == 200) > 0
        events = events_by_request(runtime, action="credential.fetch", request_ids=answered)
        for request_id, (line_id, status, body) in answered.items():
            if status == 200:
                assert json.loads(body)["credential"] == json.loads(secrets[line_id])
                assert events.get(request_id) == [("success", line_id)], request_id
            else:
                assert status == 503, body  # only the audit may refuse; never a wrong secret
        rotate_events = events_by_request(runtime, action="key.rotate", request_ids=[rotate_id])
        assert rotate_events[rotate_id][0][0] == "success"
        with unit_of_work(runtime.readonly_sessions) as session:
            done = session.execute(
                select(func.count())
                .select_from(AuditEventRow)
                .where(
                    AuditEventRow.action == "key.rewrap_done", AuditEventRow.tenant_id == tenant_id
                )
            ).scalar_one()
        assert done == 1
        assert_verified(served)


# -- 1b. SIGKILL during a burst of revocations ---------------------------------------------


def test_sigkill_during_revocation_burst(initialised: tuple[Path, Admin, str | None]) -> None:
    data_dir, admin, database_url = initialised
    with serve(data_dir, admin, database_url=database_url) as served:
        tenant_id, secrets = seed_tenant(served.runtime, 100)
        lines = sorted(secrets)
        token = runner_token(served, tenant_id)
        answers: dict[str, tuple[str, int]] = {}  # request id -> (line, status)
        killed = threading.Event()
        lock = threading.Lock()

        def revoke(line_id: str) -> None:
            if killed.is_set():
                return
            request_id = rid("revoke")
            try:
                resp = httpx.post(
                    f"{served.url}/v1/tenants/{tenant_id}/lines/{line_id}/revoke",
                    headers={**served.auth(), "X-Request-Id": request_id},
                    json={"reason": "fault test"},
                    timeout=30,
                )
            except httpx.HTTPError:
                return
            with lock:
                answers[request_id] = (line_id, resp.status_code)
                if len(answers) >= 30 and not killed.is_set():
                    killed.set()
                    served.server.kill()  # ~16 more revocations are in flight

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(revoke, lines))
        assert killed.is_set()
        served.restart()

        runtime = served.runtime
        with unit_of_work(runtime.readonly_sessions) as session:
            rows = session.execute(
                select(
                    Line.id,
                    Line.status,
                    Line.wrapped_dek,
                    Line.ciphertext,
                    Line.kek_version,
                    Line.revoked_at,
                ).where(Line.tenant_id == tenant_id)
            ).all()
        revoked = {r.id for r in rows if r.status == "revoked"}
        for r in rows:
            if r.status == "revoked":  # deliberately destroyed, all of it
                assert (r.wrapped_dek, r.ciphertext, r.kek_version) == (None, None, None), r.id
                assert r.revoked_at is not None
            else:
                assert r.status == "active" and r.wrapped_dek and r.ciphertext, r.id
        active = set(lines) - revoked
        keyring = uncached(runtime.provider)
        for line_id in active:  # usable: opens with the key ring, no cache involved
            assert open_line(runtime.engine, keyring, line_id) == secrets[line_id]
        ok = {ln for ln, status in answers.values() if status == 200}
        assert all(status == 200 for _, status in answers.values()), answers
        assert ok <= revoked  # every acknowledged revocation stuck
        assert len(revoked) < len(lines)  # the kill landed mid-burst

        # State change and event commit together: one success event per revoked line.
        events = events_by_request(runtime, action="credential.revoke")
        by_line: dict[str, int] = {}
        for outcomes in events.values():
            for outcome, resource in outcomes:
                if outcome == "success" and resource is not None:
                    by_line[resource] = by_line.get(resource, 0) + 1
        assert by_line == dict.fromkeys(revoked, 1)
        for request_id, (line_id, _) in answers.items():
            assert events[request_id] == [("success", line_id)]

        # Over HTTP: every active line serves its secret, every revoked one is 410.
        sample = random.sample(sorted(active), min(60, len(active))) + sorted(revoked)
        for line_id, got in fetch_all(served, token, tenant_id, sample).items():
            if line_id in revoked:
                assert got.status_code == 410, got.text
            else:
                assert got.status_code == 200, got.text
                assert got.json()["credential"] == json.loads(secrets[line_id])
        # The restarted server takes revocations again.
        last = sorted(active)[0]
        resp = httpx.post(
            f"{served.url}/v1/tenants/{tenant_id}/lines/{last}/revoke",
            headers=served.auth(),
            json={},
            timeout=30,
        )
        assert resp.status_code == 200 and resp.json()["status"] == "revoked", resp.text
        assert_verified(served)


# -- 1c. SIGKILL while the audit writer group-commits under load ---------------------------


async def _load_until_kill(
    served: Served, token: str, tenant_id: str, lines: list[str], *, kill_after: int
) -> dict[str, tuple[str, int, str | None]]:
    """Concurrent audited requests (served fetches, denied fetches, audit reads) until
    ``kill_after`` answers have arrived; then SIGKILL. -> {request id: (kind, status, line)}"""
    from vault.ids import new_id

    answers: dict[str, tuple[str, int, str | None]] = {}
    done = asyncio.Event()
    runner = {"Authorization": f"Bearer {token}"}

    async def worker(client: httpx.AsyncClient) -> None:
        while not done.is_set():
            pick = random.random()
            request_id = rid("load")
            if pick < 0.7:
                kind, line_id = "fetch", random.choice(lines)
            elif pick < 0.9:
                kind, line_id = "denied", new_id("ln")  # well-formed, not in the tenant
            else:
                kind, line_id = "read", None
            if line_id is None:
                url, headers = "/v1/audit/events?limit=1", served.auth()
            else:
                url = f"/v1/tenants/{tenant_id}/lines/{line_id}/credential"
                headers = runner
            try:
                resp = await client.get(url, headers={**headers, "X-Request-Id": request_id})
            except httpx.HTTPError:
                return
            answers[request_id] = (kind, resp.status_code, line_id)
            if len(answers) >= kill_after and not done.is_set():
                done.set()
                served.server.kill()

    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=served.url, timeout=30, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(64)))
    return answers


def test_sigkill_during_audit_group_commit(initialised: tuple[Path, Admin, str | None]) -> None:
    data_dir, admin, database_url = initialised
    with serve(data_dir, admin, database_url=database_url) as served:
        tenant_id, secrets = seed_tenant(served.runtime, 30)
        lines = sorted(secrets)
        token = runner_token(served, tenant_id)
        answers = asyncio.run(_load_until_kill(served, token, tenant_id, lines, kill_after=300))
        served.restart()

        expected = {"fetch": (200, "success"), "denied": (404, "denied"), "read": (200, "success")}
        fetches = events_by_request(served.runtime, action="credential.fetch", request_ids=answers)
        reads = events_by_request(served.runtime, action="audit.read", request_ids=answers)
        for request_id, (kind, status, line_id) in answers.items():
            want_status, outcome = expected[kind]
            assert status == want_status, (kind, status)
            got = (reads if kind == "read" else fetches).get(request_id)
            assert got is not None and len(got) == 1, f"no event for an answered {kind}"
            assert got[0][0] == outcome
            if line_id is not None:
                assert got[0][1] == line_id
        # The restarted process writes on the same chain.
        got = fetch_all(served, token, tenant_id, lines[:5])
        assert all(r.status_code == 200 for r in got.values())
        assert_verified(served)


# -- 2. The database goes away and comes back (same server process) ------------------------


def _secrets_of(served: Served, token: str, secrets: dict[str, bytes]) -> list[str]:
    values = [json.loads(v)["bot_token"] for v in secrets.values()]
    return [*values, token, served.session_token, served.admin.password]


def _assert_recovered(
    served: Served, token: str, tenant_id: str, secrets: dict[str, bytes]
) -> None:
    """Health is 200 again, and from then on every request succeeds (no stale connection
    left in any pool fails a request after the database is back)."""
    wait_for(
        lambda: httpx.get(f"{served.url}/v1/sys/health", timeout=10).status_code == 200,
        timeout=30,
        interval=0.2,
        what="health to recover",
    )
    lines = sorted(secrets)
    for n in range(20):
        line_id = lines[n % len(lines)]
        got = httpx.get(
            f"{served.url}/v1/tenants/{tenant_id}/lines/{line_id}/credential",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert got.status_code == 200, (n, got.text)
        assert got.json()["credential"] == json.loads(secrets[line_id])
    resp = httpx.get(f"{served.url}/v1/tenants", headers=served.auth(), timeout=30)
    assert resp.status_code == 200, resp.text
    resp = httpx.post(
        f"{served.url}/v1/tenants/{tenant_id}/lines/{lines[0]}/revoke",
        headers=served.auth(),
        json={},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    assert_verified(served)


def _warm(served: Served, token: str, tenant_id: str, lines: list[str]) -> None:
    """Fill every pool (API, fetch reader, audit writer) with connections to go stale."""
    got = fetch_all(served, token, tenant_id, lines * 4)
    assert all(r.status_code == 200 for r in got.values())
    assert httpx.get(f"{served.url}/v1/tenants", headers=served.auth()).status_code == 200


def test_postgres_connection_cut_and_restored(postgres_db_url: str, tmp_path: Path) -> None:
    db_url = postgres_db_url
    from sqlalchemy.engine import make_url

    from tests.support.tcpproxy import TcpProxy

    real = make_url(db_url)
    proxy = TcpProxy((real.host or "127.0.0.1", real.port or 5432)).start()
    proxied = real.set(port=proxy.port).render_as_string(hide_password=False)
    data_dir = tmp_path / "var"
    admin = init_data_dir(data_dir, database_url=db_url)
    try:
        with serve(data_dir, admin, database_url=proxied, runtime_url=db_url) as served:
            tenant_id, secrets = seed_tenant(served.runtime, 8)
            token = runner_token(served, tenant_id)
            line = sorted(secrets)[0]
            _warm(served, token, tenant_id, sorted(secrets))
            assert proxy.open_connections > 0

            proxy.cut()
            hidden = _secrets_of(served, token, secrets)
            started = time.monotonic()
            health = httpx.get(f"{served.url}/v1/sys/health", timeout=30)
            assert health.status_code == 503
            assert health.json()["database"] == "unavailable"
            assert "database" in health.json()["failing"]
            for _ in range(3):
                got = httpx.get(
                    f"{served.url}/v1/tenants/{tenant_id}/lines/{line}/credential",
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=30,
                )
                assert got.status_code == 503
                assert_problem(got, {"unavailable", "audit_unavailable"}, secrets=hidden)
            got = httpx.get(f"{served.url}/v1/tenants", headers=served.auth(), timeout=30)
            assert got.status_code == 503
            assert_problem(got, {"unavailable"}, secrets=hidden)
            got = httpx.post(
                f"{served.url}/v1/auth/login",
                json={"email": admin.email, "password": admin.password},
                timeout=30,
            )
            assert got.status_code == 503
            assert_problem(got, {"unavailable", "audit_unavailable"}, secrets=hidden)
            assert time.monotonic() - started < 20  # refused at once, not hung
            for secret in hidden:
                assert secret not in served.server.logs()

            proxy.restore()
            _assert_recovered(served, token, tenant_id, secrets)
    finally:
        proxy.close()


def test_sqlite_write_lock_held_by_another_process(tmp_path: Path) -> None:
    """SQLite's "database away": another process (a backup script, an operator's shell)
    holds the write lock. Reads go on; audited requests wait, then get 503 with no
    secret; health names ``audit`` once the writer is stalled; release: recovery."""
    import sqlite3

    data_dir = tmp_path / "var"
    admin = init_data_dir(data_dir)
    with serve(data_dir, admin, database_url=None) as served:
        tenant_id, secrets = seed_tenant(served.runtime, 8)
        token = runner_token(served, tenant_id)
        line = sorted(secrets)[0]
        _warm(served, token, tenant_id, sorted(secrets))
        hidden = _secrets_of(served, token, secrets)

        holder = sqlite3.connect(data_dir / "linevault.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with ThreadPoolExecutor(1) as pool:
                pending = pool.submit(
                    httpx.get,
                    f"{served.url}/v1/tenants/{tenant_id}/lines/{line}/credential",
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=60,
                )
                wait_for(
                    lambda: httpx.get(f"{served.url}/v1/sys/health").status_code == 503,
                    timeout=15,
                    interval=0.2,
                    what="health to report the stalled audit writer",
                )
                health = httpx.get(f"{served.url}/v1/sys/health").json()
                assert health["failing"] == ["audit"], health
                got = pending.result(timeout=60)
            assert got.status_code == 503
            assert_problem(got, {"audit_unavailable"}, secrets=hidden)
        finally:
            holder.rollback()
            holder.close()
        _assert_recovered(served, token, tenant_id, secrets)


# -- 3. The SQLite volume fills up ---------------------------------------------------------


def test_sqlite_disk_full_then_freed(tmp_path: Path) -> None:
    import sqlite3

    from tests.support.faults import fill_disk, small_tmpfs

    with small_tmpfs(tmp_path / "var", size_mb=24) as data_dir:
        admin = init_data_dir(data_dir)
        with serve(data_dir, admin, database_url=None) as served:
            tenant_id, secrets = seed_tenant(served.runtime, 40)
            lines = sorted(secrets)
            token = runner_token(served, tenant_id)
            _warm(served, token, tenant_id, lines[:4])
            hidden = _secrets_of(served, token, secrets)
            filler = data_dir / "filler"
            fill_disk(filler)

            runner = {"Authorization": f"Bearer {token}"}
            fetched: dict[str, tuple[str, int]] = {}
            revoked: dict[str, tuple[str, int]] = {}
            refused = 0
            with httpx.Client(base_url=served.url, timeout=30) as client:
                for n in range(400):
                    line_id = lines[n % len(lines)]
                    request_id = rid("full")
                    if n % 10 == 9 and len(revoked) < 10:
                        resp = client.post(
                            f"/v1/tenants/{tenant_id}/lines/{line_id}/revoke",
                            headers={**served.auth(), "X-Request-Id": request_id},
                            json={},
                        )
                        revoked[request_id] = (line_id, resp.status_code)
                    else:
                        resp = client.get(
                            f"/v1/tenants/{tenant_id}/lines/{line_id}/credential",
                            headers={**runner, "X-Request-Id": request_id},
                        )
                        fetched[request_id] = (line_id, resp.status_code)
                        if resp.status_code == 200:
                            assert resp.json()["credential"] == json.loads(secrets[line_id])
                        elif resp.status_code == 410:
                            assert any(ln == line_id for ln, s in revoked.values() if s == 200)
                    if resp.status_code >= 500:
                        assert resp.status_code == 503, resp.text
                        assert_problem(resp, {"unavailable", "audit_unavailable"}, secrets=hidden)
                        refused += 1
                        if refused >= 20:
                            break
                assert refused >= 20, "the full disk never refused a write"
                health = client.get("/v1/sys/health")
                assert health.status_code == 503, health.text
                assert set(health.json()["failing"]) & {"database", "audit"}

                filler.unlink()  # space is back: the same process recovers
                wait_for(
                    lambda: client.get("/v1/sys/health").status_code == 200,
                    timeout=30,
                    interval=0.2,
                    what="health after freeing space",
                )
                for line_id in lines[:10]:
                    resp = client.get(
                        f"/v1/tenants/{tenant_id}/lines/{line_id}/credential", headers=runner
                    )
                    assert resp.status_code in (200, 410), resp.text

            # No corruption: the file checks out, the chain verifies, nothing half-revoked.
            with sqlite3.connect(data_dir / "linevault.db") as conn:
                assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert_verified(served)
            keyring = uncached(served.runtime.provider)
            with unit_of_work(served.runtime.readonly_sessions) as session:
                rows = {
                    r.id: r
                    for r in session.execute(
                        select(Line.id, Line.status, Line.wrapped_dek, Line.ciphertext).where(
                            Line.tenant_id == tenant_id
                        )
                    )
                }
            for line_id, r in rows.items():
                if r.status == "revoked":
                    assert (r.wrapped_dek, r.ciphertext) == (None, None)
                else:
                    assert open_line(served.runtime.engine, keyring, line_id) == secrets[line_id]
            for line_id, status in revoked.values():
                if status == 200:
                    assert rows[line_id].status == "revoked"
            events = events_by_request(served.runtime, request_ids=[*fetched, *revoked])
            for request_id, (line_id, status) in [*fetched.items(), *revoked.items()]:
                if status in (200, 410):
                    assert events.get(request_id), f"an answered request has no event ({status})"
                    assert events[request_id][0][1] == line_id
