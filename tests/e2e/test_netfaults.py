"""Network faults between a server process and PostgreSQL (issue 18).

The test makes a network namespace joined to the host by a veth pair and runs a fresh
PostgreSQL cluster inside it, listening only on the namespace's address, so every packet
between ``linevault serve`` and its database crosses that link. ``tc netem`` on both ends
then injects the faults:

- blackhole (``loss 100%``: packets dropped, no RST): fetches and other requests get 503
  (``unavailable`` / ``audit_unavailable``) within the configured timeouts, never hang;
  the path returns and the same process (same PID) serves again;
- 100 ms added latency (one way): answers stay correct; the throughput is printed
  beside the same run's throughput without delay (docs/operations.md quotes both).

Where the machine cannot make namespaces the test says why (skip), and fails under
``LINEVAULT_TEST_REQUIRE_ALL=1`` (tests/support/pgcluster.py).
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.drill import linevault
from tests.support.faults import (
    Served,
    assert_problem,
    events_by_request,
    runner_token,
    seed_tenant,
    serve,
    wait_for,
)
from tests.support.pgcluster import NetNs, PgCluster, netns, pg_root
from tests.support.server import ServerProcess, free_port, init_data_dir
from tests.support.tcpproxy import DelayProxy

pytestmark = pytest.mark.slow

CONNECT, STATEMENT, POOL = 2, 3.0, 2.0
ENV = {
    "LINEVAULT_DB_CONNECT_TIMEOUT_SECONDS": str(CONNECT),
    "LINEVAULT_DB_STATEMENT_TIMEOUT_SECONDS": str(STATEMENT),
    "LINEVAULT_DB_POOL_TIMEOUT_SECONDS": str(POOL),
}
# The longest a request may take to fail: a dead socket found by tcp_user_timeout
# (max(statement, connect, 5 s)), a new connection's connect timeout, and a statement.
BOUND = max(STATEMENT, CONNECT, 5.0) + CONNECT + STATEMENT + 3.0


def _fetch(served: Served, token: str, tenant_id: str, line: str, rid: str) -> httpx.Response:
    return httpx.get(
        f"{served.url}/v1/tenants/{tenant_id}/lines/{line}/credential",
        headers={"Authorization": f"Bearer {token}", "X-Request-Id": rid},
        timeout=120,
    )


def _blackhole(
    served: Served, ns: NetNs, token: str, tenant_id: str, secrets: dict[str, bytes]
) -> None:
    lines = sorted(secrets)
    hidden = [v.decode() for v in secrets.values()]
    ns.blackhole()
    times: list[float] = []
    try:
        for i, line in enumerate(lines[:3]):
            started = time.monotonic()
            got = _fetch(served, token, tenant_id, line, f"req_bh_{i}")
            took = time.monotonic() - started
            assert got.status_code == 503, got.text
            assert_problem(got, {"unavailable", "audit_unavailable"}, secrets=hidden)
            assert took < BOUND, f"a fetch took {took:.1f}s to fail (bound {BOUND}s)"
            times.append(took)
        started = time.monotonic()
        got = httpx.get(f"{served.url}/v1/tenants", headers=served.auth(), timeout=120)
        took = time.monotonic() - started
        assert got.status_code == 503, got.text
        assert_problem(got, {"unavailable"}, secrets=hidden)
        assert took < BOUND, f"a listing took {took:.1f}s to fail (bound {BOUND}s)"
        times.append(took)
        shown = ", ".join(f"{t:.2f}s" for t in times)
        print(f"\nblackhole: 3 fetches and a listing got 503 in {shown} (bound {BOUND:.0f}s)")
    finally:
        ns.clear()
    restored = time.monotonic()
    wait_for(
        lambda: _fetch(served, token, tenant_id, lines[0], "req_bh_back").status_code == 200,
        timeout=60,
        interval=0.2,
        what="the same process to serve again",
    )
    print(f"blackhole: serving again {time.monotonic() - restored:.2f}s after the path returned")


def _throughput(
    base_url: str, token: str, tenant_id: str, secrets: dict[str, bytes], seconds: float
) -> tuple[float, list[str]]:
    lines = sorted(secrets)
    stop = threading.Event()
    ok: list[str] = []
    bad: list[str] = []

    def worker(w: int) -> None:
        n = 0
        with httpx.Client(timeout=60) as client:
            while not stop.is_set():
                line = lines[(w + n) % len(lines)]
                rid = f"req_lat_{w}_{n}_{time.monotonic_ns()}"
                n += 1
                got = client.get(
                    f"{base_url}/v1/tenants/{tenant_id}/lines/{line}/credential",
                    headers={"Authorization": f"Bearer {token}", "X-Request-Id": rid},
                )
                body = json.dumps(
                    got.json().get("credential"), sort_keys=True, separators=(",", ":")
                )
                (ok if got.status_code == 200 and body == secrets[line].decode() else bad).append(
                    rid
                )

    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(worker, w) for w in range(16)]
        time.sleep(seconds)
        stop.set()
        for f in futures:
            f.result()
    assert not bad, f"{len(bad)} wrong or failed answers"
    return len(ok) / seconds, ok


def test_blackhole_and_latency_between_server_and_postgres(tmp_path: Path) -> None:
    with netns() as ns, pg_root() as root:
        db = PgCluster(root, "db", 5432, listen=ns.inner, netns=ns.name)
        db.init_primary(synchronous=False).start()
        try:
            db.sql("CREATE DATABASE linevault")
            url = f"postgresql+psycopg://postgres@{ns.inner}:5432/linevault"
            data_dir = tmp_path / "var"
            admin = init_data_dir(data_dir, database_url=url)
            with serve(data_dir, admin, database_url=url, env=ENV) as served:
                tenant_id, secrets = seed_tenant(served.runtime, 8)
                token = runner_token(served, tenant_id)
                pid = served.server.process.pid  # type: ignore[union-attr]
                _throughput(served.url, token, tenant_id, secrets, 2)  # connections, caches
                base, _ = _throughput(served.url, token, tenant_id, secrets, 4)
                _blackhole(served, ns, token, tenant_id, secrets)
                assert served.server.process.pid == pid  # type: ignore[union-attr]
                assert served.server.process.poll() is None  # type: ignore[union-attr]
                ok = _latency(served, ns, url, token, tenant_id, secrets, base)
                found = events_by_request(served.runtime, action="credential.fetch", request_ids=ok)
                assert all(any(o == "success" for o, _ in found.get(r, [])) for r in ok)
                result = linevault(
                    ["audit", "verify", "--json"], data_dir=data_dir, database_url=url
                )
                assert result.returncode == 0, result.stdout + result.stderr
        finally:
            db.stop()


def _latency(
    served: Served,
    ns: NetNs,
    url: str,
    token: str,
    tenant_id: str,
    secrets: dict[str, bytes],
    base: float,
) -> list[str]:
    """100 ms more on the way to the database: ``tc netem`` on the link where the kernel
    has it, else a second server process whose database URL goes through a forwarder
    that holds every byte to PostgreSQL 100 ms."""
    if ns.delay(100):
        how = "tc netem delay 100ms on the veth link"
        try:
            _throughput(served.url, token, tenant_id, secrets, 2)  # connections, caches
            slow, ok = _throughput(served.url, token, tenant_id, secrets, 8)
            listing = httpx.get(f"{served.url}/v1/tenants", headers=served.auth(), timeout=60)
            assert listing.status_code == 200, listing.text
        finally:
            ns.clear()
    else:
        how = "no netem in this kernel: a forwarder holding each byte to PostgreSQL 100 ms"
        proxy = DelayProxy((ns.inner, 5432), delay=0.1)
        delayed = ServerProcess(
            served.server.data_dir,
            url.replace(f"{ns.inner}:5432", f"127.0.0.1:{proxy.port}"),
            free_port(),
            dict(ENV),
        )
        try:
            delayed.start()
            _throughput(delayed.url, token, tenant_id, secrets, 2)  # connections, caches
            slow, ok = _throughput(delayed.url, token, tenant_id, secrets, 8)
        finally:
            delayed.stop()
            proxy.close()
    print(f"latency ({how}): {base:.0f} fetches/s without, {slow:.0f}/s with 100 ms")
    return ok
