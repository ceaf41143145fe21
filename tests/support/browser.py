"""Chromium for the browser tests (Playwright driving the system's /usr/bin/chromium).

No browser is downloaded: Playwright launches the Debian package's binary
(``apt-get install -y chromium``). Without it, or without the ``playwright`` package,
the browser tests skip locally and fail under ``LINEVAULT_TEST_REQUIRE_ALL=1`` (CI),
where a skip would hide a gap.

:func:`offline_page` opens a page whose every request to another host is refused and
recorded, so a test can assert that a page works and asks nothing of the network.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support.db import require_all

__all__ = [
    "CHROMIUM_ARGS",
    "OffHostLog",
    "block_off_host",
    "chromium_path_or_skip",
    "launched_chromium",
    "offline_page",
]

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update"]


def _skip_or_fail(reason: str) -> None:
    if require_all():
        pytest.fail(f"{reason} (LINEVAULT_TEST_REQUIRE_ALL=1)")
    pytest.skip(reason)


def chromium_path_or_skip() -> str:
    """The Chromium binary: ``LINEVAULT_TEST_CHROMIUM`` or the Debian package's."""
    override = os.environ.get("LINEVAULT_TEST_CHROMIUM")
    for candidate in (override, *CHROMIUM_CANDIDATES, shutil.which("chromium")):
        if candidate and Path(candidate).is_file():
            return candidate
    _skip_or_fail("Chromium is not installed (apt-get install -y chromium)")
    raise AssertionError("unreachable")


@dataclass
class OffHostLog:
    """Requests the page tried to send to a host other than the server's."""

    allowed_host: str
    blocked: list[str] = field(default_factory=list)
    local: list[str] = field(default_factory=list)


def block_off_host(context: Any, log: OffHostLog) -> None:
    """Route every request of ``context``: the server's host (and data:/blob:) goes
    through, any other host is aborted and recorded, so no test can reach the network."""

    def route(request_route: Any) -> None:
        url = request_route.request.url
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob") or parts.netloc == log.allowed_host:
            log.local.append(url)
            request_route.continue_()
        else:
            log.blocked.append(url)
            request_route.abort("blockedbyclient")

    context.route("**/*", route)


@contextmanager
def launched_chromium() -> Iterator[Any]:
    """The system Chromium under Playwright (skip, or fail under REQUIRE_ALL, without it)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _skip_or_fail("the playwright package is not installed (pip install -e '.[dev]')")
        raise
    executable = chromium_path_or_skip()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def offline_page(base_url: str) -> Iterator[tuple[Any, OffHostLog]]:
    """A Chromium page on which every off-host request is aborted and recorded."""
    log = OffHostLog(allowed_host=urlsplit(base_url).netloc)
    with launched_chromium() as browser:
        context = browser.new_context(service_workers="block")
        block_off_host(context, log)
        yield context.new_page(), log
