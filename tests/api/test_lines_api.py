"""The lines, tenant-deletion and export routes over HTTP, as the contract states them."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from tests.support.identity import add_membership, bearer, make_user, new_session, totp_code
from tests.support.lines import make_tenant, planted
from vault.runtime import Runtime

METADATA_KEYS = {
    "id",
    "tenant_id",
    "type",
    "name",
    "status",
    "version",
    "fingerprint",
    "created_at",
    "updated_at",
    "expires_at",
    "revoked_at",
    "account",
    "provider_status",
    "checked_at",
    "last_refreshed_at",
    "last_fetched_at",
}


@dataclass
class World:
    tenant: str
    owner: dict[str, str]  # headers of a session that is not MFA-fresh
    fresh_owner: dict[str, str]
    owner_totp: str
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
    assert owner.totp_secret
    return World(
        tenant=tenant,
        owner=bearer(new_session(runtime, owner.id)),
        fresh_owner=bearer(new_session(runtime, owner.id, mfa_fresh=True)),
        owner_totp=owner.totp_secret,
        member=bearer(new_session(runtime, member.id)),
        stranger=bearer(new_session(runtime, stranger.id)),
    )


def problem(response, status: int, code: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code
    return body


def create(client: TestClient, w: World, kind: str, cred: dict[str, str], name: str = "L"):  # type: ignore[no-untyped-def]
    return client.post(
        f"/v1/tenants/{w.tenant}/lines",
        json={"type": kind, "name": name, "credential": cred},
        headers=w.owner,
    )


def test_create_list_get_replace(client: TestClient, world: World) -> None:
    w = world
    ids = {}
    for kind in ("telegram", "instagram", "messenger", "widget"):
        cred = planted(kind)
        response = create(client, w, kind, cred)
        assert response.status_code == 201, response.text
        body = response.json()
        assert set(body) == METADATA_KEYS
        assert body["version"] == 1 and body["status"] == "active"
        assert response.headers["cache-control"] == "no-store"
        for value in cred.values():
            assert value not in response.text
        ids[kind] = body["id"]
    widget = create(client, w, "widget", {})
    assert widget.status_code == 201
    generated = widget.json()["generated"]["signing_secret"]
    assert len(generated) >= 43 and set(widget.json()) == METADATA_KEYS | {"generated"}

    listing = client.get(f"/v1/tenants/{w.tenant}/lines", headers=w.member)
    assert listing.status_code == 200
    lines = listing.json()["lines"]
    assert len(lines) == 5 and all(set(ln) == METADATA_KEYS for ln in lines)
    assert generated not in listing.text
    one = client.get(f"/v1/tenants/{w.tenant}/lines/{ids['telegram']}", headers=w.member)
    assert one.status_code == 200 and one.json()["type"] == "telegram"

    replaced = client.put(
        f"/v1/tenants/{w.tenant}/lines/{ids['telegram']}/credential",
        json={"credential": planted("telegram")},
        headers=w.fresh_owner,
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["version"] == 2
    assert replaced.json()["fingerprint"] != one.json()["fingerprint"]
    rotated = client.put(
        f"/v1/tenants/{w.tenant}/lines/{widget.json()['id']}/credential",
        json={"credential": {}},
        headers=w.fresh_owner,
    )
    assert rotated.json()["generated"]["signing_secret"] != generated


@pytest.mark.parametrize(
    ("kind", "cred", "field"),
    [
        ("telegram", {"bot_token": "12345:tooShort-SECRETVALUE"}, "credential.bot_token"),
        ("telegram", {"bot_token": "1:" + "a" * 40, "extra": "x"}, "credential.<unknown>"),
        ("instagram", {"access_token": "IGQ<script>alert(1)</script>"}, "credential.access_token"),
        (
            "messenger",
            {"page_id": "abc", "page_access_token": "EAAtoken12345"},
            "credential.page_id",
        ),
        ("widget", {"signing_secret": "short-SECRETVALUE"}, "credential.signing_secret"),
    ],
)
def test_malformed_credential_is_422_naming_the_field(
    client: TestClient, world: World, kind: str, cred: dict[str, str], field: str
) -> None:
    response = create(client, world, kind, cred)
    body = problem(response, 422, "invalid_request")
    assert field in body["detail"]
    assert body["fields"][0]["field"] == field
    for value in cred.values():
        if len(value) > 3:
            assert value not in response.text
    assert client.get(f"/v1/tenants/{world.tenant}/lines", headers=world.owner).json() == {
        "lines": []
    }


def test_bad_envelope(client: TestClient, world: World) -> None:
    url = f"/v1/tenants/{world.tenant}/lines"
    for body in (
        {"type": "sms", "name": "x", "credential": {}},
        {"type": "widget", "name": "", "credential": {}},
        {"type": "widget", "name": "x", "credential": "SECRET-as-a-string"},
        {"type": "widget", "name": "x", "credential": {}, "unknown": 1},
        {"type": "widget", "name": "x"},
    ):
        response = client.post(url, json=body, headers=world.owner)
        problem(response, 422, "invalid_request")
        assert "SECRET-as-a-string" not in response.text


def test_access_rules(client: TestClient, world: World) -> None:
    w = world
    line = create(client, w, "telegram", planted("telegram")).json()["id"]
    base = f"/v1/tenants/{w.tenant}/lines"
    assert client.get(base).status_code == 401
    problem(client.get(base, headers=w.stranger), 404, "not_found")
    problem(client.get(f"{base}/{line}", headers=w.stranger), 404, "not_found")
    problem(client.post(f"{base}/{line}/revoke", json={}, headers=w.stranger), 404, "not_found")
    problem(
        client.post(base, json={"type": "widget", "name": "x", "credential": {}}, headers=w.member),
        403,
        "forbidden",
    )
    problem(client.post(f"{base}/{line}/revoke", json={}, headers=w.member), 403, "forbidden")
    problem(client.get(f"{base}/ln_nope", headers=w.owner), 404, "not_found")
    problem(client.delete(f"/v1/tenants/{w.tenant}", headers=w.member), 403, "forbidden")
    problem(client.delete(f"/v1/tenants/{w.tenant}", headers=w.stranger), 404, "not_found")


def test_revoke_needs_mfa_and_is_idempotent(
    client: TestClient, world: World, runtime: Runtime
) -> None:
    w = world
    line = create(client, w, "messenger", planted("messenger")).json()
    url = f"/v1/tenants/{w.tenant}/lines/{line['id']}/revoke"
    problem(client.post(url, json={"reason": "leak"}, headers=w.owner), 403, "mfa_required")
    problem(client.post(url, headers=w.owner), 403, "mfa_required")
    problem(client.post(url, json={"mfa_code": "000000"}, headers=w.owner), 401, "mfa_invalid")
    assert (
        client.get(f"/v1/tenants/{w.tenant}/lines/{line['id']}", headers=w.owner).json()["status"]
        == "active"
    )
    code = totp_code(w.owner_totp, runtime)
    first = client.post(url, json={"reason": "leak", "mfa_code": code}, headers=w.owner)
    assert first.status_code == 200, first.text
    meta = first.json()
    assert set(meta) == METADATA_KEYS
    assert meta["status"] == "revoked" and meta["revoked_at"] is not None
    # The code was single-use: it does not make the session fresh.
    problem(client.post(url, json={"mfa_code": code}, headers=w.owner), 401, "mfa_invalid")
    again = client.post(url, json={}, headers=w.fresh_owner)
    assert again.status_code == 200 and again.json() == meta
    problem(
        client.put(
            f"/v1/tenants/{w.tenant}/lines/{line['id']}/credential",
            json={"credential": planted("messenger")},
            headers=w.fresh_owner,
        ),
        409,
        "conflict",
    )


def test_expiring_within(client: TestClient, world: World, runtime: Runtime) -> None:
    w = world
    now = runtime.clock.now()
    from datetime import timedelta

    from vault.clock import rfc3339

    soon = create(
        client,
        w,
        "instagram",
        {**planted("instagram"), "expires_at": rfc3339(now + timedelta(hours=6)) or ""},
    ).json()
    create(
        client,
        w,
        "instagram",
        {**planted("instagram"), "expires_at": rfc3339(now + timedelta(days=10)) or ""},
    )
    create(client, w, "telegram", planted("telegram"))
    assert soon["expires_at"] == rfc3339(now + timedelta(hours=6))
    base = f"/v1/tenants/{w.tenant}/lines"

    def ids(window: str) -> set[str]:
        response = client.get(base, params={"expiring_within": window}, headers=w.member)
        assert response.status_code == 200, response.text
        return {ln["id"] for ln in response.json()["lines"]}

    assert ids("12h") == {soon["id"]}
    assert ids("30m") == set()
    assert len(ids("30d")) == 2
    assert len(ids("7d")) == 1
    for bad in ("7", "d7", "-1d", "0d", "7 d", "7days", "1y", "99999999d", "7d;DROP"):
        body = problem(
            client.get(base, params={"expiring_within": bad}, headers=w.member),
            422,
            "invalid_request",
        )
        assert "expiring_within" in body["detail"]
    # A stranger learns nothing from a bad window either.
    problem(
        client.get(base, params={"expiring_within": "bad"}, headers=w.stranger), 404, "not_found"
    )


def test_tenant_delete_and_export(client: TestClient, world: World, runtime: Runtime) -> None:
    w = world
    line = create(client, w, "telegram", planted("telegram")).json()
    url = f"/v1/tenants/{w.tenant}"
    problem(client.get(f"{url}/export", headers=w.owner), 403, "mfa_required")
    problem(client.get(f"{url}/export", headers=w.member), 403, "forbidden")
    exported = client.get(
        f"{url}/export", headers={**w.owner, "X-MFA-Code": totp_code(w.owner_totp, runtime)}
    )
    assert exported.status_code == 200, exported.text
    doc = exported.json()
    assert doc["tenant"]["id"] == w.tenant and doc["lines"][0]["id"] == line["id"]
    assert {m["role"] for m in doc["members"]} == {"owner", "member"}
    assert exported.headers["cache-control"] == "no-store"

    problem(client.delete(url, headers=w.owner), 403, "mfa_required")
    deleted = client.request(
        "DELETE", url, json={"mfa_code": totp_code(w.owner_totp, runtime, steps=1)}, headers=w.owner
    )
    assert deleted.status_code == 200, deleted.text
    body = deleted.json()
    assert set(body) == {"id", "deleted_at", "shredded"}
    assert body["id"] == w.tenant and body["shredded"] is True and body["deleted_at"].endswith("Z")
    problem(client.get(f"{url}/lines", headers=w.fresh_owner), 404, "not_found")
    problem(client.get(f"{url}/lines/{line['id']}", headers=w.fresh_owner), 404, "not_found")
    problem(client.delete(url, headers=w.fresh_owner), 404, "not_found")
    tenants = client.get("/v1/tenants", headers=w.fresh_owner).json()["tenants"]
    assert w.tenant not in {t["id"] for t in tenants}
