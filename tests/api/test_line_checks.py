"""Platform checks over HTTP (docs/connectors.md), against the local platform stand-in.

Create and replace ask the platform: a definite refusal is 422 ``credential_rejected``
naming the field and the platform's reason, and nothing is stored; a slow or
unreachable platform gives an ``unverified`` line within the timeout; an accepted token
keeps the platform's ``account``. ``POST .../check`` asks again. The platform is never
asked while the request holds a database transaction.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from tests.support.identity import add_membership, bearer, make_user, new_session
from tests.support.lines import make_tenant, planted, uow
from tests.support.platforms import (
    PlatformStandIn,
    platform_standin,
    refused_url,
    standin_settings,
)
from vault.connectors import ProviderChecks
from vault.runtime import Runtime, connector_config
from vault.settings import Settings
from vault.storage.engine import make_engine
from vault.storage.models import AuditEventRow, Line

READ_TIMEOUT = 1.0
REFUSALS = {
    "telegram": ("401", "credential.bot_token", "Unauthorized"),
    "instagram": ("190", "credential.access_token", "Error validating access token"),
    "messenger": ("190", "credential.page_access_token", "Error validating access token"),
}


@pytest.fixture
def standin() -> Iterator[PlatformStandIn]:
    with platform_standin() as server:
        yield server


@pytest.fixture
def settings(tmp_path: Path, db_url: str, standin: PlatformStandIn) -> Settings:
    return standin_settings(tmp_path, db_url, standin, connector_read_timeout_seconds=READ_TIMEOUT)


@dataclass
class World:
    tenant: str
    owner: dict[str, str]  # MFA-fresh (replace needs it)
    member: dict[str, str]
    stranger: dict[str, str]


@pytest.fixture
def world(runtime: Runtime) -> World:
    tenant, other = make_tenant(runtime), make_tenant(runtime, "Other")
    owner = make_user(runtime, "owner@example.test", totp=True)
    member = make_user(runtime, "member@example.test")
    stranger = make_user(runtime, "stranger@example.test")
    add_membership(runtime, tenant, owner.id, "owner")
    add_membership(runtime, tenant, member.id, "member")
    add_membership(runtime, other, stranger.id, "owner")
    return World(
        tenant=tenant,
        owner=bearer(new_session(runtime, owner.id, mfa_fresh=True)),
        member=bearer(new_session(runtime, member.id)),
        stranger=bearer(new_session(runtime, stranger.id)),
    )


def create(client: TestClient, w: World, kind: str, cred: dict[str, str]) -> Any:
    return client.post(
        f"/v1/tenants/{w.tenant}/lines",
        json={"type": kind, "name": "L", "credential": cred},
        headers=w.owner,
    )


def line_count(runtime: Runtime) -> int:
    with uow(runtime) as session:
        return int(session.execute(select(func.count()).select_from(Line)).scalar_one())


def audit_rows(runtime: Runtime, action: str) -> list[AuditEventRow]:
    with uow(runtime) as session:
        rows = session.execute(
            select(AuditEventRow).where(AuditEventRow.action == action).order_by(AuditEventRow.seq)
        )
        found = list(rows.scalars())
        session.expunge_all()
        return found


def secret_values(cred: dict[str, str]) -> list[str]:
    return [v for k, v in cred.items() if k not in ("page_id", "user_id")]


@pytest.mark.parametrize("kind", ["telegram", "instagram", "messenger"])
def test_accepted_token_keeps_the_account(
    client: TestClient, world: World, standin: PlatformStandIn, kind: str
) -> None:
    response = create(client, world, kind, planted(kind))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["provider_status"] == "ok" and body["checked_at"] is not None
    assert body["account"]["id"]
    assert body["last_refreshed_at"] is None and body["last_fetched_at"] is None
    assert sum(standin.calls.values()) == 1
    got = client.get(f"/v1/tenants/{world.tenant}/lines/{body['id']}", headers=world.member)
    assert got.json()["account"] == body["account"]


def test_widget_is_not_checked(client: TestClient, world: World, standin: PlatformStandIn) -> None:
    body = create(client, world, "widget", {}).json()
    assert (body["provider_status"], body["checked_at"]) == ("not_checked", None)
    assert sum(standin.calls.values()) == 0


@pytest.mark.parametrize("kind", ["telegram", "instagram", "messenger"])
def test_invalid_token_at_create_is_422_and_no_row(
    client: TestClient, runtime: Runtime, world: World, standin: PlatformStandIn, kind: str
) -> None:
    standin.fail, field, reason = REFUSALS[kind]
    cred = planted(kind)
    response = create(client, world, kind, cred)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "credential_rejected"
    [problem] = body["fields"]
    assert (problem["field"], problem["problem"], problem["in"]) == (field, "rejected", "request")
    assert field.split(".")[1] in body["detail"] and reason in body["detail"]
    assert not any(s in response.text for s in secret_values(cred))
    assert line_count(runtime) == 0
    assert client.get(f"/v1/tenants/{world.tenant}/lines", headers=world.owner).json() == {
        "lines": []
    }
    (event,) = audit_rows(runtime, "credential.create")
    assert (event.outcome, event.reason) == ("error", f"credential_rejected: {field}")


def test_bot_id_mismatch_is_refused(
    client: TestClient, runtime: Runtime, world: World, standin: PlatformStandIn
) -> None:
    standin.bot_id = 7012345678  # getMe answers a bot other than the token's digits
    response = create(client, world, "telegram", planted("telegram"))
    assert response.status_code == 422 and response.json()["code"] == "credential_rejected"
    assert "bot id" in response.json()["detail"]
    assert line_count(runtime) == 0


@pytest.mark.parametrize("kind", ["telegram", "messenger"])
def test_slow_platform_gives_unverified_within_the_timeout(
    client: TestClient, world: World, standin: PlatformStandIn, kind: str
) -> None:
    standin.fail, standin.slow_seconds = "slow", 6.0
    started = time.monotonic()
    response = create(client, world, kind, planted(kind))
    elapsed = time.monotonic() - started
    assert response.status_code == 201, response.text
    assert response.json()["provider_status"] == "unverified"
    assert response.json()["account"] is None
    assert elapsed < READ_TIMEOUT + 3.0, elapsed


@pytest.mark.parametrize("failure", ["500", "refused"])
def test_unreachable_platform_gives_unverified(
    client: TestClient, runtime: Runtime, world: World, standin: PlatformStandIn, failure: str
) -> None:
    if failure == "refused":
        gone = refused_url()
        cfg = connector_config(runtime.settings)
        runtime.checks = ProviderChecks(
            type(cfg)(**{**_fields(cfg), "telegram_api_url": gone, "graph_api_url": gone})
        )
    else:
        standin.fail = failure
    for kind in ("telegram", "messenger"):
        response = create(client, world, kind, planted(kind))
        assert response.status_code == 201, response.text
        assert response.json()["provider_status"] == "unverified"


def _fields(cfg: Any) -> dict[str, Any]:
    return {name: getattr(cfg, name) for name in cfg.__slots__}


def test_replace_refused_keeps_the_old_version(
    client: TestClient, runtime: Runtime, world: World, standin: PlatformStandIn
) -> None:
    line = create(client, world, "telegram", planted("telegram")).json()
    url = f"/v1/tenants/{world.tenant}/lines/{line['id']}"
    standin.fail = "401"
    refused = client.put(
        f"{url}/credential", json={"credential": planted("telegram")}, headers=world.owner
    )
    assert refused.status_code == 422 and refused.json()["code"] == "credential_rejected"
    after = client.get(url, headers=world.owner).json()
    assert (after["version"], after["fingerprint"]) == (1, line["fingerprint"])
    assert after["provider_status"] == "ok"
    standin.fail = None
    cred = planted("telegram")
    replaced = client.put(f"{url}/credential", json={"credential": cred}, headers=world.owner)
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["version"] == 2
    assert replaced.json()["account"]["id"] == cred["bot_token"].split(":")[0]


def test_check_route_keeps_provider_status_current(
    client: TestClient, runtime: Runtime, world: World, standin: PlatformStandIn
) -> None:
    line = create(client, world, "instagram", planted("instagram")).json()
    url = f"/v1/tenants/{world.tenant}/lines/{line['id']}/check"
    standin.fail = "190"
    invalid = client.post(url, headers=world.owner)
    assert invalid.status_code == 200, invalid.text
    body = invalid.json()
    assert body["provider_status"] == "invalid" and body["account"] == line["account"]
    assert body["version"] == 1 and body["checked_at"] >= line["checked_at"]
    standin.fail = "slow"
    assert client.post(url, headers=world.owner).json()["provider_status"] == "unverified"
    standin.fail = None
    assert client.post(url, headers=world.owner).json()["provider_status"] == "ok"
    assert standin.calls["instagram.me"] == 4
    assert client.post(url, headers=world.member).status_code == 403
    assert client.post(url, headers=world.stranger).status_code == 404
    reasons = [(e.outcome, e.reason) for e in audit_rows(runtime, "credential.check")]
    assert reasons[:3] == [("success", "invalid"), ("success", "unverified"), ("success", "ok")]
    assert [r[0] for r in reasons[3:]] == ["denied", "denied"]


def test_check_of_a_revoked_line_is_409(
    client: TestClient, world: World, standin: PlatformStandIn
) -> None:
    line = create(client, world, "telegram", planted("telegram")).json()
    url = f"/v1/tenants/{world.tenant}/lines/{line['id']}"
    assert client.post(f"{url}/revoke", json={}, headers=world.owner).status_code == 200
    calls = sum(standin.calls.values())
    assert client.post(f"{url}/check", headers=world.owner).status_code == 409
    assert sum(standin.calls.values()) == calls


def _no_transaction_open(url: str) -> bool:
    """Whether a writer could start right now (SQLite) / no session idles in a
    transaction (PostgreSQL): i.e. the vault holds no transaction while it waits."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        conn = sqlite3.connect(str(parsed.database), timeout=0, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            conn.close()
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            idle = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
            return int(idle) == 0
    finally:
        engine.dispose()


def test_platform_is_asked_outside_any_transaction(
    client: TestClient, runtime: Runtime, world: World, standin: PlatformStandIn
) -> None:
    seen: list[bool] = []
    standin.during_call = lambda: seen.append(_no_transaction_open(runtime.settings.sqlalchemy_url))
    line = create(client, world, "telegram", planted("telegram")).json()
    url = f"/v1/tenants/{world.tenant}/lines/{line['id']}"
    client.put(f"{url}/credential", json={"credential": planted("telegram")}, headers=world.owner)
    client.post(f"{url}/check", headers=world.owner)
    assert seen == [True, True, True]


def test_replace_racing_another_replace_during_the_call_loses_no_version(
    client: TestClient, runtime: Runtime, world: World, standin: PlatformStandIn
) -> None:
    """The line is re-read under its lock after the call: a replace that committed while
    the platform was being asked is not overwritten with a stale version number."""
    from tests.support.lines import CTX, owner, service
    from vault.lines.provider import open_line

    line = create(client, world, "telegram", planted("telegram")).json()
    other, mine = planted("telegram"), planted("telegram")

    def replace_meanwhile() -> None:
        standin.during_call = None  # the inner replace asks the stand-in too
        with uow(runtime) as session:
            service(runtime, session).replace(
                owner(world.tenant), world.tenant, line["id"], credential=other, context=CTX
            )

    standin.during_call = replace_meanwhile
    url = f"/v1/tenants/{world.tenant}/lines/{line['id']}/credential"
    response = client.put(url, json={"credential": mine}, headers=world.owner)
    assert response.status_code == 200, response.text
    assert response.json()["version"] == 3
    with uow(runtime) as session:
        row = session.execute(select(Line).where(Line.id == line["id"])).scalar_one()
        assert row.version == 3
        assert open_line(session, runtime.keyring, row) == mine
