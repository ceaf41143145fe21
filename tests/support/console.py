"""The console's browser harness: every journey test drives the web console through it.

A journey opens pages from :func:`console_browser`; each page records, as it happens,
the browser's console errors, uncaught page errors, CSP violations (reported out of the
page by a binding, so a violation survives the navigation that follows it) and requests
to any other host (blocked). After each step the journey calls :func:`check`, which runs
axe-core once per URL the page loaded. On a clean exit the context manager asserts that
every loaded URL was checked and that nothing was recorded, so a journey cannot forget a
page or swallow a finding.

Controls are found by role and accessible name only (the console's contract), never by
CSS class, so the tests prove the names people and assistive technology rely on.
axe-core is vendored under tests/ui/vendor/axe-core/ and injected with ``page.evaluate``
(not subject to the page's CSP, unlike a script tag); linevault never serves it.
"""

from __future__ import annotations

import json
import os
import re
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urlsplit

import pyotp

from tests.support.browser import OffHostLog, block_off_host, launched_chromium

__all__ = [
    "AXE_PATH",
    "SCREENSHOTS_ENV",
    "VIEWPORT",
    "AxeViolation",
    "ConsoleBrowser",
    "Findings",
    "check",
    "console_browser",
    "run_axe",
    "save_screenshot",
    "sign_in",
]

AXE_PATH = Path(__file__).resolve().parents[1] / "ui" / "vendor" / "axe-core" / "axe.min.js"
SCREENSHOTS_ENV = "LINEVAULT_UI_SCREENSHOTS"
VIEWPORT = {"width": 1200, "height": 800}
BLOCKING_IMPACTS = frozenset({"serious", "critical"})
_SCREENSHOT_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")

# Runs before any script of every document. The window array lets a test or a person
# inspect the current document; the binding carries each violation out at once, because
# the array dies with its document when a step navigates.
_CSP_LISTENER = """
(() => {
  const seen = (window.__linevaultCsp = window.__linevaultCsp || []);
  document.addEventListener('securitypolicyviolation', (e) => {
    const v = {directive: e.effectiveDirective, blocked: e.blockedURI, source: e.sourceFile,
               line: e.lineNumber, sample: e.sample, url: document.URL};
    seen.push(v);
    if (typeof window.__linevaultCspReport === 'function') window.__linevaultCspReport(v);
  });
})();
"""

_AXE_RUN = """
async () => {
  const result = await axe.run(document, {resultTypes: ['violations']});
  return result.violations.map((v) => ({
    id: v.id, impact: v.impact || '', help: v.help, helpUrl: v.helpUrl,
    targets: v.nodes.map((n) => n.target.join(' ')),
  }));
}
"""


@dataclass(frozen=True)
class AxeViolation:
    """One axe-core rule a page breaks, with the elements that break it."""

    url: str
    rule: str
    impact: str
    help: str
    help_url: str
    targets: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.url}: [{self.impact}] {self.rule}: {self.help} at {list(self.targets)}"


@dataclass
class Findings:
    """Everything the pages of one :class:`ConsoleBrowser` recorded."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    csp_violations: list[str] = field(default_factory=list)
    off_host: OffHostLog = field(default_factory=lambda: OffHostLog(allowed_host=""))
    axe: list[AxeViolation] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    checked: set[str] = field(default_factory=set)
    # (URL, title): a form re-rendered at the same URL (a sign-in step) is its own page.
    axe_done: set[tuple[str, str]] = field(default_factory=set)

    def problems(self) -> list[str]:
        """Readable lines, one per problem; empty when the journey was clean."""
        unchecked = [url for url in dict.fromkeys(self.loaded) if url not in self.checked]
        sections = [
            ("loaded but never checked (call check(page) after the step)", unchecked),
            ("browser console errors", self.console_errors),
            ("uncaught page errors", self.page_errors),
            ("CSP violations", self.csp_violations),
            ("requests to another host (blocked)", self.off_host.blocked),
            ("axe-core serious/critical violations", [str(v) for v in self.axe]),
        ]
        return [f"{title}:\n  " + "\n  ".join(items) for title, items in sections if items]


# Which ConsoleBrowser a page belongs to, so check() and sign_in() need only the page.
_OWNERS: weakref.WeakKeyDictionary[Any, ConsoleBrowser] = weakref.WeakKeyDictionary()


class ConsoleBrowser:
    """Opens recorded pages in one browser context and holds what they recorded."""

    def __init__(self, context: Any, base_url: str) -> None:
        self._context = context
        self.base_url = base_url.rstrip("/")
        self.findings = Findings(off_host=OffHostLog(allowed_host=urlsplit(base_url).netloc))

    def new_page(self) -> Any:
        """A page whose console, errors, CSP violations and loads are recorded."""
        page = self._context.new_page()
        found = self.findings
        # Handlers only append to lists and read properties Playwright already holds:
        # a call back into the page (evaluate) from a sync handler can deadlock.
        page.on("console", lambda msg: _console_error(found, page, msg))
        page.on("pageerror", lambda error: found.page_errors.append(f"{page.url}: {error}"))
        page.on("framenavigated", lambda frame: _loaded(found, page, frame))
        _OWNERS[page] = self
        return page

    def assert_clean(self) -> None:
        """Fail with every recorded problem unless the journey was clean."""
        problems = self.findings.problems()
        assert not problems, "the console journey was not clean:\n" + "\n".join(problems)


def _console_error(found: Findings, page: Any, msg: Any) -> None:
    if msg.type == "error" and not _document_refusal(page, msg):
        found.console_errors.append(f"{page.url}: {msg.text}")


def _document_refusal(page: Any, msg: Any) -> bool:
    """Chromium logs a 4xx answer to the page's own document as a console error: that is
    the console answering a refused form with a page people read (a wrong code, a 403),
    not a broken page. A failed script, style sheet or image still counts."""
    url = (msg.location or {}).get("url", "")
    return (
        msg.text.startswith("Failed to load resource: the server responded with a status of 4")
        and bool(url)
        and _page_key(url) == _page_key(page.url)
    )


def _loaded(found: Findings, page: Any, frame: Any) -> None:
    url = _page_key(frame.url)
    if frame == page.main_frame and url.startswith(("http://", "https://")):
        found.loaded.append(url)


def _page_key(url: str) -> str:
    return urldefrag(url).url


def _csp_report(found: Findings, violation: dict[str, Any]) -> None:
    found.csp_violations.append(
        f"{violation.get('url')}: {violation.get('directive')} blocked "
        f"{violation.get('blocked') or 'inline'} ({violation.get('source')}:"
        f"{violation.get('line')}) {violation.get('sample') or ''}".rstrip()
    )


@contextmanager
def console_browser(base_url: str) -> Iterator[ConsoleBrowser]:
    """Chromium at a 1200x800 viewport with every off-host request blocked; on a clean
    exit, asserts the journey checked every page and recorded nothing."""
    with launched_chromium() as browser:
        context = browser.new_context(service_workers="block", viewport=VIEWPORT)
        console = ConsoleBrowser(context, base_url)
        block_off_host(context, console.findings.off_host)
        context.expose_binding(
            "__linevaultCspReport", lambda _source, v: _csp_report(console.findings, v)
        )
        context.add_init_script(script=_CSP_LISTENER)
        yield console
        console.assert_clean()


@cache
def _axe_source() -> str:
    return AXE_PATH.read_text(encoding="utf-8")


def run_axe(page: Any) -> list[AxeViolation]:
    """axe-core's serious and critical violations on the page as it is now."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(_axe_source())
    raw: list[dict[str, Any]] = page.evaluate(_AXE_RUN)
    return [
        AxeViolation(
            url=page.url,
            rule=str(item["id"]),
            impact=str(item["impact"]),
            help=str(item["help"]),
            help_url=str(item["helpUrl"]),
            targets=tuple(str(t) for t in item["targets"]),
        )
        for item in raw
        if item["impact"] in BLOCKING_IMPACTS
    ]


def check(page: Any) -> None:
    """Call after each step: waits for the page to load, then runs axe-core on it unless
    this journey already checked the same URL with the same title."""
    owner = _OWNERS.get(page)
    assert owner is not None, "check() needs a page from ConsoleBrowser.new_page()"
    page.wait_for_load_state("load")
    url = _page_key(page.url)
    key = (url, page.title())
    if key not in owner.findings.axe_done:
        owner.findings.axe.extend(run_axe(page))
        owner.findings.axe_done.add(key)
    owner.findings.checked.add(url)


def sign_in(page: Any, base_url: str, email: str, password: str, totp_secret: str) -> None:
    """Sign in through the console's two steps, checking each page on the way."""
    page.goto(f"{base_url.rstrip('/')}/ui/login")
    check(page)
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    code = page.get_by_label("Authenticator code")
    code.wait_for()
    check(page)
    code.fill(pyotp.TOTP(totp_secret).now())
    page.get_by_role("button", name="Verify").click()
    code.wait_for(state="detached")
    check(page)


def save_screenshot(page: Any, name: str) -> Path | None:
    """A PNG of the viewport for docs/console.md, written to ``$LINEVAULT_UI_SCREENSHOTS``
    only when it is set: an ordinary test run writes nothing into the repository."""
    folder = os.environ.get(SCREENSHOTS_ENV)
    if not folder:
        return None
    assert _SCREENSHOT_NAME.fullmatch(name), f"screenshot name {json.dumps(name)}: use a-z0-9-"
    path = Path(folder) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), scale="css", animations="disabled", caret="hide")
    return path
