"""Every console route x every kind of person -> the expected status.

The console's counterpart of test_permission_matrix.py (which leaves ``/ui/`` to this
file): CONSOLE_EXPECTATIONS is keyed by (method, path template), and a console route
without a row fails :func:`test_every_console_route_for_every_role`, so no page or form
can be added without deciding who may use it. Requests are made as a browser makes
them: the session in its cookie, forms with the CSRF token (tests/support/console_forms.py).
A signed-out visitor is sent to sign-in (303); a forged form from a person whose role
does not carry the action is refused exactly as the API refuses it (403, or 404 for a
tenant they have no role in) and changes nothing.

Rows may name ``form`` (the form fields, built per request so each request is valid
apart from who sends it) and ``params`` (path parameters, e.g. a fresh line per request
for an action that can be done only once).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.console_forms import CSRF_SECRET, post_form, sign_in_by_cookie
from tests.support.identity import add_membership, make_tenant, make_user, new_session
from tests.support.routes import console_routes
from tests.support.runners import grant, make_line, make_runner
from tests.support.settings import UNTHROTTLED, make_settings
from vault.runtime import Runtime
from vault.settings import Settings
from vault.storage.engine import unit_of_work

PEOPLE = (
    "platform_admin",
    "platform_auditor",
    "owner",
    "admin",
    "member",
    "auditor",
    "no_role",
    "anonymous",
)
_ALL = "*"
_SIGN_IN = 303  # a signed-out visitor is sent to /ui/login


@dataclass
class World:
    runtime: Runtime
    tenant_id: str
    user_ids: dict[str, str] = field(default_factory=dict)
    counter: int = 0

    def unique(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"


Factory = Callable[[World], dict[str, Any]]


def row(
    expected: dict[str, int], *, form: Factory | None = None, params: Factory | None = None
) -> dict[str, Any]:
    return {"expected": expected, "form": form, "params": params}


_PUBLIC = row({_ALL: 200})
_SIGNED_IN = row({**dict.fromkeys(PEOPLE, 200), "anonymous": _SIGN_IN})
_TENANT_READERS = row(
    {**dict.fromkeys(PEOPLE, 200), "no_role": 404, "anonymous": _SIGN_IN},
)

_SIGN_IN_ROWS: dict[tuple[str, str], dict[str, Any]] = {
    # Sign-in: public pages; the credentials in the form decide.
    ("GET", "/ui/"): row({**dict.fromkeys(PEOPLE, 303)}),  # -> /ui/tenants
    ("GET", "/ui/login"): _PUBLIC,
    ("POST", "/ui/login"): row(
        {_ALL: 401}, form=lambda w: {"email": "x@example.test", "password": "wrong password"}
    ),
    ("GET", "/ui/login/code"): row({_ALL: 303}),  # no password step yet: back to sign-in
    ("POST", "/ui/login/code"): row({_ALL: 401}, form=lambda w: {"mfa_code": "000000"}),
    ("POST", "/ui/logout"): row({_ALL: 303}),  # signed out either way
    # Account set-up: the person's own account (every test user is already set up;
    # POST /ui/enrol, run first, leaves a new secret pending, which a wrong code misses).
    ("GET", "/ui/enrol"): _SIGNED_IN,
    ("POST", "/ui/enrol"): row(
        {**dict.fromkeys(PEOPLE, 200), "anonymous": _SIGN_IN}  # sessions are MFA-fresh here
    ),
    ("POST", "/ui/enrol/confirm"): row(
        {**dict.fromkeys(PEOPLE, 401), "anonymous": _SIGN_IN}, form=lambda w: {"mfa_code": "1"}
    ),
    ("GET", "/ui/password"): _SIGNED_IN,
    ("POST", "/ui/password"): row(
        {**dict.fromkeys(PEOPLE, 401), "anonymous": _SIGN_IN},
        form=lambda w: {"current_password": "not the password", "new_password": "x" * 16},
    ),
    # Tenants and their lines.
    ("GET", "/ui/tenants"): _SIGNED_IN,
    ("GET", "/ui/tenants/{tenant_id}"): _TENANT_READERS,
}


# Lines: add, replace, revoke, suspend, resume, a line's page (api/console/lines.py).
# Managers (owner, admin; a platform admin is an owner everywhere) may change lines; the
# sessions are MFA-fresh, so sudo-mode forms pass without a code (tests/api/console/
# test_lines.py proves the code). Every action gets a fresh line of its own.
_MANAGERS_ONLY = {
    **dict.fromkeys(PEOPLE, 403),
    "platform_admin": 200,
    "owner": 200,
    "admin": 200,
    "no_role": 404,
    "anonymous": _SIGN_IN,
}
_MANAGERS_ACT = {**_MANAGERS_ONLY, "platform_admin": 303, "owner": 303, "admin": 303}


def _fresh_line(w: World) -> dict[str, Any]:
    return {"line_id": make_line(w.runtime, w.tenant_id)}


def _telegram(w: World) -> dict[str, Any]:
    return {"bot_token": f"{100000 + w.counter}:{'A' * 35}{w.unique('x')}"}


_LINE_ROWS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/ui/tenants/{tenant_id}/lines/new"): row(_MANAGERS_ONLY),
    ("POST", "/ui/tenants/{tenant_id}/lines"): row(
        _MANAGERS_ACT, form=lambda w: {"type": "telegram", "name": w.unique("L"), **_telegram(w)}
    ),
    ("GET", "/ui/tenants/{tenant_id}/lines/{line_id}"): row(
        _TENANT_READERS["expected"], params=_fresh_line
    ),
    ("GET", "/ui/tenants/{tenant_id}/lines/{line_id}/credential"): row(
        _MANAGERS_ONLY, params=_fresh_line
    ),
    ("POST", "/ui/tenants/{tenant_id}/lines/{line_id}/credential"): row(
        _MANAGERS_ACT, form=_telegram, params=_fresh_line
    ),
    ("GET", "/ui/tenants/{tenant_id}/lines/{line_id}/revoke"): row(
        _MANAGERS_ONLY, params=_fresh_line
    ),
    ("POST", "/ui/tenants/{tenant_id}/lines/{line_id}/revoke"): row(
        _MANAGERS_ACT, form=lambda w: {"reason": "matrix"}, params=_fresh_line
    ),
    ("POST", "/ui/tenants/{tenant_id}/lines/{line_id}/suspend"): row(
        _MANAGERS_ACT, params=_fresh_line
    ),
    ("POST", "/ui/tenants/{tenant_id}/lines/{line_id}/resume"): row(
        _MANAGERS_ACT, params=_fresh_line
    ),
}


# Runners, grants, members, tenant deletion and export (api/console/runners.py,
# members.py, tenant_settings.py). Every action gets fresh objects per request.
def _fresh_runner(world: World) -> str:
    runner_id, _, _ = make_runner(world.runtime, world.unique("matrix-runner-"))
    return runner_id


def _fresh_member(world: World) -> str:
    user = make_user(world.runtime, f"{world.unique('joiner')}@console.test")
    add_membership(world.runtime, world.tenant_id, user.id, "member")
    return user.id


def _doomed_tenant(world: World) -> dict[str, str]:
    """A tenant named "Doomed" with the world's people in their roles, per request."""
    tenant_id = make_tenant(world.runtime, "Doomed")
    for person in ("owner", "admin", "member", "auditor"):
        add_membership(world.runtime, tenant_id, world.user_ids[person], person)
    return {"tenant_id": tenant_id}


def _fresh_grant(world: World) -> dict[str, str]:
    return {"grant_id": grant(world.runtime, world.tenant_id, _fresh_runner(world), ["*"])}


_PLATFORM_ADMIN_ONLY = {
    **dict.fromkeys(PEOPLE, 403),
    "platform_admin": 200,
    "anonymous": _SIGN_IN,
}
_MANAGERS_READ = _MANAGERS_ONLY  # the lines section's: owner, admin (and platform admin)
_OWNERS_ACT = {**_MANAGERS_ACT, "admin": 403}
_OWNERS_READ = {**_MANAGERS_READ, "admin": 403}

_PEOPLE_ROWS: dict[tuple[str, str], dict[str, Any]] = {
    # Runners: platform readers the full list, tenant managers the directory.
    ("GET", "/ui/runners"): row(
        {
            **dict.fromkeys(PEOPLE, 200),
            "member": 403,
            "auditor": 403,
            "no_role": 403,
            "anonymous": _SIGN_IN,
        }
    ),
    ("POST", "/ui/runners"): row(_PLATFORM_ADMIN_ONLY, form=lambda w: {"name": w.unique("r")}),
    ("POST", "/ui/runners/{runner_id}/rotate"): row(
        _PLATFORM_ADMIN_ONLY, params=lambda w: {"runner_id": _fresh_runner(w)}
    ),
    ("POST", "/ui/runners/{runner_id}/disable"): row(
        {**_PLATFORM_ADMIN_ONLY, "platform_admin": 303},
        params=lambda w: {"runner_id": _fresh_runner(w)},
    ),
    # Grants: owners, admins and auditors read; owners and admins write.
    ("GET", "/ui/tenants/{tenant_id}/grants"): row(
        {**_MANAGERS_READ, "platform_auditor": 200, "auditor": 200}
    ),
    ("POST", "/ui/tenants/{tenant_id}/grants"): row(
        _MANAGERS_ACT, form=lambda w: {"runner_id": _fresh_runner(w), "scope": "all"}
    ),
    ("POST", "/ui/tenants/{tenant_id}/grants/{grant_id}/delete"): row(
        _MANAGERS_ACT, params=_fresh_grant
    ),
    # Members: owners and admins.
    ("GET", "/ui/tenants/{tenant_id}/members"): row(_MANAGERS_READ),
    ("POST", "/ui/tenants/{tenant_id}/members"): row(
        _MANAGERS_ACT,
        form=lambda w: {
            "user_id": make_user(w.runtime, f"{w.unique('new')}@console.test").id,
            "role": "member",
        },
    ),
    ("POST", "/ui/tenants/{tenant_id}/members/{user_id}/role"): row(
        _MANAGERS_ACT,
        params=lambda w: {"user_id": _fresh_member(w)},
        form=lambda w: {"role": "auditor"},
    ),
    ("POST", "/ui/tenants/{tenant_id}/members/{user_id}/remove"): row(
        _MANAGERS_ACT, params=lambda w: {"user_id": _fresh_member(w)}
    ),
    # Settings: the export and the deletion are the owner's (platform admins act as one).
    ("GET", "/ui/tenants/{tenant_id}/settings"): row(_OWNERS_READ),
    ("POST", "/ui/tenants/{tenant_id}/settings/export"): row(_OWNERS_READ),
    ("POST", "/ui/tenants/{tenant_id}/settings/delete"): row(
        _OWNERS_ACT, params=_doomed_tenant, form=lambda w: {"confirm_name": "Doomed"}
    ),
    ("POST", "/ui/tenants"): row(
        {**_PLATFORM_ADMIN_ONLY, "platform_admin": 303}, form=lambda w: {"name": w.unique("T")}
    ),
}


# Audit: events, an event, verify, export, the chart (api/console/audit.py). The API's
# reader, so the rows of /v1/audit/*: platform admins and auditors read everything, a
# tenant's owner and auditor the tenant. Anyone else signed in who opens /ui/audit is
# offered the tenants whose trail they may read (nothing of the trail is read there).
_PLATFORM_AUDIT = {"platform_admin": 200, "platform_auditor": 200, "anonymous": _SIGN_IN}
_AUDIT_READERS = row(
    {
        **_PLATFORM_AUDIT,
        "owner": 200,
        "auditor": 200,
        "admin": 403,
        "member": 403,
        "no_role": 404,
    }
)


def _tenant_event(world: World) -> dict[str, Any]:
    """An event of the main tenant, for the audit event pages."""
    from tests.support.audit import sample_event

    return {"seq": str(world.runtime.audit.emit(sample_event(1, tenant=world.tenant_id)))}


_AUDIT_ROWS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/ui/audit"): _SIGNED_IN,
    ("GET", "/ui/audit/activity"): _SIGNED_IN,
    # Like GET /v1/audit/events without tenant_id: 422 for everyone but platform readers.
    ("GET", "/ui/audit/events/{seq}"): row({**_PLATFORM_AUDIT, _ALL: 422}, params=_tenant_event),
    ("POST", "/ui/audit/verify"): row({**_PLATFORM_AUDIT, _ALL: 403}),
    ("GET", "/ui/audit/export"): row({**_PLATFORM_AUDIT, _ALL: 403}),
    ("GET", "/ui/tenants/{tenant_id}/audit"): _AUDIT_READERS,
    ("GET", "/ui/tenants/{tenant_id}/audit/activity"): _AUDIT_READERS,
    ("GET", "/ui/tenants/{tenant_id}/audit/events/{seq}"): row(
        _AUDIT_READERS["expected"], params=_tenant_event
    ),
    ("GET", "/ui/tenants/{tenant_id}/audit/export"): _AUDIT_READERS,
}


# The account page (api/console/account.py).
def _owners_other_session(w: World) -> dict[str, Any]:
    """A fresh second session of the owner: the owner may end it (303 back to the
    account page); for anyone else it is not theirs (404, as DELETE /v1/me/sessions)."""
    token = new_session(w.runtime, w.user_ids["owner"])
    with unit_of_work(w.runtime.sessions) as db:
        found = w.runtime.authenticator.store.resolve(db, token, now=w.runtime.clock.now())
    assert found is not None
    return {"session_id": found.session_id}


_ACCOUNT_ROWS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/ui/account"): _SIGNED_IN,
    ("GET", "/ui/account/export"): _SIGNED_IN,  # one's own data only
    ("POST", "/ui/account/sessions/{session_id}/end"): row(
        {**dict.fromkeys(PEOPLE, 404), "owner": 303, "anonymous": _SIGN_IN},
        params=_owners_other_session,
    ),
}


CONSOLE_EXPECTATIONS: dict[tuple[str, str], dict[str, Any]] = {
    **_SIGN_IN_ROWS,
    **_LINE_ROWS,
    **_PEOPLE_ROWS,
    **_AUDIT_ROWS,
    **_ACCOUNT_ROWS,
}


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    # Many deliberate failures from one client address: no throttling here.
    return make_settings(
        data_dir=tmp_path / "var",
        database_url=db_url,
        log_level="warning",
        **UNTHROTTLED,
    )


@pytest.fixture
def world(runtime: Runtime) -> World:
    tenant_id = make_tenant(runtime, "Matrix")
    found = World(runtime, tenant_id)
    roles = {"platform_admin": "admin", "platform_auditor": "auditor"}
    for person in PEOPLE:
        if person == "anonymous":
            continue
        user = make_user(
            runtime, f"{person}@console.test", platform_role=roles.get(person), totp=True
        )
        found.user_ids[person] = user.id
        if person in ("owner", "admin", "member", "auditor"):
            add_membership(runtime, tenant_id, user.id, person)
    return found


def _path_params(world: World) -> dict[str, str]:
    return {"tenant_id": world.tenant_id}


def _request(
    client: TestClient, world: World, person: str, method: str, url: str, spec: dict[str, Any]
) -> int:
    if person == "anonymous":
        client.cookies.clear()
        client.cookies.set("lv_csrf", CSRF_SECRET, path="/ui")
    else:
        sign_in_by_cookie(client, world.runtime, world.user_ids[person], mfa_fresh=True)
    if method == "GET":
        return client.get(url, follow_redirects=False).status_code
    form = spec["form"](world) if spec["form"] else {}
    return int(post_form(client, url, form).status_code)


def _cases(client: TestClient) -> Iterator[tuple[str, str]]:
    for path, methods in console_routes(client.app.routes):  # type: ignore[attr-defined]
        for method in sorted(methods - {"HEAD", "OPTIONS"}):
            yield method, path


def test_every_console_route_for_every_role(client: TestClient, world: World) -> None:
    missing: list[str] = []
    wrong: list[str] = []
    seen: set[tuple[str, str]] = set()
    for method, path in _cases(client):
        seen.add((method, path))
        spec = CONSOLE_EXPECTATIONS.get((method, path))
        if spec is None:
            missing.append(f"{method} {path}")
            continue
        for person in PEOPLE:
            params = spec["params"](world) if spec["params"] else {}
            url = path.format(**{**_path_params(world), **params})
            want = spec["expected"].get(person, spec["expected"].get(_ALL))
            got = _request(client, world, person, method, url, spec)
            if got != want:
                wrong.append(f"{method} {path} as {person}: {got}, expected {want}")
    assert not missing, f"console routes without a row: {missing}"
    assert not wrong, "\n".join(wrong)
    stale = sorted(set(CONSOLE_EXPECTATIONS) - seen)
    assert not stale, f"rows for console routes that do not exist: {stale}"
