"""Shared fixtures: every storage-backed test runs on SQLite and on PostgreSQL.

``db_url`` is parametrized over both backends; PostgreSQL cases are skipped (or failed,
with LINEVAULT_TEST_REQUIRE_ALL=1) when no server URL is configured.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from tests.support.db import PostgresServer, SqliteTemplate, postgres_url_or_skip, reset_database
from tests.support.settings import make_settings
from vault.bootstrap import BootstrapResult, initialise
from vault.clock import FixedClock
from vault.runtime import Runtime, open_runtime
from vault.settings import Settings
from vault.storage.engine import make_engine

# No test talks to a platform unless it asks to: every Settings built in this process or
# in a server process a test starts (they inherit the environment) makes no outbound
# call. Connector tests pass ``provider_checks=True`` and the URLs of the local stand-in
# (tests/support/platforms.py) explicitly.
os.environ["LINEVAULT_PROVIDER_CHECKS"] = "off"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> SqliteTemplate:
    return SqliteTemplate(tmp_path_factory.mktemp("sqlite-template"))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer(postgres_url_or_skip())
    yield server
    server.drop_all()


@pytest.fixture(scope="session")
def postgres_session_db(postgres_server: PostgresServer) -> str:
    """One migrated database for the whole test session."""
    from vault.storage.migrate import upgrade

    url = postgres_server.create_database()
    engine = make_engine(url, pool_size=1)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database of the parametrized backend, private to this test."""
    if backend == "sqlite":
        template: SqliteTemplate = request.getfixturevalue("sqlite_template")
        return template.fresh(tmp_path / "db")
    url: str = request.getfixturevalue("postgres_session_db")
    engine = make_engine(url, pool_size=1)
    try:
        reset_database(engine)
    finally:
        engine.dispose()
    return url


@pytest.fixture
def postgres_db_url(postgres_session_db: str) -> str:
    """For tests that only make sense on PostgreSQL (several server processes)."""
    engine = make_engine(postgres_session_db, pool_size=1)
    try:
        reset_database(engine)
    finally:
        engine.dispose()
    return postgres_session_db


@pytest.fixture
def clock() -> FixedClock:
    """An injected clock starting now (TOTP codes made with it are valid in real time too)."""
    return FixedClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return make_settings(data_dir=tmp_path / "var", database_url=db_url, log_level="warning")


@pytest.fixture
def bootstrap(settings: Settings, clock: FixedClock) -> BootstrapResult:
    return initialise(settings, admin_email="admin@example.test", clock=clock)


@pytest.fixture
def runtime(settings: Settings, bootstrap: BootstrapResult, clock: FixedClock) -> Iterator[Runtime]:
    rt = open_runtime(settings, clock=clock)
    yield rt
    rt.close()


@pytest.fixture
def client(settings: Settings, runtime: Runtime) -> Iterator[TestClient]:
    app = create_app(settings, runtime=runtime)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
