"""The console's audit pages: the events table with its filters, pagination and detail,
"Verify chain" (intact and broken), the export download the CLI accepts, and the fetch
chart with its table. Each reads through the same reader as the API, so the same people
may read and every read is recorded the same way."""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from typer.testing import CliRunner

from api.cli.core import app as cli_app
from tests.support.audit import fill_chain, other_tenant_event
from tests.support.console_forms import post_form, sign_in_by_cookie
from tests.support.identity import add_membership, bearer, make_tenant, make_user, new_session
from vault.audit.events import RequestContext
from vault.audit.service import EventFilter
from vault.authz import UserPrincipal
from vault.runners.events import fetch_event
from vault.runtime import Runtime

CTX = RequestContext(request_id="req_ui", ip="127.0.0.1", user_agent="pytest")
CHECKER = UserPrincipal(
    user_id="usr_check", email="t@x", platform_role="auditor", session_id="s", mfa_fresh=False
)


class _Page(HTMLParser):
    """What the tests look at in a page: links by their text, inline styles."""

    def __init__(self) -> None:
        super().__init__()
        self.links: dict[str, str] = {}
        self.styles = 0
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if "style" in values or tag == "style":
            self.styles += 1
        if tag == "a":
            self._href, self._text = values.get("href"), []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links["".join(self._text).strip()] = self._href
            self._href = None


def parse(html: str) -> _Page:
    found = _Page()
    found.feed(html)
    return found


def seqs(html: str) -> list[int]:
    """The events listed, by the row links' accessible names."""
    return [int(s) for s in re.findall(r'aria-label="Event (\d+)"', html)]


@dataclass
class People:
    tenant: str
    other: str
    ids: dict[str, str]


@pytest.fixture
def people(runtime: Runtime) -> People:
    tenant, other = make_tenant(runtime, "Acme <&> Co"), make_tenant(runtime, "Other")
    ids = {}
    for person, platform in [("auditor", "auditor"), ("admin", "admin")]:
        ids[f"platform_{person}"] = make_user(
            runtime, f"p{person}@ui.test", platform_role=platform, totp=True
        ).id
    for role in ("owner", "auditor", "member", "admin"):
        ids[role] = make_user(runtime, f"{role}@ui.test", totp=True).id
        add_membership(runtime, tenant, ids[role], role)
    ids["stranger"] = make_user(runtime, "stranger@ui.test", totp=True).id
    return People(tenant, other, ids)


def as_(client: TestClient, runtime: Runtime, people: People, who: str) -> None:
    sign_in_by_cookie(client, runtime, people.ids[who], mfa_fresh=True)


def reads(runtime: Runtime, user_id: str) -> list[tuple[str, str, str | None]]:
    """(outcome, resource id, tenant) of every audit.read/audit.export by ``user_id``."""
    rows = runtime.audit_reader.list_events(
        CHECKER,
        EventFilter(actor_id=user_id, action="audit.*", limit=1000),
        context=CTX,
    ).events
    return [(e["outcome"], e["resource"]["id"], e["tenant_id"]) for e in rows]


# -- the events table --------------------------------------------------------------------


def test_a_platform_auditor_filters_pages_and_opens_an_event(
    client: TestClient, runtime: Runtime, people: People
) -> None:
    for i in range(60):
        outcome = "denied" if i % 3 == 0 else "success"
        runtime.audit.emit(
            fetch_event("rnr_a", people.tenant, "ln_1", CTX, outcome=outcome, reason=None)
        )
    as_(client, runtime, people, "platform_auditor")
    r = client.get("/ui/audit")
    assert r.status_code == 200, r.text
    assert r.headers["content-security-policy"].startswith("default-src 'self'")
    assert r.headers["cache-control"] == "no-store"
    assert "<caption>Audit events" in r.text and parse(r.text).styles == 0
    first = seqs(r.text)
    assert len(first) == 50 and first == sorted(first)
    # Filters are applied, echoed back and kept in the next-page link.
    query = {"action": "credential.fetch", "outcome": "denied", "tenant_id": people.tenant}
    r = client.get("/ui/audit", params=query)
    assert r.status_code == 200
    denied = seqs(r.text)
    assert len(denied) == 20
    assert 'value="credential.fetch" selected' in r.text and 'value="denied" selected' in r.text
    assert "Next page" not in r.text
    r = client.get("/ui/audit", params={"action": "credential.fetch"})
    fetches = seqs(r.text)
    assert len(fetches) == 50
    page = parse(r.text)
    next_url = page.links["Next page"]
    assert "action=credential.fetch" in next_url and "cursor=" in next_url
    r = client.get(next_url)
    rest = seqs(r.text)
    assert len(rest) == 10 and rest[0] > fetches[-1] and "Next page" not in r.text
    assert "First page" in parse(r.text).links
    # Newest first, paging towards older events.
    r = client.get("/ui/audit", params={"action": "credential.fetch", "order": "newest"})
    newest = seqs(r.text)
    assert newest == sorted(newest, reverse=True) and newest[0] == rest[-1]
    assert 'value="newest" selected' in r.text
    older = seqs(client.get(parse(r.text).links["Next page"]).text)
    assert older == sorted(older, reverse=True) and older[0] < newest[-1]
    assert sorted(newest + older) == fetches + rest
    # The detail shows every field of the event.
    r = client.get(f"/ui/audit/events/{denied[0]}")
    assert r.status_code == 200
    for field in (
        "prev_hash",
        "hash",
        "request_id",
        "user_agent",
        "workflow_id",
        "rnr_a",
        "ln_1",
        "denied",
    ):
        assert field in r.text
    assert client.get("/ui/audit/events/999999").status_code == 404


def test_time_range_and_bad_filters(client: TestClient, runtime: Runtime, people: People) -> None:
    runtime.audit.emit(
        fetch_event("rnr_a", people.tenant, "ln_1", CTX, outcome="success", reason=None)
    )
    as_(client, runtime, people, "platform_admin")
    now = runtime.clock.now()
    later = f"{now:%Y}-12-31T23:59" if now.month < 12 else f"{now.year + 1}-12-31T23:59"
    r = client.get("/ui/audit", params={"from": later})
    assert r.status_code == 200 and seqs(r.text) == [] and "No events match" in r.text
    r = client.get("/ui/audit", params={"to": f"{now:%Y-%m-%dT%H:%M}", "from": "2000-01-01T00:00"})
    assert r.status_code == 200
    r = client.get("/ui/audit", params={"action": "no.such"})
    assert r.status_code == 422 and "credential.fetch" in r.text
    r = client.get("/ui/audit", params={"from": "yesterday"})
    assert r.status_code == 422 and "from" in r.text
    r = client.get("/ui/audit", params={"tenant_id": "t" * 41})  # the API's limit too
    assert r.status_code == 422 and "tenant_id: at most 40 characters" in r.text


def test_a_tenant_owner_reads_only_their_tenant(
    client: TestClient, runtime: Runtime, people: People
) -> None:
    runtime.audit.emit(
        fetch_event("rnr_a", people.tenant, "ln_mine", CTX, outcome="success", reason=None)
    )
    theirs = runtime.audit.emit(other_tenant_event(1, people.other))
    as_(client, runtime, people, "owner")
    r = client.get("/ui/audit")  # not a platform reader: choose a tenant
    assert r.status_code == 200
    assert parse(r.text).links["Acme <&> Co"] == f"/ui/tenants/{people.tenant}/audit"
    assert "Acme &lt;&amp;&gt; Co" in r.text
    r = client.get(f"/ui/tenants/{people.tenant}/audit")
    assert r.status_code == 200 and "ln_mine" in r.text and "ln_theirs" not in r.text
    assert "Verify chain" not in r.text  # platform only
    assert client.get(f"/ui/tenants/{people.tenant}/audit/events/{theirs}").status_code == 404
    assert client.get(f"/ui/tenants/{people.other}/audit").status_code == 404
    assert reads(runtime, people.ids["owner"]) == [
        ("success", "events", people.tenant),
        ("success", "events", people.tenant),
        ("denied", "events", people.other),
    ]


@pytest.mark.parametrize(("who", "status"), [("member", 403), ("admin", 403), ("stranger", 404)])
def test_others_are_refused_as_the_api_refuses_them(
    client: TestClient, runtime: Runtime, people: People, who: str, status: int
) -> None:
    api = client.get(
        "/v1/audit/events",
        params={"tenant_id": people.tenant},
        headers=bearer(new_session(runtime, people.ids[who])),
    )
    assert api.status_code == status
    as_(client, runtime, people, who)
    base = f"/ui/tenants/{people.tenant}/audit"
    for path in (base, f"{base}/events/1", f"{base}/activity", f"{base}/export"):
        r = client.get(path)
        assert r.status_code == status, path
        assert r.headers["content-type"].startswith("text/html")
    assert post_form(client, "/ui/audit/verify").status_code == 403
    assert client.get("/ui/audit/export").status_code == 403
    # Every refusal recorded, as the API's was.
    assert {o for o, _, _ in reads(runtime, people.ids[who])} == {"denied"}


def _new_events(runtime: Runtime, after: int) -> list[tuple[object, ...]]:
    """What a step recorded: every event after ``after``, without ids of the moment."""
    fields = "action, outcome, actor_type, actor_id, tenant_id, resource_type, resource_id, reason"
    with runtime.engine.connect() as conn:
        rows = conn.execute(
            text(f"SELECT {fields} FROM audit_events WHERE seq > :s ORDER BY seq"), {"s": after}
        )
        return [tuple(r) for r in rows]


def _head(runtime: Runtime) -> int:
    with runtime.engine.connect() as conn:
        return int(conn.execute(text("SELECT max(seq) FROM audit_events")).scalar_one())


def test_every_read_is_recorded_like_the_same_api_read(
    client: TestClient, runtime: Runtime, people: People
) -> None:
    """Each console read next to its API twin, as the same person: the same events (the
    session check records nothing, so the step's events are the read's own)."""
    t = people.tenant
    steps = [  # (who, API method+path+query, console method+path)
        (
            "auditor",
            ("GET", "/v1/audit/events", {"tenant_id": t}),
            ("GET", f"/ui/tenants/{t}/audit"),
        ),
        (
            "member",
            ("GET", "/v1/audit/events", {"tenant_id": t}),
            ("GET", f"/ui/tenants/{t}/audit"),
        ),
        (
            "stranger",
            ("GET", "/v1/audit/events", {"tenant_id": t}),
            ("GET", f"/ui/tenants/{t}/audit"),
        ),
        (
            "owner",
            ("GET", "/v1/audit/export", {"tenant_id": t}),
            ("GET", f"/ui/tenants/{t}/audit/export"),
        ),
        (
            "admin",
            ("GET", "/v1/audit/export", {"tenant_id": t}),
            ("GET", f"/ui/tenants/{t}/audit/export"),
        ),
        ("platform_auditor", ("GET", "/v1/audit/export", {}), ("GET", "/ui/audit/export")),
        ("owner", ("GET", "/v1/audit/export", {}), ("GET", "/ui/audit/export")),
        ("platform_auditor", ("GET", "/v1/audit/verify", {}), ("POST", "/ui/audit/verify")),
        ("owner", ("GET", "/v1/audit/verify", {}), ("POST", "/ui/audit/verify")),
    ]
    for who, (method, path, query), (ui_method, ui_path) in steps:
        token = new_session(runtime, people.ids[who], mfa_fresh=True)
        before = _head(runtime)
        api = client.request(method, path, params=query, headers=bearer(token))
        api_events = _new_events(runtime, before)
        as_(client, runtime, people, who)
        before = _head(runtime)
        page = client.get(ui_path) if ui_method == "GET" else post_form(client, ui_path)
        assert page.status_code == api.status_code, (who, ui_path)
        assert _new_events(runtime, before) == api_events, (who, ui_path)
        assert api_events, (who, path)


# -- verify and export -------------------------------------------------------------------


def test_verify_chain_intact_then_broken(
    client: TestClient, runtime: Runtime, people: People
) -> None:
    fill_chain(runtime, 12)
    as_(client, runtime, people, "platform_auditor")
    page = client.get("/ui/audit")
    assert 'type="submit">Verify chain</button>' in page.text
    r = post_form(client, "/ui/audit/verify")
    assert r.status_code == 200, r.text
    assert "Chain intact" in r.text and "Events checked" in r.text
    head = re.search(
        r"<td>event (\d+)</td>.*?<code class=\"hash\">([0-9a-f]{64})</code>", r.text, re.S
    )
    assert head is not None
    with runtime.engine.connect() as conn:
        stored = conn.execute(
            text("SELECT hash FROM audit_events WHERE seq = :s"), {"s": int(head[1])}
        ).scalar_one()
    assert head[2] == stored
    with runtime.engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET reason = 'rewritten' WHERE seq = 5"))
    r = post_form(client, "/ui/audit/verify")
    assert r.status_code == 200
    assert "Chain intact" not in r.text and "Chain broken" in r.text
    assert parse(r.text).links["5"] == "/ui/audit/events/5"
    # Without the form's token nothing is checked.
    assert client.post("/ui/audit/verify", follow_redirects=False).status_code == 403


def test_the_export_download_is_accepted_by_the_cli(
    client: TestClient, runtime: Runtime, people: People, tmp_path: Path
) -> None:
    fill_chain(runtime, 9)
    runtime.audit.emit(other_tenant_event(1, people.other))
    key = runtime.system_keys.audit_public_key.hex()
    for who, path in [
        ("platform_auditor", "/ui/audit/export"),
        ("owner", f"/ui/tenants/{people.tenant}/audit/export"),
    ]:
        as_(client, runtime, people, who)
        r = client.get(path)
        assert r.status_code == 200, r.text
        assert r.headers["content-disposition"].startswith('attachment; filename="linevault-audit-')
        assert r.headers["cache-control"] == "no-store"
        out = tmp_path / f"{who}.jsonl"
        out.write_bytes(r.content)
        checked = CliRunner().invoke(
            cli_app, ["audit", "verify-export", str(out), "--public-key", key]
        )
        assert checked.exit_code == 0, checked.output
        assert ("success", "export", None if who.startswith("platform") else people.tenant) in [
            (o, res, t) for o, res, t in reads(runtime, people.ids[who])
        ]
    assert "ln_theirs" not in (tmp_path / "owner.jsonl").read_text()


# -- the chart ---------------------------------------------------------------------------


def test_the_fetch_chart_and_its_table(
    client: TestClient, runtime: Runtime, people: People
) -> None:
    for outcome in ("success", "success", "denied"):
        runtime.audit.emit(
            fetch_event("rnr_x", people.tenant, "ln_chart", CTX, outcome=outcome, reason=None)
        )
    as_(client, runtime, people, "auditor")
    r = client.get(f"/ui/tenants/{people.tenant}/audit/activity")
    assert r.status_code == 200, r.text
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="fetch-chart" role="img"' in r.text
    assert 'class="denied-marker"' in r.text
    assert "<caption>Fetches per hour and per line" in r.text
    assert re.search(r"<td>ln_chart</td>\s*<td>2</td><td><strong>1</strong></td>", r.text)
    assert parse(r.text).styles == 0
    r = client.get(f"/ui/tenants/{people.tenant}/audit/activity", params={"by": "runner"})
    assert r.status_code == 200 and "rnr_x" in r.text
    empty = client.get(f"/ui/tenants/{people.tenant}/audit/activity?by=line")
    assert empty.status_code == 200
    as_(client, runtime, people, "owner")
    assert client.get("/ui/audit/activity").status_code == 200  # chooser
    reads_ = reads(runtime, people.ids["auditor"])
    assert reads_ == [("success", "fetch_activity", people.tenant)] * 3
