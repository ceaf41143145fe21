"""Fetch latency against the number of stored credentials: 1,000 vs 1,000,000.

For each database and each size it builds a fresh linevault (``linevault init``), seeds
it directly with pre-encrypted rows (``bench/seed.py``: a KEK per tenant, a DEK per
credential, Core bulk inserts; one runner granted ``*`` in every tenant), serves it
(``linevault serve``), and loads it with wrk, every request fetching a line picked at
random from an even sample of all stored lines. It reports p50/p99 and req/s per size,
the p50 ratio large/small (target: at most 1.25), and checks that every 2xx fetch left
exactly one ``credential.fetch`` success event (counted in the database).

    .venv/bin/python bench/http/fetch_scale.py --db both --duration 15
    .venv/bin/python bench/http/fetch_scale.py --db postgres --fetch-cache-size 0  # no cache

The server's decision cache (10,000 entries by default) holds the whole sample once warm,
so the default run measures fetches as served; ``--fetch-cache-size 0`` makes every fetch
read the database, which is what the number of stored credentials can slow down.

Exit codes: 0 within target; 1 the p50 ratio is over the target; 3 audit mismatch.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx

from bench.http.common import (
    LOCALHOST,
    REPO_ROOT,
    BenchError,
    free_port,
    start_process,
    stop_process,
    wait_until,
)
from bench.http.loadgen import LoadResult, run_wrk
from bench.http.vault_target import (
    DEFAULT_PG_ADMIN_URL,
    SERVER_ENV,
    PostgresDatabase,
    find_linevault,
)

TARGET_RATIO = 1.25
EXIT_RATIO = 1
EXIT_AUDIT = 3


@dataclass
class SizeResult:
    db: str
    credentials: int
    tenants: int
    seed_seconds: float
    runs: list[LoadResult]
    ok_fetches: int
    in_flight_bound: int
    audit_events: int

    def median(self, attr: str) -> float:
        values = sorted(getattr(r, attr) for r in self.runs)
        return float(values[len(values) // 2])


def _count_events(data_dir: Path, database_url: str | None) -> int:
    query = (
        "SELECT count(*) FROM audit_events "
        "WHERE action = 'credential.fetch' AND outcome = 'success'"
    )
    if database_url is None:
        with contextlib.closing(sqlite3.connect(data_dir / "linevault.db")) as db:
            return int(db.execute(query).fetchone()[0])
    import psycopg

    with psycopg.connect("postgresql://" + database_url.split("://", 1)[1]) as conn:
        row = conn.execute(query).fetchone()
        return int(row[0]) if row else 0


def measure(db: str, *, tenants: int, per_tenant: int, args: argparse.Namespace) -> SizeResult:
    work = Path(tempfile.mkdtemp(prefix="lvscale-"))
    data_dir = work / "var"
    database = PostgresDatabase(args.pg_url) if db == "postgres" else None
    database_url = database.create() if database else None
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEVAULT_")}
    env.update(SERVER_ENV)
    env["LINEVAULT_DATA_DIR"] = str(data_dir)
    if database_url:
        env["LINEVAULT_DATABASE_URL"] = database_url
    proc = None
    try:
        linevault = find_linevault()
        init = subprocess.run(
            [linevault, "init", "--admin-email", "admin@bench.local", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if init.returncode != 0:
            raise BenchError(f"linevault init: {init.stderr[-1000:]}")
        seed_out = work / "seed.json"
        print(f"[{db}] seeding {tenants * per_tenant:,} credentials ...", flush=True)
        subprocess.run(
            [
                sys.executable, "-m", "bench.seed", "--data-dir", str(data_dir),
                "--tenants", str(tenants), "--lines-per-tenant", str(per_tenant),
                "--sample", str(args.sample), "--out", str(seed_out),
                *(["--database-url", database_url] if database_url else []),
            ],
            env=env,
            check=True,
            cwd=REPO_ROOT,
            timeout=7200,
        )  # fmt: skip
        seeded: dict[str, Any] = json.loads(seed_out.read_text())
        port = free_port()
        base = f"http://{LOCALHOST}:{port}"
        proc = start_process(
            [linevault, "serve", "--host", LOCALHOST, "--port", str(port),
             "--workers", str(args.workers)],
            log_path=work / "server.log",
            env=env,
            cwd=work,
        )  # fmt: skip
        wait_until(
            lambda: httpx.get(base + "/v1/sys/health", timeout=2).status_code == 200,
            timeout=90,
            what=f"linevault ({db})",
            proc=proc,
            log_path=work / "server.log",
        )
        token = httpx.post(
            base + "/v1/runner/token",
            data={
                "grant_type": "client_credentials",
                "client_id": seeded["client_id"],
                "client_secret": seeded["client_secret"],
            },
            timeout=10,
        ).json()["access_token"]
        headers = {
            "Authorization": f"Bearer {token}",
            "X-Workflow-Id": "wf_scale",
            "X-Run-Id": "run_scale",
        }
        paths = [f"/v1/tenants/{t}/lines/{ln}/credential" for t, ln in seeded["sample"]]
        ok = 0
        bound = 0
        runs: list[LoadResult] = []
        for rnd in range(args.rounds):
            for warm in (True, False):
                secs = args.warmup if warm else args.duration
                if secs <= 0:
                    continue
                res = run_wrk(
                    target=f"{db} {seeded['lines']:,}",
                    url=base + paths[0],
                    headers=headers,
                    connections=args.connections,
                    duration_s=secs,
                    threads=args.threads,
                    paths=paths,
                )
                ok += res.ok_responses
                bound += res.connections + res.socket_error_total
                if not warm:
                    runs.append(res)
                    print(
                        f"[{db}] {seeded['lines']:>9,} credentials round {rnd + 1}: "
                        f"{res.requests_per_s:.0f} req/s p50 {res.p50_ms:.2f} ms "
                        f"p99 {res.p99_ms:.2f} ms non-2xx {res.non2xx}",
                        flush=True,
                    )
        time.sleep(1.0)
        events = _count_events(data_dir, database_url)
        return SizeResult(
            db=db,
            credentials=int(seeded["lines"]),
            tenants=int(seeded["tenants"]),
            seed_seconds=float(seeded["seconds"]),
            runs=runs,
            ok_fetches=ok,
            in_flight_bound=bound,
            audit_events=events,
        )
    finally:
        stop_process(proc)
        if database is not None:
            database.drop()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    p.add_argument("--small", type=int, default=1_000, help="credentials in the small run")
    p.add_argument("--large", type=int, default=1_000_000, help="credentials in the large run")
    p.add_argument("--tenants-large", type=int, default=10_000)
    p.add_argument("--tenants-small", type=int, default=10)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--duration", type=int, default=15)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--sample", type=int, default=10_000, help="distinct lines fetched")
    p.add_argument("--pg-url", default=DEFAULT_PG_ADMIN_URL)
    p.add_argument(
        "--fetch-cache-size",
        type=int,
        default=None,
        help="server's LINEVAULT_FETCH_CACHE_SIZE (0: every fetch reads the database)",
    )
    p.add_argument("--json-out", type=Path)
    args = p.parse_args(argv)
    if args.fetch_cache_size is not None:
        SERVER_ENV["LINEVAULT_FETCH_CACHE_SIZE"] = str(args.fetch_cache_size)
    dbs = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    results: list[SizeResult] = []
    exit_code = 0
    for db in dbs:
        small = measure(
            db,
            tenants=args.tenants_small,
            per_tenant=max(1, args.small // args.tenants_small),
            args=args,
        )
        large = measure(
            db,
            tenants=args.tenants_large,
            per_tenant=max(1, args.large // args.tenants_large),
            args=args,
        )
        results += [small, large]
    print()
    print(f"{'db':<10}{'credentials':>12}{'tenants':>9}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'non-2xx':>9}{'audit':>22}")  # fmt: skip
    for r in results:
        non2xx = sum(x.non2xx for x in r.runs)
        audit_ok = r.ok_fetches <= r.audit_events <= r.ok_fetches + r.in_flight_bound
        audit = f"{r.audit_events}/{r.ok_fetches} {'ok' if audit_ok else 'MISMATCH'}"
        if not audit_ok:
            exit_code = EXIT_AUDIT
        print(
            f"{r.db:<10}{r.credentials:>12,}{r.tenants:>9,}{r.median('requests_per_s'):>9.0f}"
            f"{r.median('p50_ms'):>9.2f}{r.median('p99_ms'):>9.2f}{non2xx:>9}{audit:>22}"
        )
    for db in dbs:
        small, large = [r for r in results if r.db == db]
        ratio = large.median("p50_ms") / small.median("p50_ms")
        verdict = "ok" if ratio <= TARGET_RATIO else "OVER TARGET"
        print(f"{db}: p50 ratio {large.credentials:,} / {small.credentials:,} = {ratio:.2f} "
              f"(target <= {TARGET_RATIO}) {verdict}")  # fmt: skip
        if ratio > TARGET_RATIO and exit_code == 0:
            exit_code = EXIT_RATIO
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(
            json.dumps(
                [
                    {
                        "db": r.db,
                        "credentials": r.credentials,
                        "tenants": r.tenants,
                        "seed_seconds": r.seed_seconds,
                        "median_requests_per_s": r.median("requests_per_s"),
                        "median_p50_ms": r.median("p50_ms"),
                        "median_p99_ms": r.median("p99_ms"),
                        "ok_fetches": r.ok_fetches,
                        "audit_events": r.audit_events,
                        "runs": [x.as_dict() for x in r.runs],
                    }
                    for r in results
                ],
                indent=2,
            )
            + "\n"
        )
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
