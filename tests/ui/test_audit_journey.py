"""A reviewer's journey in a real browser against a real ``linevault serve``: sign in with
the authenticator code, filter the audit events, open one, verify the chain, look at the
fetch chart, download the export, and ``linevault audit verify-export`` accepts the file.

Controls are found by role and accessible name only (issue 15)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.console import check, console_browser, save_screenshot, sign_in
from tests.support.server import LINEVAULT, Admin, ServerProcess, _env, running_server


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Admin]]:
    with running_server(tmp_path_factory.mktemp("audit-journey")) as found:
        yield found


def _linevault(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LINEVAULT, *args],
        env=_env(server.data_dir, server.database_url, server.env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_reviewer_filters_verifies_and_downloads_the_export(
    served: tuple[ServerProcess, Admin], tmp_path: Path
) -> None:
    server, admin = served
    with console_browser(server.url) as browser:
        page = browser.new_page()
        sign_in(page, server.url, admin.email, admin.password, admin.totp_secret)
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Audit").click()
        check(page)
        events = page.get_by_role("table", name=re.compile("^Audit events"))
        assert events.get_by_role("row").count() > 1

        page.get_by_label("Action").select_option("auth.*")
        page.get_by_label("Outcome").select_option("success")
        page.get_by_role("button", name="Apply filters").click()
        check(page)
        filtered = page.get_by_role("table", name="Audit events matching the filters")
        actions = filtered.locator("tbody tr td:nth-child(3)").all_inner_texts()
        assert actions and all(a.startswith("auth.") for a in actions)
        save_screenshot(page, "audit-events")

        filtered.get_by_role("link").first.click()
        check(page)
        detail = page.get_by_role("table", name=re.compile("^Every field of event"))
        assert detail.get_by_role("rowheader", name="prev_hash").count() == 1

        page.get_by_role("button", name="Verify chain").click()
        check(page)
        assert page.get_by_role("status").filter(has_text="Chain intact").count() == 1
        result = page.get_by_role("table", name="Result of the check")
        checked = result.get_by_role("row", name=re.compile("Events checked")).inner_text()
        assert int(checked.split()[-1]) > 0
        save_screenshot(page, "audit-verify")

        page.get_by_role("link", name="Fetches per hour").click()
        check(page)
        assert page.get_by_role("img", name=re.compile("^Credential fetches per hour")).count() == 1

        with page.expect_download() as download_info:
            page.get_by_role("link", name="Download export").click()
        bundle = tmp_path / "audit-export.jsonl"
        download_info.value.save_as(bundle)

    key = _linevault(server, "audit", "public-key", "--raw")
    assert key.returncode == 0, key.stderr
    checked_export = _linevault(
        server, "audit", "verify-export", str(bundle), "--public-key", key.stdout.strip()
    )
    assert checked_export.returncode == 0, checked_export.stdout + checked_export.stderr
    assert "audit chain intact" in checked_export.stdout
