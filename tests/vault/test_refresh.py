"""The Instagram refresher (vault/lines/refresh.py, vault/lines/leases.py) on SQLite and
PostgreSQL, against the local platform stand-in.

- the lease: one conditional claim, exclusive while live, fencing + 1 on every claim; a
  holder whose lease lapsed and was claimed again cannot release (= commit);
- a lapsed holder's refresh is refused at commit while the new holder's commits: one
  version added, the new holder's token kept;
- the background tick refreshes due lines once (version + 1, new token sealed, expiry
  from ``expires_in``, audited, ``line.refreshed``) and leaves lines not due alone;
- failures back off (no call before the next attempt time), set ``refresh_failing``,
  emit ``line.refresh_failed`` once per streak; Graph 190 makes the line ``invalid``
  and the background refresher stops asking.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.support.lines import CTX, make_tenant, owner, planted, service, uow
from tests.support.platforms import PlatformStandIn, platform_standin, standin_settings
from vault.audit.events import Actor
from vault.clock import FixedClock, rfc3339
from vault.ids import new_id
from vault.lines.leases import claim_lease, release_lease
from vault.lines.provider import open_line
from vault.lines.refresh import REFRESH_ACTOR_ID, Refresher
from vault.runtime import Runtime
from vault.settings import Settings
from vault.storage.models import AuditEventRow, Line, RefreshLease, Webhook, WebhookDelivery

LEASE = 5.0
FIRST = 600.0


@pytest.fixture
def standin() -> Iterator[PlatformStandIn]:
    with platform_standin() as server:
        yield server


@pytest.fixture
def settings(tmp_path: Path, db_url: str, standin: PlatformStandIn) -> Settings:
    return standin_settings(
        tmp_path,
        db_url,
        standin,
        instagram_refresh_lease_seconds=LEASE,
        instagram_refresh_retry_first_seconds=FIRST,
        instagram_refresh_retry_max_seconds=4 * FIRST,
    )


def instagram_line(runtime: Runtime, tenant: str, *, expires_in: timedelta) -> str:
    cred = {**planted("instagram"), "expires_at": rfc3339(runtime.clock.now() + expires_in)}
    with uow(runtime) as session:
        lines = service(runtime, session)
        view = lines.create(
            owner(tenant), tenant, line_type="instagram", name="ig", credential=cred, context=CTX
        )
        return view.id


def subscribe(runtime: Runtime, tenant: str) -> None:
    """A webhook for the refresh events (only its outbox rows are looked at)."""
    with uow(runtime) as session:
        session.add(
            Webhook(
                id=new_id("wh"),
                tenant_id=tenant,
                url="https://hooks.example.test/x",
                events=",line.refreshed,line.refresh_failed,",
                created_at=runtime.clock.now(),
            )
        )


def events(runtime: Runtime, event_type: str) -> list[dict[str, object]]:
    with uow(runtime) as session:
        rows = session.execute(
            select(WebhookDelivery.payload).where(WebhookDelivery.event_type == event_type)
        ).scalars()
        return [json.loads(p)["data"] for p in rows]


def line_row(runtime: Runtime, line_id: str) -> Line:
    with uow(runtime) as session:
        line = session.execute(select(Line).where(Line.id == line_id)).scalar_one()
        session.expunge(line)
        return line


def token_of(runtime: Runtime, line_id: str) -> str:
    with uow(runtime) as session:
        line = session.execute(select(Line).where(Line.id == line_id)).scalar_one()
        return str(open_line(session, runtime.keyring, line)["access_token"])


def lease_row(runtime: Runtime, line_id: str) -> RefreshLease:
    with uow(runtime) as session:
        row = session.get(RefreshLease, line_id)
        assert row is not None
        session.expunge(row)
        return row


def another_process(runtime: Runtime, owner_id: str) -> Refresher:
    """A refresher with its own owner id, as a second server process has."""
    mine = runtime.refresher
    return Refresher(
        runtime.sessions,
        keyring=runtime.keyring,
        system_keys=runtime.system_keys,
        checks=runtime.checks,
        audit=runtime.audit,
        clock=runtime.clock,
        config=mine.config,
        owner=owner_id,
    )


def test_lease_claim_is_exclusive_and_fenced(runtime: Runtime, clock: FixedClock) -> None:
    line_id = instagram_line(runtime, make_tenant(runtime), expires_in=timedelta(days=5))
    ttl = timedelta(seconds=LEASE)

    def claim(who: str, *, backoff: bool = False):  # type: ignore[no-untyped-def]
        with uow(runtime) as session:
            return claim_lease(
                session, line_id, owner=who, now=clock.now(), ttl=ttl, respect_backoff=backoff
            )

    first = claim("A")
    assert first is not None and first.fencing == 1
    assert claim("B") is None  # live lease: refused, nothing changed
    assert lease_row(runtime, line_id).owner == "A"
    clock.advance(LEASE + 1)
    second = claim("B")
    assert second is not None and second.fencing == 2
    with uow(runtime) as session:
        assert release_lease(session, first) is False  # A's lease lapsed and was taken
        assert release_lease(session, second) is True
    third = claim("A")
    assert third is not None and third.fencing == 3  # released: claimable at once


def test_a_lapsed_holder_cannot_commit(
    runtime: Runtime, clock: FixedClock, standin: PlatformStandIn
) -> None:
    """A's platform call outlives its lease; B claims the lapsed lease and refreshes.
    A's commit is refused: one version added, B's token kept."""
    line_id = instagram_line(runtime, make_tenant(runtime), expires_in=timedelta(days=5))
    clock.advance(86_400 + 60)
    a, b = another_process(runtime, "proc-A"), another_process(runtime, "proc-B")
    seen: dict[str, object] = {}

    def during_call() -> None:
        if "b" in seen:
            return
        seen["b"] = "running"
        clock.advance(LEASE + 1)  # A's lease lapses while A waits for the platform
        seen["b"] = b.refresh(line_id, actor=Actor("system", "B"), manual=False)

    standin.during_call = during_call
    outcome_a = a.refresh(line_id, actor=Actor("system", "A"), manual=False)
    outcome_b = seen["b"]
    assert getattr(outcome_b, "result", None) == "refreshed"
    assert outcome_a.result == "lost"
    assert standin.calls["instagram.refresh"] == 2
    line = line_row(runtime, line_id)
    assert line.version == 2  # B's commit only
    # B's call was answered first (.r1, inside A's call); A's answer (.r2) was dropped.
    assert token_of(runtime, line_id).endswith(".r1")
    assert lease_row(runtime, line_id).fencing == 2


def test_background_tick_refreshes_due_lines_once(
    runtime: Runtime, clock: FixedClock, standin: PlatformStandIn
) -> None:
    tenant = make_tenant(runtime)
    subscribe(runtime, tenant)
    due = instagram_line(runtime, tenant, expires_in=timedelta(days=5))
    far = instagram_line(runtime, tenant, expires_in=timedelta(days=50))
    old_token = token_of(runtime, due)
    assert runtime.refresher.tick() == 0  # due soon, but the token is not 24 h old yet
    clock.advance(86_400 + 60)
    other = another_process(runtime, "proc-2")
    assert runtime.refresher.tick() == 1
    assert other.tick() == 0 and runtime.refresher.tick() == 0  # refreshed: not due
    assert standin.calls["instagram.refresh"] == 1
    line = line_row(runtime, due)
    assert (line.version, line.provider_status) == (2, "ok")
    assert line.last_refreshed_at == clock.now()
    assert line.expires_at == clock.now() + timedelta(seconds=5_184_000)
    assert token_of(runtime, due) == old_token + ".r1"
    assert line_row(runtime, far).version == 1
    assert events(runtime, "line.refreshed") == [
        {"tenant_id": tenant, "line_id": due, "version": 2, "type": "instagram"}
    ]
    with uow(runtime) as session:
        audited = session.execute(
            select(AuditEventRow).where(AuditEventRow.action == "credential.refresh")
        ).scalar_one()
        assert (audited.actor_id, audited.outcome, audited.resource_id) == (
            REFRESH_ACTOR_ID,
            "success",
            due,
        )
        assert old_token not in str(audited.details)


def test_failures_back_off_and_set_refresh_failing(
    runtime: Runtime, clock: FixedClock, standin: PlatformStandIn
) -> None:
    tenant = make_tenant(runtime)
    subscribe(runtime, tenant)
    line_id = instagram_line(runtime, tenant, expires_in=timedelta(days=5))
    clock.advance(86_400 + 60)
    standin.fail = "500"
    assert runtime.refresher.tick() == 0
    assert line_row(runtime, line_id).provider_status == "refresh_failing"
    lease = lease_row(runtime, line_id)
    assert lease.failures == 1 and lease.next_attempt_at is not None
    assert lease.next_attempt_at >= clock.now() + timedelta(seconds=FIRST)  # the floor
    for _ in range(3):  # never hot: no call before the next attempt time
        runtime.refresher.tick()
        clock.advance(60)
    assert standin.calls["instagram.refresh"] == 1
    clock.advance(4 * FIRST)
    runtime.refresher.tick()
    assert standin.calls["instagram.refresh"] == 2
    assert lease_row(runtime, line_id).failures == 2
    assert len(events(runtime, "line.refresh_failed")) == 1  # once per streak
    standin.fail = None
    clock.advance(8 * FIRST)
    assert runtime.refresher.tick() == 1
    line = line_row(runtime, line_id)
    assert (line.version, line.provider_status) == (2, "ok")
    assert lease_row(runtime, line_id).failures == 0  # the streak ended


def test_graph_190_makes_the_line_invalid_and_stops_asking(
    runtime: Runtime, clock: FixedClock, standin: PlatformStandIn
) -> None:
    line_id = instagram_line(runtime, make_tenant(runtime), expires_in=timedelta(days=5))
    clock.advance(86_400 + 60)
    standin.fail = "190"
    runtime.refresher.tick()
    assert line_row(runtime, line_id).provider_status == "invalid"
    clock.advance(86_400)
    assert runtime.refresher.tick() == 0
    assert standin.calls["instagram.refresh"] == 1


def test_the_window_setting_takes_the_repo_s_duration_form(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from tests.support.settings import make_settings

    assert make_settings(tmp_path).instagram_refresh_window == timedelta(days=10)
    custom = make_settings(tmp_path, instagram_refresh_before="36h")
    assert custom.instagram_refresh_window == timedelta(hours=36)
    for bad in ("10", "ten days", "0d"):
        with pytest.raises(ValidationError, match="instagram_refresh_before"):
            make_settings(tmp_path, instagram_refresh_before=bad)
    with pytest.raises(ValidationError, match="instagram_refresh_lease_seconds"):
        make_settings(tmp_path, instagram_refresh_lease_seconds=5)  # < 3 s + 5 s timeouts


def test_the_old_version_is_served_while_the_platform_is_asked(
    runtime: Runtime, clock: FixedClock, standin: PlatformStandIn
) -> None:
    """No transaction is open during the call (another writer gets through at once) and
    the line still holds the old version until the new one commits."""
    line_id = instagram_line(runtime, make_tenant(runtime), expires_in=timedelta(days=5))
    old = token_of(runtime, line_id)
    clock.advance(86_400 + 60)
    during: list[tuple[int, str, str]] = []

    def during_call() -> None:
        written = make_tenant(runtime, "written during the call")  # a write: no lock held
        during.append((line_row(runtime, line_id).version, token_of(runtime, line_id), written))

    standin.during_call = during_call
    assert runtime.refresher.tick() == 1
    assert [(v, t) for v, t, _ in during] == [(1, old)]
    assert line_row(runtime, line_id).version == 2


def test_off_unless_enabled(runtime: Runtime, settings: Settings) -> None:
    from dataclasses import replace

    from vault.lines.refresh import refresh_worker_for

    assert refresh_worker_for(runtime) is None  # the tests' settings: interval 0
    on = replace(
        runtime, settings=settings.model_copy(update={"instagram_refresh_interval_seconds": 60})
    )
    assert refresh_worker_for(on) is not None
    on.checks.close()
    no_calls = replace(
        runtime,
        settings=settings.model_copy(
            update={"instagram_refresh_interval_seconds": 60, "provider_checks": False}
        ),
    )
    assert refresh_worker_for(no_calls) is None
    no_calls.checks.close()


def test_the_app_runs_the_refresher_while_it_serves(
    runtime: Runtime, clock: FixedClock, settings: Settings, standin: PlatformStandIn
) -> None:
    """Started with the app's other background work (real clock): a line made two days
    ago, expiring in three, is refreshed by the server's own thread."""
    import time

    from fastapi.testclient import TestClient

    from api.app import create_app
    from vault.runtime import open_runtime

    clock.advance(-2 * 86_400)
    line_id = instagram_line(runtime, make_tenant(runtime), expires_in=timedelta(days=5))
    fast = settings.model_copy(update={"instagram_refresh_interval_seconds": 0.3})
    rt = open_runtime(fast)
    try:
        with TestClient(create_app(fast, runtime=rt)):
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and line_row(rt, line_id).version == 1:
                time.sleep(0.1)
        assert line_row(rt, line_id).version == 2
        assert standin.calls["instagram.refresh"] == 1
    finally:
        rt.close()
