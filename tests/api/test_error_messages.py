"""Errors that say what is wrong and what to do (issue 19): one status per error class,
415 for a body that is not JSON, human messages naming the field and the expected form
(machine details in the ``fields`` extension member), the real reason of a 403 told to
members only, and second-factor problems that name the next step."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.test_problems import assert_problem
from tests.support.audit import fill_chain
from tests.support.identity import (
    add_membership,
    bearer,
    make_tenant,
    make_user,
    new_session,
    totp_code,
)
from vault.runtime import Runtime


@pytest.fixture
def people(runtime: Runtime) -> dict[str, Any]:
    tenant = make_tenant(runtime)
    member = make_user(runtime, "member@example.test")
    add_membership(runtime, tenant, member.id, "member")
    owner = make_user(runtime, "owner@example.test", totp=True)
    add_membership(runtime, tenant, owner.id, "owner")
    stranger = make_user(runtime, "stranger@example.test")
    auditor = make_user(runtime, "auditor@example.test", platform_role="auditor")
    return {
        "tenant": tenant,
        "member": new_session(runtime, member.id, mfa_fresh=True),
        "owner": new_session(runtime, owner.id, mfa_fresh=False),
        "owner_secret": owner.totp_secret,
        "stranger": new_session(runtime, stranger.id, mfa_fresh=True),
        "auditor": new_session(runtime, auditor.id, mfa_fresh=True),
    }


def test_a_body_that_is_not_json_is_415(client: TestClient, people: dict[str, Any]) -> None:
    for content_type, content in (
        ("text/plain", "name=Acme"),
        ("application/x-www-form-urlencoded", "name=Acme"),
    ):
        r = client.post(
            "/v1/tenants",
            content=content,
            headers={**bearer(people["auditor"]), "Content-Type": content_type},
        )
        body = assert_problem(r, 415, "unsupported_media_type")
        assert "application/json" in body["detail"]
    # JSON with a charset parameter, or a +json type, is still JSON.
    r = client.post(
        "/v1/tenants",
        content='{"name": "Acme"}',
        headers={**bearer(people["auditor"]), "Content-Type": "application/json; charset=utf-8"},
    )
    assert r.status_code == 403  # the body was read; the auditor may not create tenants


def test_malformed_json_gets_a_human_message(client: TestClient, people: dict[str, Any]) -> None:
    r = client.post(
        "/v1/tenants",
        content='{"name": "Acme",, }',
        headers={**bearer(people["auditor"]), "Content-Type": "application/json"},
    )
    body = assert_problem(r, 422, "invalid_request")
    assert "not valid JSON" in body["detail"] and "character 16" in body["detail"]
    assert "invalid value for" not in body["detail"]
    assert body["fields"][0]["problem"] == "json_invalid"


def test_validation_is_422_naming_field_and_expected_form(
    client: TestClient, people: dict[str, Any]
) -> None:
    path = f"/v1/tenants/{people['tenant']}/lines"
    missing = client.post(path, json={"type": "widget"}, headers=bearer(people["member"]))
    body = assert_problem(missing, 422, "invalid_request")
    assert "name: expected a value: this field is required" in body["detail"]
    assert {f["field"] for f in body["fields"]} >= {"name", "credential"}
    assert all({"field", "problem", "message"} <= f.keys() for f in body["fields"])
    # A domain refusal (was 400 on some routes) is the same 422 with the same shape.
    grant = client.post(
        f"/v1/tenants/{people['tenant']}/members",
        json={"user_id": "usr_nobody", "role": "member"},
        headers=bearer(new_session_of_owner(client, people)),
    )
    body = assert_problem(grant, 422, "invalid_request")
    assert body["fields"][0]["field"] == "user_id" and "user_id" in body["detail"]


def new_session_of_owner(client: TestClient, people: dict[str, Any]) -> str:
    """The owner's session, made MFA-fresh through a step-up."""
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    code = totp_code(people["owner_secret"], runtime)
    r = client.post("/v1/auth/step-up", json={"code": code}, headers=bearer(people["owner"]))
    assert r.status_code == 200, r.text
    return str(people["owner"])


def test_since_yesterday_names_the_form_not_the_validator(
    client: TestClient, people: dict[str, Any]
) -> None:
    r = client.get(
        "/v1/audit/events", params={"since": "yesterday"}, headers=bearer(people["auditor"])
    )
    body = assert_problem(r, 422, "invalid_request")
    assert body["detail"].startswith("since: expected an RFC 3339 time")
    assert "datetime_from_date_parsing" not in body["detail"]
    assert "yesterday" not in r.text  # never the submitted value
    assert body["fields"] == [
        {
            "field": "since",
            "in": "query",
            "problem": body["fields"][0]["problem"],
            "message": body["detail"],
        }
    ]


def test_403_says_the_real_reason_404_still_for_strangers(
    client: TestClient, people: dict[str, Any]
) -> None:
    path = f"/v1/tenants/{people['tenant']}/lines"
    body_in = {"type": "widget", "name": "w", "credential": {}}
    r = client.post(path, json=body_in, headers=bearer(people["member"]))
    body = assert_problem(r, 403, "forbidden")
    assert "tenant role owner or admin" in body["detail"] and "yours is member" in body["detail"]
    stranger = client.post(path, json=body_in, headers=bearer(people["stranger"]))
    body = assert_problem(stranger, 404, "not_found")
    assert "role" not in body["detail"]
    platform = client.post("/v1/tenants", json={"name": "X"}, headers=bearer(people["member"]))
    body = assert_problem(platform, 403, "forbidden")
    assert "platform role admin" in body["detail"] and "you have none" in body["detail"]


def test_mfa_required_names_both_ways(client: TestClient, people: dict[str, Any]) -> None:
    line = client.post(
        f"/v1/tenants/{people['tenant']}/lines",
        json={"type": "widget", "name": "w", "credential": {}},
        headers=bearer(people["owner"]),
    )
    assert line.status_code == 201, line.text
    r = client.post(
        f"/v1/tenants/{people['tenant']}/lines/{line.json()['id']}/revoke",
        json={},
        headers=bearer(people["owner"]),
    )
    body = assert_problem(r, 403, "mfa_required")
    assert "mfa_code" in body["detail"] and "POST /v1/auth/step-up" in body["detail"]


def test_mfa_invalid_says_what_to_do(
    client: TestClient, people: dict[str, Any], runtime: Runtime
) -> None:
    secret, token = people["owner_secret"], people["owner"]

    def step_up(code: str) -> dict[str, Any]:
        r = client.post("/v1/auth/step-up", json={"code": code}, headers=bearer(token))
        return assert_problem(r, 401, "mfa_invalid")

    skewed = step_up(totp_code(secret, runtime, steps=-4))
    assert "outside the accepted window" in skewed["detail"] and "clock" in skewed["detail"]
    current = totp_code(secret, runtime)
    wrong = "000000" if current != "000000" else "111111"
    assert "enter the current 6-digit code" in step_up(wrong)["detail"]
    ok = client.post("/v1/auth/step-up", json={"code": current}, headers=bearer(token))
    assert ok.status_code == 200, ok.text
    used = step_up(current)
    assert (
        used["detail"].startswith("code already used")
        and "wait for the next one" in (used["detail"])
    )


def test_audit_filters_refuse_unknown_values_and_take_a_prefix(
    client: TestClient, people: dict[str, Any], runtime: Runtime
) -> None:
    fill_chain(runtime, 6)
    headers = bearer(people["auditor"])
    unknown = client.get(
        "/v1/audit/events", params={"action": "credential.fetchh"}, headers=headers
    )
    body = assert_problem(unknown, 422, "invalid_request")
    assert body["fields"][0]["field"] == "action" and "credential.*" in body["detail"]
    family = client.get("/v1/audit/events", params={"action": "nothing.*"}, headers=headers)
    assert_problem(family, 422, "invalid_request")
    outcome = client.get("/v1/audit/events", params={"outcome": "maybe"}, headers=headers)
    body = assert_problem(outcome, 422, "invalid_request")
    assert "'success', 'denied' or 'error'" in body["detail"]
    all_events = client.get("/v1/audit/events", params={"limit": 1000}, headers=headers).json()
    audit_actions = {e["action"] for e in all_events["events"] if e["action"].startswith("audit.")}
    assert audit_actions  # the reads themselves
    prefixed = client.get(
        "/v1/audit/events", params={"action": "audit.*", "limit": 1000}, headers=headers
    )
    assert prefixed.status_code == 200, prefixed.text
    got = prefixed.json()["events"]
    assert got and all(e["action"].startswith("audit.") for e in got)
    assert len(got) >= sum(1 for e in all_events["events"] if e["action"].startswith("audit."))
