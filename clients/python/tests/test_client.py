"""The runner SDK's retry, renewal, cache and error logic against a scripted transport.

(The client against a real server process: tests/e2e/test_runner_client.py of linevault.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from linevault_client import (
    AsyncRunnerClient,
    AuditUnavailable,
    AuthenticationError,
    Credential,
    NotGranted,
    RateLimited,
    Revoked,
    RunnerClient,
    ServiceUnavailable,
)

CRED = {
    "line_id": "ln_1",
    "tenant_id": "tnt_1",
    "type": "telegram",
    "version": 3,
    "credential": {"bot_token": "1:" + "x" * 30},
    "expires_at": None,
    "lease_ttl": 60,
}


class Script:
    """Answers token requests with fresh tokens and fetches from a queue of responses."""

    def __init__(self, *fetch_answers: httpx.Response | Callable[[httpx.Request], httpx.Response]):
        self.fetch_answers = list(fetch_answers)
        self.tokens = 0
        self.fetches: list[httpx.Request] = []
        self.token_status = 200

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/runner/token":
            if request.method == "DELETE":
                return httpx.Response(204)
            if self.token_status != 200:
                return httpx.Response(self.token_status, json={"error": "invalid_client"})
            self.tokens += 1
            return httpx.Response(
                200,
                json={
                    "access_token": f"lvrt_{self.tokens}",
                    "token_type": "Bearer",
                    "expires_in": 300,
                },
            )
        self.fetches.append(request)
        answer = self.fetch_answers.pop(0) if self.fetch_answers else httpx.Response(200, json=CRED)
        return answer(request) if callable(answer) else answer


def client(script: Script, **kw) -> RunnerClient:
    http = httpx.Client(base_url="http://vault", transport=httpx.MockTransport(script))
    return RunnerClient("http://vault", "rnc_1", "lvcs_s", http=http, backoff=0.001, **kw)


def problem(status: int, code: str, **headers: str) -> httpx.Response:
    return httpx.Response(
        status, json={"status": status, "code": code, "detail": code}, headers=headers
    )


def test_fetch_sends_token_and_run_headers_and_caches_by_lease() -> None:
    script = Script()
    with client(script, workflow_id="wf-default") as vault:
        got = vault.fetch("tnt_1", "ln_1", run_id="run-1")
        again = vault.fetch("tnt_1", "ln_1")
        assert got == again and isinstance(got, Credential)
        assert got.credential["bot_token"].startswith("1:")
        assert "bot_token" not in repr(got)
        assert len(script.fetches) == 1
        request = script.fetches[0]
        assert request.headers["authorization"] == "Bearer lvrt_1"
        assert (request.headers["x-workflow-id"], request.headers["x-run-id"]) == (
            "wf-default",
            "run-1",
        )
        vault.invalidate("tnt_1", "ln_1")
        vault.fetch("tnt_1", "ln_1")
        vault.fetch("tnt_1", "ln_1", use_cache=False)
        assert len(script.fetches) == 3 and script.tokens == 1


def test_lease_ttl_zero_disables_the_cache() -> None:
    script = Script(httpx.Response(200, json={**CRED, "lease_ttl": 0}))
    with client(script) as vault:
        vault.fetch("tnt_1", "ln_1")
        vault.fetch("tnt_1", "ln_1")
    assert len(script.fetches) == 2


def test_401_renews_the_token_once() -> None:
    script = Script(problem(401, "unauthenticated"))
    with client(script) as vault:
        assert vault.fetch("tnt_1", "ln_1").version == 3
    assert script.tokens == 2
    assert script.fetches[-1].headers["authorization"] == "Bearer lvrt_2"


def test_persistent_401_is_authentication_error() -> None:
    script = Script(problem(401, "unauthenticated"), problem(401, "unauthenticated"))
    with client(script) as vault, pytest.raises(AuthenticationError):
        vault.fetch("tnt_1", "ln_1")
    script = Script()
    script.token_status = 401
    with client(script) as vault, pytest.raises(AuthenticationError) as info:
        vault.fetch("tnt_1", "ln_1")
    assert info.value.code == "invalid_client"


def test_retries_429_and_5xx_then_succeeds() -> None:
    script = Script(
        problem(429, "rate_limited", **{"Retry-After": "0"}), problem(503, "audit_unavailable")
    )
    with client(script) as vault:
        assert vault.fetch("tnt_1", "ln_1").line_id == "ln_1"
    assert len(script.fetches) == 3


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (problem(404, "not_found"), NotGranted),
        (problem(403, "forbidden"), NotGranted),
        (problem(410, "revoked"), Revoked),
        (problem(429, "rate_limited", **{"Retry-After": "0"}), RateLimited),
        (problem(503, "audit_unavailable"), AuditUnavailable),
        (problem(502, "bad_gateway"), ServiceUnavailable),
    ],
)
def test_typed_errors(answer: httpx.Response, error: type[Exception]) -> None:
    script = Script(*([answer] * 5))
    with client(script, max_retries=2) as vault, pytest.raises(error):
        vault.fetch("tnt_1", "ln_1")


def test_connection_errors_retry_then_fail() -> None:
    def down(_: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    script = Script(down, down)
    with client(script) as vault:
        assert vault.fetch("tnt_1", "ln_1").version == 3
    with client(Script(*([down] * 5)), max_retries=2) as vault, pytest.raises(ServiceUnavailable):
        vault.fetch("tnt_1", "ln_1")


def test_revoked_drops_the_cached_copy() -> None:
    script = Script(httpx.Response(200, json=CRED), problem(410, "revoked"))
    with client(script) as vault:
        vault.fetch("tnt_1", "ln_1")
        with pytest.raises(Revoked):
            vault.fetch("tnt_1", "ln_1", use_cache=False)
        with pytest.raises(NotGranted):  # the queue is empty -> 200? no: cache was dropped
            script.fetch_answers.append(problem(404, "not_found"))
            vault.fetch("tnt_1", "ln_1")


def test_async_client() -> None:
    async def main() -> None:
        script = Script(
            problem(401, "unauthenticated"), problem(429, "rate_limited", **{"Retry-After": "0"})
        )
        http = httpx.AsyncClient(base_url="http://vault", transport=httpx.MockTransport(script))
        async with AsyncRunnerClient(
            "http://vault", "rnc_1", "lvcs_s", http=http, backoff=0.001
        ) as vault:
            got = await vault.fetch("tnt_1", "ln_1", workflow_id="wf", run_id="r")
            assert got.version == 3
            assert await vault.fetch("tnt_1", "ln_1") is got
        assert script.tokens == 2
        with pytest.raises(NotGranted):
            script2 = Script(problem(404, "not_found"))
            http2 = httpx.AsyncClient(
                base_url="http://vault", transport=httpx.MockTransport(script2)
            )
            async with AsyncRunnerClient("http://vault", "rnc_1", "s", http=http2) as vault2:
                await vault2.fetch("tnt_1", "ln_1")

    asyncio.run(main())


SIGNED = {"line_id": "ln_w", "version": 2, "algorithm": "HMAC-SHA256", "signature": "00ff"}
PROVED = {"line_id": "ln_m", "version": 5, "appsecret_proof": "beef"}


def test_sign_and_appsecret_proof_are_posted_each_time() -> None:
    script = Script(
        httpx.Response(200, json=SIGNED),
        httpx.Response(200, json=SIGNED),
        problem(429, "rate_limited", **{"Retry-After": "0"}),
        httpx.Response(200, json=PROVED),
    )
    with client(script, workflow_id="wf") as vault:
        first = vault.sign("tnt_1", "ln_w", "payload ✓")
        assert vault.sign("tnt_1", "ln_w", "payload ✓") == first  # not cached: posted again
        assert (first.signature, first.version) == ("00ff", 2)
        proof = vault.appsecret_proof("tnt_1", "ln_m", run_id="r-1")
        assert (proof.appsecret_proof, proof.line_id) == ("beef", "ln_m")
    sign_request, _, limited, proof_request = script.fetches
    assert sign_request.method == "POST" and sign_request.url.path.endswith("/ln_w/sign")
    assert sign_request.read() == '{"message":"payload ✓"}'.encode()
    assert sign_request.headers["x-workflow-id"] == "wf"
    assert limited.url.path.endswith("/appsecret-proof")  # retried after the 429
    assert proof_request.url.path == "/v1/tenants/tnt_1/lines/ln_m/appsecret-proof"
    assert proof_request.headers["x-run-id"] == "r-1"


def test_sign_refusals_are_typed() -> None:
    script = Script(problem(410, "revoked"), problem(404, "not_found"))
    with client(script) as vault:
        with pytest.raises(Revoked):
            vault.sign("t", "l", "m")
        with pytest.raises(NotGranted):
            vault.appsecret_proof("t", "l")


def test_async_sign_and_appsecret_proof() -> None:
    async def main() -> None:
        script = Script(httpx.Response(200, json=SIGNED), httpx.Response(200, json=PROVED))
        http = httpx.AsyncClient(base_url="http://vault", transport=httpx.MockTransport(script))
        async with AsyncRunnerClient("http://vault", "rnc_1", "lvcs_s", http=http) as vault:
            signed = await vault.sign("t", "ln_w", "m")
            proof = await vault.appsecret_proof("t", "ln_m")
        assert (signed.signature, proof.appsecret_proof) == ("00ff", "beef")
        assert [r.url.path.rsplit("/", 1)[1] for r in script.fetches] == [
            "sign",
            "appsecret-proof",
        ]
        assert script.fetches[0].read() == b'{"message":"m"}'

    asyncio.run(main())
