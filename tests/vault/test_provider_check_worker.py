"""The periodic platform check (vault/lines/check_worker.py) on SQLite and PostgreSQL,
against the local platform stand-in: due lines are checked once per interval, a refused
token turns the line ``invalid`` (audited by the system actor), a replaced line keeps
its own answer, and the worker is off unless both settings enable it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.support.lines import CTX, make_tenant, owner, planted, service, uow
from tests.support.platforms import PlatformStandIn, platform_standin, standin_settings
from vault.clock import FixedClock
from vault.lines.check_worker import CHECK_ACTOR_ID, ProviderCheckWorker, provider_check_worker_for
from vault.runtime import Runtime
from vault.settings import Settings
from vault.storage.models import AuditEventRow, Line

INTERVAL = 600.0


@pytest.fixture
def standin() -> Iterator[PlatformStandIn]:
    with platform_standin() as server:
        yield server


@pytest.fixture
def settings(tmp_path: Path, db_url: str, standin: PlatformStandIn) -> Settings:
    return standin_settings(tmp_path, db_url, standin, provider_check_interval_seconds=INTERVAL)


def make_lines(runtime: Runtime, tenant: str) -> dict[str, str]:
    ids: dict[str, str] = {}
    for kind in ("telegram", "instagram", "messenger", "widget"):
        with uow(runtime) as session:
            view = service(runtime, session).create(
                owner(tenant),
                tenant,
                line_type=kind,
                name=kind,
                credential=planted(kind),
                context=CTX,
            )
            ids[kind] = view.id
    return ids


def statuses(runtime: Runtime) -> dict[str, str]:
    with uow(runtime) as session:
        return {ln.type: ln.provider_status for ln in session.execute(select(Line)).scalars()}


def worker(runtime: Runtime) -> ProviderCheckWorker:
    built = provider_check_worker_for(runtime)
    assert built is not None
    return built


def test_due_lines_are_checked_once_per_interval(
    runtime: Runtime, clock: FixedClock, standin: PlatformStandIn
) -> None:
    make_lines(runtime, make_tenant(runtime))
    assert statuses(runtime)["instagram"] == "ok"
    calls = sum(standin.calls.values())
    checker = worker(runtime)
    assert checker.tick() == 0  # just checked at create: not due
    clock.advance(INTERVAL + 1)
    standin.fail = "190"
    assert checker.tick() == 3  # the widget has no platform
    assert sum(standin.calls.values()) == calls + 3
    after = statuses(runtime)
    assert (after["instagram"], after["messenger"]) == ("invalid", "invalid")
    assert after["telegram"] == "invalid" and after["widget"] == "not_checked"
    assert checker.tick() == 0  # claimed for this interval
    with uow(runtime) as session:
        events = list(
            session.execute(
                select(AuditEventRow).where(
                    AuditEventRow.action == "credential.check",
                    AuditEventRow.actor_id == CHECK_ACTOR_ID,
                )
            ).scalars()
        )
    assert sorted(e.reason or "" for e in events) == ["invalid"] * 3
    clock.advance(INTERVAL + 1)
    standin.fail = "slow"
    standin.slow_seconds = 3.0
    assert checker.tick() == 3
    assert set(statuses(runtime).values()) == {"unverified", "not_checked"}


def test_a_replaced_line_keeps_its_own_answer(
    runtime: Runtime, clock: FixedClock, standin: PlatformStandIn
) -> None:
    tenant = make_tenant(runtime)
    line_id = make_lines(runtime, tenant)["telegram"]
    checker = worker(runtime)
    clock.advance(INTERVAL + 1)
    claimed = checker._claim(line_id, clock.now() - timedelta(seconds=INTERVAL))
    assert claimed is not None
    with uow(runtime) as session:  # replaced while the platform was being asked
        service(runtime, session).replace(
            owner(tenant), tenant, line_id, credential=planted("telegram"), context=CTX
        )
    standin.fail = "401"
    line_type, version, fields = claimed
    checker._keep(line_id, version, runtime.checks.check(line_type, fields))
    assert statuses(runtime)["telegram"] == "ok"


def test_off_unless_enabled(runtime: Runtime, settings: Settings) -> None:
    off = replace(
        runtime, settings=settings.model_copy(update={"provider_check_interval_seconds": 0})
    )
    assert provider_check_worker_for(off) is None
    off.checks.close()
    assert provider_check_worker_for(runtime) is not None
    assert Settings().provider_check_interval_seconds == 0  # type: ignore[call-arg]


def test_the_app_runs_the_periodic_check_while_it_serves(
    bootstrap: object, settings: Settings, standin: PlatformStandIn
) -> None:
    """Started with the app's other background work and stopped with it."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from vault.runtime import open_runtime

    fast = settings.model_copy(update={"provider_check_interval_seconds": 0.3})
    rt = open_runtime(fast)
    try:
        make_lines(rt, make_tenant(rt))
        standin.fail = "401"
        with TestClient(create_app(fast, runtime=rt)):
            deadline = time.monotonic() + 10
            while statuses(rt)["telegram"] != "invalid" and time.monotonic() < deadline:
                time.sleep(0.1)
        assert statuses(rt)["telegram"] == "invalid"
        calls = sum(standin.calls.values())
        time.sleep(0.8)  # stopped with the app: no more calls
        assert sum(standin.calls.values()) == calls
    finally:
        rt.close()
