"""The console in-process, through FastAPI's TestClient: a signed-in browser's cookies
and forms that carry the CSRF token, as the real pages do.

A test signs a person in by cookie (:func:`sign_in_by_cookie`, a session made directly
in the store) or through the forms themselves (:func:`sign_in_with_forms`), then posts
forms with :func:`post_form`, which adds the token the page would have carried.
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from api.console.web import CSRF_COOKIE, SESSION_COOKIE, csrf_token_for
from tests.support.identity import TEST_PASSWORD, new_session, totp_code
from vault.runtime import Runtime

__all__ = ["CSRF_SECRET", "post_form", "sign_in_by_cookie", "sign_in_with_forms"]

CSRF_SECRET = "test-csrf-secret-0123456789abcdefghijklmnop"


def _cookies(client: TestClient, session_token: str | None) -> None:
    client.cookies.clear()
    client.cookies.set(CSRF_COOKIE, CSRF_SECRET, path="/ui")
    if session_token is not None:
        client.cookies.set(SESSION_COOKIE, session_token, path="/ui")


def sign_in_by_cookie(
    client: TestClient, runtime: Runtime, user_id: str, *, mfa_fresh: bool = False
) -> str:
    """A live session for ``user_id`` in the client's cookie jar; returns its token."""
    token = new_session(runtime, user_id, mfa_fresh=mfa_fresh)
    _cookies(client, token)
    return token


def sign_in_with_forms(
    client: TestClient, runtime: Runtime, email: str, totp_secret: str | None
) -> None:
    """Password, then (when enrolled) the code, as a person would."""
    _cookies(client, None)
    reply = post_form(client, "/ui/login", {"email": email, "password": TEST_PASSWORD})
    assert reply.status_code == 303, reply.text
    if totp_secret is not None:
        assert reply.headers["location"].startswith("/ui/login/code")
        reply = post_form(client, "/ui/login/code", {"mfa_code": totp_code(totp_secret, runtime)})
        assert reply.status_code == 303, reply.text
    assert client.cookies.get(SESSION_COOKIE)


def post_form(
    client: TestClient, path: str, data: dict[str, Any] | None = None, **kwargs: Any
) -> Any:
    """POST ``data`` as a form with this browser's CSRF token; redirects not followed."""
    token = csrf_token_for(CSRF_SECRET, client.cookies.get(SESSION_COOKIE))
    fields = {"csrf_token": token, **(data or {})}
    return client.post(path, data=fields, follow_redirects=False, **kwargs)
