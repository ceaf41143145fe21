"""How the fetch path runs its one SQL read, synchronously or on the event loop.

- :class:`SyncReader`: SQLAlchemy Core on a pooled connection (SQLite: a deferred read
  transaction; PostgreSQL: autocommit, so the statement is the only round trip).
- :class:`AsyncPgReader`: the same Core statement, compiled once for the psycopg dialect,
  run on psycopg's asyncio connections (autocommit, server-side prepared). An async route
  then awaits the read without a thread hop: the event loop keeps serving other requests
  while PostgreSQL answers, and no thread contends for the GIL to collect the result.

Both return one row (attribute access by column label) or None.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy import Engine
from sqlalchemy.sql import Select

from vault.storage.engine import is_sqlite, readonly

__all__ = ["AsyncPgReader", "SyncReader", "pg_conninfo"]


class SyncReader:
    def __init__(self, engine: Engine, statement: Select[Any]) -> None:
        self._engine = (
            readonly(engine)
            if is_sqlite(engine)
            else engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        self._statement = statement

    def read(self, params: Mapping[str, Any]) -> Any:
        with self._engine.connect() as conn:
            return conn.execute(self._statement, dict(params)).first()


def pg_conninfo(engine: Engine) -> str:
    """A libpq URI for the engine's database (the driver suffix removed)."""
    url = engine.url.set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class AsyncPgReader:
    """A small pool of psycopg asyncio connections bound to the loop that made them.

    At most ``max_size`` connections are open per process (a request beyond that waits
    for one to come back), so N server processes hold at most N x ``max_size`` of the
    database's connections for this path; idle ones are kept for reuse, not reopened.
    """

    def __init__(self, engine: Engine, statement: Select[Any], *, max_size: int = 16) -> None:
        compiled = statement.compile(dialect=engine.dialect)
        self._sql = str(compiled)
        self._defaults = {k: v for k, v in compiled.params.items() if v is not None}
        self._conninfo = pg_conninfo(engine)
        self._max_size = max_size
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(
            self._conninfo, autocommit=True, prepare_threshold=0, row_factory=namedtuple_row
        )

    async def read(self, params: Mapping[str, Any]) -> Any:
        loop = asyncio.get_running_loop()
        if loop is not self._loop or self._slots is None:  # a new loop: a new pool
            self._idle, self._loop = [], loop
            self._slots = asyncio.Semaphore(self._max_size)
        args = {**self._defaults, **params}
        async with self._slots:
            for attempt in (1, 2):
                conn = self._idle.pop() if self._idle else await self._connect()
                try:
                    cursor = await conn.execute(self._sql, args)
                    row = await cursor.fetchone()
                except psycopg.OperationalError:
                    await conn.close()
                    if attempt == 2:
                        raise
                    # A connection that died while idle: the server restarted or failed
                    # over, so every idle one is as dead. Drop them all and retry once on
                    # a fresh connection (popping another stale one would fail again).
                    await self._discard_idle()
                    continue
                except BaseException:
                    await conn.close()
                    raise
                self._idle.append(conn)
                return row
        raise AssertionError("unreachable")

    async def _discard_idle(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()

    async def aclose(self) -> None:
        await self._discard_idle()
