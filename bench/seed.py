"""Fast direct seeding of a linevault database for fetch benchmarks.

Unlike ``bench/http/`` this module imports linevault: a million credentials cannot be
created through the HTTP API in reasonable time. Every row still comes from the domain:
tenant KEKs from ``KeyRing.create_kek``, credentials validated by ``parse_credential``
and lines built by ``vault.lines.service.new_line`` (envelope, expiry and keyed
fingerprint exactly as the lines service stores them); only the writing is batched, with
Core bulk inserts in one transaction per batch of tenants. The runner is made through the
runners registry, so it is audited; its ``*`` grants are inserted directly.

    python -m bench.seed --data-dir DIR --out seed.json [--tenants 10 --lines-per-tenant 100]
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from vault.audit.events import RequestContext
from vault.ids import new_id
from vault.keys.integrity import FULL_ACCESS, row_macs
from vault.lines.schemas import parse_credential
from vault.lines.service import new_line
from vault.runners import RunnerRegistry
from vault.runtime import Runtime, open_runtime
from vault.settings import Settings
from vault.storage.engine import unit_of_work
from vault.storage.models import Grant, GrantLine, Line, Tenant, User

__all__ = ["Seeded", "seed", "telegram_credential"]

CHUNK = 5000
_LINE_COLUMNS = tuple(column.key for column in Line.__table__.columns)

Credential = Callable[[], Mapping[str, str]]


@dataclass
class Seeded:
    runner_id: str
    client_id: str
    client_secret: str = field(repr=False)
    tenants: int = 0
    lines: int = 0
    sample: list[tuple[str, str]] = field(default_factory=list)  # (tenant_id, line_id)
    seconds: float = 0.0


def telegram_credential() -> Mapping[str, str]:
    """A fresh, valid telegram credential: a random bot token.

    URL-safe base64 is exactly the token alphabet (A-Za-z0-9_-), and one call is much
    cheaper than 35 ``secrets.choice`` calls, which matters a million times over.
    """
    return {"bot_token": "123456:" + secrets.token_urlsafe(27)[:35]}


def _register_runner(runtime: Runtime) -> tuple[str, str, str]:
    """(runner id, client id, client secret) of a new runner, registered by the admin."""
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
            context=RequestContext(request_id="bench-seed", user_agent="bench/seed.py"),
        ).register(name="bench runner")
        return created.runner.id, created.runner.client_id, created.client_secret


def _line_rows(
    runtime: Runtime, tenant_id: str, kek: bytes, count: int, credential: Credential, now: datetime
) -> list[dict[str, Any]]:
    """``count`` line rows of one tenant, each built by the domain's ``new_line``."""
    rows = []
    for _ in range(count):
        line = new_line(
            parse_credential("telegram", credential()),
            tenant_id=tenant_id,
            name="bench",
            kek=kek,
            kek_version=1,
            keyring=runtime.keyring,
            system_keys=runtime.system_keys,
            now=now,
        )
        rows.append({key: getattr(line, key) for key in _LINE_COLUMNS})
    return rows


def _seed_tenants(
    runtime: Runtime,
    session: Session,
    *,
    count: int,
    lines_per_tenant: int,
    runner_id: str,
    credential: Credential,
) -> list[tuple[str, str]]:
    """``count`` tenants with a KEK, their lines and a ``*`` grant; (tenant, line) pairs."""
    now = runtime.clock.now()
    tenant_ids = [new_id("tnt") for _ in range(count)]
    session.execute(
        insert(Tenant),
        [
            {"id": t, "name": "bench", "active_kek_version": 1, "created_at": now}
            for t in tenant_ids
        ],
    )
    line_rows: list[dict[str, Any]] = []
    grant_rows: list[dict[str, Any]] = []
    grant_line_rows: list[dict[str, Any]] = []
    for tenant_id in tenant_ids:
        kek_row = runtime.keyring.create_kek(session, tenant_id=tenant_id, version=1, now=now)
        kek = runtime.keyring.unwrap_kek(
            tenant_id=tenant_id, version=1, root_key_id=kek_row.root_key_id, wrapped=kek_row.wrapped
        )
        line_rows += _line_rows(runtime, tenant_id, kek, lines_per_tenant, credential, now)
        grant_id = new_id("grt")
        grant_rows.append(
            {
                "id": grant_id,
                "tenant_id": tenant_id,
                "runner_id": runner_id,
                "all_lines": True,
                "created_at": now,
            }
        )
        mac = row_macs(runtime.system_keys).grant_line(
            grant_id=grant_id,
            tenant_id=tenant_id,
            runner_id=runner_id,
            line_id="*",
            access=FULL_ACCESS,
        )
        grant_line_rows.append(
            {
                "grant_id": grant_id,
                "line_id": "*",
                "tenant_id": tenant_id,
                "runner_id": runner_id,
                "mac": mac,
            }
        )
    for start in range(0, len(line_rows), CHUNK):
        session.execute(insert(Line), line_rows[start : start + CHUNK])
    session.execute(insert(Grant), grant_rows)
    session.execute(insert(GrantLine), grant_line_rows)
    return [(row["tenant_id"], row["id"]) for row in line_rows]


def seed(
    runtime: Runtime,
    *,
    tenants: int,
    lines_per_tenant: int,
    sample_size: int = 10_000,
    credential: Credential = telegram_credential,
    progress: bool = False,
) -> Seeded:
    """Add ``tenants`` x ``lines_per_tenant`` telegram lines and one runner granted ``*``."""
    started = time.perf_counter()
    runner_id, client_id, secret = _register_runner(runtime)
    pairs: list[tuple[str, str]] = []
    batch_tenants = max(1, CHUNK // max(1, lines_per_tenant))
    for first in range(0, tenants, batch_tenants):
        with unit_of_work(runtime.sessions) as session:
            pairs += _seed_tenants(
                runtime,
                session,
                count=min(batch_tenants, tenants - first),
                lines_per_tenant=lines_per_tenant,
                runner_id=runner_id,
                credential=credential,
            )
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
