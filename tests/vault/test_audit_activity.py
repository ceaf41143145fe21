"""Fetches per hour for the console's chart: counted in one SQL query on both backends,
per line or per runner, served vs denied, scoped to a tenant, and read only by the
people who may read the tenant's audit, every read recorded as ``audit.read``."""

from __future__ import annotations

from datetime import UTC, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text, update

from tests.support.db import SqliteTemplate
from tests.support.runners import make_line, make_runner, make_tenant
from vault.audit.activity import (
    ACTIVITY_HOURS,
    FetchActivity,
    FetchSeries,
    _statement,
    activity_window,
)
from vault.audit.events import AuditEvent, RequestContext
from vault.audit.service import AuditReader, EventFilter
from vault.authz import UserPrincipal
from vault.clock import FixedClock
from vault.errors import Forbidden, InvalidRequest, NotFound
from vault.runners.events import fetch_event
from vault.runtime import Runtime
from vault.storage.engine import make_engine, unit_of_work
from vault.storage.models import Line

CTX = RequestContext(request_id="req_act", ip="127.0.0.1", user_agent="pytest")
LAST = ACTIVITY_HOURS - 1  # the current hour's index


def person(platform: str | None = None, roles: dict[str, str] | None = None) -> UserPrincipal:
    return UserPrincipal(
        user_id=f"usr_{platform or 'someone'}",
        email="u@example.test",
        platform_role=platform,  # type: ignore[arg-type]
        session_id="ses_x",
        mfa_fresh=False,
        tenant_roles=roles or {},
    )


def at(runtime: Runtime, clock: FixedClock, hours_ago: float, event: AuditEvent) -> None:
    """Write ``event`` as if ``hours_ago`` hours before the clock's now."""
    clock.advance(-hours_ago * 3600)
    try:
        runtime.audit.emit(event)
    finally:
        clock.advance(hours_ago * 3600)


def name_line(runtime: Runtime, line_id: str, name: str) -> None:
    with unit_of_work(runtime.sessions) as session:
        session.execute(update(Line).where(Line.id == line_id).values(name=name))


def by_key(activity: FetchActivity) -> dict[str | None, FetchSeries]:
    return {s.key: s for s in activity.series}


@pytest.fixture
def world(runtime: Runtime, clock: FixedClock) -> dict[str, str]:
    # The middle of an hour, so "n hours ago" stays inside one hour bucket.
    clock.advance(-clock.now().minute * 60 + 30 * 60)
    tenant, other = make_tenant(runtime, "Acme"), make_tenant(runtime, "Other")
    bot, shop, foreign = (
        make_line(runtime, tenant),
        make_line(runtime, tenant),
        make_line(runtime, other),
    )
    name_line(runtime, bot, "Support bot")
    name_line(runtime, shop, "Shop")
    name_line(runtime, foreign, "Secret project")
    r1 = make_runner(runtime, "n8n-prod")[0]
    r2 = make_runner(runtime, "zapier")[0]
    ok, no = "success", "denied"
    for hours_ago, runner, line, outcome in [
        (0, r1, bot, ok),
        (0, r1, bot, ok),
        (0, r2, bot, no),
        (5, r1, shop, ok),
        (5, r2, shop, no),
        (5, r2, shop, no),
        (LAST, r1, bot, ok),  # the window's first hour
        (ACTIVITY_HOURS, r1, bot, ok),  # just outside it
        (30 * 24, r1, bot, ok),  # long ago
        (1, r1, bot, "error"),  # the vault failed: not a fetch nor a refusal
    ]:
        at(
            runtime,
            clock,
            hours_ago,
            fetch_event(runner, tenant, line, CTX, outcome=outcome, reason=None),
        )
    # Not fetches: a sign (its own action) and another tenant's fetch.
    at(
        runtime,
        clock,
        0,
        fetch_event(r1, tenant, bot, CTX, outcome=ok, reason=None, action="credential.sign"),
    )
    at(runtime, clock, 0, fetch_event(r1, other, foreign, CTX, outcome=ok, reason=None))
    # A refused fetch under this tenant naming the other tenant's line, and one nobody is named for.
    at(runtime, clock, 2, fetch_event(r2, tenant, foreign, CTX, outcome=no, reason="not granted"))
    at(runtime, clock, 3, fetch_event(None, tenant, bot, CTX, outcome=no, reason="bad token"))
    return {
        "tenant": tenant,
        "other": other,
        "bot": bot,
        "shop": shop,
        "foreign": foreign,
        "r1": r1,
        "r2": r2,
    }


def read(reader: AuditReader, who: UserPrincipal, tenant: str | None, group: str) -> FetchActivity:
    return reader.fetch_activity(who, group=group, tenant_id=tenant, context=CTX)  # type: ignore[arg-type]


def test_per_line_hourly_served_and_denied(
    runtime: Runtime, clock: FixedClock, world: dict[str, str]
) -> None:
    activity = read(
        runtime.audit_reader, person(roles={world["tenant"]: "auditor"}), world["tenant"], "line"
    )
    assert activity.group == "line" and activity.hours == ACTIVITY_HOURS
    assert activity.start == activity_window(clock.now())[0]
    assert activity.hour(LAST) <= clock.now() < activity.hour(LAST) + timedelta(hours=1)
    lines = by_key(activity)
    assert set(lines) == {world["bot"], world["shop"], world["foreign"]}
    bot = lines[world["bot"]]
    assert bot.name == "Support bot"
    assert (bot.success[LAST], bot.denied[LAST]) == (2, 1)
    assert bot.success[0] == 1  # the first hour of the window; the one before is not there
    assert bot.denied[LAST - 3] == 1  # the unnamed attempt is still this line's
    assert sum(bot.success) == 3 and sum(bot.denied) == 2  # no error, no sign, no old fetch
    shop = lines[world["shop"]]
    assert (shop.name, shop.success[LAST - 5], shop.denied[LAST - 5], shop.total) == (
        "Shop",
        1,
        2,
        3,
    )
    # Another tenant's line named in a refused attempt: counted, its name withheld.
    foreign = lines[world["foreign"]]
    assert foreign.name is None and foreign.denied[LAST - 2] == 1 and foreign.total == 1
    assert [s.key for s in activity.series] == [world["bot"], world["shop"], world["foreign"]]


def test_per_runner(runtime: Runtime, world: dict[str, str]) -> None:
    activity = read(
        runtime.audit_reader, person(roles={world["tenant"]: "owner"}), world["tenant"], "runner"
    )
    runners = by_key(activity)
    assert set(runners) == {world["r1"], world["r2"], None}
    r1, r2, nobody = runners[world["r1"]], runners[world["r2"]], runners[None]
    assert (r1.name, sum(r1.success), sum(r1.denied)) == ("n8n-prod", 4, 0)
    assert (r2.name, sum(r2.success), sum(r2.denied)) == ("zapier", 0, 4)
    assert (r2.denied[LAST], r2.denied[LAST - 5], r2.denied[LAST - 2]) == (1, 2, 1)
    assert nobody.name is None and nobody.denied[LAST - 3] == 1


def test_platform_reader_sees_every_tenant(runtime: Runtime, world: dict[str, str]) -> None:
    activity = read(runtime.audit_reader, person("auditor"), None, "line")
    foreign = by_key(activity)[world["foreign"]]
    assert foreign.name == "Secret project" and foreign.success[LAST] == 1
    scoped = read(runtime.audit_reader, person("admin"), world["other"], "line")
    assert set(by_key(scoped)) == {world["foreign"]}


def test_empty_window(runtime: Runtime) -> None:
    tenant = make_tenant(runtime)
    activity = read(runtime.audit_reader, person(roles={tenant: "owner"}), tenant, "runner")
    assert activity.empty and activity.series == ()


def _activity_reads(reader: AuditReader) -> list[tuple[str, str | None]]:
    page = reader.list_events(
        person("auditor"), EventFilter(action="audit.read", limit=1000), context=CTX
    )
    return [
        (e["outcome"], e["tenant_id"])
        for e in page.events
        if e["resource"]["id"] == "fetch_activity"
    ]


def test_only_audit_readers_and_every_read_is_audited(runtime: Runtime) -> None:
    tenant = make_tenant(runtime)
    reader = runtime.audit_reader
    with pytest.raises(Forbidden):
        read(reader, person(roles={tenant: "member"}), tenant, "line")
    with pytest.raises(Forbidden):
        read(reader, person(roles={tenant: "admin"}), tenant, "line")
    with pytest.raises(NotFound):
        read(reader, person(), tenant, "line")
    with pytest.raises(InvalidRequest):
        read(reader, person(roles={tenant: "owner"}), None, "line")
    read(reader, person(roles={tenant: "owner"}), tenant, "line")
    read(reader, person("auditor"), None, "runner")
    assert _activity_reads(reader) == [
        ("denied", tenant),
        ("denied", tenant),
        ("denied", tenant),
        ("denied", None),
        ("success", tenant),
        ("success", None),
    ]


def test_window_is_whole_hours_ending_with_the_current_one(clock: FixedClock) -> None:
    now = clock.now().replace(minute=59, second=59, tzinfo=UTC)
    start, end = activity_window(now)
    assert end - start == timedelta(hours=ACTIVITY_HOURS)
    assert start.minute == 0 and start <= now < end and end - now <= timedelta(hours=1)


def test_sqlite_reads_the_window_through_the_ts_index(
    sqlite_template: SqliteTemplate, tmp_path: Path, clock: FixedClock
) -> None:
    """Not every fetch ever kept (the action's or the tenant's index): one week of them.
    SQLite's choice is pinned here; PostgreSQL plans from its statistics."""
    engine = make_engine(sqlite_template.fresh(tmp_path / "db"))
    start, end = activity_window(clock.now())
    try:
        for group, tenant in (("line", "tnt_x"), ("runner", None)):
            stmt = _statement(group, tenant, start, end)  # type: ignore[arg-type]
            sql = str(stmt.compile(engine, compile_kwargs={"literal_binds": True}))
            with engine.connect() as conn:
                plan = " ".join(str(r[-1]) for r in conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
            assert "ix_audit_events_ts" in plan, plan
    finally:
        engine.dispose()
