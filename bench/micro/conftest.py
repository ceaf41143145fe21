"""Options and fixtures of the in-process benchmarks (run with pytest, see bench/README.md).

Every storage benchmark runs on a fresh database: a throw-away ``linevault_bench_<random>``
database on the local PostgreSQL (created and dropped through the HTTP harness's
``PostgresDatabase``) or a SQLite file, initialised as ``linevault init`` does it.
The figures beyond pytest-benchmark's timings (events/s, DEKs/s, latency percentiles,
other processes' CPU) go into each benchmark's ``extra_info`` (``--benchmark-json``) and
are printed at the end of the run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from bench.http.vault_target import DEFAULT_PG_ADMIN_URL, PostgresDatabase
from bench.micro import measure
from vault.bootstrap import initialise
from vault.runtime import Runtime, open_runtime
from vault.settings import Settings

_FIGURES = pytest.StashKey[list[tuple[str, dict[str, Any]]]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("linevault micro-benchmarks")
    group.addoption("--db", choices=("postgres", "sqlite", "both"), default="postgres")
    group.addoption(
        "--pg-admin-url",
        default=os.environ.get("LINEVAULT_BENCH_PG_ADMIN", DEFAULT_PG_ADMIN_URL),
        help="PostgreSQL admin URL, 127.0.0.1 only (postgresql://user@host:port/db)",
    )
    group.addoption("--iterations", type=int, default=200_000, help="timed calls per crypto op")
    group.addoption("--lines", type=int, default=100_000, help="lines rewrapped by a rotation")
    group.addoption("--batch-size", type=int, default=1000, help="rewrap batch size")
    group.addoption("--emit-threads", default="32,64", help="submitter counts, comma-separated")
    group.addoption("--emit-events", type=int, default=50_000, help="events per emit run")
    group.addoption("--verify-events", type=int, default=500_000, help="chain length verified")
    group.addoption(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="seconds to wait, at most, for a quiet machine before each run (0: no wait)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    config = metafunc.config
    if "db" in metafunc.fixturenames:
        choice = config.getoption("--db")
        dbs = ["postgres", "sqlite"] if choice == "both" else [choice]
        metafunc.parametrize("db", dbs, scope="module")
    if "emit_threads" in metafunc.fixturenames:
        threads = [int(n) for n in config.getoption("--emit-threads").split(",")]
        metafunc.parametrize("emit_threads", threads)


@pytest.fixture(scope="module")
def runtime_on_fresh_database(
    db: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Runtime]]:
    """Opens runtimes on fresh databases of ``db``; closed and dropped with the module."""
    with ExitStack() as stack:

        def make(*, start_writer: bool = True, **settings: Any) -> Runtime:
            data = tmp_path_factory.mktemp("micro")
            url = f"sqlite:///{data / 'linevault.db'}"
            if db == "postgres":
                database = PostgresDatabase(request.config.getoption("--pg-admin-url"))
                url = database.create()
                stack.callback(database.drop)
            config = Settings(
                data_dir=data / "var",
                database_url=url,  # type: ignore[arg-type]
                log_level="warning",
                **settings,
            )
            initialise(config, admin_email="bench@example.test")
            runtime = open_runtime(config, start_writer=start_writer)
            stack.callback(runtime.close)
            return runtime

        yield make


@pytest.fixture
def other_cpu(benchmark: Any, pytestconfig: pytest.Config) -> measure.OtherCpu:
    """``with other_cpu():`` records other processes' CPU during the block (after a wait)."""
    wait = pytestconfig.getoption("--quiet-wait")
    return lambda: measure.other_cpu(benchmark, max_wait_s=wait)


@pytest.fixture(autouse=True)
def _collect_figures(request: pytest.FixtureRequest, benchmark: Any) -> Iterator[None]:
    yield
    if benchmark.extra_info:
        figures = request.config.stash.setdefault(_FIGURES, [])
        figures.append((request.node.name, dict(benchmark.extra_info)))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    figures = config.stash.get(_FIGURES, [])
    if figures:
        terminalreporter.section("figures")
        for name, info in figures:
            terminalreporter.write_line(f"{name}: {json.dumps(info)}")
