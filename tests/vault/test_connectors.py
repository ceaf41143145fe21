"""Every platform connector held to the one contract (like tests/kms/test_conformance.py),
against the local platform stand-in (tests/support/platforms.py): a real HTTP server on
127.0.0.1, no test touches the internet.

The contract: a connector satisfies the ``Connector`` protocol; a check answers ``Ok``
with the account, ``Rejected`` naming the credential field for a definite refusal
(Telegram 401, Graph 190), ``Unreachable`` for everything else (500, slow, refused);
it never raises, and no token reaches a log record, a reason or an exception.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.lines import planted
from tests.support.platforms import PlatformStandIn, platform_standin, refused_url
from vault.connectors import (
    Connector,
    ConnectorConfig,
    HttpClient,
    HttpUnreachable,
    Ok,
    ProviderChecks,
    Rejected,
    Unreachable,
)
from vault.connectors.checks import connectors
from vault.connectors.http import HttpxClient

OUTBOUND = ("telegram", "instagram", "messenger")
SECRET_FIELDS = {
    "telegram": "bot_token",
    "instagram": "access_token",
    "messenger": "page_access_token",
}
READ_TIMEOUT = 0.5


@pytest.fixture
def standin() -> Iterator[PlatformStandIn]:
    """One per test, so a slow test's late requests are not counted by the next."""
    with platform_standin() as server:
        yield server


def config(url: str) -> ConnectorConfig:
    return ConnectorConfig(
        enabled=True,
        telegram_api_url=url,
        graph_api_url=url,
        instagram_api_url=url,
        connect_timeout=0.5,
        read_timeout=READ_TIMEOUT,
        max_concurrent=4,
    )


@pytest.fixture
def http() -> Iterator[HttpxClient]:
    client = HttpxClient(connect_timeout=0.5, read_timeout=READ_TIMEOUT, max_concurrent=4)
    yield client
    client.close()


def connector_for(kind: str, http: HttpClient, url: str) -> Connector:
    return connectors(http, config(url))[kind]


def secrets_of(cred: dict[str, str]) -> list[str]:
    return [v for k, v in cred.items() if k not in ("page_id", "user_id")]


# -- the conformance suite ----------------------------------------------------------------


@pytest.mark.parametrize("kind", [*OUTBOUND, "widget"])
def test_satisfies_the_protocol(kind: str, http: HttpxClient, standin: PlatformStandIn) -> None:
    connector = connector_for(kind, http, standin.url)
    assert isinstance(connector, Connector)
    assert isinstance(http, HttpClient)
    assert connector.line_type == kind
    assert connector.outbound is (kind != "widget")


@pytest.mark.parametrize("kind", OUTBOUND)
def test_ok_names_the_account(kind: str, http: HttpxClient, standin: PlatformStandIn) -> None:
    cred = planted(kind)
    result = connector_for(kind, http, standin.url).check(cred)
    assert isinstance(result, Ok), result
    assert result.account["id"]
    assert sum(standin.calls.values()) == 1
    assert not any(s in str(result.account) for s in secrets_of(cred))


@pytest.mark.parametrize("kind", OUTBOUND)
def test_definite_refusal_names_field_and_reason(
    kind: str, http: HttpxClient, standin: PlatformStandIn
) -> None:
    standin.fail = "401" if kind == "telegram" else "190"
    cred = planted(kind)
    result = connector_for(kind, http, standin.url).check(cred)
    assert isinstance(result, Rejected), result
    assert result.field == SECRET_FIELDS[kind]
    expected = "Unauthorized" if kind == "telegram" else "Error validating access token"
    assert expected in result.reason
    assert not any(s in result.reason for s in secrets_of(cred))


@pytest.mark.parametrize("kind", OUTBOUND)
def test_server_error_is_unreachable(
    kind: str, http: HttpxClient, standin: PlatformStandIn
) -> None:
    standin.fail = "500"
    assert isinstance(connector_for(kind, http, standin.url).check(planted(kind)), Unreachable)


@pytest.mark.parametrize("kind", OUTBOUND)
def test_slow_platform_is_unreachable_within_the_timeout(
    kind: str, http: HttpxClient, standin: PlatformStandIn
) -> None:
    standin.fail, standin.slow_seconds = "slow", 3.0
    started = time.monotonic()
    result = connector_for(kind, http, standin.url).check(planted(kind))
    assert isinstance(result, Unreachable)
    assert time.monotonic() - started < READ_TIMEOUT + 1.0


@pytest.mark.parametrize("kind", OUTBOUND)
def test_refused_connection_is_unreachable(kind: str, http: HttpxClient) -> None:
    assert isinstance(connector_for(kind, http, refused_url()).check(planted(kind)), Unreachable)


def test_widget_makes_no_call(http: HttpxClient, standin: PlatformStandIn) -> None:
    connector = connector_for("widget", http, standin.url)
    assert isinstance(connector.check(planted("widget")), Unreachable)
    checks = ProviderChecks(config(standin.url), http=http)
    outcome = checks.check("widget", planted("widget"))
    assert (outcome.status, outcome.checked) == ("not_checked", False)
    assert sum(standin.calls.values()) == 0


# -- the platforms' particulars --------------------------------------------------------------


def test_telegram_bot_id_mismatch_is_refused(http: HttpxClient, standin: PlatformStandIn) -> None:
    standin.bot_id = 42  # getMe answers another bot than the token's digits
    result = connector_for("telegram", http, standin.url).check(planted("telegram"))
    assert isinstance(result, Rejected) and result.field == "bot_token"
    assert "bot id" in result.reason


def test_telegram_account(http: HttpxClient, standin: PlatformStandIn) -> None:
    cred = planted("telegram")
    result = connector_for("telegram", http, standin.url).check(cred)
    assert isinstance(result, Ok)
    assert dict(result.account) == {
        "id": cred["bot_token"].split(":")[0],
        "username": "acme_bot",
        "display_name": "Acme",
    }
    assert standin.calls["telegram.getMe"] == 1


def test_instagram_asks_for_user_id_and_username(
    http: HttpxClient, standin: PlatformStandIn
) -> None:
    cred = planted("instagram")
    result = connector_for("instagram", http, standin.url).check(cred)
    assert isinstance(result, Ok)
    assert dict(result.account) == {"id": "17841400000000001", "username": "acme.shop"}
    assert standin.queries[-1] == {
        "fields": "user_id,username",
        "access_token": cred["access_token"],
    }


def test_messenger_sends_meta_appsecret_proof(http: HttpxClient, standin: PlatformStandIn) -> None:
    cred = planted("messenger")
    standin.app_secret = cred["app_secret"]  # the stand-in refuses a wrong or missing proof
    result = connector_for("messenger", http, standin.url).check(cred)
    assert isinstance(result, Ok), result
    assert dict(result.account) == {"id": cred["page_id"], "display_name": "Acme Page"}
    expected = hmac.new(
        cred["app_secret"].encode(), cred["page_access_token"].encode(), hashlib.sha256
    ).hexdigest()
    (query,) = standin.queries
    assert query["appsecret_proof"] == expected and query["fields"] == "id,name"
    assert cred["app_secret"] not in str(query)


def test_messenger_wrong_proof_is_not_a_definite_refusal(
    http: HttpxClient, standin: PlatformStandIn
) -> None:
    standin.app_secret = "another-app-secret"  # Graph code 100, not 190
    result = connector_for("messenger", http, standin.url).check(planted("messenger"))
    assert isinstance(result, Unreachable)


def test_checks_off_make_no_call(http: HttpxClient, standin: PlatformStandIn) -> None:
    off = ConnectorConfig(
        enabled=False,
        telegram_api_url=standin.url,
        graph_api_url=standin.url,
        instagram_api_url=standin.url,
    )
    checks = ProviderChecks(off, http=http)
    for kind in OUTBOUND:
        assert checks.check(kind, planted(kind)).status == "not_checked"
    assert sum(standin.calls.values()) == 0


def test_outbound_calls_are_bounded(standin: PlatformStandIn) -> None:
    """One slot: a second call finds none within the connect timeout -> unreachable."""
    client = HttpxClient(connect_timeout=0.2, read_timeout=2.0, max_concurrent=1)
    standin.fail, standin.slow_seconds = "slow", 1.0
    first = threading.Thread(target=client.get_json, args=(f"{standin.url}/me", None))
    first.start()
    time.sleep(0.1)
    with pytest.raises(HttpUnreachable, match="no free outbound slot"):
        client.get_json(f"{standin.url}/me")
    first.join()
    client.close()


# -- no token in logs or errors -----------------------------------------------------------


def _run_every_check(http: HttpxClient, url: str) -> list[str]:
    tokens: list[str] = []
    for kind in OUTBOUND:
        cred = planted(kind)
        tokens += secrets_of(cred)
        connector_for(kind, http, url).check(cred)
    return tokens


def _leaks(records: list[logging.LogRecord], tokens: list[str]) -> list[str]:
    texts = [f"{r.name} {r.getMessage()} {r.args!r}" for r in records]
    return [t for t in texts if any(tok in t for tok in tokens)]


def test_no_token_in_any_log_record_at_debug(
    http: HttpxClient, standin: PlatformStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = _run_every_check(http, standin.url)
    standin.fail = "401"
    tokens += _run_every_check(http, standin.url)
    tokens += _run_every_check(http, refused_url())
    assert caplog.records is not None
    assert _leaks(caplog.records, tokens) == []


def test_the_log_test_would_see_httpx_request_lines(
    http: HttpxClient, standin: PlatformStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    """The check above is not vacuous: with httpx's logger left at DEBUG, its request
    line (the URL with the token) is captured, so quieting it is what keeps tokens out."""
    caplog.set_level(logging.DEBUG)
    logging.getLogger("httpx").setLevel(logging.NOTSET)
    try:
        tokens = _run_every_check(http, standin.url)
    finally:
        logging.getLogger("httpx").setLevel(logging.WARNING)
    assert _leaks(caplog.records, tokens)


def test_unreachable_errors_carry_no_url(standin: PlatformStandIn) -> None:
    client = HttpxClient(connect_timeout=0.5, read_timeout=0.3, max_concurrent=2)
    token = planted("telegram")["bot_token"]
    errors: list[Any] = []
    for url in (refused_url(), standin.url):
        standin.fail = "slow"
        try:
            client.get_json(f"{url}/bot{token}/getMe", {"access_token": token})
        except HttpUnreachable as exc:
            errors.append(exc)
    client.close()
    assert len(errors) == 2
    for exc in errors:
        assert token not in str(exc) and token not in repr(exc) and "127.0.0.1" not in str(exc)
        assert exc.__cause__ is None and exc.__suppress_context__
