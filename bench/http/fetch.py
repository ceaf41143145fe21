"""Credential fetch, side by side: bare FastAPI vs linevault vs OpenBao KV v2.

One invocation starts every target on 127.0.0.1 with the same server settings (the same
``--workers``; uvicorn with the same loop/http options), then measures them in turns with
wrk: each turn is a warm-up run followed by a measured run, and the order rotates from
round to round. It reports the median of the rounds per target, the ratio to the bare
endpoint, the audit events counted against the 2xx fetches served, and PostgreSQL's
durability settings.

    .venv/bin/python bench/http/fetch.py --db both --connections 32 --duration 20 --rounds 3
    .venv/bin/python bench/http/fetch.py --smoke --json-out /tmp/smoke.json  # ~15 s check

``--smoke`` checks that the harness still works end to end, not how fast anything is: bare
and linevault on SQLite only, no OpenBao, one short round with 4 connections, the Python
load generator (no wrk needed) and no waiting for a quiet machine. make test runs it.

Exit codes: 0 done; 2 a target could not be started or reached; 3 the audit count does not
match the fetches served; 4 wrong durability settings (PostgreSQL fsync or
synchronous_commit off).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx

from bench.http.common import (
    LOCALHOST,
    REPO_ROOT,
    BenchError,
    free_port,
    http_status,
    start_process,
    stop_process,
    wait_until,
)
from bench.http.cpu import CpuMeter, wait_for_quiet
from bench.http.loadgen import GENERATORS, LoadResult
from bench.http.peers.openbao import OpenBaoHandle, start_openbao
from bench.http.vault_target import DEFAULT_PG_ADMIN_URL, VaultTarget, postgres_settings

EXIT_UNREACHABLE = 2
EXIT_AUDIT_MISMATCH = 3
EXIT_DURABILITY = 4

# What --smoke sets: a run of a few seconds that exercises every step of the harness
# except OpenBao and wrk (neither is installed by make test).
SMOKE = {
    "db": "sqlite",
    "skip_openbao": True,
    "workers": 1,
    "rounds": 1,
    "warmup": 1,
    "duration": 2,
    "connections": 4,
    "loadgen": "python",
    "quiet_wait": 0.0,
}


# --------------------------------------------------------------------------- targets
@dataclass
class Target:
    """One thing under load, and what was measured against it."""

    name: str
    url: str
    headers: Callable[[], dict[str, str]]
    before_run: Callable[[], None] = lambda: None
    pgid: int = 0  # process group of the server, for CPU accounting
    vault: VaultTarget | None = None
    openbao: OpenBaoHandle | None = None
    ok_fetches: int = 0  # every 2xx the client received: probes, warm-ups, measured runs
    in_flight_bound: int = 0  # requests that may have been served but not counted
    runs: list[LoadResult] = field(default_factory=list)

    def record(self, result: LoadResult) -> None:
        self.ok_fetches += result.ok_responses
        # When wrk stops it drops what is in flight (the Python generator waits for it,
        # so there the bound is loose): at most one request per connection
        # (plus any lost to socket errors) may have been served without being counted.
        self.in_flight_bound += result.connections + result.socket_error_total

    def median(self, attr: str) -> float:
        return float(statistics.median(getattr(r, attr) for r in self.runs))


def start_bare(args: argparse.Namespace, stack: contextlib.ExitStack) -> Target:
    port = free_port()
    tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="linevault-bench-bare-"))
    log_path = Path(tmp) / "uvicorn.log"
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.http.bare_app:app",
        "--workers",
        str(args.workers),
        "--host",
        LOCALHOST,
        "--port",
        str(port),
        "--loop",
        args.loop,
        "--http",
        args.http,
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    proc = start_process(argv, log_path=log_path, cwd=REPO_ROOT)
    stack.callback(stop_process, proc)
    url = f"http://{LOCALHOST}:{port}/v1/tenants/tnt_bench/lines/ln_bench/credential"
    wait_until(
        lambda: http_status(url) == 200,
        timeout=60,
        what="bare FastAPI app",
        proc=proc,
        log_path=log_path,
    )
    return Target(
        name="bare FastAPI",
        url=url,
        headers=lambda: {"Authorization": "Bearer x"},
        pgid=proc.pid,
    )


def start_vault(db: str, args: argparse.Namespace, stack: contextlib.ExitStack) -> Target:
    vault = VaultTarget(db=db, workers=args.workers, pg_admin_url=args.pg_url)  # type: ignore[arg-type]
    stack.callback(vault.stop)
    try:
        vault.start()
    except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
        # A setup response off the contract (missing field, not JSON, connection dropped).
        detail = f"{exc!r}\n{vault.server_log_tail()}"
        raise BenchError(f"linevault ({db}) setup failed: {detail}") from exc
    return Target(
        name=f"linevault ({db})",
        url=vault.fetch_url,
        headers=lambda: vault.fetch_headers,
        # A fresh runner token per run: the bench never depends on the token TTL.
        before_run=vault.refresh_runner_token,
        pgid=vault.process.pid if vault.process else 0,
        vault=vault,
    )


def start_peer_openbao(stack: contextlib.ExitStack) -> Target:
    handle = start_openbao()
    stack.callback(handle.stop)
    target = Target(
        name="OpenBao KV v2",
        url=handle.read_url,
        headers=lambda: handle.headers,
        pgid=handle.process.pid if handle.process else 0,
        openbao=handle,
    )
    target.ok_fetches += handle.setup_reads
    return target


def probe(target: Target) -> None:
    """One request that must succeed before the target is measured."""
    if target.vault is not None:
        target.vault.probe()
    else:
        resp = httpx.get(target.url, headers=target.headers(), timeout=10.0)
        if resp.status_code != 200:
            raise BenchError(f"{target.name}: probe got {resp.status_code} {resp.text[:200]}")
    target.ok_fetches += 1


# --------------------------------------------------------------------------- machine
def machine_info() -> dict[str, Any]:
    model = platform.processor() or "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["lscpu"], check=False, capture_output=True, text=True, timeout=10
        ).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    nproc = subprocess.run(
        ["nproc"], check=False, capture_output=True, text=True, timeout=10
    ).stdout.strip()
    return {
        "nproc": int(nproc or os.cpu_count() or 0),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


# --------------------------------------------------------------------------- reporting
def audit_verdict(counted: int, served: int, bound: int, server_served: int | None = None) -> str:
    if server_served is not None:  # the server's own count of 200 fetch answers: exact
        if counted == server_served:
            return f"exact: one event per 200 answer the server sent ({server_served})"
        return f"MISMATCH: {counted} events vs {server_served} 200 answers sent by the server"
    if counted == served:
        return "match"
    if served < counted <= served + bound:
        return f"ok: {counted - served} more events than 2xx seen, within the in-flight bound"
    return "MISMATCH"


def format_report(targets: list[Target], extra: dict[str, Any], noisy_pct: float) -> str:
    bare = next((t for t in targets if t.name == "bare FastAPI"), None)
    bare_rps = bare.median("requests_per_s") if bare and bare.runs else None
    header = (
        f"{'target':<22}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}{'x bare':>8}"
        f"{'other CPU':>11}"
    )
    lines = [header, "-" * len(header)]
    for t in targets:
        if not t.runs:
            lines.append(f"{t.name:<22}{'not measured':>10}")
            continue
        rps = t.median("requests_per_s")
        ratio = f"{rps / bare_rps:.2f}" if bare_rps else "-"
        non2xx = sum(r.non2xx for r in t.runs)
        noise = max(r.others_cpu_pct or 0.0 for r in t.runs)
        flag = " NOISY" if noise >= noisy_pct else ""
        lines.append(
            f"{t.name:<22}{rps:>10.0f}{t.median('p50_ms'):>9.2f}{t.median('p99_ms'):>9.2f}"
            f"{non2xx:>9}{ratio:>8}{noise:>10.0f}%{flag}"
        )
    lines.append("")
    for t in targets:
        rounds = ", ".join(f"{r.requests_per_s:.0f}" for r in t.runs)
        lines.append(f"req/s per round, {t.name}: {rounds}")
        by_status: dict[str, int] = {}
        for r in t.runs:
            for code, n in r.non2xx_by_status.items():
                by_status[code] = by_status.get(code, 0) + n
        if by_status:
            lines.append(f"  non-2xx by status, {t.name}: {by_status}")
    lines.append("(other CPU: max over the measured runs, % of one core used by processes")
    lines.append(" that are neither a target, wrk, this harness nor PostgreSQL)")
    for name, audit in extra.get("audit", {}).items():
        lines.append(
            f"audit {name}: {audit['events_counted']} events counted vs "
            f"{audit['ok_fetches_served']} 2xx fetches served -> {audit['verdict']}"
            + (
                f" (database: {audit['events_in_database']})"
                if "events_in_database" in audit
                else ""
            )
        )
    pg = extra.get("postgres")
    if pg:
        lines.append(
            f"PostgreSQL {pg.get('server_version')}: fsync={pg.get('fsync')} "
            f"synchronous_commit={pg.get('synchronous_commit')} "
            f"wal_sync_method={pg.get('wal_sync_method')}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--duration", type=int, default=20, help="seconds per measured run")
    p.add_argument("--warmup", type=int, default=5, help="seconds of warm-up before each run")
    p.add_argument("--workers", type=int, default=1, help="server processes for every target")
    p.add_argument("--rounds", type=int, default=3, help="turns per target; medians reported")
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--loop", default="auto", help="uvicorn --loop of the bare app")
    p.add_argument("--http", default="auto", help="uvicorn --http of the bare app")
    p.add_argument("--skip-openbao", action="store_true")
    p.add_argument("--skip-vault", action="store_true", help="bare and OpenBao only")
    p.add_argument("--pg-url", default=DEFAULT_PG_ADMIN_URL, help="admin URL (127.0.0.1 only)")
    p.add_argument("--json-out", type=Path)
    p.add_argument(
        "--loadgen",
        choices=sorted(GENERATORS),
        default="wrk",
        help="load generator: wrk (figures of record) or python (no wrk needed; slow)",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="a short end-to-end check of the harness (see above); overrides the run options",
    )
    p.add_argument(
        "--quiet-threshold",
        type=float,
        default=15.0,
        help="%% of one core that other processes may use; noisier runs are flagged",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="seconds to wait, at most, for the machine to go quiet before each turn (0: no wait)",
    )
    args = p.parse_args(argv)
    if args.smoke:
        for name, value in SMOKE.items():
            setattr(args, name, value)
    for name in ("connections", "duration", "workers", "rounds", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds the ExitStack: every server is stopped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    dbs = [] if args.skip_vault else (["sqlite", "postgres"] if args.db == "both" else [args.db])
    started = time.time()
    targets: list[Target] = []
    extra: dict[str, Any] = {"audit": {}}
    exit_code = 0
    with contextlib.ExitStack() as stack:
        try:
            print(f"starting targets (workers={args.workers}) ...", flush=True)
            targets.append(start_bare(args, stack))
            for db in dbs:
                targets.append(start_vault(db, args, stack))
            if not args.skip_openbao:
                targets.append(start_peer_openbao(stack))
            for t in targets:
                probe(t)
        except (BenchError, httpx.HTTPError, OSError) as exc:
            print(f"error: target not reachable: {exc}", file=sys.stderr)
            return EXIT_UNREACHABLE

        pgids = [t.pgid for t in targets if t.pgid]
        for rnd in range(args.rounds):
            shift = rnd % len(targets)
            for t in targets[shift:] + targets[:shift]:
                if args.quiet_wait > 0:
                    busy = wait_for_quiet(
                        pgids, threshold_pct=args.quiet_threshold, max_wait_s=args.quiet_wait
                    )
                    if busy >= args.quiet_threshold:
                        print(f"warning: other processes use {busy:.0f}% of a core", flush=True)
                t.before_run()
                for warm in (True, False):
                    secs = args.warmup if warm else args.duration
                    if secs == 0:
                        continue
                    meter = CpuMeter(pgids)
                    meter.start()
                    res = GENERATORS[args.loadgen](
                        target=t.name,
                        url=t.url,
                        headers=t.headers(),
                        connections=args.connections,
                        duration_s=secs,
                        threads=args.threads,
                    )
                    res.others_cpu_pct = round(meter.stop().others_pct, 1)
                    t.record(res)
                    if not warm:
                        t.runs.append(res)
                        print(
                            f"round {rnd + 1}/{args.rounds} {t.name:<20} "
                            f"{res.requests_per_s:>9.0f} req/s  p50 {res.p50_ms:.2f} ms  "
                            f"p99 {res.p99_ms:.2f} ms  non-2xx {res.non2xx}  "
                            f"other CPU {res.others_cpu_pct:.0f}%",
                            flush=True,
                        )

        for t in targets:
            counted: int | None = None
            in_db: int | None = None
            server_served: int | None = None
            if t.vault is not None:
                time.sleep(1.0)  # let the last in-flight requests finish their commit
                server_served = t.vault.served_fetches()  # before the audit walk's requests
                counted = t.vault.count_fetch_audit_events()
                in_db = t.vault.count_fetch_audit_events_in_db()
            elif t.openbao is not None:
                counted = t.openbao.count_audit_responses()
            if counted is None:
                continue
            verdict = audit_verdict(counted, t.ok_fetches, t.in_flight_bound, server_served)
            extra["audit"][t.name] = {
                "events_counted": counted,
                "ok_fetches_served": t.ok_fetches,
                "server_200_answers": server_served,
                "in_flight_bound": t.in_flight_bound,
                "verdict": verdict,
            }
            if in_db is not None:
                extra["audit"][t.name]["events_in_database"] = in_db
                if in_db != counted:
                    extra["audit"][t.name]["verdict"] = verdict = "MISMATCH (API vs database)"
            if verdict.startswith("MISMATCH") and t.vault is not None:
                exit_code = EXIT_AUDIT_MISMATCH
        if "postgres" in dbs:
            extra["postgres"] = postgres_settings(args.pg_url)
            if (extra["postgres"]["fsync"], extra["postgres"]["synchronous_commit"]) != (
                "on",
                "on",
            ):
                print("error: PostgreSQL fsync/synchronous_commit must be on", file=sys.stderr)
                exit_code = exit_code or EXIT_DURABILITY
        if any(t.openbao for t in targets):
            extra["openbao_version"] = next(t.openbao.version for t in targets if t.openbao)
        for t in targets:
            if t.vault is not None:
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    health = httpx.get(t.vault.base_url + "/v1/sys/health", timeout=5).json()
                    extra.setdefault("linevault_version", health.get("version"))

    print()
    print(format_report(targets, extra, args.quiet_threshold))
    if args.json_out:
        doc = {
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "machine": machine_info(),
            "targets": [
                {
                    "name": t.name,
                    "median_requests_per_s": t.median("requests_per_s") if t.runs else None,
                    "median_p50_ms": t.median("p50_ms") if t.runs else None,
                    "median_p99_ms": t.median("p99_ms") if t.runs else None,
                    "runs": [r.as_dict() for r in t.runs],
                }
                for t in targets
            ],
            **extra,
        }
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nwrote {args.json_out}")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
