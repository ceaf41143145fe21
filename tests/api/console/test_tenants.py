"""The console's tenant list and a tenant's page: who sees which tenant, the lines table
with the contract's columns, the "expiring soon" badge, pages adapted to the role, and
no stored secret on the page."""

from __future__ import annotations

import re
from datetime import timedelta

from fastapi.testclient import TestClient

from tests.support.console_forms import sign_in_by_cookie
from tests.support.identity import add_membership, make_tenant, make_user
from tests.support.lines import CTX, owner, planted, planted_line, service, uow
from vault.clock import rfc3339
from vault.runtime import Runtime


def _instagram(runtime: Runtime, tenant_id: str, name: str, *, days: float) -> dict[str, str]:
    cred = {**planted("instagram")}
    cred["expires_at"] = str(rfc3339(runtime.clock.now() + timedelta(days=days)))
    with uow(runtime) as session:
        service(runtime, session).create(
            owner(tenant_id),
            tenant_id,
            line_type="instagram",
            name=name,
            credential=cred,
            context=CTX,
        )
    return cred


def _row(html: str, name: str) -> str:
    pattern = rf"<tr>\s*<th scope=\"row\">(?:<a [^>]*>)?{re.escape(name)}(?:</a>)?</th>(.*?)</tr>"
    found = re.search(pattern, html, re.S)
    assert found, f"no row for {name}"
    return found.group(1)


def test_a_person_sees_their_tenants_and_an_admin_sees_all(
    client: TestClient, runtime: Runtime
) -> None:
    mine, other = make_tenant(runtime, "Mine"), make_tenant(runtime, "Other")
    member = make_user(runtime, "member@console.test")
    add_membership(runtime, mine, member.id, "member")
    sign_in_by_cookie(client, runtime, member.id)
    html = client.get("/ui/tenants").text
    assert f'href="/ui/tenants/{mine}"' in html and "Other" not in html
    assert client.get(f"/ui/tenants/{other}").status_code == 404  # not revealed
    admin = make_user(runtime, "padmin@console.test", platform_role="admin")
    sign_in_by_cookie(client, runtime, admin.id)
    html = client.get("/ui/tenants").text
    assert "Mine" in html and "Other" in html


def test_the_lines_table_has_every_column_and_no_secret(
    client: TestClient, runtime: Runtime
) -> None:
    tenant = make_tenant(runtime, "Acme")
    _line_id, bot = planted_line(runtime, tenant, name="Support bot")
    soon = _instagram(runtime, tenant, "Shop soon", days=2)
    later = _instagram(runtime, tenant, "Shop later", days=40)
    person = make_user(runtime, "owner@console.test")
    add_membership(runtime, tenant, person.id, "owner")
    sign_in_by_cookie(client, runtime, person.id)
    reply = client.get(f"/ui/tenants/{tenant}")
    assert reply.status_code == 200
    html = reply.text
    headers = re.findall(r'<th scope="col">([^<]+)</th>', html)
    assert headers == [
        "Name",
        "Type",
        "Status",
        "Version",
        "Fingerprint",
        "Platform account",
        "Expires",
        "Last fetched",
        "Actions",
    ]
    assert "telegram" in _row(html, "Support bot") and "active" in _row(html, "Support bot")
    assert "expiring soon" in _row(html, "Shop soon")
    assert "expiring soon" not in _row(html, "Shop later")
    for secret in (bot["bot_token"], soon["access_token"], later["app_secret"]):
        assert secret not in html
    assert reply.headers["cache-control"] == "no-store"


def test_the_tenant_page_offers_what_the_role_carries(client: TestClient, runtime: Runtime) -> None:
    tenant = make_tenant(runtime, "Acme")
    people = {}
    for role in ("owner", "member", "auditor"):
        people[role] = make_user(runtime, f"{role}@console.test")
        add_membership(runtime, tenant, people[role].id, role)
    links = {}
    for role, person in people.items():
        sign_in_by_cookie(client, runtime, person.id)
        nav = client.get(f"/ui/tenants/{tenant}").text.split('aria-label="Tenant"')[1]
        links[role] = set(re.findall(r">(Lines|Members|Grants|Audit|Settings)</a>", nav))
    assert links["owner"] == {"Lines", "Members", "Grants", "Audit", "Settings"}
    assert links["member"] == {"Lines"}
    assert links["auditor"] == {"Lines", "Grants", "Audit"}
