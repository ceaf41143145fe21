"""The console's browser harness (tests/support/console.py) against tiny local pages
served with the console's strict CSP: it passes a clean accessible page and reports
each kind of problem a console page could have, so a journey test can trust it."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pyotp
import pytest

from tests.support.console import (
    AXE_PATH,
    SCREENSHOTS_ENV,
    ConsoleBrowser,
    check,
    console_browser,
    save_screenshot,
    sign_in,
)

STRICT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
# Only the off-host page loosens img-src: under the strict CSP the browser would refuse
# the request before it left, and the harness's own blocking is what is tested there.
LOOSE_IMG_CSP = STRICT_CSP.replace("img-src 'self'", "img-src 'self' http://offhost.invalid")

PIXEL_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d4944415478da63f8cfc0f01f0005000201a3a1d8b50000000049454e44ae426082"
)


def _html(title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f'<link rel="icon" href="/pixel.png"></head><body><main><h1>{title}</h1>{body}'
        "</main></body></html>"
    )


PAGES: dict[str, tuple[str, bytes, str]] = {
    "/clean": (
        "text/html",
        _html(
            "Clean",
            '<form method="post" action="/clean"><label for="e">Email</label>'
            '<input id="e" name="email" type="email"><img src="/pixel.png" alt="A dot">'
            '<button type="submit">Sign in</button></form><a href="/second">Next</a>',
        ).encode(),
        STRICT_CSP,
    ),
    "/second": ("text/html", _html("Second", "<p>Second page.</p>").encode(), STRICT_CSP),
    "/no-alt": ("text/html", _html("No alt", '<img src="/pixel.png">').encode(), STRICT_CSP),
    "/inline": (
        "text/html",
        _html("Inline", "<script>document.title = 'ran';</script>").encode(),
        STRICT_CSP,
    ),
    "/console-error": (
        "text/html",
        _html("Console error", '<script src="/boom.js"></script>').encode(),
        STRICT_CSP,
    ),
    "/boom.js": ("text/javascript", b"console.error('boom from a self-hosted script');", ""),
    "/off-host": (
        "text/html",
        _html("Off host", '<img src="http://offhost.invalid/track.png" alt="">').encode(),
        LOOSE_IMG_CSP,
    ),
    "/pixel.png": ("image/png", PIXEL_PNG, ""),
    "/ui/login": (
        "text/html",
        _html(
            "Sign in",
            '<form method="post" action="/ui/login"><label for="e">Email</label>'
            '<input id="e" name="email" type="email"><label for="p">Password</label>'
            '<input id="p" name="password" type="password">'
            '<button type="submit">Sign in</button></form>',
        ).encode(),
        STRICT_CSP,
    ),
    "/ui/": ("text/html", _html("Tenants", "<p>Signed in.</p>").encode(), STRICT_CSP),
}
# The second sign-in step, rendered at the same URL as the first (as a POST answer).
CODE_FORM = _html(
    "Verify sign-in",
    '<form method="post" action="/ui/login"><label for="c">Authenticator code</label>'
    '<input id="c" name="code" inputmode="numeric" autocomplete="one-time-code">'
    '<button type="submit">Verify</button></form>',
).encode()
TOTP_SECRET = pyotp.random_base32()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        found = PAGES.get(self.path)
        if found is None:
            self.send_error(404)
            return
        self._send(*found)

    def do_POST(self) -> None:
        """A stand-in for the console's two sign-in steps (no console code is used)."""
        form = parse_qs(self.rfile.read(int(self.headers["content-length"])).decode())
        if form.get("email") == ["ada@example.test"] and form.get("password") == ["pw"]:
            self._send("text/html", CODE_FORM, STRICT_CSP)
        elif pyotp.TOTP(TOTP_SECRET).verify(form.get("code", [""])[0]):
            self.send_response(303)
            self.send_header("location", "/ui/")
            self.send_header("content-length", "0")
            self.end_headers()
        else:
            self.send_error(403)

    def _send(self, content_type: str, body: bytes, csp: str) -> None:
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        if csp:
            self.send_header("content-security-policy", csp)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _visit_expecting_failure(base_url: str, path: str) -> tuple[ConsoleBrowser, str]:
    """Visit and check one page; the harness must fail on exit. The browser and message."""
    with pytest.raises(AssertionError) as failure, console_browser(base_url) as console:
        page = console.new_page()
        page.goto(f"{base_url}{path}")
        check(page)
    return console, str(failure.value)


def test_a_clean_accessible_page_passes(base_url: str) -> None:
    with console_browser(base_url) as console:
        page = console.new_page()
        page.goto(f"{base_url}/clean")
        check(page)
        page.get_by_role("link", name="Next").click()
        page.get_by_role("heading", name="Second").wait_for()
        check(page)
    assert console.findings.loaded == [f"{base_url}/clean", f"{base_url}/second"]
    assert console.findings.problems() == []


def test_sign_in_by_accessible_names_checks_each_step(base_url: str) -> None:
    with console_browser(base_url) as console:
        page = console.new_page()
        sign_in(page, base_url, "ada@example.test", "pw", TOTP_SECRET)
        assert page.get_by_role("heading", name="Tenants").is_visible()
    assert console.findings.loaded == [f"{base_url}/ui/login"] * 2 + [f"{base_url}/ui/"]
    assert {title for _url, title in console.findings.axe_done} == {
        "Sign in",
        "Verify sign-in",
        "Tenants",
    }


def test_a_page_not_checked_fails_the_journey(base_url: str) -> None:
    with (
        pytest.raises(AssertionError, match="never checked") as failure,
        console_browser(base_url) as console,
    ):
        page = console.new_page()
        page.goto(f"{base_url}/clean")
        check(page)
        page.get_by_role("link", name="Next").click()
        page.get_by_role("heading", name="Second").wait_for()
    assert f"{base_url}/second" in str(failure.value)
    assert f"{base_url}/clean\n" not in str(failure.value)


def test_an_image_without_alt_text_is_an_axe_violation(base_url: str) -> None:
    console, message = _visit_expecting_failure(base_url, "/no-alt")
    assert [v.rule for v in console.findings.axe] == ["image-alt"]
    assert console.findings.axe[0].impact == "critical"
    assert console.findings.axe[0].targets == ("img",)
    assert "image-alt" in message and "alternative text" in message and "'img'" in message


def test_an_inline_script_is_a_csp_violation(base_url: str) -> None:
    console, message = _visit_expecting_failure(base_url, "/inline")
    assert len(console.findings.csp_violations) == 1
    assert "script-src-elem blocked inline" in console.findings.csp_violations[0]
    assert console.findings.axe == []
    assert "CSP violations" in message


def test_a_console_error_from_a_script_file_is_reported(base_url: str) -> None:
    console, message = _visit_expecting_failure(base_url, "/console-error")
    assert console.findings.console_errors == [
        f"{base_url}/console-error: boom from a self-hosted script"
    ]
    assert console.findings.csp_violations == []
    assert "browser console errors" in message


def test_a_request_to_another_host_is_blocked_and_reported(base_url: str) -> None:
    console, message = _visit_expecting_failure(base_url, "/off-host")
    assert console.findings.off_host.blocked == ["http://offhost.invalid/track.png"]
    assert "requests to another host" in message


def test_screenshots_are_written_only_when_asked(
    base_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SCREENSHOTS_ENV, raising=False)
    with console_browser(base_url) as console:
        page = console.new_page()
        page.goto(f"{base_url}/clean")
        check(page)
        assert save_screenshot(page, "clean") is None
        monkeypatch.setenv(SCREENSHOTS_ENV, str(tmp_path))
        shot = save_screenshot(page, "clean")
    assert shot == tmp_path / "clean.png"
    assert shot.read_bytes().startswith(b"\x89PNG")


def test_the_vendored_axe_matches_its_recorded_sha256() -> None:
    recorded = (AXE_PATH.parent / "SOURCE.txt").read_text()
    assert hashlib.sha256(AXE_PATH.read_bytes()).hexdigest() in recorded
    assert (AXE_PATH.parent / "LICENSE").read_text().startswith("Mozilla Public License")
