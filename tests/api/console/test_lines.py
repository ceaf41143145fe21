"""A tenant's lines in the console (api/console/lines.py), in-process on both databases.

The platforms are the local stand-in (accepting unless told to refuse), so adding a line
goes through the same platform check as the API. The owner's session is not MFA-fresh:
every sudo-mode form is proved by its "Authenticator code".
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.support.console_forms import post_form, sign_in_by_cookie
from tests.support.identity import add_membership, bearer, make_user, totp_code
from tests.support.lines import make_tenant, planted, uow
from tests.support.platforms import PlatformStandIn, platform_standin, standin_settings
from tests.support.runners import grant, issue_token, make_runner
from vault.clock import FixedClock
from vault.runtime import Runtime
from vault.settings import Settings
from vault.storage.models import AuditEventRow, Line


@pytest.fixture
def standin() -> Iterator[PlatformStandIn]:
    with platform_standin() as server:
        yield server


@pytest.fixture
def settings(tmp_path: Path, db_url: str, standin: PlatformStandIn) -> Settings:
    return standin_settings(tmp_path, db_url, standin)


@dataclass
class World:
    runtime: Runtime
    clock: FixedClock
    tenant: str
    owner: str
    owner_totp: str
    member: str

    def code(self) -> str:
        """A fresh code for the owner: each step once, so move the clock on a step."""
        self.clock.advance(30)
        return totp_code(self.owner_totp, self.runtime)


@pytest.fixture
def world(runtime: Runtime, clock: FixedClock) -> World:
    tenant = make_tenant(runtime)
    owner = make_user(runtime, "owner@lines.test", totp=True)
    member = make_user(runtime, "member@lines.test", totp=True)
    add_membership(runtime, tenant, owner.id, "owner")
    add_membership(runtime, tenant, member.id, "member")
    assert owner.totp_secret
    return World(runtime, clock, tenant, owner.id, owner.totp_secret, member.id)


def as_owner(client: TestClient, w: World) -> None:
    sign_in_by_cookie(client, w.runtime, w.owner)  # not MFA-fresh


def add(client: TestClient, w: World, kind: str, cred: dict[str, str], name: str = "L") -> str:
    reply = post_form(client, f"/ui/tenants/{w.tenant}/lines", {"type": kind, "name": name, **cred})
    assert reply.status_code == 303, reply.text
    match = re.fullmatch(rf"/ui/tenants/{w.tenant}/lines/(ln_\w+)", reply.headers["location"])
    assert match, reply.headers["location"]
    return match.group(1)


def status_of(w: World, line_id: str) -> str:
    with uow(w.runtime) as session:
        line = session.get(Line, line_id)
        assert line is not None
        return line.status


def actions(w: World, line_id: str) -> list[tuple[str, str]]:
    with uow(w.runtime) as session:
        rows = session.execute(
            select(AuditEventRow.action, AuditEventRow.outcome)
            .where(AuditEventRow.resource_id == line_id)
            .order_by(AuditEventRow.seq)
        ).all()
    return [(a, o) for a, o in rows]


def test_add_each_type_with_its_form(client: TestClient, world: World) -> None:
    w = world
    as_owner(client, w)
    tenant_page = client.get(f"/ui/tenants/{w.tenant}")
    assert f'href="/ui/tenants/{w.tenant}/lines/new"' in tenant_page.text
    labels = {
        "telegram": ["Bot token"],
        "instagram": ["Access token", "Token expiry (UTC)", "Instagram user id", "App secret"],
        "messenger": ["Page id", "Page access token", "App secret"],
        "widget": ["Signing secret"],
    }
    secrets_sent: list[str] = []
    for kind, wanted in labels.items():
        form = client.get(f"/ui/tenants/{w.tenant}/lines/new?type={kind}")
        assert form.status_code == 200
        assert ">Type</label>" in form.text and ">Name</label>" in form.text
        for label in wanted:
            assert form.text.count(f">{label}</label>") == 1, (kind, label)
        assert 'type="password" autocomplete="off"' in form.text
        cred = planted(kind)
        if kind == "instagram":
            cred["expires_at"] = "2027-01-31T00:00"  # as a datetime-local input sends it
        line_id = add(client, w, kind, cred, name=f"{kind} line")
        page = client.get(f"/ui/tenants/{w.tenant}/lines/{line_id}")
        assert page.status_code == 200 and f"{kind} line" in page.text
        secrets_sent += [
            v for k, v in cred.items() if k not in ("user_id", "page_id", "expires_at")
        ]
        if kind == "instagram":
            assert "2027-01-31 00:00 UTC" in page.text
    listing = client.get(f"/ui/tenants/{w.tenant}").text
    assert listing.count('command="show-modal">Revoke</button>') == 4
    for secret in secrets_sent:
        assert secret not in listing


def test_generated_widget_secret_is_shown_once(client: TestClient, world: World) -> None:
    w = world
    as_owner(client, w)
    reply = post_form(client, f"/ui/tenants/{w.tenant}/lines", {"type": "widget", "name": "Site"})
    assert reply.status_code == 201, reply.text
    found = re.search(r'<code id="generated-signing_secret"[^>]*>([^<]+)</code>', reply.text)
    assert found, reply.text
    secret = found.group(1)
    assert len(secret) >= 43
    assert 'data-copy-from="generated-signing_secret"' in reply.text
    assert "shown only this once" in reply.text
    assert reply.headers["cache-control"] == "no-store"
    line_id = re.search(r"/lines/(ln_\w+)", reply.text).group(1)  # type: ignore[union-attr]
    for path in (
        "",
        f"/lines/{line_id}",
        f"/lines/{line_id}/credential",
        f"/lines/{line_id}/revoke",
    ):
        assert secret not in client.get(f"/ui/tenants/{w.tenant}{path}").text


def test_errors_reshow_the_form_without_the_secret(
    client: TestClient, world: World, standin: PlatformStandIn
) -> None:
    w = world
    as_owner(client, w)
    bad = post_form(
        client,
        f"/ui/tenants/{w.tenant}/lines",
        {
            "type": "messenger",
            "name": "Page",
            "page_id": "12ab",
            "page_access_token": "PLANTsecret1",
        },
    )
    assert bad.status_code == 422
    assert "credential.page_id" in bad.text and 'value="12ab"' in bad.text
    assert 'value="Page"' in bad.text and "PLANTsecret1" not in bad.text
    assert 'aria-invalid="true"' in bad.text

    standin.fail = "401"
    cred = planted("telegram")
    refused = post_form(
        client, f"/ui/tenants/{w.tenant}/lines", {"type": "telegram", "name": "Bot", **cred}
    )
    assert refused.status_code == 422
    assert "Unauthorized" in refused.text and "bot_token" in refused.text
    assert cred["bot_token"] not in refused.text
    with uow(w.runtime) as session:
        assert session.execute(select(Line)).first() is None


def test_replace_needs_the_code(client: TestClient, world: World) -> None:
    w = world
    as_owner(client, w)
    line_id = add(client, w, "telegram", planted("telegram"))
    form = client.get(f"/ui/tenants/{w.tenant}/lines/{line_id}/credential")
    assert form.status_code == 200 and ">Bot token</label>" in form.text
    url = f"/ui/tenants/{w.tenant}/lines/{line_id}/credential"
    new = planted("telegram")
    wrong = post_form(client, url, {**new, "mfa_code": "000000"})
    assert wrong.status_code == 401 and "not accepted" in wrong.text
    assert new["bot_token"] not in wrong.text
    done = post_form(client, url, {**new, "mfa_code": w.code()})
    assert done.status_code == 303, done.text
    with uow(w.runtime) as session:
        assert session.get(Line, line_id).version == 2  # type: ignore[union-attr]
    assert ("credential.replace", "success") in actions(w, line_id)


def test_revoke_with_the_code_then_runners_get_410(client: TestClient, world: World) -> None:
    w = world
    as_owner(client, w)
    line_id = add(client, w, "telegram", planted("telegram"))
    runner_id, client_id, secret = make_runner(w.runtime)
    grant(w.runtime, w.tenant, runner_id, [line_id])
    runner = bearer(issue_token(w.runtime, client_id, secret))
    fetch_url = f"/v1/tenants/{w.tenant}/lines/{line_id}/credential"
    assert client.get(fetch_url, headers=runner).status_code == 200

    page = client.get(f"/ui/tenants/{w.tenant}").text
    assert "BotFather" in page and "<code>/revoke</code>" in page and "Revoke line" in page
    url = f"/ui/tenants/{w.tenant}/lines/{line_id}/revoke"
    assert "BotFather" in client.get(url).text  # the dialog as a page of its own
    wrong = post_form(client, url, {"mfa_code": "000000", "reason": "leaked"})
    assert wrong.status_code == 401
    assert "not accepted" in wrong.text and "still active" in wrong.text
    assert status_of(w, line_id) == "active"
    assert client.get(fetch_url, headers=runner).status_code == 200

    done = post_form(client, url, {"mfa_code": w.code(), "reason": "leaked"})
    assert done.status_code == 303 and done.headers["location"].endswith(line_id)
    assert status_of(w, line_id) == "revoked"
    gone = client.get(fetch_url, headers=runner)
    assert gone.status_code == 410 and gone.json()["code"] == "revoked"
    assert 'command="show-modal">Revoke</button>' not in client.get(f"/ui/tenants/{w.tenant}").text


def test_suspend_and_resume(client: TestClient, world: World) -> None:
    w = world
    as_owner(client, w)
    line_id = add(client, w, "widget", planted("widget"))
    base = f"/ui/tenants/{w.tenant}/lines/{line_id}"
    assert "Suspend line" in client.get(base).text
    assert post_form(client, f"{base}/suspend", {"reason": "holiday"}).status_code == 303
    assert status_of(w, line_id) == "suspended"
    page = client.get(base).text
    assert "Resume line" in page and "Suspend line" not in page
    wrong = post_form(client, f"{base}/resume", {"mfa_code": "000000"})
    assert wrong.status_code == 401 and status_of(w, line_id) == "suspended"
    assert post_form(client, f"{base}/resume", {"mfa_code": w.code()}).status_code == 303
    assert status_of(w, line_id) == "active"
    assert [a for a, o in actions(w, line_id) if o == "success"][-2:] == [
        "credential.suspend",
        "credential.resume",
    ]


def test_member_sees_no_controls_and_a_forged_post_is_refused(
    client: TestClient, world: World
) -> None:
    w = world
    as_owner(client, w)
    line_id = add(client, w, "telegram", planted("telegram"))
    sign_in_by_cookie(client, w.runtime, w.member, mfa_fresh=True)
    page = client.get(f"/ui/tenants/{w.tenant}")
    assert page.status_code == 200 and "telegram" in page.text
    assert "Revoke" not in page.text and "Add line" not in page.text
    line_page = client.get(f"/ui/tenants/{w.tenant}/lines/{line_id}").text
    assert "Suspend line" not in line_page and "Recent accesses" not in line_page
    base = f"/ui/tenants/{w.tenant}/lines/{line_id}"
    for path, form in (
        (f"{base}/revoke", {"mfa_code": "123456"}),
        (f"{base}/suspend", {}),
        (f"{base}/credential", {**planted("telegram"), "mfa_code": "123456"}),
        (f"/ui/tenants/{w.tenant}/lines", {"type": "widget", "name": "x"}),
    ):
        reply = post_form(client, path, form)
        assert reply.status_code == 403, (path, reply.text)
    assert client.get(f"{base}/revoke").status_code == 403
    assert status_of(w, line_id) == "active"
    with uow(w.runtime) as session:
        assert len(session.execute(select(Line)).all()) == 1


def test_line_page_shows_recent_accesses(client: TestClient, world: World) -> None:
    w = world
    as_owner(client, w)
    line_id = add(client, w, "telegram", planted("telegram"))
    runner_id, client_id, secret = make_runner(w.runtime)
    grant(w.runtime, w.tenant, runner_id, [line_id])
    runner = {**bearer(issue_token(w.runtime, client_id, secret)), "X-Workflow-Id": "wf-7"}
    assert client.get(f"/v1/tenants/{w.tenant}/lines/{line_id}/credential", headers=runner)
    page = client.get(f"/ui/tenants/{w.tenant}/lines/{line_id}")
    assert page.status_code == 200, page.text[-1500:]
    assert "Recent accesses" in page.text and "wf-7" in page.text
    fetch, create = page.text.index("credential.fetch"), page.text.index("credential.create")
    assert fetch < create  # newest first
    assert runner_id in page.text
    with uow(w.runtime) as session:  # read through the audited reader
        reads = session.execute(
            select(AuditEventRow.tenant_id).where(AuditEventRow.action == "audit.read")
        ).all()
    assert (w.tenant,) in reads
