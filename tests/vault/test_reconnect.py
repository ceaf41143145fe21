"""Pools without pre-ping survive a database that dropped their connections.

After a PostgreSQL restart or failover every pooled connection is dead. Found by
tests/e2e/test_faults.py (the database cut and restored under a running server):

- the group-commit writer's pool has no pre-ping (one round trip less per batch), so the
  first audited request after the database came back got 503 ``audit_unavailable``; it
  now retries once on a fresh connection when the connection died before COMMIT;
- the fetch path's asyncio reader retried a dead idle connection with another dead idle
  one, so the first fetches got 503 ``unavailable``; it now drops every idle connection
  when one turns out dead.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import bindparam, select, text

from tests.support.audit import sample_event
from vault.audit.store import verify_database
from vault.runners.reader import AsyncPgReader
from vault.runtime import Runtime
from vault.storage.models import Tenant


def _terminate_other_backends(runtime: Runtime) -> int:
    with runtime.engine.connect() as conn:
        killed = conn.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
        conn.commit()
    return int(killed)


@pytest.mark.parametrize("backend", ["postgresql"])
def test_writer_replaces_connections_the_database_dropped(runtime: Runtime) -> None:
    first = runtime.audit.emit(sample_event(1))  # the writer's pool now holds a connection
    assert _terminate_other_backends(runtime) >= 1
    assert runtime.audit.emit(sample_event(2)) == first + 1  # no AuditUnavailable
    assert _terminate_other_backends(runtime) >= 1
    assert runtime.audit.emit(sample_event(3)) == first + 2
    assert verify_database(runtime.engine).ok


@pytest.mark.parametrize("backend", ["postgresql"])
def test_fetch_reader_replaces_every_dead_idle_connection(runtime: Runtime) -> None:
    reader = AsyncPgReader(
        runtime.engine, select(Tenant.id).where(Tenant.id == bindparam("tenant_id")), max_size=8
    )

    async def main() -> None:
        # Six concurrent reads leave six idle connections behind.
        await asyncio.gather(*(reader.read({"tenant_id": f"tnt_{n}"}) for n in range(6)))
        assert len(reader._idle) == 6
        assert _terminate_other_backends(runtime) >= 6
        for n in range(3):  # each read succeeds on the first try after the outage
            assert await reader.read({"tenant_id": f"tnt_{n}"}) is None
        await reader.aclose()

    asyncio.run(main())
