"""Browser journeys of the console's sign-in and security properties (issue 15).

Against a real ``linevault serve`` (account policies on, as in production): sign-in with
TOTP and sign-out; a new user's first sign-in (new password, enrolment with the QR code
as an SVG image, recovery codes); a form posted from another origin, and one without the
token from the console's own origin, refused without effect. And, in-process under
uvicorn with the injected clock: session expiry sends the person to sign-in and back.
Every step is checked by the harness (console errors, CSP, axe, off-host requests).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
import uvicorn

from api.app import create_app
from tests.support.console import check, console_browser, save_screenshot
from tests.support.server import Admin, ServerProcess, free_port, running_server
from tests.support.settings import make_settings
from vault.bootstrap import initialise
from vault.clock import FixedClock

QR_NAME = "QR code of your new authenticator secret"


class Codes:
    """TOTP codes in strictly increasing 30 s steps (each code works once); the server
    accepts the previous, current and next step, so up to three sign-ins per step."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}

    def next(self, secret: str) -> str:
        totp = pyotp.TOTP(secret)
        now_step = int(totp.timecode(datetime.now(UTC)))
        step = max(now_step - 1, self.last.get(secret, -(10**9)) + 1)
        if step > now_step + 1:  # all three used: wait for the next step
            time.sleep(30 - time.time() % 30 + 0.5)
            return self.next(secret)
        self.last[secret] = step
        return totp.at(step * 30)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Admin]]:
    with running_server(tmp_path_factory.mktemp("console-security")) as found:
        yield found


@pytest.fixture(scope="module")
def codes() -> Codes:
    return Codes()


def _sign_in(page: Any, email: str, password: str, code: str) -> None:
    """Both steps, from wherever the page is now (the sign-in page), checked on the way."""
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    field = page.get_by_label("Authenticator code")
    field.wait_for()
    check(page)
    field.fill(code)
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url(lambda url: "/ui/login" not in url)
    check(page)


def test_sign_in_with_totp_then_sign_out(served: tuple[ServerProcess, Admin], codes: Codes) -> None:
    server, admin = served
    with console_browser(server.url) as console:
        page = console.new_page()
        page.goto(f"{server.url}/ui/tenants")
        assert "/ui/login?next=/ui/tenants" in page.url
        check(page)
        page.get_by_label("Email").fill(admin.email)
        save_screenshot(page, "sign-in")
        page.get_by_label("Password").fill(admin.password)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_label("Authenticator code").wait_for()
        check(page)
        save_screenshot(page, "authenticator-code")
        page.get_by_label("Authenticator code").fill(codes.next(admin.totp_secret))
        page.get_by_role("button", name="Verify").click()
        page.get_by_role("heading", name="Tenants").wait_for()
        assert page.url == f"{server.url}/ui/tenants"
        check(page)

        page.get_by_role("link", name="Account").click()
        page.get_by_role("heading", name="Your sessions").wait_for()
        check(page)
        assert page.get_by_text(admin.email).first.is_visible()
        assert page.get_by_text("authenticator app enrolled").is_visible()
        assert page.get_by_role("link", name="Download my data").is_visible()
        save_screenshot(page, "account")

        page.get_by_role("button", name="Sign out").click()
        page.get_by_role("heading", name="Sign in").wait_for()
        check(page)
        page.goto(f"{server.url}/ui/account")
        assert "/ui/login?next=/ui/account" in page.url
        check(page)


def _api_admin_session(server: ServerProcess, admin: Admin, code: str) -> dict[str, str]:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        step = http.post("/v1/auth/login", json={"email": admin.email, "password": admin.password})
        done = http.post("/v1/auth/mfa", json={"mfa_token": step.json()["mfa_token"], "code": code})
        assert done.status_code == 200, done.text
        return {"Authorization": f"Bearer {done.json()['session_token']}"}


def test_new_user_changes_password_and_enrols(
    served: tuple[ServerProcess, Admin], codes: Codes
) -> None:
    server, admin = served
    headers = _api_admin_session(server, admin, codes.next(admin.totp_secret))
    made = httpx.post(
        f"{server.url}/v1/users", json={"email": "newcomer@e2e.test"}, headers=headers, timeout=30
    )
    assert made.status_code == 201, made.text
    initial = made.json()["initial_password"]
    with console_browser(server.url) as console:
        page = console.new_page()
        page.goto(f"{server.url}/ui/login")
        check(page)
        page.get_by_label("Email").fill("newcomer@e2e.test")
        page.get_by_label("Password").fill(initial)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("heading", name="Choose a new password").wait_for()
        assert page.url.endswith("/ui/password")
        check(page)
        page.get_by_label("Current password").fill(initial)
        page.get_by_label("New password").fill("newcomer's own long passphrase 7")
        page.get_by_role("button", name="Change password").click()
        page.get_by_role("heading", name="Set up your authenticator").wait_for()
        assert page.url.endswith("/ui/enrol")
        check(page)
        page.get_by_role("button", name="Show the QR code").click()
        qr = page.get_by_role("img", name=QR_NAME)
        qr.wait_for()
        check(page)
        assert qr.evaluate("e => e.tagName.toLowerCase()") == "svg"
        assert qr.bounding_box()["width"] >= 100  # type: ignore[index]
        save_screenshot(page, "enrol-qr")
        caption = page.get_by_role("figure").inner_text()
        found = re.search(r"\b([A-Z2-7]{16,})\b", caption)
        assert found, caption
        page.get_by_label("Authenticator code").fill(codes.next(found.group(1)))
        page.get_by_role("button", name="Verify").click()
        page.get_by_role("heading", name="Recovery codes").wait_for()
        check(page)
        items = page.get_by_role("main").get_by_role("listitem").all_inner_texts()
        recovery = [
            t.strip() for t in items if re.fullmatch(r"[a-z0-9]{6}(-[a-z0-9]{6}){3}", t.strip())
        ]
        assert len(recovery) >= 8
        page.get_by_role("link", name="Continue").click()
        page.get_by_role("heading", name="Tenants").wait_for()
        assert page.url.endswith("/ui/tenants")
        check(page)
        assert not any(code in page.content() for code in recovery)


_ATTACKER_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Win a prize</title></head><body><main><h1>Win a prize</h1>
<form method="post" action="{target}">
<input type="hidden" name="csrf_token" value="{token}">
<button type="submit">Claim the prize</button></form></main></body></html>"""


@pytest.fixture
def attacker_site() -> Iterator[dict[str, Any]]:
    """A page of ANOTHER origin (its own port) with a form that posts to the console."""
    site: dict[str, Any] = {"target": "", "token": "x"}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = _ATTACKER_PAGE.format(**site).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    site["url"] = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield site
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_forms_from_another_origin_or_without_token_are_refused(
    served: tuple[ServerProcess, Admin], codes: Codes, attacker_site: dict[str, Any]
) -> None:
    server, admin = served
    with console_browser(server.url) as console:
        page = console.new_page()
        page.goto(f"{server.url}/ui/login?next=/ui/account")
        check(page)
        _sign_in(page, admin.email, admin.password, codes.next(admin.totp_secret))
        assert page.url.endswith("/ui/account")
        # The console's own token, copied into the other site's form: refused anyway.
        token = page.locator("input[name=csrf_token]").first.get_attribute("value")
        attacker_site.update(target=f"{server.url}/ui/logout", token=token)

        # Same origin, no token / a wrong token: the server's own check refuses.
        for form in ({}, {"csrf_token": "0" * 64}):
            refused = page.request.post(f"{server.url}/ui/logout", form=form, max_redirects=0)
            assert refused.status == 403, form
        forged = page.request.post(
            f"{server.url}/ui/logout",
            form={"csrf_token": token},
            headers={"Origin": attacker_site["url"]},
            max_redirects=0,
        )
        assert forged.status == 403  # the right token from the wrong origin

        # A real cross-site form in the same browser.
        other = console.new_page()
        other.route(f"{attacker_site['url']}/**", lambda route: route.continue_())
        other.goto(f"{attacker_site['url']}/")
        check(other)
        other.get_by_role("button", name="Claim the prize").click()
        other.wait_for_url(f"{server.url}/ui/logout")
        check(other)
        assert other.get_by_role("alert").is_visible()
        assert "another site" in other.get_by_role("alert").inner_text()
        other.close()
        # The refusal page's own 403 is not counted as a console error by the harness
        # (tests/support/console.py); anything else the browser logged still fails.

        # Nothing changed: the session still works.
        page.get_by_role("link", name="Tenants").click()
        page.get_by_role("heading", name="Tenants").wait_for()
        check(page)
        assert page.get_by_role("button", name="Sign out").is_visible()


@pytest.fixture
def clocked_console(tmp_path: Path) -> Iterator[tuple[str, Admin, FixedClock, float]]:
    """The app in-process under uvicorn (a thread) with an injected clock."""
    clock = FixedClock(datetime.now(UTC).replace(microsecond=0))
    settings = make_settings(tmp_path / "var", require_mfa=True, require_password_change=True)
    boot = initialise(settings, admin_email="clock@e2e.test", clock=clock)
    admin = Admin(boot.admin_email, boot.admin_password, boot.admin_totp_secret)
    port = free_port()
    config = uvicorn.Config(
        create_app(settings, clock=clock), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}", admin, clock, settings.session_idle_minutes * 60
    finally:
        server.should_exit = True
        thread.join(15)


def test_session_expiry_returns_to_sign_in_and_back(
    clocked_console: tuple[str, Admin, FixedClock, float],
) -> None:
    base, admin, clock, idle = clocked_console
    totp = pyotp.TOTP(admin.totp_secret)
    with console_browser(base) as console:
        page = console.new_page()
        page.goto(f"{base}/ui/login")
        check(page)
        _sign_in(page, admin.email, admin.password, totp.at(clock.now()))
        page.get_by_role("link", name="Account").click()
        page.get_by_role("heading", name="Account").wait_for()
        check(page)

        clock.advance(idle + 1)
        page.get_by_role("link", name="Tenants").click()
        page.get_by_role("heading", name="Sign in").wait_for()
        assert page.url == f"{base}/ui/login?next=/ui/tenants"
        check(page)
        _sign_in(page, admin.email, admin.password, totp.at(clock.now()))
        assert page.url == f"{base}/ui/tenants"
        page.get_by_role("heading", name="Tenants").wait_for()
        check(page)
