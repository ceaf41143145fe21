"""The process's one pool survives a database that dropped its connections.

After a PostgreSQL restart or failover every pooled connection is dead. Found by
tests/e2e/test_faults.py (the database cut and restored under a running server), when
the writer and the fetch read had pools of their own:

- the first audited request after the database came back got 503 ``audit_unavailable``:
  the writer now retries once on a fresh connection when its connection died before
  COMMIT, and its one-statement batch hands a batch on a dead connection to that path;
- the first fetches got 503 ``unavailable``: the fetch's read now takes its connection
  from the pool, which replaces dead ones (vault/storage/engine.py).
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from tests.support.audit import sample_event, verify_chain
from tests.support.runners import (
    CTX,
    TELEGRAM,
    fetch_credential,
    grant,
    issue_token,
    make_line,
    make_runner,
    make_tenant,
)
from vault.runtime import Runtime


def _terminate_other_backends(runtime: Runtime) -> int:
    """Kill every connection of the runtime's pool (from a connection outside it)."""
    admin = create_engine(runtime.engine.url, poolclass=NullPool)
    try:
        with admin.connect() as conn:
            killed = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
            conn.commit()
    finally:
        admin.dispose()
    return int(killed)


@pytest.mark.parametrize("backend", ["postgresql"])
def test_writer_replaces_connections_the_database_dropped(runtime: Runtime) -> None:
    first = runtime.audit.emit(sample_event(1))  # the pool now holds a connection
    assert _terminate_other_backends(runtime) >= 1
    assert runtime.audit.emit(sample_event(2)) == first + 1  # no AuditUnavailable
    assert _terminate_other_backends(runtime) >= 1
    assert runtime.audit.emit(sample_event(3)) == first + 2
    assert verify_chain(runtime).ok


@pytest.mark.parametrize("backend", ["postgresql"])
def test_fetch_reads_replace_every_connection_the_database_dropped(runtime: Runtime) -> None:
    tenant = make_tenant(runtime)
    lines = [make_line(runtime, tenant) for _ in range(9)]
    runner_id, client_id, secret = make_runner(runtime)
    grant(runtime, tenant, runner_id, ["*"])
    token = issue_token(runtime, client_id, secret)

    async def first_fetches(some: list[str]) -> list[dict[str, object]]:
        got = await asyncio.gather(
            *(
                runtime.fetcher.fetch(token=token, tenant_id=tenant, line_id=ln, context=CTX)
                for ln in some
            )
        )
        return [g.credential for g in got]

    # Six concurrent first fetches (each a read) leave pooled connections behind.
    assert asyncio.run(first_fetches(lines[:6])) == [TELEGRAM] * 6
    assert _terminate_other_backends(runtime) >= 2
    for line in lines[6:]:  # each read succeeds on the first try after the outage
        assert fetch_credential(runtime, token, tenant, line).credential == TELEGRAM
