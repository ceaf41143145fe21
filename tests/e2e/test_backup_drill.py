"""Backup and restore drills under load (issue 18), checked as tests/support/drill.py says.

SQLite: ``linevault backup`` while a real server answers fetches, ``linevault restore``
into a fresh data dir, the root key copied apart. PostgreSQL: ``pg_dump`` while the server
answers fetches, ``pg_restore`` into a fresh database, the same checks.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.support.drill import (
    Drill,
    FetchLoad,
    check_restored,
    linevault,
    prepare,
    wrong_root_opens_nothing,
)
from tests.support.faults import Served, serve, wait_for
from tests.support.server import ServerProcess, free_port, init_data_dir
from vault.runtime import open_runtime
from vault.settings import Settings

pytestmark = pytest.mark.slow

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _backup_under_load(
    served: Served, drill: Drill, take: Callable[[], None]
) -> tuple[FetchLoad, float]:
    """Run ``take`` while fetches run; return the load and when the backup started."""
    load = FetchLoad(served, drill)
    with load.running():
        wait_for(lambda: len(load.answers) >= 50, timeout=60, what="fetch load")
        started = time.monotonic()
        take()
        ended = time.monotonic()
        seen = len(load.answers)
        wait_for(lambda: len(load.answers) >= seen + 20, timeout=60, what="fetches after")
    assert load.overlapping(started, ended) > 0, "no fetch ran while the backup was taken"
    assert {status for _, status, _, _ in load.answers} == {200}
    return load, started


def _serve_restored(served_dir: Path, database_url: str | None, drill: Drill) -> None:
    """A server on the restored data answers the active lines and refuses the revoked."""
    server = ServerProcess(served_dir, database_url, free_port(), {})
    server.start()
    try:
        headers = {"Authorization": f"Bearer {drill.token}"}
        base = f"{server.url}/v1/tenants/{drill.tenant_id}/lines"
        line = sorted(drill.active)[0]
        got = httpx.get(f"{base}/{line}/credential", headers=headers, timeout=30)
        assert got.status_code == 200, got.text
        assert json.dumps(got.json()["credential"], sort_keys=True, separators=(",", ":")) == (
            drill.active[line].decode()
        )
        got = httpx.get(f"{base}/{drill.revoked[0]}/credential", headers=headers, timeout=30)
        assert got.status_code == 410, got.text
    finally:
        server.stop()


def _verify(data_dir: Path, database_url: str | None) -> None:
    result = linevault(["audit", "verify", "--json"], data_dir=data_dir, database_url=database_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["ok"] is True


def _after_restore(
    data_dir: Path, database_url: str | None, drill: Drill, fetched_before: list[str]
) -> None:
    wrong_root_opens_nothing(data_dir, database_url, drill)
    settings = Settings(data_dir=data_dir, database_url=database_url, log_level="warning")  # type: ignore[call-arg]
    runtime = open_runtime(settings, start_writer=False)
    try:
        check_restored(runtime, drill, fetched_before=fetched_before)
    finally:
        runtime.close()
    _verify(data_dir, database_url)
    _serve_restored(data_dir, database_url, drill)


def test_sqlite_backup_under_load_then_restore(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    admin = init_data_dir(data_dir)
    out = tmp_path / "backups" / "linevault.backup"
    out.parent.mkdir()
    with serve(data_dir, admin, database_url=None) as served:
        drill = prepare(served)
        results: list[subprocess.CompletedProcess[str]] = []

        def take() -> None:
            old = os.umask(0o022)  # a loose umask must not make the backup readable
            try:
                results.append(
                    linevault(["backup", "--out", str(out), "--json"], data_dir=data_dir)
                )
            finally:
                os.umask(old)

        load, started = _backup_under_load(served, drill, take)
    assert results[0].returncode == 0, results[0].stderr
    assert json.loads(results[0].stdout)["audit_head_seq"] > 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no partial file left
    again = linevault(["backup", "--out", str(out)], data_dir=data_dir)
    assert again.returncode == 2 and "exists" in again.stderr

    restored = tmp_path / "restored"
    result = linevault(["restore", str(out), "--json"], data_dir=restored)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE((restored / "linevault.db").stat().st_mode) == 0o600
    refused = linevault(["restore", str(out)], data_dir=restored)
    assert refused.returncode == 2 and "not empty" in refused.stderr
    # The root key travels apart from the backup; without it nothing opens.
    _after_restore_without_key(restored, drill)
    shutil.copy2(data_dir / "root.key", restored / "root.key")
    _after_restore(restored, None, drill, load.ok_before(started))


def _after_restore_without_key(restored: Path, drill: Drill) -> None:
    settings = Settings(data_dir=restored, log_level="warning")  # type: ignore[call-arg]
    with pytest.raises(Exception):  # noqa: B017 - no key file: the key provider fails
        open_runtime(settings, start_writer=False).close()
    assert not (restored / "root.key").exists()
    assert drill.active


def test_backup_and_restore_refuse_postgres(tmp_path: Path) -> None:
    url = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    for args in (["backup", "--out", str(tmp_path / "b")], ["restore", str(tmp_path / "b")]):
        result = linevault(args, data_dir=tmp_path / "var", database_url=url)
        assert result.returncode == 2
        assert "pg_dump" in result.stderr and "docs/operations.md" in result.stderr
    assert not (tmp_path / "b").exists()


def test_restore_refuses_what_is_not_a_backup(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a database" * 100)
    result = linevault(["restore", str(junk)], data_dir=tmp_path / "var")
    assert result.returncode == 2 and "not a linevault" in result.stderr
    assert not (tmp_path / "var").exists()


def _pg(tool: str, *args: str) -> None:
    result = subprocess.run(
        [str(PG_BIN / tool), *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr


def test_postgres_pg_dump_under_load_then_pg_restore(
    postgres_db_url: str, postgres_server: object, tmp_path: Path
) -> None:
    from tests.support.db import PostgresServer

    assert isinstance(postgres_server, PostgresServer)
    data_dir = tmp_path / "var"
    admin = init_data_dir(data_dir, database_url=postgres_db_url)
    dump = tmp_path / "linevault.dump"
    libpq = make_url(postgres_db_url).set(drivername="postgresql").render_as_string(False)
    with serve(data_dir, admin, database_url=postgres_db_url) as served:
        drill = prepare(served)

        def take() -> None:
            old = os.umask(0o077)  # the documented recipe
            try:
                _pg("pg_dump", "--format=custom", "--no-owner", f"--file={dump}", libpq)
            finally:
                os.umask(old)

        load, started = _backup_under_load(served, drill, take)
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600
    fresh = postgres_server.create_database()
    fresh_libpq = make_url(fresh).set(drivername="postgresql").render_as_string(False)
    _pg("pg_restore", "--no-owner", "--exit-on-error", f"--dbname={fresh_libpq}", str(dump))
    _after_restore(data_dir, fresh, drill, load.ok_before(started))
