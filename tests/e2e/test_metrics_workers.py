"""``/metrics`` of ``linevault serve --workers 2`` counts both worker processes.

Requests go out on fresh connections until the multiprocess files show that each of
the two workers counted some; then every scrape, whichever worker answers it, must
report all of them (a per-process registry would report only its own share). The
domain's metrics are there too: fetch latency by API, decision-cache hits, audit batch
sizes and the outbound platform-call counter (present before any connector calls out).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict

from tests.support.runners import grant, make_line, make_runner, make_tenant
from tests.support.server import ServerProcess, running_server
from vault.runtime import Runtime, open_runtime
from vault.settings import Settings

pytestmark = pytest.mark.slow

HEALTH = "/v1/sys/health"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ServerProcess, Runtime]]:
    with running_server(tmp_path, workers=2) as (server, _admin):
        settings = Settings(data_dir=server.data_dir, log_level="warning")  # type: ignore[call-arg]
        runtime = open_runtime(settings)
        try:
            yield server, runtime
        finally:
            runtime.close()


def _health_counts_by_pid(metrics_dir: Path) -> dict[str, float]:
    """Health requests each worker wrote to its own multiprocess file."""
    counts: dict[str, float] = {}
    for path in metrics_dir.glob("counter_*.db"):
        pid = path.stem.removeprefix("counter_")
        for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):
            _metric, name, labels, *_ = json.loads(key)
            if name == "linevault_http_requests_total" and labels.get("route") == HEALTH:
                counts[pid] = counts.get(pid, 0.0) + value
    return counts


def _value(text: str, series: str) -> float:
    found = re.search(rf"^{re.escape(series)} ([0-9.e+]+)$", text, re.MULTILINE)
    assert found, f"{series} is not on /metrics"
    return float(found.group(1))


def test_metrics_of_two_workers(served: tuple[ServerProcess, Runtime]) -> None:
    """One server for both checks (starting two workers is the slow part)."""
    _check_sums_both_workers(served[0])
    _check_domain_metrics(*served)


def _check_sums_both_workers(server: ServerProcess) -> None:
    metrics_dir = server.data_dir / "metrics"
    # The start-up's health polls are counted too.
    sent = int(sum(_health_counts_by_pid(metrics_dir).values()))
    for _ in range(40):
        for _ in range(25):  # a new connection each: the workers take turns accepting
            assert httpx.get(server.url + HEALTH, timeout=10).status_code == 200
            sent += 1
        by_pid = _health_counts_by_pid(metrics_dir)
        if len([n for n in by_pid.values() if n > 0]) >= 2:
            break
    assert len([n for n in by_pid.values() if n > 0]) == 2, by_pid
    series = f'linevault_http_requests_total{{method="GET",route="{HEALTH}",status="200"}}'
    for _ in range(8):  # whichever worker answers the scrape
        text = httpx.get(server.url + "/metrics", timeout=10).text
        assert _value(text, series) == sent


def _check_domain_metrics(server: ServerProcess, runtime: Runtime) -> None:
    tenant = make_tenant(runtime)
    line = make_line(runtime, tenant)
    runner_id, client_id, secret = make_runner(runtime)
    grant(runtime, tenant, runner_id, [line])
    with httpx.Client(base_url=server.url, timeout=10) as http:
        token = http.post(
            "/v1/runner/token",
            data={"grant_type": "client_credentials", "client_id": client_id,
                  "client_secret": secret},
        ).json()["access_token"]  # fmt: skip
        for _ in range(6):
            native = http.get(
                f"/v1/tenants/{tenant}/lines/{line}/credential",
                headers={"Authorization": f"Bearer {token}"},
            )
            kv = http.get(f"/v1/lines/data/{tenant}/{line}", headers={"X-Vault-Token": token})
            assert (native.status_code, kv.status_code) == (200, 200)
        text = http.get("/metrics").text
    native_count = 'linevault_fetch_duration_seconds_count{api="native",outcome="success"}'
    kv_count = 'linevault_fetch_duration_seconds_count{api="vault_kv",outcome="success"}'
    assert _value(text, native_count) == _value(text, kv_count) == 6
    hits = _value(text, 'linevault_fetch_decisions_total{result="hit"}')
    misses = _value(text, 'linevault_fetch_decisions_total{result="miss"}')
    assert hits + misses == 12 and hits > 0 and misses >= 1
    assert _value(text, "linevault_audit_batch_events_count") >= 12
    assert _value(text, "linevault_audit_batch_events_sum") >= 12
    for platform in ("telegram", "instagram", "messenger"):
        series = f'linevault_platform_requests_total{{outcome="ok",platform="{platform}"}}'
        assert _value(text, series) == 0
