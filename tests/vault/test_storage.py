"""Storage: migrations match the models, SQLite runs with the pragmas we rely on, and
UTC timestamps survive a round trip on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select, text

from vault.runtime import open_runtime
from vault.settings import Settings
from vault.storage.engine import make_engine, unit_of_work
from vault.storage.migrate import current_revision, head_revision
from vault.storage.models import Base, Tenant
from vault.storage.sessions import session_factory


def test_migrations_match_models(db_url: str) -> None:
    engine = make_engine(db_url, pool_size=1)
    try:
        assert current_revision(engine) == head_revision()
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": False})
            diff = compare_metadata(ctx, Base.metadata)
        assert diff == []
    finally:
        engine.dispose()


def test_sqlite_pragmas(sqlite_template, tmp_path) -> None:
    engine = make_engine(sqlite_template.fresh(tmp_path), pool_size=1)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
            assert conn.execute(text("PRAGMA cache_size")).scalar() == -8 * 1024
            assert conn.execute(text("PRAGMA mmap_size")).scalar() == 1024 * 1024 * 1024
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite"])  # PostgreSQL has no such pragmas
def test_sqlite_paging_follows_the_settings(
    settings: Settings, bootstrap: object, clock: object
) -> None:
    """LINEVAULT_SQLITE_CACHE_MIB / _MMAP_MIB reach the connections of the runtime's pool."""
    tuned = settings.model_copy(update={"sqlite_cache_mib": 3, "sqlite_mmap_mib": 0})
    runtime = open_runtime(tuned, clock=clock, start_writer=False)  # type: ignore[arg-type]
    try:
        with runtime.engine.connect() as conn:
            assert conn.execute(text("PRAGMA cache_size")).scalar() == -3 * 1024
            assert conn.execute(text("PRAGMA mmap_size")).scalar() == 0
    finally:
        runtime.close()


def test_utc_round_trip_and_naive_refused(db_url: str) -> None:
    engine = make_engine(db_url, pool_size=1)
    sessions = session_factory(engine)
    moment = datetime(2026, 11, 29, 10, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    try:
        with unit_of_work(sessions) as s:
            s.add(Tenant(id="tnt_x", name="x", created_at=moment, active_kek_version=1))
        with unit_of_work(sessions) as s:
            loaded = s.execute(select(Tenant)).scalar_one().created_at
        assert loaded == moment
        assert loaded.tzinfo is not None and loaded.utcoffset() == timedelta(0)
        with pytest.raises(Exception, match="naive"), unit_of_work(sessions) as s:
            s.add(
                Tenant(id="tnt_y", name="y", created_at=datetime(2026, 1, 1), active_kek_version=1)
            )
            s.flush()
    finally:
        engine.dispose()


def test_unit_of_work_rolls_back_on_error(db_url: str) -> None:
    engine = make_engine(db_url, pool_size=1)
    sessions = session_factory(engine)
    try:
        with pytest.raises(RuntimeError), unit_of_work(sessions) as s:
            s.add(Tenant(id="tnt_z", name="z", created_at=datetime.now(UTC), active_kek_version=1))
            s.flush()
            raise RuntimeError("boom")
        with unit_of_work(sessions) as s:
            assert s.execute(select(Tenant)).first() is None
    finally:
        engine.dispose()
