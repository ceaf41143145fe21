"""Engines and sessions, with the same transactional behaviour on SQLite and PostgreSQL.

SQLite: the database file private to its owner (0600, created so before SQLite opens
it; SQLite gives its ``-wal`` and ``-shm`` files the database file's mode), WAL journal,
foreign keys on, a busy timeout, ``synchronous=FULL`` (a committed
audit event must survive power loss), and ``BEGIN IMMEDIATE`` for every transaction
that may write, so two writers queue on the database lock instead of failing late with
a stale snapshot. Read-only work uses :func:`readonly` to keep a deferred ``BEGIN``.

One pool per database per process: the runtime's engine. Every connection of the
process comes from it, the API's sessions, the fetch's read and the audit writer's
(:func:`vault.runtime.open_runtime`), and there is one reconnect policy for all of them:

- on PostgreSQL the pool pings a connection when it is checked out and replaces it if
  the server dropped it (a restart, a failover, a network cut);
- when a statement finds its connection dead, SQLAlchemy discards that connection and
  every connection the pool made before it, and :func:`retry_on_disconnect` runs the
  work once more on a fresh one, but only work that cannot have been applied (a read,
  or a transaction whose COMMIT was not sent). Work whose outcome is unknown raises.

Nothing waits on the database forever (:class:`DbTimeouts`, from the settings): on
PostgreSQL a connect timeout per host, ``statement_timeout``, and for a server that
stops answering altogether (a blackholed network: no reply, no RST) TCP keepalives and
``tcp_user_timeout``, so a read blocked on a dead socket fails too; on SQLite the busy
timeout; on both a bound on the wait for a pooled connection.

``LINEVAULT_DATABASE_URL`` may name several hosts as libpq does
(``postgresql://h1:5432,h2:5432/db?target_session_attrs=read-write``): libpq tries them
in order and keeps the first that qualifies, so after a failover the pool's fresh
connections (pre-ping, invalidation above) land on the new primary.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

__all__ = [
    "DbTimeouts",
    "SessionFactory",
    "SqlitePaging",
    "is_sqlite",
    "make_engine",
    "make_private",
    "normalize_url",
    "readonly",
    "retry_on_disconnect",
    "unit_of_work",
]

log = logging.getLogger("linevault.storage")

SessionFactory = sessionmaker[Session]
_READONLY = "linevault_readonly"
_T = TypeVar("_T")


def normalize_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and use the psycopg 3 driver for them; turn a
    libpq multi-host authority (``h1:p1,h2:p2``) into SQLAlchemy's ``?host=`` form."""
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("postgresql"):
        url = _multihost(url)
    return url


def _multihost(url: str) -> str:
    scheme, rest = url.split("://", 1)
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, tail = rest[:cut], rest[cut:]
    userinfo, at, hosts = authority.rpartition("@")
    if "," not in hosts:
        return url
    path, _, query = tail.partition("?")
    params = [f"host={host}" for host in hosts.split(",") if host]
    if query:
        params.append(query)
    return f"{scheme}://{userinfo}{at}{path or '/'}?{'&'.join(params)}"


@dataclass(frozen=True, slots=True)
class DbTimeouts:
    """How long anything may wait on the database (seconds; statement 0: no limit on
    PostgreSQL's statements, SQLite then waits at most a minute for its lock)."""

    connect: int = 5
    statement: float = 15.0
    pool: float = 5.0

    def sqlite_busy_seconds(self) -> float:
        return self.statement if self.statement > 0 else 60.0

    def postgres_connect_args(self) -> dict[str, Any]:
        """libpq parameters: connect timeout (per host), statement timeout, and a dead
        peer detected by TCP (keepalives, unacknowledged data) within about as long."""
        statement_ms = int(self.statement * 1000)
        args: dict[str, Any] = {
            "connect_timeout": max(2, self.connect),
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
            # Data sent and not acknowledged this long: the peer is gone (a blackhole).
            "tcp_user_timeout": max(statement_ms, self.connect * 1000, 5_000),
        }
        if statement_ms > 0:
            # A transaction left open by a client that vanished must not hold its locks
            # (the audit chain's head row) until the server's TCP notices.
            args["options"] = (
                f"-c statement_timeout={statement_ms} "
                f"-c idle_in_transaction_session_timeout={max(2 * statement_ms, 30_000)}"
            )
        return args


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


@dataclass(frozen=True, slots=True)
class SqlitePaging:
    """SQLite's page cache per connection and the size of its memory-mapped reads."""

    cache_mib: int = 8
    mmap_mib: int = 1024


def make_engine(
    url: str,
    *,
    pool_size: int = 20,
    paging: SqlitePaging | None = None,
    timeouts: DbTimeouts | None = None,
) -> Engine:
    url = normalize_url(url)
    parsed = make_url(url)
    timeouts = timeouts or DbTimeouts()
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and "mode=memory" not in url:
            make_private(parsed.database)
        busy = timeouts.sqlite_busy_seconds()
        engine = create_engine(
            url,
            connect_args={"timeout": busy, "check_same_thread": False},
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_timeout=timeouts.pool,
            pool_pre_ping=False,
        )
        _configure_sqlite(engine, paging or SqlitePaging(), busy_ms=int(busy * 1000))
        return engine
    return create_engine(
        url,
        connect_args=timeouts.postgres_connect_args(),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=timeouts.pool,
        pool_pre_ping=True,
        pool_recycle=1800,
    )


_SIDE_FILES = ("", "-wal", "-shm", "-journal")


def make_private(database: str) -> None:
    """Create the SQLite file 0600 if missing; take group/other access off it and its
    side files if present (a copy or an older version may have made them 0644).

    The credentials inside are encrypted, but metadata, audit trail and wrapped keys are
    nobody else's business on a shared host.
    """
    fd = os.open(database, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    for suffix in _SIDE_FILES:
        path = database + suffix
        try:
            mode = os.stat(path).st_mode & 0o777
        except FileNotFoundError:
            continue
        if mode & 0o077:
            os.chmod(path, mode & 0o700)


def _configure_sqlite(engine: Engine, paging: SqlitePaging, *, busy_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite otherwise defers it).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        # Zero freed space, so shredded envelopes do not linger in the file's free pages.
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
        # Reads of a large database: a bigger page cache, and mmap so that pages already in
        # the OS page cache cost no read() call (the 1M-credential fetch, docs/benchmarks.md).
        cursor.execute(f"PRAGMA cache_size=-{int(paging.cache_mib) * 1024}")
        cursor.execute(f"PRAGMA mmap_size={int(paging.mmap_mib) * 1024 * 1024}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get(_READONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def _nothing_sent() -> bool:
    return False


def retry_on_disconnect(
    work: Callable[[], _T], *, what: str, applied: Callable[[], bool] = _nothing_sent
) -> _T:
    """Run ``work``; if its connection turned out dead, run it once more on a fresh one.

    The one reconnect policy of the process (see the module docstring). ``work`` must
    open its own session or connection, so the second run checks out a fresh one. Only
    work that nothing can have been applied by may be retried: ``applied`` says, after a
    failure, whether the failed run got past its point of no return (it sent COMMIT);
    then the outcome is unknown and the error is raised.
    """
    try:
        return work()
    except DBAPIError as exc:
        if not exc.connection_invalidated or applied():
            raise
        log.warning("%s: stale database connection replaced", what)
    return work()


def readonly(engine: Engine) -> Engine:
    """The same engine whose transactions take no write lock on SQLite."""
    return engine.execution_options(**{_READONLY: True})


@contextmanager
def unit_of_work(factory: SessionFactory) -> Iterator[Session]:
    """One transaction: commit if the block finishes, roll back if it raises.

    The project's one unit of work. It is not ``sessionmaker.begin()``: services roll the
    session back early (to drop SQLite's write lock before auditing a refusal) and go on
    using it, which a ``begin()`` block refuses ("Can't operate on closed transaction").
    """
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
