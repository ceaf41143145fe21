"""Every people action leaves the same audit trail through the console as through the API.

One scenario (register, rotate and disable a runner; grant and remove a grant; add a
member, promote them, remove them; the last owner's 409; a member's refused grant; a
sudo action without a code; export; delete a tenant; create one) runs twice with the same
people: once over the API (bearer sessions, ``mfa_code`` in the body or ``X-MFA-Code``),
once through the console's forms (cookie sessions, the form's "Authenticator code").
Each step's events must match in action, outcome, actor, resource, reason and details;
the ids of objects a run makes (its runner, grant, newcomer, tenants, sessions) are
replaced by names, and event ids, timestamps and request data are not compared.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

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
from tests.support.runners import granted_lines, make_line, make_tenant
from vault.clock import FixedClock
from vault.runtime import Runtime
from vault.storage.engine import unit_of_work
from vault.storage.models import AuditEventRow, Runner


@dataclass
class Cast:
    """The people and the tenant both runs act on."""

    runtime: Runtime
    clock: FixedClock
    tenant: str
    line: str
    platform_admin: SeededUser
    owner: SeededUser
    member: SeededUser

    def code(self, user: SeededUser) -> str:
        self.clock.advance(30)  # a step no earlier code used
        assert user.totp_secret is not None
        return totp_code(user.totp_secret, self.runtime)


class Way(Protocol):
    """One way of acting as ``user``: the API or the console."""

    def act(self, user: SeededUser) -> Way: ...
    def register_runner(self, name: str, code: str | None) -> str: ...
    def rotate_runner(self, runner_id: str, code: str) -> None: ...
    def disable_runner(self, runner_id: str, code: str) -> None: ...
    def grant(self, tenant: str, runner_id: str, line: str, code: str) -> None: ...
    def remove_grant(self, tenant: str, grant_id: str, code: str) -> None: ...
    def add_member(self, tenant: str, user_id: str, role: str) -> None: ...
    def change_role(self, tenant: str, user_id: str, role: str, code: str) -> None: ...
    def remove_member(self, tenant: str, user_id: str, code: str) -> None: ...
    def export(self, tenant: str, code: str) -> None: ...
    def delete_tenant(self, tenant: str, name: str, code: str) -> None: ...
    def create_tenant(self, name: str) -> str: ...


@dataclass
class Api:
    client: TestClient
    runtime: Runtime
    headers: dict[str, str] = field(default_factory=dict)

    def act(self, user: SeededUser) -> Api:
        return Api(self.client, self.runtime, bearer(new_session(self.runtime, user.id)))

    def _send(self, method: str, url: str, *, code: str | None = None, **kw: Any) -> Any:
        headers = {**self.headers, **({"X-MFA-Code": code} if code else {})}
        return self.client.request(method, url, headers=headers, **kw)

    def register_runner(self, name: str, code: str | None) -> str:
        reply = self._send("POST", "/v1/runners", json={"name": name, "mfa_code": code})
        return str(reply.json().get("id", ""))

    def rotate_runner(self, runner_id: str, code: str) -> None:
        self._send("POST", f"/v1/runners/{runner_id}/rotate-secret", code=code)

    def disable_runner(self, runner_id: str, code: str) -> None:
        self._send("DELETE", f"/v1/runners/{runner_id}", code=code)

    def grant(self, tenant: str, runner_id: str, line: str, code: str) -> None:
        body = {"runner_id": runner_id, "lines": [line], "access": "use", "mfa_code": code}
        self._send("POST", f"/v1/tenants/{tenant}/grants", json=body)

    def remove_grant(self, tenant: str, grant_id: str, code: str) -> None:
        self._send("DELETE", f"/v1/tenants/{tenant}/grants/{grant_id}", code=code)

    def add_member(self, tenant: str, user_id: str, role: str) -> None:
        body = {"user_id": user_id, "role": role}
        self._send("POST", f"/v1/tenants/{tenant}/members", json=body)

    def change_role(self, tenant: str, user_id: str, role: str, code: str) -> None:
        body = {"role": role, "mfa_code": code}
        self._send("PATCH", f"/v1/tenants/{tenant}/members/{user_id}", json=body)

    def remove_member(self, tenant: str, user_id: str, code: str) -> None:
        self._send("DELETE", f"/v1/tenants/{tenant}/members/{user_id}", code=code)

    def export(self, tenant: str, code: str) -> None:
        self._send("GET", f"/v1/tenants/{tenant}/export", code=code)

    def delete_tenant(self, tenant: str, name: str, code: str) -> None:
        del name  # the API asks for no name
        self._send("DELETE", f"/v1/tenants/{tenant}", json={"mfa_code": code})

    def create_tenant(self, name: str) -> str:
        reply = self._send("POST", "/v1/tenants", json={"name": name})
        return str(reply.json()["id"])


@dataclass
class Console:
    client: TestClient
    runtime: Runtime
    user_id: str = ""

    def act(self, user: SeededUser) -> Console:
        return Console(self.client, self.runtime, user.id)

    def _post(self, url: str, form: dict[str, Any], code: str | None = None) -> Any:
        sign_in_by_cookie(self.client, self.runtime, self.user_id)
        return post_form(self.client, url, {**form, **({"mfa_code": code} if code else {})})

    def register_runner(self, name: str, code: str | None) -> str:
        self._post("/ui/runners", {"name": name}, code)
        with unit_of_work(self.runtime.sessions) as session:
            found = session.execute(select(Runner.id).where(Runner.name == name)).scalar()
        return found or ""

    def rotate_runner(self, runner_id: str, code: str) -> None:
        self._post(f"/ui/runners/{runner_id}/rotate", {}, code)

    def disable_runner(self, runner_id: str, code: str) -> None:
        self._post(f"/ui/runners/{runner_id}/disable", {}, code)

    def grant(self, tenant: str, runner_id: str, line: str, code: str) -> None:
        form = {"runner_id": runner_id, "scope": "chosen", "lines": [line], "access": "use"}
        self._post(f"/ui/tenants/{tenant}/grants", form, code)

    def remove_grant(self, tenant: str, grant_id: str, code: str) -> None:
        self._post(f"/ui/tenants/{tenant}/grants/{grant_id}/delete", {}, code)

    def add_member(self, tenant: str, user_id: str, role: str) -> None:
        self._post(f"/ui/tenants/{tenant}/members", {"user_id": user_id, "role": role})

    def change_role(self, tenant: str, user_id: str, role: str, code: str) -> None:
        self._post(f"/ui/tenants/{tenant}/members/{user_id}/role", {"role": role}, code)

    def remove_member(self, tenant: str, user_id: str, code: str) -> None:
        self._post(f"/ui/tenants/{tenant}/members/{user_id}/remove", {}, code)

    def export(self, tenant: str, code: str) -> None:
        self._post(f"/ui/tenants/{tenant}/settings/export", {}, code)

    def delete_tenant(self, tenant: str, name: str, code: str) -> None:
        self._post(f"/ui/tenants/{tenant}/settings/delete", {"confirm_name": name}, code)

    def create_tenant(self, name: str) -> str:
        reply = self._post("/ui/tenants", {"name": name})
        return str(reply.headers["location"].rsplit("/", 1)[-1])


Event = tuple[str | None, ...]
_SESSION_ID = re.compile(r"ses_[0-9a-f]+")


@dataclass
class Recorder:
    """Each step's audit events, with the run's own ids replaced by names."""

    runtime: Runtime
    names: dict[str, str] = field(default_factory=dict)
    steps: list[tuple[str, list[Event]]] = field(default_factory=list)

    def step(self, title: str, action: Callable[[], Any]) -> Any:
        with unit_of_work(self.runtime.sessions) as session:
            before = session.execute(select(func.max(AuditEventRow.seq))).scalar() or 0
        result = action()
        with unit_of_work(self.runtime.sessions) as session:
            rows = session.execute(
                select(AuditEventRow).where(AuditEventRow.seq > before).order_by(AuditEventRow.seq)
            ).scalars()
            self.steps.append((title, [self._event(row) for row in rows]))
        return result

    def _plain(self, value: str | None) -> str | None:
        if value is None:
            return None
        for real, name in self.names.items():
            value = value.replace(real, name)
        # Each request signs in anew (bearer or cookie): its session is not compared.
        return _SESSION_ID.sub("<session>", value)

    def _event(self, row: AuditEventRow) -> Event:
        return (
            row.action,
            row.outcome,
            row.actor_type,
            row.actor_id,
            self._plain(row.tenant_id),
            row.resource_type,
            self._plain(row.resource_id),
            self._plain(row.reason),
            self._plain(row.details),
        )

    def finish(self) -> list[tuple[str, list[Event]]]:
        """Names are known only once the run made its objects: apply them now."""
        return [(title, [self._renamed(e) for e in found]) for title, found in self.steps]

    def _renamed(self, event: Event) -> Event:
        return tuple(self._plain(value) for value in event)


def _runner_steps(way: Way, cast: Cast, rec: Recorder, label: str) -> str:
    admin = way.act(cast.platform_admin)
    rec.step("register without a code", lambda: admin.register_runner(f"{label}-x", None))
    runner = rec.step(
        "register", lambda: admin.register_runner(label, cast.code(cast.platform_admin))
    )
    rec.names[runner] = "<runner>"
    rec.step("rotate", lambda: admin.rotate_runner(runner, cast.code(cast.platform_admin)))
    return str(runner)


def _grant_steps(way: Way, cast: Cast, rec: Recorder, runner: str) -> None:
    owner = way.act(cast.owner)
    rec.step("grant", lambda: owner.grant(cast.tenant, runner, cast.line, cast.code(cast.owner)))
    [grant_id] = granted_lines(cast.runtime, cast.tenant)
    rec.names[grant_id] = "<grant>"
    member = way.act(cast.member)
    rec.step("member grants", lambda: member.grant(cast.tenant, runner, cast.line, "000000"))
    rec.step(
        "remove grant",
        lambda: owner.remove_grant(cast.tenant, grant_id, cast.code(cast.owner)),
    )
    admin = way.act(cast.platform_admin)
    rec.step("disable", lambda: admin.disable_runner(runner, cast.code(cast.platform_admin)))


def _member_steps(way: Way, cast: Cast, rec: Recorder, label: str) -> None:
    newcomer = make_user(cast.runtime, f"{label}@parity.test").id
    rec.names[newcomer] = "<newcomer>"
    owner = way.act(cast.owner)
    t = cast.tenant
    rec.step("add member", lambda: owner.add_member(t, newcomer, "member"))
    rec.step("promote", lambda: owner.change_role(t, newcomer, "admin", cast.code(cast.owner)))
    rec.step("remove", lambda: owner.remove_member(t, newcomer, cast.code(cast.owner)))
    rec.step(
        "last owner",
        lambda: owner.change_role(t, cast.owner.id, "member", cast.code(cast.owner)),
    )


def _tenant_steps(way: Way, cast: Cast, rec: Recorder, label: str) -> None:
    owner = way.act(cast.owner)
    rec.step("export", lambda: owner.export(cast.tenant, cast.code(cast.owner)))
    doomed = make_tenant(cast.runtime, f"Doomed {label}")
    add_membership(cast.runtime, doomed, cast.owner.id, "owner")
    rec.names[doomed] = "<doomed>"
    rec.step(
        "delete", lambda: owner.delete_tenant(doomed, f"Doomed {label}", cast.code(cast.owner))
    )
    admin = way.act(cast.platform_admin)
    created = rec.step("create tenant", lambda: admin.create_tenant(f"New {label}"))
    rec.names[created] = "<created>"


def _scenario(way: Way, cast: Cast, label: str) -> list[tuple[str, list[Event]]]:
    rec = Recorder(cast.runtime, {label: "<run>"})
    runner = _runner_steps(way, cast, rec, label)
    _grant_steps(way, cast, rec, runner)
    _member_steps(way, cast, rec, label)
    _tenant_steps(way, cast, rec, label)
    return rec.finish()


def test_console_and_api_leave_the_same_audit_events(
    client: TestClient, runtime: Runtime, clock: FixedClock
) -> None:
    tenant = make_tenant(runtime, "Parity")
    people = {
        role: make_user(
            runtime,
            f"{role}@parity.test",
            platform_role="admin" if role == "platform_admin" else None,
            totp=True,
        )
        for role in ("platform_admin", "owner", "member")
    }
    add_membership(runtime, tenant, people["owner"].id, "owner")
    add_membership(runtime, tenant, people["member"].id, "member")
    cast = Cast(runtime, clock, tenant, make_line(runtime, tenant), **people)

    through_api = _scenario(Api(client, runtime), cast, "parity-one")
    through_console = _scenario(Console(client, runtime), cast, "parity-two")

    assert _outcomes(through_api) == _EXPECTED  # the scenario did what it says
    for (title, api_events), (_, console_events) in zip(through_api, through_console, strict=True):
        if title == "export":  # its details count the audit events so far: not compared
            api_events = [e[:-1] for e in api_events]
            console_events = [e[:-1] for e in console_events]
        assert console_events == api_events, title


def _outcomes(steps: list[tuple[str, list[Event]]]) -> dict[str, list[str]]:
    return {title: [f"{e[0]} {e[1]}" for e in found] for title, found in steps}


_CODE = "auth.mfa_code success"
_EXPECTED = {
    "register without a code": ["runner.create denied"],
    "register": [_CODE, "runner.create success"],
    "rotate": [_CODE, "runner.rotate_secret success"],
    "grant": [_CODE, "grant.create success"],
    "member grants": ["grant.create denied"],
    "remove grant": [_CODE, "grant.delete success"],
    "disable": [_CODE, "runner.disable success"],
    "add member": ["member.add success"],
    "promote": [_CODE, "member.update success"],
    "remove": [_CODE, "member.remove success"],
    "last owner": ["member.update error"],
    "export": [_CODE, "tenant.export success"],
    "delete": [_CODE, "tenant.delete success"],
    "create tenant": ["tenant.create success"],
}
