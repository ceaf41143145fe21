"""Browser journeys through a tenant's lines against a real ``linevault serve``.

One server for the module (SQLite). The platform admin (an owner everywhere) signs in
with TOTP and works in the browser; tenants, runners and grants are made through the
API with an admin session made in the server's database (no code spent on it), and the
people of the other journeys are made there too, each with an authenticator of their
own: a TOTP code works once per user, so every journey signs in with the current code
and proves its action with the next step's one (the server accepts one step either
side), and no journey waits for the clock.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest

from linevault_client import Revoked, RunnerClient
from tests.support.console import check, console_browser, run_axe, save_screenshot, sign_in
from tests.support.identity import TEST_PASSWORD, add_membership, bearer, make_user, new_session
from tests.support.runners import admin_principal
from tests.support.server import Admin, ServerProcess, running_server
from tests.support.settings import make_settings
from vault.runtime import Runtime, open_runtime

pytestmark = pytest.mark.slow

BOT_TOKEN = "123456789:AAE_consoleJourneyBotToken-abcdefghij"


@dataclass
class Served:
    server: ServerProcess
    admin: Admin
    runtime: Runtime

    @property
    def url(self) -> str:
        return self.server.url

    def api(self) -> httpx.Client:
        """The API as the platform admin, with an MFA-fresh session of its own."""
        token = new_session(self.runtime, admin_principal(self.runtime).user_id, mfa_fresh=True)
        return httpx.Client(base_url=self.url, headers=bearer(token), timeout=30)

    def tenant(self, name: str) -> str:
        with self.api() as api:
            made = api.post("/v1/tenants", json={"name": name})
        assert made.status_code == 201, made.text
        return str(made.json()["id"])

    def line(self, tenant_id: str, name: str) -> str:
        with self.api() as api:
            made = api.post(
                f"/v1/tenants/{tenant_id}/lines",
                json={"type": "telegram", "name": name, "credential": {"bot_token": BOT_TOKEN}},
            )
        assert made.status_code == 201, made.text
        return str(made.json()["id"])

    def status(self, tenant_id: str, line_id: str) -> str:
        with self.api() as api:
            return str(api.get(f"/v1/tenants/{tenant_id}/lines/{line_id}").json()["status"])

    def person(self, tenant_id: str, email: str, role: str) -> tuple[str, str]:
        """A user with an authenticator and ``role`` in the tenant: (email, TOTP secret)."""
        user = make_user(self.runtime, email, totp=True)
        add_membership(self.runtime, tenant_id, user.id, role)
        assert user.totp_secret
        return email, user.totp_secret


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp: Path = tmp_path_factory.mktemp("console-lines")
    with running_server(tmp) as (server, admin):
        runtime = open_runtime(make_settings(data_dir=server.data_dir, log_level="warning"))
        try:
            yield Served(server, admin, runtime)
        finally:
            runtime.close()


def next_code(secret: str) -> str:
    """The next time step's code: unused yet (sign-in took the current one), accepted now."""
    return pyotp.TOTP(secret).at(time.time() + 30)


def wrong_code(secret: str) -> str:
    totp = pyotp.TOTP(secret)
    near = {totp.at(time.time() + 30 * k) for k in range(-2, 4)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in near)


def line_row(page: Any, name: str) -> Any:
    return page.get_by_role("row").filter(has=page.get_by_role("link", name=name, exact=True))


def register_runner(served: Served, name: str) -> tuple[str, str]:
    """A runner registered through the API (the people journey registers one in the
    browser): (client_id, client secret)."""
    with served.api() as api:
        runner = api.post("/v1/runners", json={"name": name})
        assert runner.status_code == 201, runner.text
    return runner.json()["client_id"], runner.json()["client_secret"]


def grant_in_the_browser(page: Any, url: str, tenant_id: str, runner: str, line: str) -> None:
    """The owner grants ``runner`` the line named ``line`` on the tenant's Grants page
    (the session is fresh from sign-in, so the code may stay empty)."""
    page.goto(f"{url}/ui/tenants/{tenant_id}/grants")
    check(page)
    page.get_by_label("Runner", exact=True).select_option(label=runner)
    page.get_by_label("Chosen lines").check()
    page.get_by_label(line).check()
    page.get_by_role("button", name="Grant access").click()
    page.get_by_role("row", name=re.compile(runner)).wait_for()
    check(page)


def test_owner_adds_a_line_grants_it_and_revokes_it(served: Served) -> None:
    admin, url = served.admin, served.url
    tenant_id = served.tenant("Acme")
    with console_browser(url) as browser:
        page = browser.new_page()
        sign_in(page, url, admin.email, admin.password, admin.totp_secret)
        page.goto(f"{url}/ui/tenants/{tenant_id}")
        check(page)
        page.get_by_role("link", name="Add line").click()
        page.get_by_label("Bot token").wait_for()
        check(page)
        # The Type select shows each type's form (a GET, no script needed).
        for kind, field in (
            ("instagram", "Access token"),
            ("messenger", "Page access token"),
            ("widget", "Signing secret"),
            ("telegram", "Bot token"),
        ):
            page.get_by_label("Type").select_option(kind)
            page.get_by_role("button", name="Show the fields of this type").click()
            page.get_by_label(field, exact=True).wait_for()
            check(page)
        page.get_by_label("Name").fill("Support bot")
        page.get_by_label("Bot token").fill(BOT_TOKEN)
        save_screenshot(page, "add-line")
        page.get_by_role("button", name="Add line").click()
        page.get_by_role("heading", name="Support bot").wait_for()
        check(page)
        found = re.search(r"/lines/(ln_\w+)$", page.url)
        assert found, page.url
        line_id = found.group(1)
        assert BOT_TOKEN not in page.content()

        client_id, secret = register_runner(served, "flows")
        grant_in_the_browser(page, url, tenant_id, "flows", "Support bot")
        with RunnerClient(url, client_id, secret, workflow_id="wf-console") as runner:
            assert runner.fetch(tenant_id, line_id).credential == {"bot_token": BOT_TOKEN}

            page.goto(f"{url}/ui/tenants/{tenant_id}")
            check(page)
            save_screenshot(page, "tenant-lines")
            line_row(page, "Support bot").get_by_role("button", name="Revoke").click()
            dialog = page.get_by_role("dialog")
            dialog.wait_for()
            assert "BotFather" in dialog.inner_text() and "410" in dialog.inner_text()
            assert not run_axe(page)  # the page with its dialog open
            save_screenshot(page, "revoke-dialog")
            dialog.get_by_label("Authenticator code").fill(next_code(admin.totp_secret))
            dialog.get_by_role("button", name="Revoke line").click()
            page.get_by_text("revoked", exact=True).wait_for()
            check(page)
            assert "credential.revoke" in page.content() and "wf-console" in page.content()
            save_screenshot(page, "line-detail")

            runner.invalidate()
            with pytest.raises(Revoked):
                runner.fetch(tenant_id, line_id)
        # The reviewer's picture of it: the fetch, then the refused one after the revoke.
        page.goto(f"{url}/ui/tenants/{tenant_id}/audit/activity")
        page.get_by_role("img", name=re.compile("^Credential fetches per hour")).wait_for()
        check(page)
        save_screenshot(page, "audit-chart")
    assert served.status(tenant_id, line_id) == "revoked"


def test_a_wrong_code_keeps_the_line_active(served: Served) -> None:
    tenant_id = served.tenant("Wrong code")
    line_id = served.line(tenant_id, "Sales bot")
    email, secret = served.person(tenant_id, "owner-b@console.test", "owner")
    with console_browser(served.url) as browser:
        page = browser.new_page()
        sign_in(page, served.url, email, TEST_PASSWORD, secret)
        page.goto(f"{served.url}/ui/tenants/{tenant_id}")
        check(page)
        line_row(page, "Sales bot").get_by_role("button", name="Revoke").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_label("Authenticator code").fill(wrong_code(secret))
        dialog.get_by_role("button", name="Revoke line").click()
        alert = page.get_by_role("alert")
        alert.wait_for()
        check(page)
        assert "not accepted" in alert.inner_text()
        assert "still active" in alert.inner_text()
    assert served.status(tenant_id, line_id) == "active"


def test_revoke_with_the_keyboard_alone(served: Served) -> None:
    tenant_id = served.tenant("Keyboard")
    line_id = served.line(tenant_id, "Keys bot")
    email, secret = served.person(tenant_id, "owner-c@console.test", "owner")
    with console_browser(served.url) as browser:
        page = browser.new_page()
        sign_in(page, served.url, email, TEST_PASSWORD, secret)
        page.goto(f"{served.url}/ui/tenants/{tenant_id}")
        check(page)
        revoke = line_row(page, "Keys bot").get_by_role("button", name="Revoke")
        for _ in range(40):
            page.keyboard.press("Tab")
            if revoke.evaluate("button => button === document.activeElement"):
                break
        else:
            raise AssertionError("Tab never reached the Revoke button")
        page.keyboard.press("Enter")
        code = page.get_by_role("dialog").get_by_label("Authenticator code")
        code.wait_for()
        assert code.evaluate("input => input === document.activeElement")
        page.keyboard.type(next_code(secret))
        page.keyboard.press("Enter")
        page.get_by_text("revoked", exact=True).wait_for()
        check(page)
    assert served.status(tenant_id, line_id) == "revoked"


def test_a_member_sees_no_revoke_and_a_forged_post_is_refused(served: Served) -> None:
    tenant_id = served.tenant("Members")
    line_id = served.line(tenant_id, "Member bot")
    email, secret = served.person(tenant_id, "member-d@console.test", "member")
    with console_browser(served.url) as browser:
        page = browser.new_page()
        sign_in(page, served.url, email, TEST_PASSWORD, secret)
        page.goto(f"{served.url}/ui/tenants/{tenant_id}")
        check(page)
        assert line_row(page, "Member bot").count() == 1
        assert page.get_by_role("button", name="Revoke").count() == 0
        assert page.get_by_role("link", name="Add line").count() == 0
        token = page.locator("input[name=csrf_token]").first.input_value()
        forged = page.request.post(
            f"{served.url}/ui/tenants/{tenant_id}/lines/{line_id}/revoke",
            form={"csrf_token": token, "mfa_code": next_code(secret)},
        )
        assert forged.status == 403
    assert served.status(tenant_id, line_id) == "active"
