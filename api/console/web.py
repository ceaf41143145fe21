"""What every console page shares: templates, cookies, the CSRF check, the security
headers, the signed-in person, and how errors become pages (docs/console.md).

Every console route is a :class:`ConsoleRoute`. Its handler wraps the route's own:
- a state-changing request (anything but GET/HEAD) must come from this origin (the
  ``Origin`` header, else ``Sec-Fetch-Site``) and carry the form's CSRF token, checked
  before any dependency runs, so a refused form changes nothing;
- a domain error becomes a page with the same status the API would answer, its detail
  from :func:`api.problems.describe` (the one table), and a link back;
- a signed-out visitor is sent to ``/ui/login`` with the page they asked for;
- every answer gets the strict Content-Security-Policy, ``Cache-Control: no-store`` and
  the other headers of :data:`SECURITY_HEADERS`.

The CSRF token is an HMAC of the session cookie under a random per-browser secret (its
own HttpOnly cookie): a page of another origin can read neither, so it cannot forge the
token, and a token stops working when the session it was made for ends (OWASP's
"signed double-submit cookie"). Before sign-in it binds the secret alone.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, unquote, urlsplit

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from api.deps import Ctx, Db, Rt, SecondFactor, account_ready
from api.problems import describe
from kms.errors import KmsError
from vault.authz import (
    TENANT_PERMISSIONS,
    Permission,
    PlatformPermission,
    UserPrincipal,
    platform_allows,
    runner_directory_allowed,
)
from vault.errors import (
    Forbidden,
    MfaEnrollmentRequired,
    PasswordChangeRequired,
    Unauthenticated,
    VaultError,
)

__all__ = [
    "CONSOLE_PREFIX",
    "CSRF_COOKIE",
    "MFA_COOKIE",
    "SECURITY_HEADERS",
    "SESSION_COOKIE",
    "ConsoleRoute",
    "ConsoleUser",
    "SignInRequired",
    "clear_cookie",
    "csrf_token_for",
    "error_page",
    "json_download",
    "page",
    "safe_next",
    "see_other",
    "set_cookie",
]

CONSOLE_PREFIX = "/ui"
SESSION_COOKIE = "lv_session"
MFA_COOKIE = "lv_mfa"  # the mfa_token between the password and the code
CSRF_COOKIE = "lv_csrf"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not "no-referrer": under it a browser sends ``Origin: null`` with every form POST,
    # and the same-origin check (which refuses "null") would refuse the console's own
    # forms. "same-origin" still sends nothing to another site.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}
_SAFE_METHODS = frozenset({"GET", "HEAD"})
_TEMPLATES = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))


class SignInRequired(Exception):
    """No live session: the visitor signs in, then comes back to ``next_path``."""

    def __init__(self, next_path: str) -> None:
        super().__init__("sign-in required")
        self.next_path = next_path


class _SetupRequired(Exception):
    """Signed in, but an account policy sends the person to a set-up page first."""

    def __init__(self, path: str) -> None:
        super().__init__("account set-up required")
        self.path = path


# -- cookies and CSRF ------------------------------------------------------------------


def _secure_transport(request: Request) -> bool:
    """HTTPS, or loopback (where browsers treat plain HTTP as a secure context)."""
    if request.url.scheme == "https":
        return True
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def set_cookie(response: Response, request: Request, name: str, value: str) -> None:
    """A console cookie: HttpOnly, SameSite=Strict, Path=/ui, Secure where it can be;
    no Max-Age (the server decides when a session ends)."""
    response.set_cookie(
        name,
        value,
        path=CONSOLE_PREFIX,
        httponly=True,
        samesite="strict",
        secure=_secure_transport(request),
    )


def clear_cookie(response: Response, request: Request, name: str) -> None:
    response.delete_cookie(
        name,
        path=CONSOLE_PREFIX,
        httponly=True,
        samesite="strict",
        secure=_secure_transport(request),
    )


def csrf_token_for(secret: str, session_token: str | None) -> str:
    """The form token for this browser's secret and its session (module docstring)."""
    message = b"linevault-console-csrf\x00" + (session_token or "").encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _csrf_secret(request: Request) -> str:
    """This browser's CSRF secret; a new one (set by :func:`page`) when it has none."""
    existing = request.cookies.get(CSRF_COOKIE, "")
    if 32 <= len(existing) <= 64 and existing.isascii():
        return existing
    fresh: str | None = getattr(request.state, "new_csrf_secret", None)
    if fresh is None:
        fresh = secrets.token_urlsafe(32)
        request.state.new_csrf_secret = fresh
    return fresh


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is not None:
        here = f"{request.url.scheme}://{request.headers.get('host', '')}"
        return hmac.compare_digest(origin.lower(), here.lower())
    return request.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")


async def _check_form(request: Request) -> None:
    """Refuse (403) a state change from another origin or without this browser's token."""
    refusal = Forbidden(
        "the form was not accepted: it came from another site or its page is too old; "
        "reload the page and try again"
    )
    if not _same_origin(request):
        raise refusal
    secret = request.cookies.get(CSRF_COOKIE)
    form = await request.form()
    sent = form.get("csrf_token")
    if not secret or not isinstance(sent, str):
        raise refusal
    expected = csrf_token_for(secret, request.cookies.get(SESSION_COOKIE))
    if not hmac.compare_digest(sent.encode(), expected.encode()):
        raise refusal


# -- answers ---------------------------------------------------------------------------


def safe_next(value: str | None) -> str:
    """Where to go after sign-in: a console path of this site, never another site's, nor
    one that leaves ``/ui/`` once the browser resolves dot segments (``/ui/../v1/...``,
    also percent-encoded), nor one with control characters (header splitting)."""
    home = f"{CONSOLE_PREFIX}/"
    if not value or not value.startswith(home) or "\\" in value:
        return home
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return home
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or value.startswith("//"):
        return home
    if any(seg in (".", "..") for seg in unquote(parts.path).split("/")):
        return home
    return value


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def page(
    request: Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status: int = 200,
) -> HTMLResponse:
    """Render ``template`` with the signed-in user (if any) and this form's CSRF token."""
    values = dict(context or {})
    user = values.setdefault("user", getattr(request.state, "console_user", None))
    values["nav"] = _nav_for(user)
    values["csrf_token"] = csrf_token_for(
        _csrf_secret(request), request.cookies.get(SESSION_COOKIE)
    )
    response = _TEMPLATES.TemplateResponse(request, template, values, status_code=status)
    fresh = getattr(request.state, "new_csrf_secret", None)
    if fresh is not None:
        set_cookie(response, request, CSRF_COOKIE, fresh)
    return response


def _nav_for(user: UserPrincipal | None) -> dict[str, bool]:
    """Which of the main navigation's links this person gets (the pages still check)."""
    if user is None:
        return {}
    audit_roles = TENANT_PERMISSIONS[Permission.AUDIT_READ]
    return {
        "runners": runner_directory_allowed(user),
        "audit": platform_allows(user, PlatformPermission.AUDIT_READ_ALL)
        or any(role in audit_roles for role in user.tenant_roles.values()),
    }


def _back_link(request: Request) -> str:
    """A console page to go back to: the form's ``back`` field, else the page itself."""
    form = getattr(request, "_form", None)
    back = form.get("back") if form is not None else None
    if isinstance(back, str):
        return safe_next(back)
    return safe_next(request.url.path if request.method in _SAFE_METHODS else None)


def error_page(request: Request, status: int, title: str, detail: str) -> HTMLResponse:
    return page(
        request,
        "error.html",
        {"title": title, "detail": detail, "back": _back_link(request)},
        status=status,
    )


def _sign_in_redirect(next_path: str) -> RedirectResponse:
    return see_other(f"{CONSOLE_PREFIX}/login?next={quote(next_path, safe='/')}")


def _next_path(request: Request) -> str:
    """The page a signed-out visitor asked for; a form's page for a POST."""
    if request.method in _SAFE_METHODS:
        query = f"?{request.url.query}" if request.url.query else ""
        return safe_next(f"{request.url.path}{query}")
    return _back_link(request)


class ConsoleRoute(APIRoute):
    """The console's route class (module docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def console_handler(request: Request) -> Response:
            response = await _answer(handler, request)
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return console_handler


async def _answer(
    handler: Callable[[Request], Coroutine[Any, Any, Response]], request: Request
) -> Response:
    try:
        if request.method not in _SAFE_METHODS:
            await _check_form(request)
        return await handler(request)
    except SignInRequired as exc:
        return _sign_in_redirect(exc.next_path)
    except _SetupRequired as exc:
        return see_other(exc.path)
    except RequestValidationError as exc:
        fields = sorted({str(err.get("loc", ("", "form"))[-1]) for err in exc.errors()})
        detail = f"check these fields: {', '.join(fields)}" if fields else "check the form"
        return error_page(request, 422, "The form is not complete", detail)
    except (VaultError, KmsError) as exc:
        status, _code, title, detail = describe(exc)
        return error_page(request, status, title, detail)


# -- the signed-in person ----------------------------------------------------------------


async def _form_code(request: Request) -> str | None:
    """The form's "Authenticator code" (field ``mfa_code``), for sudo-mode actions."""
    if request.method in _SAFE_METHODS:
        return None
    code = (await request.form()).get("mfa_code")
    return code.strip()[:32] if isinstance(code, str) and code.strip() else None


def console_user(
    runtime: Rt,
    ctx: Ctx,
    db: Db,
    request: Request,
    code: Annotated[str | None, Depends(_form_code)],
) -> UserPrincipal:
    """The person behind the session cookie, with the API's checks: the same session
    store, the same account policies (a set-up page instead of a 403) and the same
    second factor (the form's code instead of ``mfa_code`` in a JSON body)."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise SignInRequired(_next_path(request))
    try:
        user = runtime.authenticator.authenticate(token, ctx=ctx)
    except Unauthenticated:
        raise SignInRequired(_next_path(request)) from None
    try:
        account_ready(runtime, request, user, ctx)
    except PasswordChangeRequired:
        raise _SetupRequired(f"{CONSOLE_PREFIX}/password") from None
    except MfaEnrollmentRequired:
        raise _SetupRequired(f"{CONSOLE_PREFIX}/enrol") from None
    request.state.console_user = user
    # A code typed into a sudo-mode form is always checked, even in the minutes after
    # sign-in when the session is MFA-fresh: a form that asks for the code must not
    # take a wrong one. A form without a code still passes on a fresh session, as in
    # the API.
    checked = replace(user, mfa_fresh=user.mfa_fresh and code is None)
    return replace(checked, second_factor=SecondFactor(runtime, db, ctx, checked, code))


ConsoleUser = Annotated[UserPrincipal, Depends(console_user)]


def json_download(body: Any, filename: str) -> Response:
    """A JSON document the browser saves as ``filename`` (exports)."""
    return Response(
        json.dumps(body, indent=2, sort_keys=True),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
