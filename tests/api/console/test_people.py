"""The console's people pages in-process (both databases): runners, grants, members, a
tenant's export and deletion, and what each role sees and may do.

Sessions here are not MFA-fresh unless a test says so, so every sudo-mode action needs
the form's "Authenticator code"; each code comes from a new 30 s step of the injected
clock (codes are single-use). Runners fetch over HTTP, as in tests/api/test_runners_api.py.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.support.audit import action_events as events
from tests.support.console_forms import post_form, sign_in_by_cookie
from tests.support.identity import SeededUser, add_membership, make_user, totp_code
from tests.support.runners import (
    TELEGRAM,
    grant,
    granted_lines,
    make_line,
    make_runner,
    make_tenant,
)
from vault.clock import FixedClock
from vault.runtime import Runtime
from vault.storage.engine import unit_of_work
from vault.storage.models import Membership, Runner, Tenant

_SECRET = re.compile(r'<code id="client-secret" class="secret">([^<]+)</code>')


@dataclass
class People:
    tenant: str
    lines: tuple[str, str]
    platform_admin: SeededUser
    owner: SeededUser
    admin: SeededUser
    member: SeededUser
    auditor: SeededUser


@pytest.fixture
def people(runtime: Runtime) -> People:
    tenant = make_tenant(runtime, "Acme")
    lines = (make_line(runtime, tenant), make_line(runtime, tenant))
    users = {
        role: make_user(
            runtime,
            f"{role}@people.test",
            platform_role="admin" if role == "platform_admin" else None,
            totp=True,
        )
        for role in ("platform_admin", "owner", "admin", "member", "auditor")
    }
    for role in ("owner", "admin", "member", "auditor"):
        add_membership(runtime, tenant, users[role].id, role)
    return People(tenant, lines, **users)


def code(user: SeededUser, runtime: Runtime, clock: FixedClock) -> str:
    """A code of a step no earlier code used (the clock moves on by one step)."""
    clock.advance(30)
    assert user.totp_secret is not None
    return totp_code(user.totp_secret, runtime)


def runner_token(client: TestClient, client_id: str, secret: str) -> Any:
    return client.post(
        "/v1/runner/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )


def fetch(client: TestClient, token: str, tenant: str, line: str) -> int:
    reply = client.get(
        f"/v1/tenants/{tenant}/lines/{line}/credential",
        headers={"Authorization": f"Bearer {token}"},
    )
    return reply.status_code


def shown_secret(page: str) -> str:
    [secret] = _SECRET.findall(page)
    return html.unescape(secret)


# -- runners ----------------------------------------------------------------------------------


def test_runner_registered_rotated_and_disabled_secret_shown_once(
    client: TestClient, runtime: Runtime, clock: FixedClock, people: People
) -> None:
    admin = people.platform_admin
    sign_in_by_cookie(client, runtime, admin.id)
    listing = client.get("/ui/runners")
    assert listing.status_code == 200 and "Register runner" in listing.text
    refused = post_form(client, "/ui/runners", {"name": "wf", "back": "/ui/runners"})
    assert refused.status_code == 403 and "second factor" in refused.text.lower()
    with unit_of_work(runtime.sessions) as session:
        assert session.execute(select(Runner)).first() is None

    made = post_form(client, "/ui/runners", {"name": "wf", "mfa_code": code(admin, runtime, clock)})
    assert made.status_code == 200, made.text
    assert made.headers["cache-control"] == "no-store"
    secret = shown_secret(made.text)
    assert "shown only" in made.text and 'data-copy-from="client-secret"' in made.text
    with unit_of_work(runtime.sessions) as session:
        runner = session.execute(select(Runner)).scalar_one()
        runner_id, client_id = runner.id, runner.client_id
    assert runner_token(client, client_id, secret).status_code == 200
    again = client.get("/ui/runners")
    assert client_id in again.text and secret not in again.text
    assert "Rotate secret" in again.text and "Disable" in again.text

    rotated = post_form(
        client, f"/ui/runners/{runner_id}/rotate", {"mfa_code": code(admin, runtime, clock)}
    )
    assert rotated.status_code == 200, rotated.text
    new_secret = shown_secret(rotated.text)
    assert new_secret != secret
    assert runner_token(client, client_id, secret).status_code == 401
    assert runner_token(client, client_id, new_secret).status_code == 200
    assert new_secret not in client.get("/ui/runners").text

    disabled = post_form(
        client, f"/ui/runners/{runner_id}/disable", {"mfa_code": code(admin, runtime, clock)}
    )
    assert disabled.status_code == 303 and disabled.headers["location"] == "/ui/runners"
    assert runner_token(client, client_id, new_secret).status_code == 401
    assert "disabled" in client.get("/ui/runners").text
    assert [e.outcome for e in events(runtime, "runner.create")] == ["denied", "success"]
    assert [e.outcome for e in events(runtime, "runner.disable")] == ["success"]


def test_tenant_managers_see_the_runner_directory_only(
    client: TestClient, runtime: Runtime, people: People
) -> None:
    make_runner(runtime, "directory-runner")
    sign_in_by_cookie(client, runtime, people.owner.id)
    page = client.get("/ui/runners")
    assert page.status_code == 200 and "directory-runner" in page.text
    assert "Client id" not in page.text and "Register runner" not in page.text
    sign_in_by_cookie(client, runtime, people.member.id)
    assert client.get("/ui/runners").status_code == 403


# -- grants -----------------------------------------------------------------------------------


def test_grant_all_lines_then_chosen_lines_and_remove(
    client: TestClient, runtime: Runtime, clock: FixedClock, people: People
) -> None:
    runner_id, client_id, secret = make_runner(runtime, "grantee")
    first, second = people.lines
    owner = people.owner
    sign_in_by_cookie(client, runtime, owner.id)
    grants_url = f"/ui/tenants/{people.tenant}/grants"
    page = client.get(grants_url)
    assert page.status_code == 200 and "Grant access" in page.text and "grantee" in page.text
    token = runner_token(client, client_id, secret).json()["access_token"]
    assert fetch(client, token, people.tenant, first) == 404

    everything = {"runner_id": runner_id, "scope": "all", "mfa_code": code(owner, runtime, clock)}
    assert post_form(client, grants_url, everything).status_code == 303
    assert fetch(client, token, people.tenant, first) == 200
    assert fetch(client, token, people.tenant, second) == 200
    [(grant_id, lines)] = granted_lines(runtime, people.tenant).items()
    assert lines == ["*"] and "All lines" in client.get(grants_url).text

    remove = {"mfa_code": code(owner, runtime, clock)}
    assert post_form(client, f"{grants_url}/{grant_id}/delete", remove).status_code == 303
    assert granted_lines(runtime, people.tenant) == {}
    assert fetch(client, token, people.tenant, first) == 404

    nothing = {"runner_id": runner_id, "scope": "chosen", "mfa_code": code(owner, runtime, clock)}
    refused = post_form(client, grants_url, nothing)
    assert refused.status_code == 422 and "at least one line" in refused.text
    assert granted_lines(runtime, people.tenant) == {}

    chosen = {
        "runner_id": runner_id,
        "scope": "chosen",
        "lines": [first],
        "access": "use",
        "mfa_code": code(owner, runtime, clock),
    }
    assert post_form(client, grants_url, chosen).status_code == 303
    assert list(granted_lines(runtime, people.tenant).values()) == [[first]]
    assert fetch(client, token, people.tenant, first) == 200
    assert fetch(client, token, people.tenant, second) == 404
    listed = client.get(grants_url).text
    assert ">use<" in listed and TELEGRAM["bot_token"] not in listed


def test_grant_write_needs_the_code(client: TestClient, runtime: Runtime, people: People) -> None:
    runner_id, _, _ = make_runner(runtime)
    sign_in_by_cookie(client, runtime, people.admin.id)
    url = f"/ui/tenants/{people.tenant}/grants"
    reply = post_form(client, url, {"runner_id": runner_id, "scope": "all", "back": url})
    assert reply.status_code == 403 and f'href="{url}"' in reply.text
    wrong = post_form(client, url, {"runner_id": runner_id, "scope": "all", "mfa_code": "000000"})
    assert wrong.status_code == 401
    assert granted_lines(runtime, people.tenant) == {}
    assert [e.outcome for e in events(runtime, "grant.create")] == ["denied", "denied"]


# -- members ----------------------------------------------------------------------------------


def roles_of(runtime: Runtime, tenant: str) -> dict[str, str]:
    with unit_of_work(runtime.sessions) as session:
        rows = session.execute(select(Membership).where(Membership.tenant_id == tenant))
        return {m.user_id: m.role for m in rows.scalars()}


def test_members_added_changed_removed_and_the_last_owner_stays(
    client: TestClient, runtime: Runtime, clock: FixedClock, people: People
) -> None:
    newcomer = make_user(runtime, "newcomer@people.test")
    owner = people.owner
    sign_in_by_cookie(client, runtime, owner.id)
    base = f"/ui/tenants/{people.tenant}/members"
    assert "Add member" in client.get(base).text

    added = post_form(client, base, {"user_id": newcomer.id, "role": "member"})  # no code
    assert added.status_code == 303 and added.headers["location"] == base
    assert roles_of(runtime, people.tenant)[newcomer.id] == "member"
    assert "newcomer@people.test" in client.get(base).text

    promote = f"{base}/{newcomer.id}/role"
    assert post_form(client, promote, {"role": "admin"}).status_code == 403  # code needed
    assert roles_of(runtime, people.tenant)[newcomer.id] == "member"
    done = post_form(client, promote, {"role": "admin", "mfa_code": code(owner, runtime, clock)})
    assert done.status_code == 303
    assert roles_of(runtime, people.tenant)[newcomer.id] == "admin"

    remove = {"mfa_code": code(owner, runtime, clock)}
    assert post_form(client, f"{base}/{newcomer.id}/remove", remove).status_code == 303
    assert newcomer.id not in roles_of(runtime, people.tenant)

    demote = {"role": "member", "mfa_code": code(owner, runtime, clock), "back": base}
    last = post_form(client, f"{base}/{owner.id}/role", demote)
    assert last.status_code == 409 and "at least one owner" in last.text
    gone = post_form(client, f"{base}/{owner.id}/remove", {"mfa_code": code(owner, runtime, clock)})
    assert gone.status_code == 409
    assert roles_of(runtime, people.tenant)[owner.id] == "owner"
    assert [e.outcome for e in events(runtime, "member.update")] == ["success", "error"]


def test_an_admin_is_not_offered_the_owner_role(
    client: TestClient, runtime: Runtime, people: People
) -> None:
    sign_in_by_cookie(client, runtime, people.admin.id)
    page = client.get(f"/ui/tenants/{people.tenant}/members").text
    assert '<option value="owner"' not in page and '<option value="admin"' in page


# -- settings: export and deletion ------------------------------------------------------------


def test_export_downloads_a_json_attachment(
    client: TestClient, runtime: Runtime, clock: FixedClock, people: People
) -> None:
    sign_in_by_cookie(client, runtime, people.owner.id)
    page = client.get(f"/ui/tenants/{people.tenant}/settings")
    assert page.status_code == 200 and "Download export" in page.text
    url = f"/ui/tenants/{people.tenant}/settings/export"
    reply = post_form(client, url, {"mfa_code": code(people.owner, runtime, clock)})
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("application/json")
    disposition = reply.headers["content-disposition"]
    assert disposition == f'attachment; filename="linevault-tenant-{people.tenant}.json"'
    document = json.loads(reply.text)
    assert document["tenant"]["id"] == people.tenant and len(document["lines"]) == 2
    assert TELEGRAM["bot_token"] not in reply.text
    assert [e.outcome for e in events(runtime, "tenant.export")] == ["success"]


def tenant_exists(runtime: Runtime, tenant: str) -> bool:
    with unit_of_work(runtime.sessions) as session:
        return session.get(Tenant, tenant) is not None


def test_deletion_needs_the_tenant_name_and_a_code(
    client: TestClient, runtime: Runtime, clock: FixedClock, people: People
) -> None:
    doomed = make_tenant(runtime, "Doomed Ltd")
    make_line(runtime, doomed)
    add_membership(runtime, doomed, people.owner.id, "owner")
    owner = people.owner
    sign_in_by_cookie(client, runtime, owner.id)
    url = f"/ui/tenants/{doomed}/settings/delete"
    page = client.get(f"/ui/tenants/{doomed}/settings")
    assert "Delete tenant" in page.text and "Type the tenant's name" in page.text

    wrong = {"confirm_name": "Doomed", "mfa_code": code(owner, runtime, clock)}
    reply = post_form(client, url, wrong)
    assert reply.status_code == 422 and "nothing was deleted" in reply.text
    assert tenant_exists(runtime, doomed) and events(runtime, "tenant.delete") == []

    no_code = post_form(client, url, {"confirm_name": "Doomed Ltd"})
    assert no_code.status_code == 403 and tenant_exists(runtime, doomed)

    right = {"confirm_name": " Doomed Ltd ", "mfa_code": code(owner, runtime, clock)}
    deleted = post_form(client, url, right)
    assert deleted.status_code == 303 and deleted.headers["location"] == "/ui/tenants"
    assert not tenant_exists(runtime, doomed)
    assert client.get(f"/ui/tenants/{doomed}").status_code == 404
    assert [e.outcome for e in events(runtime, "tenant.delete")] == ["denied", "success"]
    assert tenant_exists(runtime, people.tenant)


def test_platform_admin_creates_a_tenant(
    client: TestClient, runtime: Runtime, people: People
) -> None:
    sign_in_by_cookie(client, runtime, people.platform_admin.id)
    assert "Create tenant" in client.get("/ui/tenants").text
    made = post_form(client, "/ui/tenants", {"name": "Fresh Co", "owner_user_id": people.owner.id})
    assert made.status_code == 303
    tenant_id = made.headers["location"].rsplit("/", 1)[-1]
    assert roles_of(runtime, tenant_id) == {people.owner.id: "owner"}
    sign_in_by_cookie(client, runtime, people.owner.id, mfa_fresh=True)
    assert "Create tenant" not in client.get("/ui/tenants").text
    assert post_form(client, "/ui/tenants", {"name": "Nope"}).status_code == 403


# -- role rules ------------------------------------------------------------------------------


def test_a_member_sees_no_controls_and_forged_posts_change_nothing(
    client: TestClient, runtime: Runtime, people: People
) -> None:
    runner_id, _, _ = make_runner(runtime)
    grant_id = grant(runtime, people.tenant, runner_id, [people.lines[0]])
    t = people.tenant
    # MFA-fresh: the role, not a missing code, is what refuses.
    sign_in_by_cookie(client, runtime, people.member.id, mfa_fresh=True)
    tenant_page = client.get(f"/ui/tenants/{t}").text
    for link in ("/grants", "/members", "/settings"):
        assert f'href="/ui/tenants/{t}{link}"' not in tenant_page
    for path in ("grants", "members", "settings"):
        assert client.get(f"/ui/tenants/{t}/{path}").status_code == 403
    forged = [
        (f"/ui/tenants/{t}/grants", {"runner_id": runner_id, "scope": "all"}),
        (f"/ui/tenants/{t}/grants/{grant_id}/delete", {}),
        (f"/ui/tenants/{t}/members", {"user_id": people.member.id, "role": "owner"}),
        (f"/ui/tenants/{t}/members/{people.admin.id}/role", {"role": "member"}),
        (f"/ui/tenants/{t}/members/{people.owner.id}/remove", {}),
        (f"/ui/tenants/{t}/settings/delete", {"confirm_name": "Acme"}),
        (f"/ui/tenants/{t}/settings/export", {}),
        ("/ui/runners", {"name": "mine"}),
        (f"/ui/runners/{runner_id}/disable", {}),
    ]
    before = roles_of(runtime, t)
    for url, form in forged:
        assert post_form(client, url, form).status_code == 403, url
    assert roles_of(runtime, t) == before
    assert granted_lines(runtime, t) == {grant_id: [people.lines[0]]}
    assert tenant_exists(runtime, t)
    with unit_of_work(runtime.sessions) as session:
        assert len(session.execute(select(Runner)).all()) == 1


def test_an_auditor_reads_grants_without_controls(
    client: TestClient, runtime: Runtime, people: People
) -> None:
    runner_id, _, _ = make_runner(runtime, "audited-runner")
    grant(runtime, people.tenant, runner_id, ["*"])
    sign_in_by_cookie(client, runtime, people.auditor.id, mfa_fresh=True)
    page = client.get(f"/ui/tenants/{people.tenant}/grants")
    assert page.status_code == 200 and "All lines" in page.text
    assert runner_id in page.text  # no runner directory for auditors: the id
    assert "Grant access" not in page.text and "Remove grant" not in page.text
