"""Audit trail: durable events/s from concurrent submitters, and verification speed.

In-process, because the question is the chain itself:

- **emit**: ``--emit-threads`` submitters (one run per count) share ``--emit-events``
  calls of ``AuditTrail.emit``; each call returns once its event is durably committed in
  the one chain (group commit, checkpoints signed on the way). Durable events/s, and the
  p50/p99 of single calls.
- **verify**: a chain of ``--verify-events`` events, checked by ``verify_database`` (what
  ``linevault audit verify`` runs); written as an export (``linevault audit export``);
  that export checked by ``verify_export`` with the public key only
  (``linevault audit verify-export``).

    .venv/bin/pytest bench/micro/test_audit.py --db postgres --emit-threads 32,64 \\
        --emit-events 50000 --verify-events 500000 --benchmark-json bench/results/audit.json
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from bench.micro.measure import OtherCpu, latency_ms
from tests.support.audit import export_lines, verify_chain
from vault.audit.chain import append_events
from vault.audit.events import AuditEvent, RequestContext
from vault.audit.export import verify_export
from vault.runtime import Runtime
from vault.storage.engine import unit_of_work

pytestmark = pytest.mark.timeout(0)  # a benchmark runs as long as its size needs

FILL_BATCH = 5000


def _event(i: int) -> AuditEvent:
    return AuditEvent(
        action="credential.fetch",
        outcome="success",
        actor_type="runner",
        actor_id=f"rnr_{i % 50:04d}",
        tenant_id=f"tnt_{i % 20:04d}",
        resource_type="line",
        resource_id=f"ln_{i % 500:06d}",
        context=RequestContext(
            request_id=f"req_{i:012d}",
            ip="10.1.2.3",
            user_agent="chatigram-runner/1.0",
            workflow_id=f"wf_{i % 1000}",
            run_id=f"run_{i}",
        ),
    )


# -- emit ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emitting(runtime_on_fresh_database: Callable[..., Runtime]) -> Runtime:
    """One runtime with its audit writer; every emit run appends to the same chain."""
    return runtime_on_fresh_database()


def emit_events(runtime: Runtime, threads: int, events: int) -> list[float]:
    """``threads`` submitters share ``events`` emits; the latency of every emit."""
    numbers = itertools.count()  # next() on a count is atomic under the GIL
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[str] = []

    def work(lat: list[float]) -> None:
        try:
            while (i := next(numbers)) < events:
                t0 = time.perf_counter()
                runtime.audit.emit(_event(i))
                lat.append(time.perf_counter() - t0)
        except Exception as exc:
            errors.append(type(exc).__name__)

    pool = [threading.Thread(target=work, args=(lat,), daemon=True) for lat in latencies]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise RuntimeError(f"emit failed: {errors[:3]}")
    return [x for lat in latencies for x in lat]


def test_emit(
    benchmark: Any, other_cpu: OtherCpu, emitting: Runtime, emit_threads: int, pytestconfig: Any
) -> None:
    events = pytestconfig.getoption("--emit-events")
    with other_cpu():
        latencies = benchmark.pedantic(emit_events, args=(emitting, emit_threads, events))
    seconds = benchmark.stats.stats.max
    assert len(latencies) == events
    emits = latency_ms(latencies, seconds)
    benchmark.extra_info.update(
        threads=emit_threads,
        events=events,
        events_per_s=emits["per_s"],
        p50_ms=emits["p50_ms"],
        p99_ms=emits["p99_ms"],
    )


# -- verify --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chain(runtime_on_fresh_database: Callable[..., Runtime], pytestconfig: Any) -> Runtime:
    """A runtime whose chain holds ``--verify-events`` events, appended in large batches."""
    runtime = runtime_on_fresh_database()
    checkpointer = runtime.audit.checkpointer
    assert checkpointer is not None
    total = pytestconfig.getoption("--verify-events")
    for first in range(0, total, FILL_BATCH):
        batch = [_event(i) for i in range(first, min(total, first + FILL_BATCH))]
        with unit_of_work(runtime.sessions) as session:
            rows = append_events(session, batch, now=runtime.clock.now(), seal=runtime.audit.seal)
            checkpointer.after_append(session, rows)
    return runtime


def test_verify_database(benchmark: Any, other_cpu: OtherCpu, chain: Runtime) -> None:
    with other_cpu():
        result = benchmark.pedantic(verify_chain, args=(chain,))
    assert result.ok, result
    benchmark.extra_info.update(
        events=result.events_checked,
        checkpoints=result.checkpoints_checked,
        events_per_s=round(result.events_checked / benchmark.stats.stats.max),
    )


def test_write_export(benchmark: Any, other_cpu: OtherCpu, chain: Runtime) -> None:
    with other_cpu():
        lines = benchmark.pedantic(export_lines, args=(chain,))
    benchmark.extra_info["lines"] = len(lines)


def test_verify_export(benchmark: Any, other_cpu: OtherCpu, chain: Runtime) -> None:
    lines = export_lines(chain)
    public_key = chain.system_keys.audit_public_key
    with other_cpu():
        check = benchmark.pedantic(verify_export, args=(lines,), kwargs={"public_key": public_key})
    assert check.result.ok, check.result
    benchmark.extra_info.update(
        events=check.result.events_checked,
        events_per_s=round(check.result.events_checked / benchmark.stats.stats.max),
    )
