"""Signing in and out, and the account set-up pages (TOTP enrolment, a new password).

The same ``vault.identity`` calls as ``/v1/auth/*`` and ``/v1/me/*``, so throttling,
audit events and session rules are the API's: a password, then the authenticator code
(its ``mfa_token`` waits in an HttpOnly cookie between the two pages), then the session
cookie. A user with no second factor yet is sent to enrolment by the account policy
(``api.console.web.console_user``), which shows the secret's QR code as an SVG image.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from api.console.web import (
    CONSOLE_PREFIX,
    MFA_COOKIE,
    SESSION_COOKIE,
    ConsoleRoute,
    ConsoleUser,
    clear_cookie,
    error_page,
    page,
    safe_next,
    see_other,
    set_cookie,
)
from api.deps import Ctx, Rt, Users
from api.qrcodes import qr_svg
from vault.authz import require_second_factor
from vault.errors import MfaInvalid, RateLimited, Unauthenticated

__all__ = ["router"]

router = APIRouter(prefix=CONSOLE_PREFIX, route_class=ConsoleRoute, include_in_schema=False)

Text = Annotated[str, Form(max_length=1024)]
Code = Annotated[str, Form(min_length=1, max_length=32)]
Next = Annotated[str, Form(max_length=2048)]


@router.get("/")
def home() -> Response:
    return see_other(f"{CONSOLE_PREFIX}/tenants")


@router.get("/login")
def login_page(request: Request, next: str = "") -> HTMLResponse:
    return page(request, "login.html", {"title": "Sign in", "next": safe_next(next)})


@router.post("/login")
def login(
    request: Request, *, runtime: Rt, ctx: Ctx, email: Text, password: Text, next: Next = ""
) -> Response:
    """Password first; the code page next when a second factor is enrolled."""
    target = safe_next(next)
    try:
        result = runtime.authenticator.login(email=email, password=password, ctx=ctx)
    except (Unauthenticated, RateLimited) as exc:
        status = 429 if isinstance(exc, RateLimited) else 401
        context = {"title": "Sign in", "next": target, "error": exc.detail, "email": email}
        return page(request, "login.html", context, status=status)
    if result.mfa_token is not None:
        response = see_other(f"{CONSOLE_PREFIX}/login/code?next={quote(target, safe='/')}")
        set_cookie(response, request, MFA_COOKIE, result.mfa_token)
        return response
    assert result.session is not None
    response = see_other(target)
    set_cookie(response, request, SESSION_COOKIE, result.session.token)
    return response


@router.get("/login/code")
def code_page(request: Request, next: str = "") -> Response:
    if not request.cookies.get(MFA_COOKIE):
        return see_other(f"{CONSOLE_PREFIX}/login")
    return page(request, "code.html", {"title": "Authenticator code", "next": safe_next(next)})


@router.post("/login/code")
def verify_code(
    request: Request, runtime: Rt, ctx: Ctx, mfa_code: Code, next: Next = ""
) -> Response:
    target = safe_next(next)
    token = request.cookies.get(MFA_COOKIE, "")
    try:
        issued = runtime.authenticator.complete_mfa(mfa_token=token, code=mfa_code, ctx=ctx)
    except (MfaInvalid, RateLimited) as exc:
        status = 429 if isinstance(exc, RateLimited) else 401
        context = {"title": "Authenticator code", "next": target, "error": exc.detail}
        return page(request, "code.html", context, status=status)
    response = see_other(target)
    clear_cookie(response, request, MFA_COOKIE)
    set_cookie(response, request, SESSION_COOKIE, issued.token)
    return response


@router.post("/logout")
def logout(request: Request, runtime: Rt, ctx: Ctx, user: ConsoleUser) -> Response:
    runtime.authenticator.logout(user, ctx=ctx)
    response = see_other(f"{CONSOLE_PREFIX}/login")
    clear_cookie(response, request, SESSION_COOKIE)
    return response


@router.get("/enrol")
def enrol_page(request: Request, user: ConsoleUser) -> Response:
    return page(request, "enrol.html", {"title": "Set up your authenticator"})


@router.post("/enrol")
def enrol(request: Request, ctx: Ctx, user: ConsoleUser, users: Users) -> Response:
    """A new pending secret, shown as a QR code and as text; replacing an enrolled
    factor needs the current one (the form's code), as ``POST /v1/me/totp`` does."""
    if users.is_enrolled(user.user_id):
        require_second_factor(user)
    secret, uri = users.begin_totp(user_id=user.user_id, ctx=ctx)
    qr = qr_svg(uri, title="QR code of your new authenticator secret")
    context = {"title": "Scan the QR code", "qr": qr, "secret": secret}
    return page(request, "enrol_scan.html", context)


@router.post("/enrol/confirm")
def confirm_enrolment(
    request: Request, runtime: Rt, ctx: Ctx, user: ConsoleUser, mfa_code: Code
) -> Response:
    try:
        codes = runtime.factor_changes.confirm_totp(user, code=mfa_code, ctx=ctx)
    except MfaInvalid as exc:
        return error_page(request, 401, "Code not accepted", exc.detail)
    return page(request, "recovery_codes.html", {"title": "Recovery codes", "codes": codes})


@router.get("/password")
def password_page(request: Request, user: ConsoleUser) -> Response:
    return page(request, "password.html", {"title": "Choose a new password"})


@router.post("/password")
def change_password(
    request: Request,
    *,
    runtime: Rt,
    ctx: Ctx,
    user: ConsoleUser,
    current_password: Text,
    new_password: Text,
) -> Response:
    """Every other session ends; this one goes on (``POST /v1/me/password``)."""
    runtime.factor_changes.change_password(
        user, current=current_password, new=new_password, ctx=ctx
    )
    return see_other(f"{CONSOLE_PREFIX}/")
