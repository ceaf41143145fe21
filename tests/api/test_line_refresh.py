"""``POST .../lines/{line_id}/refresh`` over HTTP, against the local platform stand-in.

An Instagram line gets a new token at once (no 24-hour wait): 200 metadata with
``version`` + 1; other types are 409; a platform refusal is 409 with the platform's
reason and leaves the version as it was; two requests at the same moment make one
upstream call and both answer the new version (single flight); access as for check.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.support.identity import add_membership, bearer, make_user, new_session
from tests.support.lines import CTX, make_tenant, owner, planted, service, uow
from tests.support.platforms import PlatformStandIn, platform_standin, standin_settings
from vault.clock import rfc3339
from vault.lines.provider import open_line
from vault.runtime import Runtime
from vault.settings import Settings
from vault.storage.models import AuditEventRow, Line


@pytest.fixture
def standin() -> Iterator[PlatformStandIn]:
    with platform_standin() as server:
        yield server


@pytest.fixture
def settings(tmp_path: Path, db_url: str, standin: PlatformStandIn) -> Settings:
    # A read timeout well above the stand-in's delay below, on a loaded machine too.
    return standin_settings(tmp_path, db_url, standin, connector_read_timeout_seconds=3.0)


@dataclass
class World:
    tenant: str
    owner: dict[str, str]
    member: dict[str, str]
    stranger: dict[str, str]


@pytest.fixture
def world(runtime: Runtime) -> World:
    tenant, other = make_tenant(runtime), make_tenant(runtime, "Other")
    boss = make_user(runtime, "owner@example.test")
    member = make_user(runtime, "member@example.test")
    stranger = make_user(runtime, "stranger@example.test")
    add_membership(runtime, tenant, boss.id, "owner")
    add_membership(runtime, tenant, member.id, "member")
    add_membership(runtime, other, stranger.id, "owner")
    return World(
        tenant=tenant,
        owner=bearer(new_session(runtime, boss.id)),  # not MFA-fresh: none needed
        member=bearer(new_session(runtime, member.id)),
        stranger=bearer(new_session(runtime, stranger.id)),
    )


def make_line(runtime: Runtime, tenant: str, kind: str = "instagram") -> str:
    cred = planted(kind)
    if kind == "instagram":
        cred["expires_at"] = str(rfc3339(runtime.clock.now() + timedelta(days=50)))
    with uow(runtime) as session:
        view = service(runtime, session).create(
            owner(tenant), tenant, line_type=kind, name=kind, credential=cred, context=CTX
        )
        return view.id


def url(world: World, line_id: str) -> str:
    return f"/v1/tenants/{world.tenant}/lines/{line_id}/refresh"


def token_of(runtime: Runtime, line_id: str) -> str:
    with uow(runtime) as session:
        line = session.execute(select(Line).where(Line.id == line_id)).scalar_one()
        return str(open_line(session, runtime.keyring, line)["access_token"])


def test_refresh_now_seals_a_new_version(
    client: TestClient, runtime: Runtime, world: World, standin: PlatformStandIn
) -> None:
    line_id = make_line(runtime, world.tenant)  # made just now: no 24-hour wait for people
    old = token_of(runtime, line_id)
    response = client.post(url(world, line_id), headers=world.owner)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["version"], body["provider_status"]) == (2, "ok")
    assert body["last_refreshed_at"] is not None
    now = runtime.clock.now()
    assert body["expires_at"] == rfc3339(now + timedelta(seconds=5_184_000))
    assert standin.calls["instagram.refresh"] == 1
    assert standin.queries[-1]["grant_type"] == "ig_refresh_token"
    assert token_of(runtime, line_id) == old + ".r1"
    assert old not in response.text
    with uow(runtime) as session:
        actions = session.execute(
            select(AuditEventRow.action, AuditEventRow.outcome).where(
                AuditEventRow.resource_id == line_id
            )
        ).all()
    assert ("credential.refresh", "success") in [tuple(a) for a in actions]


def test_other_types_and_other_callers_are_refused(
    client: TestClient, runtime: Runtime, world: World, standin: PlatformStandIn
) -> None:
    telegram = make_line(runtime, world.tenant, "telegram")
    response = client.post(url(world, telegram), headers=world.owner)
    assert (response.status_code, response.json()["code"]) == (409, "conflict")
    instagram = make_line(runtime, world.tenant)
    assert client.post(url(world, instagram), headers=world.member).status_code == 403
    assert client.post(url(world, instagram), headers=world.stranger).status_code == 404
    assert client.post(url(world, instagram)).status_code == 401
    assert standin.calls["instagram.refresh"] == 0


@pytest.mark.parametrize(
    ("fail", "status", "reason"),
    [("190", "invalid", "Error validating access token"), ("500", "refresh_failing", "reached")],
)
def test_a_platform_refusal_is_409_with_its_reason(
    client: TestClient,
    runtime: Runtime,
    world: World,
    standin: PlatformStandIn,
    fail: str,
    status: str,
    reason: str,
) -> None:
    line_id = make_line(runtime, world.tenant)
    old = token_of(runtime, line_id)
    standin.fail = fail
    response = client.post(url(world, line_id), headers=world.owner)
    assert (response.status_code, response.json()["code"]) == (409, "conflict")
    assert reason in response.json()["detail"]
    assert old not in response.text
    view = client.get(f"/v1/tenants/{world.tenant}/lines/{line_id}", headers=world.owner).json()
    assert (view["version"], view["provider_status"]) == (1, status)
    assert token_of(runtime, line_id) == old


def test_requests_at_the_same_moment_make_one_upstream_call(
    client: TestClient, runtime: Runtime, world: World, standin: PlatformStandIn
) -> None:
    line_id = make_line(runtime, world.tenant)
    standin.fail, standin.slow_seconds = "slow", 0.3
    with ThreadPoolExecutor(4) as pool:
        answers = list(
            pool.map(lambda _: client.post(url(world, line_id), headers=world.owner), range(4))
        )
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    assert {a.json()["version"] for a in answers} == {2}
    assert standin.calls["instagram.refresh"] == 1


def test_requests_waiting_for_a_failed_refresh_share_its_failure(
    client: TestClient, runtime: Runtime, world: World, standin: PlatformStandIn
) -> None:
    """The platform refuses: the requests that waited for the one in flight answer its
    failure (409) instead of asking the platform again."""
    line_id = make_line(runtime, world.tenant)
    standin.during_call = lambda: time.sleep(0.5)  # the first call is still in flight
    standin.fail = "190"
    with ThreadPoolExecutor(3) as pool:
        answers = list(
            pool.map(lambda _: client.post(url(world, line_id), headers=world.owner), range(3))
        )
    assert [a.status_code for a in answers] == [409] * 3, [a.text for a in answers]
    assert standin.calls["instagram.refresh"] == 1
