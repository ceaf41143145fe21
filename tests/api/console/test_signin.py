"""Signing in to the console, its cookies and headers, the account set-up pages, ``next``,
sign-out, session expiry and the CSRF refusal, in-process on both databases.

The forms are posted as a browser posts them (tests/support/console_forms.py adds the
CSRF token); every refusal is also checked to have changed nothing.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.console.web import CSRF_COOKIE, MFA_COOKIE, SESSION_COOKIE, csrf_token_for
from tests.support.console_forms import CSRF_SECRET, post_form, sign_in_by_cookie
from tests.support.identity import TEST_PASSWORD, bearer, make_tenant, make_user, new_session
from tests.support.settings import make_settings
from vault.bootstrap import BootstrapResult
from vault.clock import FixedClock
from vault.runtime import Runtime
from vault.settings import Settings
from vault.storage.engine import unit_of_work

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def policies() -> bool:
    """The account policies (require_mfa, require_password_change); a test that needs
    them parametrizes this to True."""
    return False


@pytest.fixture
def settings(tmp_path: Path, db_url: str, policies: bool) -> Settings:
    return make_settings(
        data_dir=tmp_path / "var",
        database_url=db_url,
        require_mfa=policies,
        require_password_change=policies,
    )


def _fresh_browser(client: TestClient) -> None:
    client.cookies.clear()
    client.cookies.set(CSRF_COOKIE, CSRF_SECRET, path="/ui")


def _set_cookies(reply: Any) -> dict[str, str]:
    """``name -> the whole Set-Cookie header`` of a response."""
    return {h.split("=", 1)[0]: h for h in reply.headers.get_list("set-cookie")}


def _flags(header: str) -> set[str]:
    return {part.strip().lower() for part in header.split(";")[1:]}


def _password_step(client: TestClient, email: str, password: str, next_: str = "") -> Any:
    return post_form(client, "/ui/login", {"email": email, "password": password, "next": next_})


def _code(secret: str, runtime: Runtime) -> str:
    return pyotp.TOTP(secret).at(runtime.clock.now())


def _admin_signs_in(
    client: TestClient, runtime: Runtime, admin: BootstrapResult, next_: str = ""
) -> Any:
    _fresh_browser(client)
    reply = _password_step(client, admin.admin_email, admin.admin_password, next_)
    assert reply.status_code == 303, reply.text
    code_page = reply.headers["location"]
    assert code_page.startswith("/ui/login/code")
    assert client.get(code_page).status_code == 200
    nxt = parse_qs(urlsplit(code_page).query).get("next", [""])[0]
    return post_form(
        client,
        "/ui/login/code",
        {"mfa_code": _code(admin.admin_totp_secret, runtime), "next": nxt},
    )


# -- sign-in ---------------------------------------------------------------------------


def test_password_then_code_signs_in_with_strict_cookies(
    client: TestClient, runtime: Runtime, bootstrap: BootstrapResult
) -> None:
    _fresh_browser(client)
    reply = _password_step(client, bootstrap.admin_email, bootstrap.admin_password)
    assert reply.status_code == 303
    cookies = _set_cookies(reply)
    assert SESSION_COOKIE not in cookies  # the password alone is not a session
    mfa = _flags(cookies[MFA_COOKIE])
    assert {"httponly", "samesite=strict", "path=/ui"} <= mfa
    assert "secure" not in mfa  # plain HTTP from a non-loopback client
    assert not any(f.startswith(("max-age", "expires")) for f in mfa)

    reply = post_form(
        client, "/ui/login/code", {"mfa_code": _code(bootstrap.admin_totp_secret, runtime)}
    )
    assert reply.status_code == 303
    assert reply.headers["location"] == "/ui/"
    session = _flags(_set_cookies(reply)[SESSION_COOKIE])
    assert {"httponly", "samesite=strict", "path=/ui"} <= session
    assert "secure" not in session
    assert _set_cookies(reply)[MFA_COOKIE].startswith(f'{MFA_COOKIE}=""')  # cleared
    page = client.get("/ui/tenants")
    assert page.status_code == 200 and bootstrap.admin_email in page.text


def test_wrong_password_is_a_401_page_without_a_cookie(
    client: TestClient, bootstrap: BootstrapResult
) -> None:
    _fresh_browser(client)
    reply = _password_step(client, bootstrap.admin_email, "not the password")
    assert reply.status_code == 401
    assert 'role="alert"' in reply.text and "Sign in" in reply.text
    assert "not the password" not in reply.text
    assert not {SESSION_COOKIE, MFA_COOKIE} & set(_set_cookies(reply))
    assert client.get("/ui/tenants", follow_redirects=False).status_code == 303


def test_wrong_code_is_a_401_page_without_a_session(
    client: TestClient, runtime: Runtime, bootstrap: BootstrapResult
) -> None:
    _fresh_browser(client)
    assert _password_step(client, bootstrap.admin_email, bootstrap.admin_password).is_redirect
    right = _code(bootstrap.admin_totp_secret, runtime)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    reply = post_form(client, "/ui/login/code", {"mfa_code": wrong})
    assert reply.status_code == 401
    assert 'role="alert"' in reply.text and "Authenticator code" in reply.text
    assert SESSION_COOKIE not in _set_cookies(reply)
    assert client.get("/ui/tenants", follow_redirects=False).status_code == 303


@pytest.mark.parametrize(
    ("base_url", "client_host", "secure"),
    [
        ("https://console.example", "203.0.113.9", True),
        ("http://127.0.0.1:8210", "127.0.0.1", True),
        ("http://[::1]:8210", "::1", True),
        ("http://console.example", "203.0.113.9", False),
    ],
)
def test_session_cookie_is_secure_on_https_and_loopback(
    settings: Settings,
    runtime: Runtime,
    bootstrap: BootstrapResult,
    base_url: str,
    client_host: str,
    secure: bool,
) -> None:
    app = create_app(settings, runtime=runtime)
    origin = f"{urlsplit(base_url).scheme}://{urlsplit(base_url).netloc}"
    with TestClient(app, base_url=base_url, client=(client_host, 50000)) as client:
        # Cookies by hand: a cookie jar would not send a Secure cookie over plain HTTP.
        client.cookies.clear()
        reply = client.post(
            "/ui/login",
            data={
                "csrf_token": csrf_token_for(CSRF_SECRET, None),
                "email": bootstrap.admin_email,
                "password": bootstrap.admin_password,
            },
            headers={"origin": origin, "cookie": f"{CSRF_COOKIE}={CSRF_SECRET}"},
            follow_redirects=False,
        )
        assert reply.status_code == 303, reply.text
        mfa = _set_cookies(reply)[MFA_COOKIE]
        assert ("secure" in _flags(mfa)) is secure
        client.cookies.clear()
        reply = client.post(
            "/ui/login/code",
            data={
                "csrf_token": csrf_token_for(CSRF_SECRET, None),
                "mfa_code": _code(bootstrap.admin_totp_secret, runtime),
            },
            headers={
                "origin": origin,
                "cookie": f"{CSRF_COOKIE}={CSRF_SECRET}; {mfa.split(';', 1)[0]}",
            },
            follow_redirects=False,
        )
        assert reply.status_code == 303, reply.text
        session = _flags(_set_cookies(reply)[SESSION_COOKIE])
        assert {"httponly", "samesite=strict", "path=/ui"} <= session
        assert ("secure" in session) is secure


# -- headers on every page ------------------------------------------------------------


def _csp_directives(header: str) -> dict[str, str]:
    parts = [p.strip() for p in header.split(";") if p.strip()]
    return {p.split(" ", 1)[0]: p.split(" ", 1)[1] if " " in p else "" for p in parts}


def test_every_page_has_the_strict_csp_and_no_store(client: TestClient, runtime: Runtime) -> None:
    admin = make_user(runtime, "root@console.test", platform_role="admin", totp=True)
    tenant_id = make_tenant(runtime, "Headers")
    sign_in_by_cookie(client, runtime, admin.id)
    urls = [
        "/ui/",
        "/ui/login",
        "/ui/login/code",
        "/ui/tenants",
        f"/ui/tenants/{tenant_id}",
        "/ui/tenants/tnt_nope",  # an error page
        "/ui/account",
        "/ui/account/export",
        "/ui/enrol",
        "/ui/password",
    ]
    replies = [client.get(url, follow_redirects=False) for url in urls]
    replies.append(post_form(client, "/ui/logout", {}, headers={"origin": "https://evil.test"}))
    replies.append(client.get("/ui/account", follow_redirects=False))  # signed out: redirect
    for reply in replies:
        where = f"{reply.request.method} {reply.request.url.path} -> {reply.status_code}"
        header = reply.headers.get("content-security-policy", "")
        assert header.startswith("default-src 'self'"), where
        assert "unsafe-" not in header, where
        directives = _csp_directives(header)
        assert directives["frame-ancestors"] == "'none'", where
        assert directives["base-uri"] == "'none'", where
        assert directives["form-action"] == "'self'", where
        assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
        assert reply.headers.get("cache-control") == "no-store", where
        # Not no-referrer: under it browsers send "Origin: null" with the console's forms.
        assert reply.headers.get("referrer-policy") == "same-origin", where
    statuses = [r.status_code for r in replies]
    assert 200 in statuses and 404 in statuses and 403 in statuses and 303 in statuses


# -- account set-up: a generated password, then enrolment --------------------------------


def _svg_qr(html: str) -> ET.Element:
    match = re.search(r"<svg\b.*?</svg>", html, re.S)
    assert match, "no inline SVG on the page"
    svg = ET.fromstring(match.group(0))
    assert svg.tag == f"{SVG}svg"
    assert svg.get("role") == "img"
    title = svg.find(f"{SVG}title")
    assert title is not None and "QR code" in (title.text or "")
    return svg


@pytest.mark.parametrize("policies", [True])
def test_new_user_changes_password_then_enrols(client: TestClient, runtime: Runtime) -> None:
    root = make_user(runtime, "root@console.test", platform_role="admin", totp=True)
    made = client.post(
        "/v1/users",
        json={"email": "new@console.test"},
        headers=bearer(new_session(runtime, root.id, mfa_fresh=True)),
    )
    assert made.status_code == 201, made.text
    initial = made.json()["initial_password"]

    _fresh_browser(client)
    reply = _password_step(client, "new@console.test", initial, "/ui/account")
    assert reply.status_code == 303 and reply.headers["location"] == "/ui/account"
    assert client.get("/ui/account", follow_redirects=False).headers["location"] == "/ui/password"
    assert "was generated for you" in client.get("/ui/password").text
    new_password = "a much better passphrase 42"
    reply = post_form(
        client, "/ui/password", {"current_password": initial, "new_password": new_password}
    )
    assert reply.status_code == 303
    assert client.get("/ui/tenants", follow_redirects=False).headers["location"] == "/ui/enrol"

    assert client.get("/ui/enrol").status_code == 200
    scan = post_form(client, "/ui/enrol", {})
    assert scan.status_code == 200
    svg = _svg_qr(scan.text)
    modules = svg.findall(f".//{SVG}path") + svg.findall(f".//{SVG}rect")
    assert modules, "the QR code has no modules"
    secret = re.search(r"<code>([A-Z2-7]{16,})</code>", scan.text)
    assert secret, "the key for typing by hand is not shown"
    assert "otpauth://" not in scan.text.replace(svg.get("aria-label") or "", "")

    done = post_form(client, "/ui/enrol/confirm", {"mfa_code": _code(secret.group(1), runtime)})
    assert done.status_code == 200
    codes = re.findall(r"<li><code>([^<]+)</code></li>", done.text)
    assert len(codes) >= 8
    assert "shown only now" in done.text
    for url in ("/ui/tenants", "/ui/account"):
        later = client.get(url)
        assert later.status_code == 200
        assert not any(c in later.text for c in codes) and secret.group(1) not in later.text
    assert "authenticator app enrolled" in client.get("/ui/account").text


# -- next: keeps the page, refuses other sites -----------------------------------------


def test_next_keeps_the_page_through_both_steps(
    client: TestClient, runtime: Runtime, bootstrap: BootstrapResult
) -> None:
    reply = client.get("/ui/account?tab=sessions&x=1", follow_redirects=False)
    assert reply.status_code == 303
    login = reply.headers["location"]
    wanted = parse_qs(urlsplit(login).query)["next"][0]
    assert wanted == "/ui/account?tab=sessions&x=1"
    reply = _admin_signs_in(client, runtime, bootstrap, wanted)
    assert reply.status_code == 303
    assert reply.headers["location"] == "/ui/account?tab=sessions&x=1"


@pytest.mark.parametrize(
    "evil",
    [
        "//evil.example/ui/",
        "https://evil.example/ui/",
        "/ui\\evil.example",
        "/ui/\\\\evil.example",
        "/v1/me",
        "javascript:alert(1)",
        "/ui/../v1/me",
        "/ui/%2e%2e/v1/me",
        "/ui/tenants/%2E%2E/%2E%2E/v1/me",
        "/ui/\r\nSet-Cookie: x=1",
        "ui/tenants",
    ],
)
def test_next_refuses_other_sites(
    client: TestClient, runtime: Runtime, bootstrap: BootstrapResult, evil: str
) -> None:
    page = client.get("/ui/login", params={"next": evil})
    assert 'name="next" value="/ui/"' in page.text
    reply = _admin_signs_in(client, runtime, bootstrap, evil)
    assert reply.status_code == 303
    assert reply.headers["location"] == "/ui/"


# -- sign-out and expiry ---------------------------------------------------------------


def test_logout_ends_the_session_in_the_store(client: TestClient, runtime: Runtime) -> None:
    user = make_user(runtime, "out@console.test", totp=True)
    token = sign_in_by_cookie(client, runtime, user.id)
    reply = post_form(client, "/ui/logout", {})
    assert reply.status_code == 303 and reply.headers["location"] == "/ui/login"
    assert _set_cookies(reply)[SESSION_COOKIE].startswith(f'{SESSION_COOKIE}=""')
    assert _live(runtime, token) is None
    client.cookies.set(SESSION_COOKIE, token, path="/ui")  # a copy of the old cookie
    assert client.get("/ui/tenants", follow_redirects=False).status_code == 303


def test_idle_expiry_returns_to_sign_in_with_the_page(
    client: TestClient, runtime: Runtime, clock: FixedClock, bootstrap: BootstrapResult
) -> None:
    _admin_signs_in(client, runtime, bootstrap)
    assert client.get("/ui/account").status_code == 200
    clock.advance(runtime.settings.session_idle_minutes * 60 + 1)
    reply = client.get("/ui/account", follow_redirects=False)
    assert reply.status_code == 303
    assert reply.headers["location"] == "/ui/login?next=/ui/account"


def test_absolute_expiry_returns_to_sign_in_with_the_page(
    client: TestClient, runtime: Runtime, clock: FixedClock
) -> None:
    user = make_user(runtime, "busy@console.test", totp=True)
    sign_in_by_cookie(client, runtime, user.id)
    step = runtime.settings.session_idle_minutes * 60 / 2  # never idle
    limit = runtime.settings.session_absolute_hours * 3600
    elapsed = 0.0
    while elapsed + step < limit:
        clock.advance(step)
        elapsed += step
        assert client.get("/ui/tenants", follow_redirects=False).status_code == 200, elapsed
    clock.advance(step)
    reply = client.get("/ui/tenants", follow_redirects=False)
    assert reply.status_code == 303
    assert reply.headers["location"] == "/ui/login?next=/ui/tenants"


# -- CSRF --------------------------------------------------------------------------------


@pytest.fixture
def victim(client: TestClient, runtime: Runtime) -> Iterator[tuple[str, str]]:
    """A signed-in person with a second session (which the forged forms try to end)."""
    user = make_user(runtime, "victim@console.test", totp=True)
    other = new_session(runtime, user.id)
    token = sign_in_by_cookie(client, runtime, user.id)
    yield token, other


def _live(runtime: Runtime, token: str) -> str | None:
    """The id of the live session behind ``token``; None once it has ended."""
    with unit_of_work(runtime.sessions) as db:
        found = runtime.authenticator.store.resolve(db, token, now=runtime.clock.now())
    return found.session_id if found is not None else None


def _forgeries(client: TestClient, runtime: Runtime) -> list[tuple[str, dict[str, Any]]]:
    good = csrf_token_for(CSRF_SECRET, client.cookies.get(SESSION_COOKIE))
    someone = make_user(runtime, f"x{len(good)}-{id(client)}@console.test")
    elsewhere = csrf_token_for(CSRF_SECRET, new_session(runtime, someone.id))
    return [
        ("no token", {"data": {}}),
        ("a wrong token", {"data": {"csrf_token": "0" * 64}}),
        ("another session's token", {"data": {"csrf_token": elsewhere}}),
        ("the token of no session", {"data": {"csrf_token": csrf_token_for(CSRF_SECRET, None)}}),
        (
            "another origin",
            {"data": {"csrf_token": good}, "headers": {"origin": "https://evil.example"}},
        ),
        (
            "a cross-site fetch",
            {"data": {"csrf_token": good}, "headers": {"sec-fetch-site": "cross-site"}},
        ),
        ("Origin null", {"data": {"csrf_token": good}, "headers": {"origin": "null"}}),
    ]


def test_forged_logout_is_refused_and_changes_nothing(
    client: TestClient, runtime: Runtime, victim: tuple[str, str]
) -> None:
    token, _ = victim
    for name, request in _forgeries(client, runtime):
        reply = client.post("/ui/logout", follow_redirects=False, **request)
        assert reply.status_code == 403, name
        assert SESSION_COOKIE not in _set_cookies(reply), name
        assert _live(runtime, token), name
        assert client.get("/ui/tenants").status_code == 200, name


def test_forged_account_action_is_refused_and_changes_nothing(
    client: TestClient, runtime: Runtime, victim: tuple[str, str]
) -> None:
    token, other = victim
    other_id = _live(runtime, other)
    assert other_id is not None
    for name, request in _forgeries(client, runtime):
        url = f"/ui/account/sessions/{other_id}/end"
        assert client.post(url, follow_redirects=False, **request).status_code == 403, name
        assert _live(runtime, other) == other_id, name  # still live
    assert post_form(client, f"/ui/account/sessions/{other_id}/end", {}).status_code == 303
    assert _live(runtime, other) is None
    assert _live(runtime, token)


def test_the_token_from_a_page_is_the_one_accepted(client: TestClient, runtime: Runtime) -> None:
    """A fresh browser gets its CSRF secret with the first page and the page's token works."""
    user = make_user(runtime, "fresh@console.test")
    client.cookies.clear()
    page = client.get("/ui/login")
    assert CSRF_COOKIE in _set_cookies(page)
    assert {"httponly", "samesite=strict", "path=/ui"} <= _flags(_set_cookies(page)[CSRF_COOKIE])
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token
    form = {"csrf_token": token.group(1), "email": user.email, "password": TEST_PASSWORD}
    reply = client.post("/ui/login", data=form, follow_redirects=False)
    assert reply.status_code == 303 and client.cookies.get(SESSION_COOKIE)
    # Once signed in, the pre-sign-in token no longer works.
    stale = client.post("/ui/logout", data={"csrf_token": token.group(1)})
    assert stale.status_code == 403
