"""The runner SDK against a real ``linevault serve`` process (fresh data dir, free port).

Tenants, lines, the runner and its grant are written into the server's own database from
this process (as the lines service would), and everything the runner does goes over HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select

from linevault_client import (
    AsyncRunnerClient,
    AuthenticationError,
    NotGranted,
    Revoked,
    RunnerClient,
)
from tests.support.runners import TELEGRAM, grant, make_line, make_runner, make_tenant, revoke_line
from tests.support.server import ServerProcess, running_server
from tests.support.settings import make_settings
from vault.runtime import Runtime, open_runtime
from vault.storage.engine import unit_of_work
from vault.storage.models import AuditEventRow, RunnerToken

pytestmark = pytest.mark.slow


@pytest.fixture
def served(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[ServerProcess, Runtime]]:
    database_url = request.getfixturevalue("db_url") if backend == "postgresql" else None
    with running_server(tmp_path, database_url=database_url) as (server, _admin):
        settings = make_settings(
            data_dir=server.data_dir, database_url=database_url, log_level="warning"
        )  # type: ignore[arg-type]
        runtime = open_runtime(settings)
        try:
            yield server, runtime
        finally:
            runtime.close()


def fetch_events(runtime: Runtime, outcome: str) -> int:
    with unit_of_work(runtime.sessions) as session:
        return int(
            session.execute(
                select(func.count())
                .select_from(AuditEventRow)
                .where(AuditEventRow.action == "credential.fetch", AuditEventRow.outcome == outcome)
            ).scalar_one()
        )


def test_sync_client_end_to_end(served: tuple[ServerProcess, Runtime]) -> None:
    server, runtime = served
    tenant = make_tenant(runtime)
    line, ungranted = make_line(runtime, tenant), make_line(runtime, tenant)
    runner_id, client_id, secret = make_runner(runtime)
    grant(runtime, tenant, runner_id, [line])

    with RunnerClient(server.url, client_id, secret, workflow_id="wf-e2e") as vault:
        got = vault.fetch(tenant, line, run_id="run-1")
        assert got.credential == TELEGRAM and got.version == 1
        assert vault.fetch(tenant, line) is got  # served from the lease cache
        assert fetch_events(runtime, "success") == 1
        with pytest.raises(NotGranted):
            vault.fetch(tenant, ungranted)
        assert fetch_events(runtime, "denied") == 1

        # Server-side token loss (e.g. rotation elsewhere): the client renews transparently.
        with unit_of_work(runtime.sessions) as session:
            session.execute(delete(RunnerToken).where(RunnerToken.runner_id == runner_id))
        assert vault.fetch(tenant, line, use_cache=False).credential == TELEGRAM

        revoke_line(runtime, line)
        vault.invalidate()
        with pytest.raises(Revoked):
            vault.fetch(tenant, line)

    with (
        RunnerClient(server.url, client_id, "lvcs_wrong") as bad,
        pytest.raises(AuthenticationError),
    ):
        bad.fetch(tenant, line)


def test_async_client_end_to_end(served: tuple[ServerProcess, Runtime]) -> None:
    server, runtime = served
    tenant = make_tenant(runtime)
    lines = [make_line(runtime, tenant) for _ in range(3)]
    runner_id, client_id, secret = make_runner(runtime)
    grant(runtime, tenant, runner_id, ["*"])

    async def main() -> None:
        async with AsyncRunnerClient(server.url, client_id, secret) as vault:
            got = await asyncio.gather(*(vault.fetch(tenant, ln, run_id="r") for ln in lines))
            assert [g.line_id for g in got] == lines
            assert all(g.credential == TELEGRAM for g in got)

    asyncio.run(main())
    assert fetch_events(runtime, "success") == 3
    with unit_of_work(runtime.sessions) as session:  # aclose() gave the token up
        assert session.execute(select(func.count()).select_from(RunnerToken)).scalar_one() == 0
