"""The sans-I/O core on its own: flows driven by hand, no transport at all."""

from __future__ import annotations

import httpx
import pytest

from linevault_client import NotGranted, Suspended
from linevault_client._core import Call, Core, NeedToken, RetryableResponse

CRED = {
    "line_id": "ln_1",
    "tenant_id": "tnt_1",
    "type": "telegram",
    "version": 2,
    "credential": {"bot_token": "1:" + "y" * 30},
    "expires_at": None,
    "lease_ttl": 60,
}


def core(**kw) -> Core:
    opts = {"max_retries": 3, "backoff": 0.1, "max_backoff": 5.0, "cache_size": 8}
    return Core("rnc_1", "lvcs_s", workflow_id="wf-default", **(opts | kw))


def test_fetch_flow_asks_for_a_token_then_builds_the_request() -> None:
    c = core()
    flow = c.fetch_flow("tnt/1", "ln_1", workflow_id=None, run_id="run-7", use_cache=True)
    assert next(flow) == NeedToken(renew=False)
    call = flow.send("lvrt_a")
    assert isinstance(call, Call) and call.method == "GET"
    assert call.url == "/v1/tenants/tnt%2F1/lines/ln_1/credential"
    assert call.headers == {
        "Authorization": "Bearer lvrt_a",
        "X-Workflow-Id": "wf-default",
        "X-Run-Id": "run-7",
    }
    with pytest.raises(StopIteration) as done:
        flow.send(httpx.Response(200, json=CRED))
    assert done.value.value.version == 2
    # The same key again comes from the cache: the flow ends before any step.
    with pytest.raises(StopIteration) as cached:
        next(c.fetch_flow("tnt/1", "ln_1", workflow_id=None, run_id=None, use_cache=True))
    assert cached.value.value is done.value.value


def test_fetch_flow_renews_once_on_401_then_refuses() -> None:
    flow = core().fetch_flow("t", "l", workflow_id=None, run_id=None, use_cache=False)
    assert next(flow) == NeedToken(renew=False)
    flow.send("old")
    assert flow.send(httpx.Response(401)) == NeedToken(renew=True)
    flow.send("new")
    with pytest.raises(Exception) as info:
        flow.send(httpx.Response(401, json={"code": "unauthenticated"}))
    assert type(info.value).__name__ == "AuthenticationError"


@pytest.mark.parametrize(("status", "error"), [(404, NotGranted), (423, Suspended)])
def test_refusals_drop_the_cached_copy(status: int, error: type[Exception]) -> None:
    c = core()
    flow = c.fetch_flow("t", "l", workflow_id=None, run_id=None, use_cache=True)
    next(flow), flow.send("tok")
    with pytest.raises(StopIteration):
        flow.send(httpx.Response(200, json=CRED))
    flow = c.fetch_flow("t", "l", workflow_id=None, run_id=None, use_cache=False)
    next(flow), flow.send("tok")
    with pytest.raises(error):
        flow.send(httpx.Response(status, json={"code": "x"}))
    assert c.cache.get(("t", "l")) is None


def test_token_flow_posts_client_credentials_and_keeps_the_token() -> None:
    c = core()
    flow = c.token_flow()
    call = next(flow)
    assert (call.method, call.url) == ("POST", "/v1/runner/token")
    assert call.data == {
        "grant_type": "client_credentials",
        "client_id": "rnc_1",
        "client_secret": "lvcs_s",
    }
    assert "lvcs_s" not in repr(call)
    with pytest.raises(StopIteration):
        flow.send(httpx.Response(200, json={"access_token": "lvrt_z", "expires_in": 300}))
    assert c.valid_token() == "lvrt_z"
    release = c.release_call()
    assert release is not None and release.method == "DELETE"
    assert c.valid_token() is None and c.release_call() is None


def test_retry_policy() -> None:
    c = core(max_backoff=2.0)
    assert c.retry_options()["attempts"] == 4
    for status in (429, 502, 503, 504):
        with pytest.raises(RetryableResponse):
            c.check(httpx.Response(status))
    for status in (200, 401, 403, 404, 410, 423, 500):
        assert c.check(httpx.Response(status)).status_code == status
    # Retry-After is honoured, capped at max_backoff; without it, exponential backoff.
    assert c.retry_hook(RetryableResponse(httpx.Response(429, headers={"Retry-After": "1"}))) == 1
    assert c.retry_hook(RetryableResponse(httpx.Response(429, headers={"Retry-After": "90"}))) == 2
    assert c.retry_hook(RetryableResponse(httpx.Response(503))) is True
    assert c.retry_hook(httpx.ConnectError("refused")) is True
    assert c.retry_hook(ValueError("bug")) is False


def test_sign_flow_posts_the_message_and_reads_the_signature() -> None:
    flow = core().sign_flow("tnt/1", "ln_w", "héllo", workflow_id=None, run_id="run-2")
    assert next(flow) == NeedToken(renew=False)
    call = flow.send("lvrt_a")
    assert (call.method, call.url) == ("POST", "/v1/tenants/tnt%2F1/lines/ln_w/sign")
    assert call.json == {"message": "héllo"} and call.data is None
    assert call.headers["Authorization"] == "Bearer lvrt_a"
    assert call.headers["X-Run-Id"] == "run-2"
    answer = {"line_id": "ln_w", "version": 4, "algorithm": "HMAC-SHA256", "signature": "ab12"}
    with pytest.raises(StopIteration) as done:
        flow.send(httpx.Response(200, json=answer))
    got = done.value.value
    assert (got.line_id, got.version, got.algorithm, got.signature) == (
        "ln_w",
        4,
        "HMAC-SHA256",
        "ab12",
    )


def test_proof_flow_renews_once_on_401_and_types_refusals() -> None:
    flow = core().proof_flow("t", "l", workflow_id=None, run_id=None)
    next(flow)
    call = flow.send("old")
    assert (call.method, call.url, call.json) == (
        "POST",
        "/v1/tenants/t/lines/l/appsecret-proof",
        None,
    )
    assert flow.send(httpx.Response(401)) == NeedToken(renew=True)
    flow.send("new")
    with pytest.raises(StopIteration) as done:
        flow.send(httpx.Response(200, json={"line_id": "l", "version": 1, "appsecret_proof": "9f"}))
    assert done.value.value.appsecret_proof == "9f"
    for status, error in ((404, NotGranted), (423, Suspended)):
        flow = core().proof_flow("t", "l", workflow_id=None, run_id=None)
        next(flow), flow.send("tok")
        with pytest.raises(error):
            flow.send(httpx.Response(status, json={"code": "x"}))
    flow = core().proof_flow("t", "l", workflow_id=None, run_id=None)
    next(flow), flow.send("tok")
    with pytest.raises(Exception) as info:
        flow.send(httpx.Response(409, json={"code": "conflict", "detail": "not a widget"}))
    assert (info.value.status, info.value.code) == (409, "conflict")  # type: ignore[attr-defined]
