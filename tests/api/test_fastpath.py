"""The fetch fast path answers exactly as the documented FastAPI route would.

The same app is built twice: as served (fast path in front) and with the fast path
switched off (so FastAPI's route answers). Every outcome of a fetch must be byte-identical
apart from the per-request id, and both must leave the same audit event.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from tests.api import test_runners_api as runners_api
from tests.support.runners import revoke_line
from vault.runtime import Runtime
from vault.settings import Settings

# The runner world of the runners API tests, reused as fixtures here.
admin = runners_api.admin
setup = runners_api.setup
bearer, audit, session_token, url = (
    runners_api.bearer,
    runners_api.audit,
    runners_api.session_token,
    runners_api.url,
)


@pytest.fixture
def route_client(settings: Settings, runtime: Runtime) -> Iterator[TestClient]:
    """The same app with the fast path taken out: FastAPI's route answers fetches."""
    app = create_app(settings, runtime=runtime)
    app.fetch_fast_path = None
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def _same(a, b) -> None:
    assert a.status_code == b.status_code
    assert a.content == b.content
    for header in ("content-type", "cache-control", "www-authenticate", "retry-after"):
        assert a.headers.get(header) == b.headers.get(header), header


def test_every_fetch_outcome_is_identical(
    client,
    route_client,
    runtime: Runtime,
    setup,
) -> None:
    runner = bearer(setup["token"])
    human = bearer(session_token(runtime))
    cases = [
        (url(setup), runner),  # 200
        (url(setup, line=setup["other"]), runner),  # not granted: 404
        (url(setup, tenant="tnt_nope"), runner),  # unknown tenant: 404
        (url(setup), {}),  # no token: 401
        (url(setup), bearer("lvrt_" + "x" * 43)),  # unknown token: 401
        (url(setup), human),  # a human session: 403
    ]
    for path, headers in cases:
        fast = client.get(path, headers=headers)
        slow = route_client.get(path, headers=headers)
        _same(fast, slow)
    revoke_line(runtime, setup["line"])
    _same(client.get(url(setup), headers=runner), route_client.get(url(setup), headers=runner))
    events = audit(runtime, "credential.fetch")
    # Each request above with a valid token, through either path, left exactly one fetch
    # event; the four without one are unauthenticated failures from one address: the
    # first is recorded in full, the rest aggregated (vault.audit.flood).
    unauthenticated = [e for e in events if e.reason == "invalid_token"]
    assert len(unauthenticated) == 1
    events = [e for e in events if e.reason != "invalid_token"]
    assert len(events) == 2 * (len(cases) - 2 + 1)
    fast_events, slow_events = events[0::2], events[1::2]
    for f, s in zip(fast_events, slow_events, strict=True):
        assert (f.outcome, f.reason, f.actor_type, f.resource_id) == (
            s.outcome,
            s.reason,
            s.actor_type,
            s.resource_id,
        )


def test_fast_path_is_in_front_and_named_in_metrics(client, setup) -> None:
    assert client.get(url(setup), headers=bearer(setup["token"])).status_code == 200
    metrics = client.get("/metrics").text
    assert 'route="/v1/tenants/{tenant_id}/lines/{line_id}/credential",status="200"' in metrics


def test_malformed_ids_fall_through_to_the_router(client, setup) -> None:
    r = client.get("/v1/tenants/..%2F..%2Fx/lines/y/credential", headers=bearer(setup["token"]))
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")


def test_an_unexpected_error_is_the_apps_500_problem(client, setup, monkeypatch) -> None:
    import api.fastpath

    async def broken(*_args, **_kwargs):
        raise RuntimeError("boom: secret-looking detail")

    monkeypatch.setattr(api.fastpath, "answer_fetch", broken)
    r = client.get(url(setup), headers=bearer(setup["token"]))
    assert r.status_code == 500
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "internal_error"
    assert "boom" not in r.text
    assert r.headers["x-request-id"]  # the request-context middleware still ran
