"""Fast direct seeding of a linevault database for fetch benchmarks.

Unlike the rest of ``bench/`` this module imports linevault: a million credentials cannot
be created through the HTTP API in reasonable time, so rows are built here exactly as the
lines service builds them (a KEK per tenant wrapped by the root key provider, a fresh DEK
per credential, AES-GCM with the same associated data) and written with Core bulk inserts.
The runner and its grants are made through the runners services, so they are audited.

    python -m bench.seed --data-dir DIR [--tenants 10 --lines-per-tenant 100]
"""

from __future__ import annotations

import argparse
import json
import secrets
import string
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert, select

from vault.keys.keyring import kek_ad
from vault.runners import RunnerRegistry
from vault.runtime import Runtime, open_runtime
from vault.settings import Settings
from vault.storage.engine import unit_of_work
from vault.storage.models import Grant, GrantLine, Kek, Line, Tenant, User

__all__ = ["Seeded", "seed"]

_ALPHABET = string.ascii_letters + string.digits + "_-"
CHUNK = 5000


@dataclass
class Seeded:
    runner_id: str
    client_id: str
    client_secret: str = field(repr=False)
    tenants: int = 0
    lines: int = 0
    sample: list[tuple[str, str]] = field(default_factory=list)  # (tenant_id, line_id)
    seconds: float = 0.0


def _bot_token() -> str:
    return "123456:" + "".join(secrets.choice(_ALPHABET) for _ in range(35))


def _chunks(rows: list[dict[str, Any]], size: int = CHUNK) -> Iterator[list[dict[str, Any]]]:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def _insert(runtime: Runtime, table: Any, rows: list[dict[str, Any]]) -> None:
    for chunk in _chunks(rows):
        with runtime.engine.begin() as conn:
            conn.execute(insert(table), chunk)


def seed(
    runtime: Runtime,
    *,
    tenants: int,
    lines_per_tenant: int,
    sample_size: int = 10_000,
    progress: bool = False,
) -> Seeded:
    """Add ``tenants`` x ``lines_per_tenant`` telegram lines and one runner granted ``*``."""
    started = time.perf_counter()
    now = runtime.clock.now()
    keyring = runtime.keyring
    provider = runtime.provider
    with unit_of_work(runtime.sessions) as session:
        admin_id = session.execute(
            select(User.id).where(User.platform_role == "admin").limit(1)
        ).scalar_one()
        created = RunnerRegistry(
            session,
            system_keys=runtime.system_keys,
            audit=runtime.audit,
            clock=runtime.clock,
            actor_id=admin_id,
            context=_ctx(),
        ).register(name="bench runner")
        runner_id, client_id = created.runner.id, created.runner.client_id
        secret = created.client_secret
    pairs: list[tuple[str, str]] = []
    batch_tenants = max(1, CHUNK // max(1, lines_per_tenant))
    for first in range(0, tenants, batch_tenants):
        count = min(batch_tenants, tenants - first)
        tenant_rows, kek_rows, line_rows, grant_rows, grant_line_rows = [], [], [], [], []
        for _ in range(count):
            tenant_id = f"tnt_{secrets.token_hex(16)}"
            kek = secrets.token_bytes(32)
            wrapped = provider.wrap(kek, context=kek_ad(tenant_id, 1))
            tenant_rows.append(
                {"id": tenant_id, "name": "bench", "active_kek_version": 1, "created_at": now}
            )
            kek_rows.append(
                {
                    "tenant_id": tenant_id,
                    "version": 1,
                    "state": "active",
                    "root_key_id": wrapped.root_key_id,
                    "wrapped": wrapped.blob,
                    "created_at": now,
                }
            )
            grant_id = f"grt_{secrets.token_hex(16)}"
            grant_rows.append(
                {
                    "id": grant_id,
                    "tenant_id": tenant_id,
                    "runner_id": runner_id,
                    "all_lines": True,
                    "created_at": now,
                }
            )
            grant_line_rows.append(
                {
                    "grant_id": grant_id,
                    "line_id": "*",
                    "tenant_id": tenant_id,
                    "runner_id": runner_id,
                }
            )
            for _ in range(lines_per_tenant):
                line_id = f"ln_{secrets.token_hex(16)}"
                plaintext = json.dumps(
                    {"bot_token": _bot_token()}, sort_keys=True, separators=(",", ":")
                ).encode()
                sealed = keyring.seal_credential(
                    kek=kek,
                    kek_version=1,
                    tenant_id=tenant_id,
                    line_id=line_id,
                    line_type="telegram",
                    credential_version=1,
                    plaintext=plaintext,
                )
                line_rows.append(
                    {
                        "id": line_id,
                        "tenant_id": tenant_id,
                        "type": "telegram",
                        "name": "bench",
                        "status": "active",
                        "version": 1,
                        "fingerprint": secrets.token_hex(8),
                        "kek_version": 1,
                        "wrapped_dek": sealed.wrapped_dek,
                        "ciphertext": sealed.ciphertext,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
                pairs.append((tenant_id, line_id))
        _insert(runtime, Tenant.__table__, tenant_rows)
        _insert(runtime, Kek.__table__, kek_rows)
        _insert(runtime, Line.__table__, line_rows)
        _insert(runtime, Grant.__table__, grant_rows)
        _insert(runtime, GrantLine.__table__, grant_line_rows)
        if progress and (first // batch_tenants) % 20 == 0:
            print(f"  seeded {len(pairs):,} lines", file=sys.stderr, flush=True)
    # Keep an even sample for the load generator (pairs are in insertion order).
    step = max(1, len(pairs) // sample_size)
    sample = pairs[::step][:sample_size]
    if runtime.engine.dialect.name == "postgresql":
        with runtime.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")
    return Seeded(
        runner_id=runner_id,
        client_id=client_id,
        client_secret=secret,
        tenants=tenants,
        lines=len(pairs),
        sample=sample,
        seconds=time.perf_counter() - started,
    )


def _ctx() -> Any:
    from vault.audit.events import RequestContext

    return RequestContext(request_id="bench-seed", user_agent="bench/seed.py")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--database-url", default=None)
    p.add_argument("--tenants", type=int, default=10)
    p.add_argument("--lines-per-tenant", type=int, default=100)
    p.add_argument("--sample", type=int, default=10_000)
    p.add_argument("--out", type=Path, required=True, help="JSON with the runner and sample")
    args = p.parse_args(argv)
    kw: dict[str, Any] = {"data_dir": args.data_dir, "log_level": "warning"}
    if args.database_url:
        kw["database_url"] = args.database_url
    runtime = open_runtime(Settings(**kw))
    try:
        done = seed(
            runtime,
            tenants=args.tenants,
            lines_per_tenant=args.lines_per_tenant,
            sample_size=args.sample,
            progress=True,
        )
    finally:
        runtime.close()
    args.out.write_text(
        json.dumps(
            {
                "runner_id": done.runner_id,
                "client_id": done.client_id,
                "client_secret": done.client_secret,
                "tenants": done.tenants,
                "lines": done.lines,
                "seconds": round(done.seconds, 1),
                "sample": done.sample,
            }
        )
    )
    args.out.chmod(0o600)
    print(f"seeded {done.lines:,} credentials in {done.tenants:,} tenants in {done.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
