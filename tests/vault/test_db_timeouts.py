"""Nothing waits on the database forever (issue 18): the timeouts are settings with safe
defaults, the engine applies them on both databases, a pool that stays exhausted gives
503 ``unavailable``, and libpq multi-host URLs are accepted.

The hung-database cases over a real network (a blackhole between server and PostgreSQL,
a failover) are tests/e2e/test_netfaults.py and tests/e2e/test_failover.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from tests.support.db import postgres_url_or_skip
from tests.support.server import free_port
from vault.runtime import db_timeouts, engine_for
from vault.settings import Settings
from vault.storage.engine import DbTimeouts, make_engine, normalize_url


def test_defaults_are_bounded() -> None:
    settings = Settings()
    assert 0 < settings.db_connect_timeout_seconds <= 10
    assert 0 < settings.db_statement_timeout_seconds <= 60
    assert 0 < settings.db_pool_timeout_seconds <= 30
    assert db_timeouts(settings) == DbTimeouts(connect=5, statement=15.0, pool=5.0)


def test_environment_sets_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINEVAULT_DB_CONNECT_TIMEOUT_SECONDS", "3")
    monkeypatch.setenv("LINEVAULT_DB_STATEMENT_TIMEOUT_SECONDS", "2.5")
    monkeypatch.setenv("LINEVAULT_DB_POOL_TIMEOUT_SECONDS", "1")
    assert db_timeouts(Settings()) == DbTimeouts(connect=3, statement=2.5, pool=1.0)


def test_sqlite_busy_timeout_follows_the_statement_timeout(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, db_statement_timeout_seconds=2.5)
    engine = engine_for(settings)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 2500
    finally:
        engine.dispose()


def test_postgres_statement_timeout_is_applied() -> None:
    url = postgres_url_or_skip()
    engine = make_engine(url, pool_size=1, timeouts=DbTimeouts(connect=3, statement=0.5, pool=1))
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar_one() == "500ms"
            started = time.monotonic()
            with pytest.raises(OperationalError):
                conn.execute(text("SELECT pg_sleep(10)"))
            assert time.monotonic() - started < 5
    finally:
        engine.dispose()


def test_an_exhausted_pool_fails_within_the_pool_timeout(tmp_path: Path) -> None:
    engine = make_engine(
        f"sqlite:///{tmp_path / 'x.db'}", pool_size=1, timeouts=DbTimeouts(pool=0.3)
    )
    held = [engine.connect(), engine.connect()]  # pool_size + overflow
    try:
        started = time.monotonic()
        with pytest.raises(PoolTimeout):
            engine.connect()
        assert time.monotonic() - started < 3
    finally:
        for conn in held:
            conn.close()
        engine.dispose()


def test_a_pool_timeout_is_503_unavailable(client: TestClient) -> None:
    def exhausted() -> None:
        raise PoolTimeout("QueuePool limit reached")

    client.app.add_api_route("/v1/_test/pool", exhausted, methods=["GET"])  # type: ignore[attr-defined]
    got = client.get("/v1/_test/pool")
    assert got.status_code == 503
    assert got.json()["code"] == "unavailable"
    assert "QueuePool" not in got.text


def test_multi_host_urls_become_sqlalchemy_host_parameters() -> None:
    url = normalize_url("postgresql://u:p@h1:5432,h2:5433/db?target_session_attrs=read-write")
    parsed = make_url(url)
    assert parsed.drivername == "postgresql+psycopg"
    assert parsed.database == "db"
    assert parsed.query["host"] == ("h1:5432", "h2:5433")
    assert parsed.query["target_session_attrs"] == "read-write"
    assert normalize_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"


def test_a_multi_host_url_connects_to_the_host_that_answers() -> None:
    real = make_url(postgres_url_or_skip())
    dead = f"127.0.0.1:{free_port()}"
    url = (
        f"postgresql://{real.username}@{dead},{real.host}:{real.port or 5432}/{real.database}"
        "?target_session_attrs=read-write"
    )
    engine = make_engine(url, pool_size=1, timeouts=DbTimeouts(connect=2))
    try:
        with engine.connect() as conn:
            port = conn.exec_driver_sql("SELECT inet_server_port()").scalar_one()
        assert port == (real.port or 5432)
    finally:
        engine.dispose()
