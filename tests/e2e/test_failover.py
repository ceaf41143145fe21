"""PostgreSQL failover under fetch load (issue 18).

A primary and a synchronous standby (two clusters in temporary folders, ``initdb`` and
``pg_basebackup -R``); two ``linevault serve`` processes on one libpq multi-host URL
(``target_session_attrs=read-write``) answer runners' fetches. The primary is killed with
SIGKILL and the standby promoted. Then:

- every fetch answered 200 before the kill (and, in fact, every fetch answered 200 at
  all) has its audit event on the new primary;
- every revocation acknowledged before the kill holds (410, envelope destroyed);
- ``linevault audit verify`` accepts the chain;
- both server processes (the same PIDs) answer 200 again; the time to recover is printed
  (docs/operations.md quotes it).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from tests.support.drill import linevault
from tests.support.faults import Served, events_by_request, runner_token, seed_tenant, serve
from tests.support.pgcluster import PgCluster, pg_root, wait_sync_standby
from tests.support.server import ServerProcess, free_port, init_data_dir
from vault.storage.engine import unit_of_work
from vault.storage.models import Line

pytestmark = pytest.mark.slow

# Fail fast while the primary is gone (docs/operations.md, "Timeouts").
FAST = {
    "LINEVAULT_DB_CONNECT_TIMEOUT_SECONDS": "2",
    "LINEVAULT_DB_STATEMENT_TIMEOUT_SECONDS": "5",
    "LINEVAULT_DB_POOL_TIMEOUT_SECONDS": "3",
}


@dataclass
class Load:
    """Fetch threads per server; answers as (server, request id, status, start, end)."""

    urls: list[str]
    token: str
    tenant_id: str
    lines: list[str]
    answers: list[tuple[int, str, int, float, float]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def _run(self, server: int, worker: int) -> None:
        n = 0
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                line = self.lines[n % len(self.lines)]
                rid = f"req_fo_{server}_{worker}_{n}"
                n += 1
                url = f"{self.urls[server]}/v1/tenants/{self.tenant_id}/lines/{line}/credential"
                started = time.monotonic()
                try:
                    status = client.get(
                        url, headers={"Authorization": f"Bearer {self.token}", "X-Request-Id": rid}
                    ).status_code
                except httpx.HTTPError:
                    status = 0
                self.answers.append((server, rid, status, started, time.monotonic()))
                if status != 200:
                    time.sleep(0.05)

    @contextmanager
    def running(self, per_server: int = 3) -> Iterator[Load]:
        threads = [
            threading.Thread(target=self._run, args=(s, w), daemon=True)
            for s in range(len(self.urls))
            for w in range(per_server)
        ]
        for t in threads:
            t.start()
        try:
            yield self
        finally:
            self.stop.set()
            for t in threads:
                t.join(60)

    def first_ok_after(self, server: int, moment: float) -> float | None:
        """When the first 200 of a request started after ``moment`` was received."""
        ends = [
            e for srv, _, st, s, e in self.answers if srv == server and st == 200 and s > moment
        ]
        return min(ends) if ends else None


def _revoke(served: Served, tenant_id: str, lines: list[str]) -> None:
    with httpx.Client(base_url=served.url, headers=served.auth(), timeout=30) as client:
        for line_id in lines:
            resp = client.post(f"/v1/tenants/{tenant_id}/lines/{line_id}/revoke", json={})
            assert resp.status_code == 200, resp.text


def _wait_recovered(load: Load, servers: int, killed: float, timeout: float = 90) -> list[float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        firsts = [load.first_ok_after(s, killed) for s in range(servers)]
        if all(f is not None for f in firsts):
            return [f - killed for f in firsts if f is not None]
        time.sleep(0.2)
    raise AssertionError("a server process did not serve again after the failover")


def _check_after(served: Served, tenant_id: str, revoked: list[str], ok: list[str]) -> None:
    found = events_by_request(served.runtime, action="credential.fetch", request_ids=ok)
    missing = [rid for rid in ok if not any(o == "success" for o, _ in found.get(rid, []))]
    assert not missing, f"{len(missing)} of {len(ok)} fetches answered 200 lost their event"
    with unit_of_work(served.runtime.readonly_sessions) as session:
        rows = session.execute(
            select(Line.status, Line.wrapped_dek, Line.ciphertext).where(Line.id.in_(revoked))
        ).all()
    assert [tuple(r) for r in rows] == [("revoked", None, None)] * len(revoked)


def test_failover_to_the_synchronous_standby(tmp_path: Path) -> None:
    with pg_root() as root:
        primary = PgCluster(root, "primary", free_port()).init_primary().start()
        standby = PgCluster(root, "standby", free_port()).init_standby(primary).start()
        try:
            wait_sync_standby(primary)
            primary.sql("CREATE DATABASE linevault")
            url = (
                f"postgresql+psycopg://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}"
                "/linevault?target_session_attrs=read-write"
            )
            _drill(tmp_path, url, primary, standby)
        finally:
            standby.stop()
            primary.stop()


def _drill(tmp_path: Path, url: str, primary: PgCluster, standby: PgCluster) -> None:
    data_dir = tmp_path / "var"
    admin = init_data_dir(data_dir, database_url=url)
    with serve(data_dir, admin, database_url=url, env=FAST) as served:
        second = ServerProcess(data_dir, url, free_port(), dict(FAST))
        second.start()
        try:
            tenant_id, secrets = seed_tenant(served.runtime, 12)
            lines = sorted(secrets)
            token = runner_token(served, tenant_id)
            pids = [served.server.process.pid, second.process.pid]  # type: ignore[union-attr]
            load = Load([served.url, second.url], token, tenant_id, lines[4:])
            with load.running():
                time.sleep(2)
                _revoke(served, tenant_id, lines[:4])  # acknowledged under load
                time.sleep(1)
                primary.kill9()
                killed = time.monotonic()  # every process of the primary is gone
                standby.promote()
                promoted = time.monotonic() - killed
                recovered = _wait_recovered(load, 2, killed)
                time.sleep(1)
            ok_before = [rid for _, rid, st, _, end in load.answers if st == 200 and end < killed]
            assert len(ok_before) > 50
            _report(load, killed, promoted, recovered)
            # Synchronous replication: no 200 may lose its event, before the kill or after.
            ok_all = [rid for _, rid, st, _, _ in load.answers if st == 200]
            _check_after(served, tenant_id, lines[:4], ok_all)
            for base in (served.url, second.url):
                got = httpx.get(
                    f"{base}/v1/tenants/{tenant_id}/lines/{lines[0]}/credential",
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=30,
                )
                assert got.status_code == 410, got.text
            assert [served.server.process.pid, second.process.pid] == pids  # type: ignore[union-attr]
            assert served.server.process.poll() is None and second.process.poll() is None  # type: ignore[union-attr]
            result = linevault(["audit", "verify", "--json"], data_dir=data_dir, database_url=url)
            assert result.returncode == 0, result.stdout + result.stderr
            assert json.loads(result.stdout)["ok"] is True
        finally:
            second.stop()


def _report(load: Load, killed: float, promoted: float, recovered: list[float]) -> None:
    during = [a for a in load.answers if a[3] >= killed]
    failed = sum(1 for a in during if a[2] != 200)
    print(
        f"\nfailover: promote took {promoted:.2f}s; first 200 answered after the kill: "
        + ", ".join(f"{r:.2f}s" for r in recovered)
        + f"; {failed} non-200 answers during recovery; "
        + f"{sum(1 for a in load.answers if a[2] == 200)} fetches answered 200 in all"
    )
