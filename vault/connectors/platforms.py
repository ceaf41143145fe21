"""The four connectors: the platforms' documented calls and their answers.

- Telegram: ``GET {telegram}/bot<token>/getMe``. 200 ``{"ok": true, "result": {"id",
  "first_name", "username"}}`` is the bot, unless its id is not the token's own (the
  digits before ``:``): then the token is refused. 401 is a definite refusal.
- Instagram: ``GET {instagram}/me?fields=user_id,username&access_token=...``; the
  refresh is ``GET {instagram}/refresh_access_token?grant_type=ig_refresh_token&
  access_token=...`` -> ``{"access_token", "token_type", "expires_in"}``.
- Messenger: ``GET {graph}/{page_id}?fields=id,name&access_token=...`` plus
  ``appsecret_proof`` (hex HMAC-SHA256, key the app secret, message the token) when the
  line has an ``app_secret``.
- Graph errors ``{"error": {"message", "type", "code", ...}}`` with code 190 (invalid or
  expired token) are a definite refusal; anything else is unreachable.
- Widget: no platform, no outbound call.

A platform's reason is kept to 200 printable characters and any credential value in
it is blanked, so a platform echoing the token cannot put it into a response or event.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from vault.connectors.base import (
    CheckResult,
    HttpAnswer,
    HttpClient,
    HttpUnreachable,
    Ok,
    Refreshed,
    RefreshResult,
    Refused,
    Rejected,
    Unreachable,
)

__all__ = [
    "InstagramConnector",
    "MessengerConnector",
    "TelegramConnector",
    "WidgetConnector",
    "appsecret_proof",
    "clean_reason",
]

GRAPH_INVALID_TOKEN = 190
_MAX_REASON = 200


def appsecret_proof(app_secret: str, access_token: str) -> str:
    """Meta's ``appsecret_proof``: hex HMAC-SHA256 of the token under the app secret."""
    return hmac.new(app_secret.encode(), access_token.encode(), hashlib.sha256).hexdigest()


def clean_reason(reason: object, secrets: Mapping[str, Any]) -> str:
    """The platform's words, printable, short, with every credential value blanked."""
    text = reason if isinstance(reason, str) and reason else "refused by the platform"
    for value in secrets.values():
        if isinstance(value, str) and len(value) >= 4:
            text = text.replace(value, "<redacted>")
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    return text[:_MAX_REASON]


def _call(http: HttpClient, url: str, params: Mapping[str, str] | None) -> HttpAnswer | None:
    try:
        return http.get_json(url, params)
    except HttpUnreachable:
        return None


def _graph_error(answer: HttpAnswer) -> Mapping[str, Any] | None:
    body = answer.body
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else None


def _graph_result(
    answer: HttpAnswer | None, field: str, credential: Mapping[str, Any]
) -> CheckResult | Mapping[str, Any]:
    """The Graph body of a 200, or the result that a failed call amounts to."""
    if answer is None:
        return Unreachable("no answer")
    error = _graph_error(answer)
    if error is not None and error.get("code") == GRAPH_INVALID_TOKEN:
        return Rejected(field, clean_reason(error.get("message"), credential))
    if answer.status != 200 or not isinstance(answer.body, dict):
        return Unreachable(f"status {answer.status}")
    return answer.body


def _text(value: object) -> str | None:
    if isinstance(value, str | int) and not isinstance(value, bool):
        return str(value)[:200]
    return None


def _account(**values: object) -> dict[str, str]:
    return {k: text for k, v in values.items() if (text := _text(v)) is not None}


class TelegramConnector:
    line_type = "telegram"
    outbound = True

    def __init__(self, http: HttpClient, base_url: str) -> None:
        self._http, self._base = http, base_url.rstrip("/")

    def check(self, credential: Mapping[str, Any]) -> CheckResult:
        token = str(credential.get("bot_token", ""))
        answer = _call(self._http, f"{self._base}/bot{token}/getMe", None)
        if answer is None:
            return Unreachable("no answer")
        body = answer.body if isinstance(answer.body, dict) else {}
        if answer.status == 401:
            return Rejected("bot_token", clean_reason(body.get("description"), credential))
        result = body.get("result")
        if answer.status != 200 or body.get("ok") is not True or not isinstance(result, dict):
            return Unreachable(f"status {answer.status}")
        if _text(result.get("id")) != token.partition(":")[0]:
            return Rejected("bot_token", "the token's bot id is not the id getMe answered")
        return Ok(
            _account(
                id=result.get("id"),
                username=result.get("username"),
                display_name=result.get("first_name"),
            )
        )


class InstagramConnector:
    line_type = "instagram"
    outbound = True

    def __init__(self, http: HttpClient, base_url: str) -> None:
        self._http, self._base = http, base_url.rstrip("/")

    def check(self, credential: Mapping[str, Any]) -> CheckResult:
        params = {
            "fields": "user_id,username",
            "access_token": str(credential.get("access_token", "")),
        }
        found = _graph_result(
            _call(self._http, f"{self._base}/me", params), "access_token", credential
        )
        if isinstance(found, Ok | Rejected | Unreachable):
            return found
        return Ok(
            _account(id=found.get("user_id") or found.get("id"), username=found.get("username"))
        )

    def refresh(self, credential: Mapping[str, Any]) -> RefreshResult:
        """A new long-lived token for this one. Graph error 190 is a definite refusal
        (the token is dead); any other Graph error is :class:`Refused` with its reason."""
        params = {
            "grant_type": "ig_refresh_token",
            "access_token": str(credential.get("access_token", "")),
        }
        answer = _call(self._http, f"{self._base}/refresh_access_token", params)
        found = _graph_result(answer, "access_token", credential)
        if isinstance(found, Rejected | Unreachable):
            error = _graph_error(answer) if answer is not None else None
            if isinstance(found, Unreachable) and error is not None:
                return Refused(clean_reason(error.get("message"), credential))
            return found
        if isinstance(found, Ok):
            return Unreachable("unexpected answer")
        return _refreshed(found)


def _refreshed(found: Mapping[str, Any]) -> RefreshResult:
    token, expires_in = found.get("access_token"), found.get("expires_in")
    if not isinstance(token, str) or not token:
        return Unreachable("no token in the answer")
    if not isinstance(expires_in, int) or isinstance(expires_in, bool) or expires_in <= 0:
        expires_in = None
    return Refreshed(token, expires_in)


class MessengerConnector:
    line_type = "messenger"
    outbound = True

    def __init__(self, http: HttpClient, base_url: str) -> None:
        self._http, self._base = http, base_url.rstrip("/")

    def check(self, credential: Mapping[str, Any]) -> CheckResult:
        token = str(credential.get("page_access_token", ""))
        params = {"fields": "id,name", "access_token": token}
        app_secret = credential.get("app_secret")
        if isinstance(app_secret, str) and app_secret:
            params["appsecret_proof"] = appsecret_proof(app_secret, token)
        page = quote(str(credential.get("page_id", "")), safe="")
        found = _graph_result(
            _call(self._http, f"{self._base}/{page}", params), "page_access_token", credential
        )
        if isinstance(found, Ok | Rejected | Unreachable):
            return found
        return Ok(_account(id=found.get("id"), display_name=found.get("name")))


class WidgetConnector:
    """The website widget has no platform to ask: every check is ``not_checked``."""

    line_type = "widget"
    outbound = False

    def check(self, credential: Mapping[str, Any]) -> CheckResult:
        return Unreachable("no platform")
