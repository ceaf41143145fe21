"""Key hierarchy benchmarks: opening a credential, and the online rewrap of a rotation.

1. **open**: a credential opened with a cached tenant KEK (cache look-up, unwrap the DEK,
   decrypt the secret), as the fetch path does it; per-call median and p99 in µs, plus
   seal and rewrap-one-DEK for reference. Target: median <= 10 µs.
2. **rewrap**: N lines (default 100,000) of one tenant on a fresh database, a rotation
   started, then the rewrap run to completion while a parallel thread keeps reading and
   opening random credentials (one statement per read joining line and KEK row, like the
   fetch path). Reports DEKs/s (target >= 5,000/s on PostgreSQL), and the reads served
   before and during the rewrap with their latency. Every credential is checked to open
   after the rotation.

    .venv/bin/python bench/keys.py                       # both parts, PostgreSQL
    .venv/bin/python bench/keys.py --db both --lines 100000 --batch-size 1000
    .venv/bin/python bench/keys.py --only open

PostgreSQL: a throw-away database on ``--pg-admin-url`` (default the local server).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url

from kms import LocalKeyProvider
from kms.crypto import new_key
from vault.bootstrap import initialise
from vault.ids import new_id
from vault.keys.cache import KekCache
from vault.keys.keyring import KeyRing, kek_ad
from vault.keys.service import key_service, rewrapper_for
from vault.runtime import Runtime, open_runtime
from vault.settings import Settings
from vault.storage.engine import is_sqlite, readonly, unit_of_work
from vault.storage.models import Line, Tenant

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
PAYLOAD = b'{"bot_token":"123456789:' + b"A" * 35 + b'"}'


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- 1. open -------------------------------------------------------------------------------


def bench_open(iterations: int) -> dict[str, Any]:
    import base64

    provider = LocalKeyProvider.from_base64(base64.b64encode(os.urandom(32)).decode())
    ring = KeyRing(provider, cache=KekCache(max_entries=10_000, ttl_seconds=300))
    tenant = new_id("tnt")
    kek = new_key()
    wrapped = provider.wrap(kek, context=kek_ad(tenant, 1))
    # 1,000 distinct lines opened in turn, so per-line work is not flattered by repetition.
    lines = []
    for _ in range(1000):
        line_id = new_id("ln")
        sealed = ring.seal_credential(
            kek=kek,
            kek_version=1,
            tenant_id=tenant,
            line_id=line_id,
            line_type="telegram",
            credential_version=1,
            plaintext=PAYLOAD,
        )
        lines.append((line_id, sealed.wrapped_dek, sealed.ciphertext))
    line, _, _ = lines[0]
    sealed = ring.seal_credential(
        kek=kek,
        kek_version=1,
        tenant_id=tenant,
        line_id=line,
        line_type="telegram",
        credential_version=1,
        plaintext=PAYLOAD,
    )
    ring.unwrap_kek(
        tenant_id=tenant, version=1, root_key_id=wrapped.root_key_id, wrapped=wrapped.blob
    )
    turn = 0

    def open_once() -> bytes:
        nonlocal turn
        line_id, wrapped_dek, ciphertext = lines[turn % 1000]
        turn += 1
        k = ring.unwrap_kek(
            tenant_id=tenant, version=1, root_key_id=wrapped.root_key_id, wrapped=wrapped.blob
        )
        return ring.open_credential(
            kek=k,
            kek_version=1,
            tenant_id=tenant,
            line_id=line_id,
            line_type="telegram",
            credential_version=1,
            wrapped_dek=wrapped_dek,
            ciphertext=ciphertext,
        )

    def seal_once() -> object:
        return ring.seal_credential(
            kek=kek,
            kek_version=1,
            tenant_id=tenant,
            line_id=line,
            line_type="telegram",
            credential_version=1,
            plaintext=PAYLOAD,
        )

    def rewrap_once() -> bytes:
        return ring.rewrap_dek(
            old_kek=kek,
            new_kek=kek,
            old_version=1,
            new_version=1,
            tenant_id=tenant,
            line_id=line,
            credential_version=1,
            wrapped_dek=sealed.wrapped_dek,
        )

    assert open_once() == PAYLOAD
    out: dict[str, Any] = {"iterations": iterations}
    for name, fn in (
        ("open_cached_kek", open_once),
        ("seal", seal_once),
        ("rewrap_dek", rewrap_once),
    ):
        for _ in range(2000):
            fn()
        samples = []
        clock = time.perf_counter_ns
        for _ in range(iterations):
            t0 = clock()
            fn()
            samples.append(clock() - t0)
        out[name] = {
            "median_us": round(statistics.median(samples) / 1000, 2),
            "p99_us": round(_percentile(samples, 0.99) / 1000, 2),
        }
    return out


# -- 2. rewrap -----------------------------------------------------------------------------


def _runtime(db: str, workdir: Path, batch_size: int, pg_admin: str) -> tuple[Runtime, Any]:
    cleanup: Any = None
    if db == "postgres":
        name = f"lv_keys_bench_{secrets.token_hex(4)}"
        admin = create_engine(pg_admin, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(pg_admin).set(database=name).render_as_string(hide_password=False)

        def cleanup() -> None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()

    else:
        url = f"sqlite:///{workdir / 'bench.db'}"
    settings = Settings(
        data_dir=workdir / "var",
        database_url=url,  # type: ignore[arg-type]
        rewrap_batch_size=batch_size,
        log_level="warning",
    )
    initialise(settings, admin_email="bench@example.test")
    return open_runtime(settings, start_writer=False), cleanup


def _seed(runtime: Runtime, count: int) -> tuple[str, list[str]]:
    now = runtime.clock.now()
    with unit_of_work(runtime.sessions) as session:
        tenant = Tenant(id=new_id("tnt"), name="bench", active_kek_version=1, created_at=now)
        session.add(tenant)
        session.flush()
        runtime.keyring.create_kek(session, tenant_id=tenant.id, version=1, now=now)
        tenant_id = tenant.id
    ids: list[str] = []
    chunk = 5000
    for start in range(0, count, chunk):
        rows = []
        with unit_of_work(runtime.sessions) as session:
            version, kek = runtime.keyring.active_kek(session, tenant_id=tenant_id)
            for n in range(start, min(count, start + chunk)):
                line_id = new_id("ln")
                sealed = runtime.keyring.seal_credential(
                    kek=kek,
                    kek_version=version,
                    tenant_id=tenant_id,
                    line_id=line_id,
                    line_type="telegram",
                    credential_version=1,
                    plaintext=PAYLOAD,
                )
                rows.append(
                    {
                        "id": line_id,
                        "tenant_id": tenant_id,
                        "type": "telegram",
                        "name": f"line {n}",
                        "status": "active",
                        "version": 1,
                        "kek_version": version,
                        "wrapped_dek": sealed.wrapped_dek,
                        "ciphertext": sealed.ciphertext,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
                ids.append(line_id)
            session.connection().execute(insert(Line.__table__), rows)
    if not is_sqlite(runtime.engine):
        with runtime.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE lines"))
    return tenant_id, ids


_READ = text(
    "SELECT l.type, l.version, l.kek_version, l.wrapped_dek, l.ciphertext, k.state, "
    "k.root_key_id, k.wrapped FROM lines l LEFT JOIN keks k "
    "ON k.tenant_id = l.tenant_id AND k.version = l.kek_version WHERE l.id = :id"
)


class Reader(threading.Thread):
    """Fetch-like reads: one statement (line + KEK row), unwrap through the cache, open."""

    def __init__(self, runtime: Runtime, tenant_id: str, ids: list[str]) -> None:
        super().__init__(daemon=True)
        engine = runtime.engine
        self.engine = (
            readonly(engine)
            if is_sqlite(engine)
            else engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        self.keyring = runtime.keyring
        self.tenant_id = tenant_id
        self.ids = ids
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.errors = 0
        self.window: tuple[float, float] | None = None

    def run(self) -> None:
        rng = random.Random(7)
        while not self.stop.is_set():
            line_id = rng.choice(self.ids)
            t0 = time.perf_counter()
            try:
                with self.engine.connect() as conn:
                    row = conn.execute(_READ, {"id": line_id}).one()
                kek = self.keyring.unwrap_kek(
                    tenant_id=self.tenant_id,
                    version=row.kek_version,
                    root_key_id=row.root_key_id,
                    wrapped=row.wrapped,
                )
                plain = self.keyring.open_credential(
                    kek=kek,
                    kek_version=row.kek_version,
                    tenant_id=self.tenant_id,
                    line_id=line_id,
                    line_type=row.type,
                    credential_version=row.version,
                    wrapped_dek=row.wrapped_dek,
                    ciphertext=row.ciphertext,
                )
                if plain != PAYLOAD:
                    self.errors += 1
            except Exception:
                self.errors += 1
            self.latencies.append(time.perf_counter() - t0)


def _reads(reader: Reader, seconds: float) -> dict[str, Any]:
    start = len(reader.latencies)
    time.sleep(seconds)
    lat = reader.latencies[start:]
    return _read_stats(lat, seconds)


def _read_stats(lat: list[float], seconds: float) -> dict[str, Any]:
    if not lat:
        return {"reads": 0}
    return {
        "reads": len(lat),
        "reads_per_s": round(len(lat) / seconds),
        "p50_ms": round(statistics.median(lat) * 1000, 3),
        "p99_ms": round(_percentile(lat, 0.99) * 1000, 3),
        "max_ms": round(max(lat) * 1000, 3),
    }


def bench_rewrap(db: str, lines: int, batch_size: int, pg_admin: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="lv-keys-bench-") as tmp:
        runtime, cleanup = _runtime(db, Path(tmp), batch_size, pg_admin)
        try:
            t0 = time.perf_counter()
            tenant_id, ids = _seed(runtime, lines)
            seeded = time.perf_counter() - t0
            reader = Reader(runtime, tenant_id, ids)
            reader.start()
            baseline = _reads(reader, 3.0)
            with unit_of_work(runtime.sessions) as session:
                view = key_service(runtime, session).rotate(
                    tenant_id, actor_type="system", actor_id="bench"
                )
            mark = len(reader.latencies)
            errors_before = reader.errors
            t1 = time.perf_counter()
            done = rewrapper_for(runtime, batch_size=batch_size).run(view.id)
            elapsed = time.perf_counter() - t1
            during = _read_stats(reader.latencies[mark:], elapsed)
            reader.stop.set()
            reader.join()
            assert done is not None and done.state == "done", done
            # Every credential opens after the rotation, under the new version only.
            with runtime.engine.connect() as conn:
                versions = (
                    conn.execute(
                        text("SELECT DISTINCT kek_version FROM lines WHERE tenant_id = :t"),
                        {"t": tenant_id},
                    )
                    .scalars()
                    .all()
                )
            assert list(versions) == [done.to_version], versions
            return {
                "db": db,
                "lines": lines,
                "batch_size": batch_size,
                "seed_seconds": round(seeded, 1),
                "rewrapped": done.rewrapped,
                "rewrap_seconds": round(elapsed, 2),
                "deks_per_s": round(done.rewrapped / elapsed),
                "reads_before": baseline,
                "reads_during": during,
                "read_errors": reader.errors,
                "read_errors_during": reader.errors - errors_before,
            }
        finally:
            runtime.close()
            if cleanup is not None:
                cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=["open", "rewrap"], default=None)
    parser.add_argument("--db", choices=["postgres", "sqlite", "both"], default="postgres")
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--iterations", type=int, default=200_000)
    parser.add_argument(
        "--pg-admin-url", default=os.environ.get("LINEVAULT_BENCH_PG_ADMIN", PG_ADMIN)
    )
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    if args.only in (None, "open"):
        results["open"] = bench_open(args.iterations)
        print(json.dumps({"open": results["open"]}, indent=2), flush=True)
    if args.only in (None, "rewrap"):
        dbs = ["postgres", "sqlite"] if args.db == "both" else [args.db]
        results["rewrap"] = []
        for db in dbs:
            r = bench_rewrap(db, args.lines, args.batch_size, args.pg_admin_url)
            results["rewrap"].append(r)
            print(json.dumps({"rewrap": r}, indent=2), flush=True)
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(results, indent=2))
    failed = []
    if "open" in results and results["open"]["open_cached_kek"]["median_us"] > 10:
        failed.append("open median above 10 µs")
    for r in results.get("rewrap", []):
        if r["db"] == "postgres" and r["deks_per_s"] < 5000:
            failed.append("PostgreSQL rewrap below 5,000 DEKs/s")
        if r["read_errors"]:
            failed.append(f"{r['db']}: {r['read_errors']} failed reads")
    if failed:
        print("TARGET MISSED: " + "; ".join(failed), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
