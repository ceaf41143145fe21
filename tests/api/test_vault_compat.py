"""The Vault-compatible read API against the native fetch: same secret, same audit
event, same denials, each in its own API's shape.

Every case is asked both ways, native first: ``GET /v1/tenants/{t}/lines/{l}/credential``
and ``GET /v1/lines/data/{t}/{l}`` (KV v2, mount ``lines``). The two must agree on the
payload and leave one ``credential.fetch`` event each that differs in nothing but its
request id; their statuses map as the contract says (native 401 -> Vault 403 "permission
denied"; 403 stays 403; not granted, unknown and revoked -> 404 ``{"errors": []}``;
429 stays 429 with ``Retry-After``). The same hvac calls against a real OpenBao are in
tests/api/test_vault_compat_hvac.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from tests.api import test_runners_api as runners_api
from tests.support.runners import revoke_line
from tests.support.settings import make_settings
from vault.runtime import Runtime
from vault.settings import Settings

admin = runners_api.admin
setup = runners_api.setup
bearer, audit, session_token, url = (
    runners_api.bearer,
    runners_api.audit,
    runners_api.session_token,
    runners_api.url,
)
RATE_LIMIT = 20
RUN = {"X-Workflow-Id": "wf-compat", "X-Run-Id": "run-7"}
DENIED = {"errors": ["permission denied"]}


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return make_settings(tmp_path / "var", db_url, runner_rate_limit_per_minute=RATE_LIMIT)


def kv(s: dict[str, str], line: str | None = None, tenant: str | None = None) -> str:
    return f"/v1/lines/data/{tenant or s['tenant']}/{line or s['line']}"


def vault_token(token: str) -> dict[str, str]:
    return {"X-Vault-Token": token}


def _event_key(event) -> tuple:
    return (
        event.outcome,
        event.reason,
        event.actor_type,
        event.actor_id,
        event.tenant_id,
        event.resource_type,
        event.resource_id,
        event.workflow_id,
        event.run_id,
        event.details,
    )


def test_kv_read_and_native_fetch_agree(client: TestClient, runtime: Runtime, setup) -> None:
    token = setup["token"]
    human = session_token(runtime)
    cases = [
        # (native path, KV path, token, native status, KV status, KV body or None)
        (url(setup), kv(setup), token, 200, 200, None),
        (url(setup, line=setup["other"]), kv(setup, line=setup["other"]), token, 404, 404, {}),
        (url(setup, tenant="tnt_nope"), kv(setup, tenant="tnt_nope"), token, 404, 404, {}),
        (url(setup), kv(setup), human, 403, 403, DENIED),
    ]
    for native_path, kv_path, tok, native_status, kv_status, kv_body in cases:
        before = len(audit(runtime, "credential.fetch"))
        native = client.get(native_path, headers={**bearer(tok), **RUN})
        compat = client.get(kv_path, headers={**vault_token(tok), **RUN})
        assert (native.status_code, compat.status_code) == (native_status, kv_status), kv_path
        assert compat.headers["cache-control"] == "no-store"
        if kv_body == {}:
            assert compat.json() == {"errors": []}
        elif kv_body is not None:
            assert compat.json() == kv_body
        else:
            doc = compat.json()
            assert doc["data"]["data"] == native.json()["credential"]
            meta = doc["data"]["metadata"]
            assert meta["version"] == native.json()["version"]
            assert (meta["deletion_time"], meta["destroyed"]) == ("", False)
            datetime.fromisoformat(meta["created_time"].replace("Z", "+00:00"))
            assert {"lease_id", "renewable", "lease_duration", "auth"} <= doc.keys()
        events = audit(runtime, "credential.fetch")[before:]
        assert len(events) == 2, [(e.outcome, e.reason) for e in events]
        assert _event_key(events[0]) == _event_key(events[1])
        assert events[0].request_id != events[1].request_id
        assert (events[0].workflow_id, events[0].run_id) == ("wf-compat", "run-7")


def test_bad_tokens_are_permission_denied(client: TestClient, runtime: Runtime, setup) -> None:
    for headers in ({}, vault_token("lvrt_" + "x" * 43), vault_token("s.not-ours")):
        r = client.get(kv(setup), headers=headers)
        assert (r.status_code, r.json()) == (403, DENIED)
    # The native answer to the same token: 401.
    assert client.get(url(setup), headers=bearer("lvrt_" + "x" * 43)).status_code == 401
    # Both APIs count them as failed fetches (the flood limiter aggregates the repeats).
    assert [e.reason for e in audit(runtime, "credential.fetch")][:1] == ["invalid_token"]


def test_revoked_line_is_404_on_kv_and_410_native(
    client: TestClient, runtime: Runtime, setup
) -> None:
    revoke_line(runtime, setup["line"])
    native = client.get(url(setup), headers=bearer(setup["token"]))
    compat = client.get(kv(setup), headers=vault_token(setup["token"]))
    assert (native.status_code, compat.status_code) == (410, 404)
    assert compat.json() == {"errors": []}
    first, second = audit(runtime, "credential.fetch")[-2:]
    assert _event_key(first) == _event_key(second)
    assert first.outcome == "denied"


def test_grant_deleted_is_effective_at_once_on_both(
    client: TestClient, runtime: Runtime, setup, admin
) -> None:
    headers = vault_token(setup["token"])
    assert client.get(kv(setup), headers=headers).status_code == 200
    code = client.delete(
        f"/v1/tenants/{setup['tenant']}/grants/{setup['grant']}",
        headers={**admin, "X-MFA-Code": "000000"},
    ).status_code
    assert code == 204
    assert client.get(kv(setup), headers=headers).status_code == 404
    assert client.get(url(setup), headers=bearer(setup["token"])).status_code == 404


def test_rate_limit_is_shared_and_answered_429_on_both(client: TestClient, setup) -> None:
    """The per-runner limit counts fetches from both APIs together."""
    statuses = []
    for i in range(RATE_LIMIT + 4):
        if i % 2:
            r = client.get(kv(setup), headers=vault_token(setup["token"]))
        else:
            r = client.get(url(setup), headers=bearer(setup["token"]))
        statuses.append(r.status_code)
        if r.status_code == 429:
            assert r.headers["retry-after"]
            if i % 2:
                assert r.json() == {"errors": ["rate limit quota exceeded"]}
    assert statuses[: RATE_LIMIT - 2] == [200] * (RATE_LIMIT - 2)
    assert statuses[-2:] == [429, 429]


def test_approle_login_lookup_and_revoke_self(client: TestClient, runtime: Runtime, setup) -> None:
    login = client.post(
        "/v1/auth/approle/login",
        json={"role_id": setup["client_id"], "secret_id": setup["secret"]},
    )
    assert login.status_code == 200, login.text
    assert login.headers["cache-control"] == "no-store"
    auth = login.json()["auth"]
    token = auth["client_token"]
    assert auth["renewable"] is False and auth["lease_duration"] > 0
    assert {"accessor", "policies"} <= auth.keys() and token not in auth["accessor"]
    # The AppRole token is a runner token: the native fetch takes it too.
    assert client.get(url(setup), headers=bearer(token)).status_code == 200
    [*_, issued] = audit(runtime, "runner.token")
    assert (issued.outcome, issued.actor_id) == ("success", setup["runner"])

    looked = client.get("/v1/auth/token/lookup-self", headers=vault_token(token))
    assert looked.status_code == 200
    data = looked.json()["data"]
    assert data["type"] == "service" and isinstance(data["ttl"], int) and data["ttl"] > 0
    assert data["ttl"] <= auth["lease_duration"]
    datetime.fromisoformat(data["expire_time"].replace("Z", "+00:00"))
    assert data["accessor"] == auth["accessor"] and data["display_name"]

    assert client.post("/v1/auth/token/revoke-self", headers=vault_token(token)).status_code == 204
    [*_, revoked] = audit(runtime, "runner.token_revoke")
    assert revoked.actor_id == setup["runner"]
    after = client.get("/v1/auth/token/lookup-self", headers=vault_token(token))
    assert (after.status_code, after.json()) == (403, DENIED)
    again = client.post("/v1/auth/token/revoke-self", headers=vault_token(token))
    assert (again.status_code, again.json()) == (403, DENIED)
    assert client.get(url(setup), headers=bearer(token)).status_code == 401
    assert client.get(kv(setup), headers=vault_token(token)).status_code == 403


def test_failed_logins_are_400_and_audited(client: TestClient, runtime: Runtime, setup) -> None:
    bodies = [
        {"role_id": setup["client_id"], "secret_id": "lvcs_wrong"},
        {"role_id": "rnc_unknown", "secret_id": setup["secret"]},
    ]
    for body in bodies:
        r = client.post("/v1/auth/approle/login", json=body)
        assert (r.status_code, r.json()) == (400, {"errors": ["invalid role or secret ID"]})
        assert setup["secret"] not in r.text
    r = client.post("/v1/auth/approle/login", json={"role_id": setup["client_id"]})
    assert (r.status_code, r.json()) == (400, {"errors": ["missing secret_id"]})
    # The first failure from this address is recorded in full, later ones aggregated by
    # the flood limiter (vault.audit.flood), as for POST /v1/runner/token.
    reasons = [e.reason for e in audit(runtime, "runner.token") if e.outcome == "denied"]
    assert reasons[:1] == ["bad_secret"]
    for event in audit(runtime, "runner.token"):
        assert setup["secret"] not in str(event.details)


@pytest.fixture
def route_client(settings: Settings, runtime: Runtime) -> Iterator[TestClient]:
    """The same app with the fast path taken out: FastAPI's KV route answers."""
    app = create_app(settings, runtime=runtime)
    app.fetch_fast_path = None
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_fast_path_and_route_answer_kv_reads_alike(
    client: TestClient, route_client: TestClient, runtime: Runtime, setup, monkeypatch
) -> None:
    import api.fastpath

    served_fast: list[str] = []
    answer = api.fastpath.answer_kv_read

    async def counting(*args, **kwargs):
        served_fast.append(kwargs["line_id"])
        return await answer(*args, **kwargs)

    monkeypatch.setattr(api.fastpath, "answer_kv_read", counting)
    token, human = setup["token"], session_token(runtime)
    cases = [
        (kv(setup), vault_token(token)),
        (kv(setup), bearer(token)),  # Vault accepts a bearer token too
        (kv(setup, line=setup["other"]), vault_token(token)),
        (kv(setup), {}),
        (kv(setup), vault_token(human)),
    ]
    for path, headers in cases:
        fast, slow = client.get(path, headers=headers), route_client.get(path, headers=headers)
        assert fast.status_code == slow.status_code, path
        for header in ("content-type", "cache-control", "retry-after"):
            assert fast.headers.get(header) == slow.headers.get(header), header
        a, b = fast.json(), slow.json()
        a.pop("request_id", None), b.pop("request_id", None)
        assert a == b
    assert len(served_fast) == len(cases)  # the served app answered every one up front
    metrics = client.get("/metrics").text
    assert 'route="/v1/lines/data/{tenant_id}/{line_id}",status="200"' in metrics


def test_errors_vault_has_no_word_for_keep_their_native_status() -> None:
    """E.g. a suspended line (423 natively): its status and code, not a 500."""
    from api.problems import vault_error_response
    from vault.errors import Conflict

    answer = vault_error_response(Conflict("x"))
    assert (answer.status_code, answer.body) == (409, b'{"errors":["conflict"]}')
    assert vault_error_response(RuntimeError("boom")).status_code == 500
