"""The people pages in a real browser against a real ``linevault serve``: the platform
admin signs in, registers a runner (its secret shown once), grants it a line of a
tenant (the line made through the API), adds a member and changes their role, then
deletes a throwaway tenant by typing its name with an authenticator code (a wrong name
first: refused, nothing deleted). ``check(page)`` after every step.

The API set-up signs in with one of the admin's recovery codes, so the browser's sign-in
keeps the current TOTP step. Signing in with the code makes the browser's session
MFA-fresh for a few minutes (sudo mode), so the journey's sudo forms pass on that; the
in-process tests (tests/api/console/test_people.py) prove each form's code is required
and checked on a session that is not fresh.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pyotp
import pytest

from tests.support.console import check, console_browser, save_screenshot, sign_in
from tests.support.server import Admin, ServerProcess, running_server

BOT_TOKEN = "123456789:AAE_peopleJourneyBotToken-abcdefghijkl"


@dataclass(frozen=True)
class Stage:
    server: ServerProcess
    admin: Admin
    tenant: str
    line: str
    throwaway: str
    newcomer: str


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    with running_server(tmp_path_factory.mktemp("people")) as (server, admin):
        api = httpx.Client(base_url=server.url, timeout=30)
        pending = api.post(
            "/v1/auth/login", json={"email": admin.email, "password": admin.password}
        ).json()["mfa_token"]
        session = api.post(
            "/v1/auth/mfa", json={"mfa_token": pending, "code": admin.recovery_codes[0]}
        )
        assert session.status_code == 200, session.text
        api.headers["Authorization"] = f"Bearer {session.json()['session_token']}"
        tenant = api.post("/v1/tenants", json={"name": "Journey Co"}).json()["id"]
        line = api.post(
            f"/v1/tenants/{tenant}/lines",
            json={
                "type": "telegram",
                "name": "Support bot",
                "credential": {"bot_token": BOT_TOKEN},
            },
        )
        assert line.status_code == 201, line.text
        throwaway = api.post("/v1/tenants", json={"name": "Throwaway"}).json()["id"]
        user = api.post("/v1/users", json={"email": "newcomer@journey.test", "platform_role": None})
        assert user.status_code == 201, user.text
        yield Stage(server, admin, tenant, line.json()["id"], throwaway, user.json()["id"])


def _next_code(admin: Admin) -> str:
    """The next step's code: unused (sign-in used the current step's) and accepted now
    (the vault takes one step either side), so the journey need not wait 30 s."""
    return pyotp.TOTP(admin.totp_secret).at(time.time() + 30)


def _runner_fetches(base_url: str, client_id: str, secret: str, stage: Stage) -> int:
    """What the runner gets when it fetches the line over HTTP with its new secret."""
    token = httpx.post(
        f"{base_url}/v1/runner/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    ).json()["access_token"]
    reply = httpx.get(
        f"{base_url}/v1/tenants/{stage.tenant}/lines/{stage.line}/credential",
        headers={"Authorization": f"Bearer {token}"},
    )
    return reply.status_code


def _register_runner(page: Any, base: str) -> tuple[str, str]:
    """Register a runner; its secret shows once, then never on the list."""
    page.goto(f"{base}/ui/runners")
    check(page)
    page.get_by_label("Name").fill("journey-runner")
    page.get_by_role("button", name="Register runner").click()
    page.get_by_role("button", name="Copy secret").wait_for()
    check(page)
    assert page.get_by_text("shown only on this page").is_visible()
    facts = page.get_by_role("definition")
    client_id = facts.nth(1).inner_text().strip()
    secret = facts.nth(2).get_by_role("code").inner_text().strip()
    assert len(secret) >= 32
    page.get_by_role("link", name="Back to runners").click()
    page.get_by_role("heading", name="Registered runners").wait_for()
    check(page)
    assert page.get_by_role("row", name=re.compile("journey-runner")).is_visible()
    assert secret not in page.content()
    save_screenshot(page, "runners")
    return client_id, secret


def _grant_the_line(page: Any, base: str, stage: Stage) -> None:
    page.goto(f"{base}/ui/tenants/{stage.tenant}/grants")
    check(page)
    page.get_by_label("Runner", exact=True).select_option(label="journey-runner")
    page.get_by_label("Chosen lines").check()
    page.get_by_label("Support bot").check()
    page.get_by_label("Full: the fetch returns the whole credential").check()
    page.get_by_role("button", name="Grant access").click()
    row = page.get_by_role("row", name=re.compile("journey-runner"))
    row.wait_for()
    check(page)
    assert "Support bot" in row.inner_text()
    save_screenshot(page, "grants")


def _add_and_promote(page: Any, base: str, stage: Stage) -> None:
    page.goto(f"{base}/ui/tenants/{stage.tenant}/members")
    check(page)
    page.get_by_label("User id").fill(stage.newcomer)
    page.get_by_label("Role", exact=True).select_option("member")
    page.get_by_role("button", name="Add member").click()
    row = page.get_by_role("row", name=re.compile("newcomer@journey.test"))
    row.wait_for()
    check(page)
    assert row.get_by_role("cell", name="member", exact=True).is_visible()
    row.get_by_role("button", name="Change role").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Role").select_option("admin")
    save_screenshot(page, "members")
    dialog.get_by_role("button", name="Save role").click()
    row.get_by_role("cell", name="admin", exact=True).wait_for()
    check(page)


def _delete_throwaway(page: Any, base: str, stage: Stage) -> None:
    page.goto(f"{base}/ui/tenants/{stage.throwaway}/settings")
    check(page)
    save_screenshot(page, "tenant-settings")
    danger = page.get_by_role("region", name="Delete this tenant")
    confirm = danger.get_by_label("Type the tenant's name to confirm")
    confirm.fill("Throwaway Co")  # not its name
    danger.get_by_label("Authenticator code").fill(_next_code(stage.admin))
    danger.get_by_role("button", name="Delete tenant").click()
    page.get_by_role("alert").wait_for()
    check(page)
    assert "nothing was deleted" in page.get_by_role("alert").inner_text()
    page.get_by_role("link", name="Go back").click()
    confirm.wait_for()
    check(page)
    confirm.fill("Throwaway")
    danger.get_by_label("Authenticator code").fill(_next_code(stage.admin))
    danger.get_by_role("button", name="Delete tenant").click()
    page.get_by_role("heading", name="Tenants", exact=True).wait_for()
    check(page)
    assert page.get_by_role("link", name="Journey Co").is_visible()
    assert page.get_by_role("link", name="Throwaway", exact=True).count() == 0


def test_admin_runs_the_people_pages(stage: Stage) -> None:
    base = stage.server.url
    admin = stage.admin
    with console_browser(base) as browser:
        page = browser.new_page()
        sign_in(page, base, admin.email, admin.password, admin.totp_secret)
        client_id, secret = _register_runner(page, base)
        assert _runner_fetches(base, client_id, secret, stage) == 404  # no grant yet
        _grant_the_line(page, base, stage)
        assert _runner_fetches(base, client_id, secret, stage) == 200
        _add_and_promote(page, base, stage)
        _delete_throwaway(page, base, stage)
