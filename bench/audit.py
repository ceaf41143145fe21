"""Audit trail benchmark: sustained durable events/s, and offline verification speed.

Unlike the HTTP harness this drives the audit service in-process, because the question is
the chain itself: how many events per second can concurrent submitters make durable
through ``AuditTrail.emit`` (group commit, one chain, checkpoints signed on the way), and
how fast does ``linevault audit verify`` / export verification re-check a chain.

    .venv/bin/python bench/audit.py --backend postgresql --threads 32 64 --seconds 10 \
        --verify-events 500000

PostgreSQL: a fresh ``linevault_bench_<random>`` database on ``--pg-url``'s server is
created and dropped. SQLite: a file in a temporary data dir.
"""

from __future__ import annotations

import argparse
import io
import json
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.http.cpu import CpuMeter, wait_for_quiet
from vault.audit.chain import append_events
from vault.audit.events import AuditEvent, RequestContext
from vault.audit.export import verify_export, write_export
from vault.audit.store import verify_database
from vault.bootstrap import initialise
from vault.runtime import Runtime, open_runtime
from vault.settings import Settings
from vault.storage.engine import unit_of_work


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


@contextmanager
def _database(backend: str, pg_url: str) -> Iterator[tuple[Path, str]]:
    with tempfile.TemporaryDirectory(prefix="lv-audit-bench-") as tmp:
        data = Path(tmp) / "var"
        if backend == "sqlite":
            yield data, f"sqlite:///{data / 'linevault.db'}"
            return
        name = "linevault_bench_" + secrets.token_hex(4)
        admin = create_engine(
            make_url(pg_url).set(database="postgres"), isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield data, make_url(pg_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


def emit_throughput(runtime: Runtime, threads: int, seconds: float) -> dict[str, float]:
    stop = threading.Event()
    counts = [0] * threads
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[str] = []

    def work(w: int) -> None:
        i = w
        lat = latencies[w]
        try:
            while not stop.is_set():
                t0 = time.perf_counter()
                runtime.audit.emit(_event(i))
                lat.append(time.perf_counter() - t0)
                counts[w] += 1
                i += threads
        except Exception as exc:
            errors.append(type(exc).__name__)

    pool = [threading.Thread(target=work, args=(w,), daemon=True) for w in range(threads)]
    quiet_before = wait_for_quiet([], threshold_pct=15.0, max_wait_s=60.0)
    meter = CpuMeter([])
    meter.start()
    start = time.perf_counter()
    for t in pool:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - start
    cpu = meter.stop()
    if errors:
        raise RuntimeError(f"emit failed: {errors[:3]}")
    flat = sorted(x for lat in latencies for x in lat)
    total = sum(counts)
    return {
        "threads": threads,
        "events": total,
        "seconds": round(elapsed, 2),
        "events_per_s": round(total / elapsed),
        "p50_ms": round(statistics.median(flat) * 1000, 2),
        "p99_ms": round(flat[int(len(flat) * 0.99) - 1] * 1000, 2),
        "other_cpu_pct": round(cpu.others_pct),
        "other_cpu_before_pct": round(quiet_before),
    }


def fill(runtime: Runtime, n: int, batch: int = 5000) -> None:
    """Append ``n`` events quickly (large batches) so verification has a big chain."""
    done = 0
    while done < n:
        size = min(batch, n - done)
        with unit_of_work(runtime.sessions) as session:
            rows = append_events(
                session, [_event(done + j) for j in range(size)], now=runtime.clock.now()
            )
            checkpointer = runtime.audit.checkpointer
            assert checkpointer is not None
            checkpointer.after_append(session, rows)
        done += size


def verify_speed(runtime: Runtime) -> dict[str, float]:
    wait_for_quiet([], threshold_pct=15.0, max_wait_s=60.0)
    meter = CpuMeter([])
    meter.start()
    t0 = time.perf_counter()
    result = verify_database(runtime.engine)
    db_s = time.perf_counter() - t0
    db_cpu = meter.stop()
    assert result.ok, result
    buf = io.StringIO()
    checkpointer = runtime.audit.checkpointer
    assert checkpointer is not None
    t0 = time.perf_counter()
    write_export(
        buf,
        engine=runtime.engine,
        sessions=runtime.sessions,
        checkpointer=checkpointer,
        clock=runtime.clock,
        event=AuditEvent(
            action="audit.export", outcome="success", actor_type="system", actor_id="bench"
        ),
    )
    export_s = time.perf_counter() - t0
    lines = buf.getvalue().splitlines()
    wait_for_quiet([], threshold_pct=15.0, max_wait_s=60.0)
    meter.start()
    t0 = time.perf_counter()
    check = verify_export(lines, public_key=runtime.system_keys.audit_public_key)
    export_verify_s = time.perf_counter() - t0
    export_cpu = meter.stop()
    assert check.result.ok, check.result
    return {
        "events": result.events_checked,
        "checkpoints": result.checkpoints_checked,
        "db_verify_s": round(db_s, 2),
        "db_verify_events_per_s": round(result.events_checked / db_s),
        "db_verify_other_cpu_pct": round(db_cpu.others_pct),
        "export_s": round(export_s, 2),
        "export_verify_s": round(export_verify_s, 2),
        "export_verify_events_per_s": round(check.result.events_checked / export_verify_s),
        "export_verify_other_cpu_pct": round(export_cpu.others_pct),
    }


def run(backend: str, args: argparse.Namespace) -> dict[str, object]:
    with _database(backend, args.pg_url) as (data, url):
        settings = Settings(data_dir=data, database_url=url, log_level="warning")  # type: ignore[call-arg]
        initialise(settings, admin_email="bench@example.test")
        runtime = open_runtime(settings)
        try:
            emits = [emit_throughput(runtime, n, args.seconds) for n in args.threads]
            for row in emits:
                print(f"[{backend}] emit {row}", flush=True)
            have = sum(int(r["events"]) for r in emits)
            if args.verify_events > have:
                fill(runtime, args.verify_events - have)
            verify = verify_speed(runtime)
            print(f"[{backend}] verify {verify}", flush=True)
        finally:
            runtime.close()
    return {"backend": backend, "emit": emits, "verify": verify}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["postgresql", "sqlite", "both"], default="postgresql")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--threads", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--verify-events", type=int, default=500_000)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    backends = ["postgresql", "sqlite"] if args.backend == "both" else [args.backend]
    results = [run(b, args) for b in backends]
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
