"""InstagramConnector.refresh: the documented call and how each answer maps.

The HTTP client is a recording fake behind the connectors' ``HttpClient`` Protocol (the
real client against the stand-in is covered by tests/vault/test_refresh.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from vault.connectors import HttpAnswer, HttpUnreachable, Refreshed, Refused, Rejected, Unreachable
from vault.connectors.platforms import InstagramConnector

TOKEN = "IGQVJtokenSecretValue0123456789"


class FakeHttp:
    def __init__(self, answer: HttpAnswer | None) -> None:
        self.answer = answer
        self.calls: list[tuple[str, dict[str, str]]] = []

    def get_json(self, url: str, params: Mapping[str, str] | None = None) -> HttpAnswer:
        self.calls.append((url, dict(params or {})))
        if self.answer is None:
            raise HttpUnreachable("ConnectError")
        return self.answer

    def close(self) -> None:
        pass


def _refresh(answer: HttpAnswer | None) -> tuple[Any, FakeHttp]:
    http = FakeHttp(answer)
    result = InstagramConnector(http, "https://ig.example.test/").refresh({"access_token": TOKEN})
    return result, http


def test_the_documented_call_and_a_new_token() -> None:
    body = {"access_token": "IGQVJnewToken", "token_type": "bearer", "expires_in": 5_184_000}
    result, http = _refresh(HttpAnswer(200, body))
    assert result == Refreshed("IGQVJnewToken", 5_184_000)
    assert http.calls == [
        (
            "https://ig.example.test/refresh_access_token",
            {"grant_type": "ig_refresh_token", "access_token": TOKEN},
        )
    ]
    assert "IGQVJnewToken" not in repr(result)  # never in a log line by accident


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            HttpAnswer(400, {"error": {"message": f"bad {TOKEN}", "code": 190}}),
            Rejected("access_token", "bad <redacted>"),
        ),
        (
            HttpAnswer(400, {"error": {"message": "Application request limit", "code": 4}}),
            Refused("Application request limit"),
        ),
        (HttpAnswer(500, None), Unreachable("status 500")),
        (HttpAnswer(200, {"token_type": "bearer"}), Unreachable("no token in the answer")),
        (None, Unreachable("no answer")),
    ],
)
def test_failures_map_to_refusals_or_unreachable(answer: HttpAnswer | None, expected: Any) -> None:
    result, _ = _refresh(answer)
    assert result == expected
