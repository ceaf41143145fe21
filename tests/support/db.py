"""Real databases for tests: a fresh SQLite file, or a fresh PostgreSQL database.

PostgreSQL runs whenever ``LINEVAULT_TEST_POSTGRES_URL`` is set (CI sets it); with
``LINEVAULT_TEST_REQUIRE_ALL=1`` a missing or unreachable server fails the run instead
of skipping. One database is created per test session and emptied between tests.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from vault.storage.engine import make_engine, normalize_url
from vault.storage.migrate import upgrade
from vault.storage.models import Base

__all__ = [
    "PostgresServer",
    "SqliteTemplate",
    "database_bytes",
    "pg_dump",
    "postgres_url_or_skip",
    "require_all",
    "reset_database",
]

GENESIS = "0" * 64


def require_all() -> bool:
    return os.environ.get("LINEVAULT_TEST_REQUIRE_ALL") == "1"


def postgres_url_or_skip() -> str:
    url = os.environ.get("LINEVAULT_TEST_POSTGRES_URL")
    if not url:
        if require_all():
            pytest.fail("LINEVAULT_TEST_POSTGRES_URL is not set but LINEVAULT_TEST_REQUIRE_ALL=1")
        pytest.skip("PostgreSQL tests need LINEVAULT_TEST_POSTGRES_URL")
    return normalize_url(url)


class PostgresServer:
    """Creates and drops throw-away databases on the server of the configured URL."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        admin = make_url(base_url).set(database="postgres")
        self._admin: Engine = create_engine(admin, isolation_level="AUTOCOMMIT")
        try:
            with self._admin.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            self._admin.dispose()
            if require_all():
                pytest.fail(f"PostgreSQL is unreachable: {type(exc).__name__}")
            pytest.skip("PostgreSQL is unreachable")
        self._created: list[str] = []

    def create_database(self) -> str:
        name = "lvt_" + secrets.token_hex(6)
        with self._admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self._created.append(name)
        return make_url(self.base_url).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        with self._admin.connect() as conn:
            for name in self._created:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self._created.clear()
        self._admin.dispose()


def reset_database(engine: Engine) -> None:
    """Empty every table and restore the audit chain's genesis head and the epoch row."""
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(
                text(
                    "TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"
                )
            )
        else:
            for table in tables:
                conn.execute(text(f'DELETE FROM "{table}"'))
        conn.execute(
            text("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, :h)"), {"h": GENESIS}
        )
        conn.execute(text("INSERT INTO authz_epoch (id, n) VALUES (1, 0)"))


class SqliteTemplate:
    """A migrated SQLite file made once, copied for each test (much faster than migrating)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "template.db"
        engine = make_engine(f"sqlite:///{self.path}", pool_size=1)
        try:
            upgrade(engine)
        finally:
            engine.dispose()

    def fresh(self, target_dir: Path) -> str:
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / "linevault.db"
        shutil.copyfile(self.path, target)
        return f"sqlite:///{target}"


def pg_dump(url: str) -> bytes:
    """A plain-text ``pg_dump`` of the whole database: what a backup would hold."""
    binary = shutil.which("pg_dump") or "/usr/bin/pg_dump"
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    result = subprocess.run(
        [binary, "--no-owner", "--no-privileges", plain],
        capture_output=True,
        timeout=120,
        check=True,
    )
    return result.stdout


def database_bytes(url: str) -> list[bytes]:
    """Everything stored: the SQLite file and its WAL, or a pg_dump of PostgreSQL."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        db = Path(str(parsed.database))
        return [p.read_bytes() for p in (db, db.with_name(db.name + "-wal")) if p.exists()]
    return [pg_dump(url)]
