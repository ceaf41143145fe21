"""Every line action leaves the same audit trail through the console as through the API.

One scenario (add a Telegram line, a widget with a generated secret and a malformed
line; replace a credential; suspend; resume; a wrong code on revoke; a member's revoke;
revoke) runs twice with the same people, once over the API (bearer sessions, ``mfa_code``
in the body) and once through the console's forms (cookie sessions, the form's
"Authenticator code"). Each step's events must match in action, outcome, actor,
resource and reason; the ids a run makes (its tenant, its lines, sessions) are replaced
by names, and event ids, timestamps and request data are not compared.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests.support.console_forms import post_form, sign_in_by_cookie
from tests.support.identity import (
    SeededUser,
    add_membership,
    bearer,
    make_user,
    new_session,
    totp_code,
)
from tests.support.lines import make_tenant, planted
from vault.clock import FixedClock
from vault.runtime import Runtime
from vault.storage.engine import unit_of_work
from vault.storage.models import AuditEventRow

Event = tuple[str | None, ...]


@dataclass
class Run:
    """One way of acting (the API or the console) on a tenant of its own."""

    client: TestClient
    runtime: Runtime
    tenant: str
    console: bool
    owner: SeededUser
    member: SeededUser
    names: dict[str, str] = field(default_factory=dict)
    _as: str = ""

    def act(self, user: SeededUser) -> Run:
        token = new_session(self.runtime, user.id)
        if self.console:
            sign_in_by_cookie(self.client, self.runtime, user.id)
        else:
            self._as = token
        return self

    def _post(self, api: tuple[str, str, dict[str, Any]], form: tuple[str, dict[str, Any]]) -> Any:
        if self.console:
            return post_form(self.client, f"/ui/tenants/{self.tenant}{form[0]}", form[1])
        method, path, body = api
        url = f"/v1/tenants/{self.tenant}{path}"
        return self.client.request(method, url, json=body, headers=bearer(self._as))

    def add(self, kind: str, credential: dict[str, str], name: str) -> str | None:
        reply = self._post(
            ("POST", "/lines", {"type": kind, "name": name, "credential": credential}),
            ("/lines", {"type": kind, "name": name, **credential}),
        )
        if self.console:
            found = re.search(r"/lines/(ln_\w+)", reply.headers.get("location", "") + reply.text)
            line_id = found.group(1) if found and reply.status_code in (201, 303) else None
        else:
            line_id = reply.json().get("id")
        if line_id:
            self.names[line_id] = name
        return line_id

    def replace(self, line: str, credential: dict[str, str], code: str) -> None:
        self._post(
            ("PUT", f"/lines/{line}/credential", {"credential": credential, "mfa_code": code}),
            (f"/lines/{line}/credential", {**credential, "mfa_code": code}),
        )

    def suspend(self, line: str, reason: str) -> None:
        self._post(
            ("POST", f"/lines/{line}/suspend", {"reason": reason}),
            (f"/lines/{line}/suspend", {"reason": reason}),
        )

    def resume(self, line: str, code: str) -> None:
        self._post(
            ("POST", f"/lines/{line}/resume", {"mfa_code": code}),
            (f"/lines/{line}/resume", {"mfa_code": code}),
        )

    def revoke(self, line: str, code: str, reason: str) -> None:
        self._post(
            ("POST", f"/lines/{line}/revoke", {"mfa_code": code, "reason": reason}),
            (f"/lines/{line}/revoke", {"mfa_code": code, "reason": reason}),
        )


def _head(runtime: Runtime) -> int:
    with unit_of_work(runtime.sessions) as session:
        return int(session.execute(select(func.max(AuditEventRow.seq))).scalar_one() or 0)


def _events_since(run: Run, seq: int) -> list[Event]:
    people = {run.owner.id: "owner", run.member.id: "member", run.tenant: "tenant"}
    names = {**people, **run.names}

    def named(value: str | None) -> str | None:
        if value is None:
            return None
        return names.get(value) or re.sub(r"^([a-z]+)_[0-9a-f]{16,}$", r"\1_*", value)

    with unit_of_work(run.runtime.sessions) as session:
        rows = session.execute(
            select(AuditEventRow).where(AuditEventRow.seq > seq).order_by(AuditEventRow.seq)
        ).scalars()
        return [
            (
                row.action,
                row.outcome,
                row.actor_type,
                named(row.actor_id),
                named(row.tenant_id),
                row.resource_type,
                named(row.resource_id),
                row.reason,
            )
            for row in rows
        ]


def _scenario(run: Run, code: Callable[[], str]) -> list[tuple[str, list[Event]]]:
    """The steps, each with the events it left."""
    steps: list[tuple[str, list[Event]]] = []
    lines: dict[str, str | None] = {}

    def step(name: str, action: Callable[[], Any]) -> None:
        seq = _head(run.runtime)
        result = action()
        if name.startswith("add "):
            lines[name] = result
        steps.append((name, _events_since(run, seq)))

    owner = run.owner
    step("add telegram", lambda: run.act(owner).add("telegram", planted("telegram"), "Bot"))
    step("add widget", lambda: run.act(owner).add("widget", {}, "Site"))
    step("add malformed", lambda: run.act(owner).add("telegram", {"bot_token": "x"}, "Bad"))
    bot = lines["add telegram"]
    assert bot is not None
    step("replace", lambda: run.act(owner).replace(bot, planted("telegram"), code()))
    step("suspend", lambda: run.act(owner).suspend(bot, "maintenance"))
    step("resume", lambda: run.act(owner).resume(bot, code()))
    step("wrong code", lambda: run.act(owner).revoke(bot, "000000", "leaked"))
    step("member revokes", lambda: run.act(run.member).revoke(bot, code(), "leaked"))
    step("revoke", lambda: run.act(owner).revoke(bot, code(), "leaked"))
    return steps


def test_line_actions_audit_the_same_through_console_and_api(
    client: TestClient, runtime: Runtime, clock: FixedClock
) -> None:
    owner = make_user(runtime, "owner@parity.test", totp=True)
    member = make_user(runtime, "member@parity.test", totp=True)
    assert owner.totp_secret

    def code() -> str:
        clock.advance(30)  # a step no earlier code used
        return totp_code(owner.totp_secret or "", runtime)

    results = []
    for console in (False, True):
        tenant = make_tenant(runtime)
        add_membership(runtime, tenant, owner.id, "owner")
        add_membership(runtime, tenant, member.id, "member")
        run = Run(client, runtime, tenant, console, owner, member)
        results.append(_scenario(run, code))
    api, console_steps = results
    for (name, via_api), (_, via_console) in zip(api, console_steps, strict=True):
        assert via_api, f"{name}: no audit event at all"
        assert via_console == via_api, name
    assert any(e[1] == "denied" for _, events in api for e in events)
