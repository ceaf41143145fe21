"""Every route of the app x every kind of caller -> the expected status.

EXPECTATIONS is keyed by (method, path template); a route without a row fails the test,
so nobody can add an endpoint without deciding who may call it. Each row maps a role to
a status (``_ALL`` fills the rest). Rows may name a ``body`` factory so the request is
valid apart from who sends it. Sessions are made fresh for every request (logout ends
them), MFA-fresh except where a row says otherwise.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.identity import (
    TEST_PASSWORD,
    add_membership,
    bearer,
    make_tenant,
    make_user,
    new_session,
)
from tests.support.routes import app_routes
from tests.support.settings import UNTHROTTLED, make_settings
from vault import authz
from vault.authz import RUNNER_PERMISSIONS, RunnerPermission
from vault.runtime import Runtime
from vault.settings import Settings
from vault.storage.engine import unit_of_work

ROLES = (
    "platform_admin",
    "platform_auditor",
    "owner",
    "admin",
    "member",
    "auditor",
    "no_role",
    "other_owner",
    "anonymous",
    "runner",
)
USERS = tuple(r for r in ROLES if r not in ("anonymous", "runner"))
_ALL = "*"


@dataclass
class World:
    runtime: Runtime
    tenant_id: str
    other_tenant_id: str
    user_ids: dict[str, str] = field(default_factory=dict)
    counter: int = 0
    line_id: str = ""
    runner: dict[str, str] = field(default_factory=dict)
    webhooks: dict[str, str] = field(default_factory=dict)

    def unique(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"


Body = Callable[[World], dict[str, Any]]


def _new_member(world: World) -> dict[str, Any]:
    user = make_user(world.runtime, world.unique("target") + "@example.test")
    return {"user_id": user.id, "role": "member"}


def row(
    expected: dict[str, int],
    *,
    body: Body | None = None,
    fresh: bool = True,
    params: Callable[[World], dict[str, str]] | None = None,
) -> dict[str, Any]:
    """``params``: path values made afresh for every request (e.g. a tenant to delete)."""
    return {"expected": expected, "body": body, "fresh": fresh, "params": params}


def _line(world: World) -> str:
    """A telegram line in the main tenant, made once."""
    if not world.line_id:
        from tests.support.lines import CTX, planted, service, uow, user

        with uow(world.runtime) as session:
            world.line_id = (
                service(world.runtime, session)
                .create(
                    user({world.tenant_id: "owner"}),
                    world.tenant_id,
                    line_type="telegram",
                    name="matrix",
                    credential=planted("telegram"),
                    context=CTX,
                )
                .id
            )
    return world.line_id


def _runner(world: World) -> dict[str, str]:
    """A runner granted every line of the main tenant, made once (id, client_id, secret)."""
    if not world.runner:
        from tests.support.runners import grant, make_runner

        runner_id, client_id, secret = make_runner(world.runtime, "matrix")
        grant(world.runtime, world.tenant_id, runner_id, ["*"])
        world.runner = {"id": runner_id, "client_id": client_id, "secret": secret}
    return world.runner


def _fresh_runner(world: World) -> dict[str, str]:
    """A throw-away runner, so rotating or disabling it leaves the matrix runner alone."""
    from tests.support.runners import make_runner

    return {"runner_id": make_runner(world.runtime, world.unique("r"))[0]}


def _fresh_grant(world: World) -> dict[str, str]:
    from tests.support.runners import grant

    return {"grant_id": grant(world.runtime, world.tenant_id, _runner(world)["id"], ["*"])}


def _fresh_line(world: World) -> dict[str, str]:
    """A new line per request: an earlier row may have revoked the shared one."""
    from tests.support.runners import make_line

    return {"line_id": make_line(world.runtime, world.tenant_id)}


def _fresh_widget(world: World) -> dict[str, str]:
    """A new widget line per request (sign), with a signing secret of its own."""
    from tests.support.runners import make_line

    secret = {"signing_secret": secrets.token_urlsafe(32)}
    return {
        "line_id": make_line(world.runtime, world.tenant_id, line_type="widget", credential=secret)
    }


def _fresh_messenger(world: World) -> dict[str, str]:
    """A new Messenger line with an app secret per request (appsecret-proof)."""
    from tests.support.runners import make_line

    credential = {
        "page_id": "1234567890",
        "page_access_token": "EAAB" + secrets.token_urlsafe(24),
        "app_secret": secrets.token_hex(16),
    }
    line = make_line(world.runtime, world.tenant_id, line_type="messenger", credential=credential)
    return {"line_id": line}


def _doomed_tenant(world: World) -> dict[str, str]:
    """A tenant with the main tenant's memberships, so each DELETE has one to delete."""
    tenant = make_tenant(world.runtime, world.unique("doomed"))
    for role in ("owner", "admin", "member", "auditor"):
        add_membership(world.runtime, tenant, world.user_ids[role], role)
    return {"tenant_id": tenant}


# A loopback https target (the matrix allows private targets): a test event sent to it
# fails at once (nothing listens on port 9), so no background delivery lingers.
_HOOK = {"url": "https://127.0.0.1:9/hook", "events": ["line.revoked"]}


def _make_webhook(world: World, tenant_id: str | None) -> str:
    from tests.support.lines import CTX, uow, user
    from vault.webhooks.service import WebhookPolicy, WebhookService

    with uow(world.runtime) as session:
        principal = user({}, platform_role="admin")
        return (
            WebhookService(
                session,
                keyring=world.runtime.keyring,
                system_keys=world.runtime.system_keys,
                audit=world.runtime.audit,
                clock=world.runtime.clock,
                principal=principal,
                context=CTX,
                policy=WebhookPolicy(max_per_tenant=1000, allow_private=True),
            )
            .create(tenant_id, url=_HOOK["url"], events=_HOOK["events"])
            .id
        )


def _tenant_webhook(world: World) -> dict[str, str]:
    """The main tenant's webhook, made once (tests and delivery logs)."""
    if "tenant" not in world.webhooks:
        world.webhooks["tenant"] = _make_webhook(world, world.tenant_id)
    return {"webhook_id": world.webhooks["tenant"]}


def _platform_webhook(world: World) -> dict[str, str]:
    if "platform" not in world.webhooks:
        world.webhooks["platform"] = _make_webhook(world, None)
    return {"webhook_id": world.webhooks["platform"]}


def _fresh_tenant_webhook(world: World) -> dict[str, str]:
    return {"webhook_id": _make_webhook(world, world.tenant_id)}


def _fresh_platform_webhook(world: World) -> dict[str, str]:
    return {"webhook_id": _make_webhook(world, None)}


def _fresh_member(world: World) -> dict[str, str]:
    """A plain member of the main tenant, per request (an earlier one may be removed)."""
    target = make_user(world.runtime, world.unique("mbr") + "@matrix.test")
    add_membership(world.runtime, world.tenant_id, target.id, "member")
    return {"user_id": target.id}


def _fresh_user(world: World) -> dict[str, str]:
    """A user with no tenant, per request, to disable, enable or delete."""
    return {"user_id": make_user(world.runtime, world.unique("usr") + "@matrix.test").id}


def _foreign_session(world: World) -> dict[str, str]:
    """The id of someone else's live session: every caller is a stranger to it."""
    owner = make_user(world.runtime, world.unique("ses") + "@matrix.test")
    with unit_of_work(world.runtime.sessions) as session:
        issued = world.runtime.authenticator.store.create(
            session, user_id=owner.id, now=world.runtime.clock.now(), mfa_fresh=False
        )
    return {"session_id": issued.session_id}


_PUBLIC = row({_ALL: 200})
_SIGNED_IN = {**dict.fromkeys(USERS, 200), _ALL: 401}
_TENANT_MANAGERS = {
    "platform_admin": 200,
    "owner": 200,
    "admin": 200,
    "member": 403,
    "auditor": 403,
    "platform_auditor": 403,
    "no_role": 404,
    "other_owner": 404,
    _ALL: 401,
}
_TENANT_MEMBERS = {
    **dict.fromkeys(("platform_admin", "platform_auditor", "owner", "admin", "member"), 200),
    "auditor": 200,
    "no_role": 404,
    "other_owner": 404,
    _ALL: 401,
}
_TENANT_OWNER = {**_TENANT_MANAGERS, "admin": 403}
_PLATFORM_ADMIN_ONLY = {"platform_admin": 201, **dict.fromkeys(USERS[1:], 403), _ALL: 401}
_PLATFORM_READERS = {**_PLATFORM_ADMIN_ONLY, "platform_admin": 200, "platform_auditor": 200}

EXPECTATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/v1/sys/health"): _PUBLIC,
    ("GET", "/metrics"): _PUBLIC,
    ("GET", "/openapi.json"): _PUBLIC,
    ("GET", "/docs"): _PUBLIC,
    ("GET", "/docs/oauth2-redirect"): _PUBLIC,
    ("GET", "/redoc"): _PUBLIC,
    ("GET", "/"): _PUBLIC,  # a redirect to the console or /docs (followed here)
    # Human authentication: credentials in the body, not the session, decide.
    ("POST", "/v1/auth/login"): row(
        {_ALL: 401}, body=lambda w: {"email": "x@example.test", "password": "wrong password"}
    ),
    ("POST", "/v1/auth/mfa"): row({_ALL: 401}, body=lambda w: {"mfa_token": "lvm_x", "code": "1"}),
    # No test user has TOTP: every signed-in caller gets 401 mfa_invalid, others 401.
    ("POST", "/v1/auth/step-up"): row({_ALL: 401}, body=lambda w: {"code": "abcdef"}),
    ("POST", "/v1/auth/logout"): row({**dict.fromkeys(USERS, 204), _ALL: 401}),
    ("GET", "/v1/me"): row(_SIGNED_IN),
    ("POST", "/v1/me/totp"): row(_SIGNED_IN, fresh=False),
    # Runs after /v1/me/totp (route order): a pending enrollment and a wrong code.
    ("POST", "/v1/me/totp/confirm"): row({_ALL: 401}, body=lambda w: {"code": "abcdef"}),
    ("POST", "/v1/me/password"): row(
        {**dict.fromkeys(USERS, 204), _ALL: 401},
        body=lambda w: {"current_password": TEST_PASSWORD, "new_password": TEST_PASSWORD + "!"},
    ),
    ("POST", "/v1/users"): row(
        _PLATFORM_ADMIN_ONLY,
        body=lambda w: {"email": w.unique("new") + "@example.test", "platform_role": None},
    ),
    ("POST", "/v1/tenants"): row(_PLATFORM_ADMIN_ONLY, body=lambda w: {"name": "Tenant"}),
    ("GET", "/v1/tenants"): row(_SIGNED_IN),
    ("GET", "/v1/tenants/{tenant_id}/members"): row(_TENANT_MANAGERS),
    ("POST", "/v1/tenants/{tenant_id}/members"): row(
        {**_TENANT_MANAGERS, "platform_admin": 201, "owner": 201, "admin": 201}, body=_new_member
    ),
    ("PATCH", "/v1/tenants/{tenant_id}/members/{user_id}"): row(
        _TENANT_MANAGERS, body=lambda w: {"role": "auditor"}, params=_fresh_member
    ),
    ("DELETE", "/v1/tenants/{tenant_id}/members/{user_id}"): row(
        {**_TENANT_MANAGERS, "platform_admin": 204, "owner": 204, "admin": 204},
        params=_fresh_member,
    ),
    # People: the platform lists, disables, enables and erases users (MFA but listing).
    ("GET", "/v1/users"): row(_PLATFORM_READERS),
    ("DELETE", "/v1/users/{user_id}"): row(
        {**_PLATFORM_ADMIN_ONLY, "platform_admin": 204}, params=_fresh_user
    ),
    ("POST", "/v1/users/{user_id}/disable"): row(
        {**_PLATFORM_ADMIN_ONLY, "platform_admin": 200}, params=_fresh_user
    ),
    ("POST", "/v1/users/{user_id}/enable"): row(
        {**_PLATFORM_ADMIN_ONLY, "platform_admin": 200}, params=_fresh_user
    ),
    # One's own sessions and data. Someone else's session id is 404 for everybody; a
    # wrong password deletes nothing (successes, and 409: test_last_owner_rules below).
    ("GET", "/v1/me/sessions"): row(_SIGNED_IN),
    ("DELETE", "/v1/me/sessions/{session_id}"): row(
        {**dict.fromkeys(USERS, 404), _ALL: 401}, params=_foreign_session
    ),
    ("GET", "/v1/me/export"): row(_SIGNED_IN),
    ("DELETE", "/v1/me"): row(
        {_ALL: 401}, body=lambda w: {"password": "not the password", "mfa_code": "000000"}
    ),
    # Lines (any member reads; owner/admin write; revoke needs MFA, sessions here are fresh).
    ("POST", "/v1/tenants/{tenant_id}/lines"): row(
        {**_TENANT_MANAGERS, "platform_admin": 201, "owner": 201, "admin": 201},
        body=lambda w: {"type": "widget", "name": "w", "credential": {}},
    ),
    ("GET", "/v1/tenants/{tenant_id}/lines"): row(_TENANT_MEMBERS),
    ("GET", "/v1/tenants/{tenant_id}/lines/{line_id}"): row(_TENANT_MEMBERS),
    ("PUT", "/v1/tenants/{tenant_id}/lines/{line_id}/credential"): row(
        _TENANT_MANAGERS,
        body=lambda w: {"credential": {"bot_token": "12345:" + secrets.token_urlsafe(30)}},
    ),
    # Asks the platform again (checks are off in tests: provider_status "not_checked").
    ("POST", "/v1/tenants/{tenant_id}/lines/{line_id}/check"): row(
        _TENANT_MANAGERS, params=_fresh_line
    ),
    # Platform calls are off in tests, so an allowed caller's refresh is 409 (a telegram
    # line is 409 anyway); the refresh itself: tests/api/test_line_refresh.py.
    ("POST", "/v1/tenants/{tenant_id}/lines/{line_id}/refresh"): row(
        {**_TENANT_MANAGERS, "platform_admin": 409, "owner": 409, "admin": 409},
        params=_fresh_line,
    ),
    # Idempotent: the first manager revokes, the next get 200 with the same metadata.
    ("POST", "/v1/tenants/{tenant_id}/lines/{line_id}/revoke"): row(
        _TENANT_MANAGERS, body=lambda w: {"reason": "matrix"}
    ),
    # Suspend (no MFA: protective) and resume (MFA; sessions here are fresh). Repeats are
    # idempotent, so every allowed caller gets 200 on the same line or tenant.
    ("POST", "/v1/tenants/{tenant_id}/lines/{line_id}/suspend"): row(
        _TENANT_MANAGERS, body=lambda w: {"reason": "matrix"}, params=_fresh_line
    ),
    ("POST", "/v1/tenants/{tenant_id}/lines/{line_id}/resume"): row(
        _TENANT_MANAGERS, body=lambda w: {}, params=_fresh_line
    ),
    ("POST", "/v1/tenants/{tenant_id}/suspend"): row(_TENANT_OWNER, params=_doomed_tenant),
    ("POST", "/v1/tenants/{tenant_id}/resume"): row(_TENANT_OWNER, params=_doomed_tenant),
    ("DELETE", "/v1/tenants/{tenant_id}"): row(_TENANT_OWNER, params=_doomed_tenant),
    ("GET", "/v1/tenants/{tenant_id}/export"): row(_TENANT_OWNER),
    # Audit: platform admins/auditors read all; tenant readers must name their tenant
    # (no tenant_id here -> 422; the scoped reads are covered in tests/api/test_audit_routes).
    ("GET", "/v1/audit/events"): row(
        {
            "platform_admin": 200,
            "platform_auditor": 200,
            **dict.fromkeys(("owner", "admin", "member", "auditor", "no_role", "other_owner"), 422),
            _ALL: 401,
        }
    ),
    ("GET", "/v1/audit/verify"): row(
        {"platform_admin": 200, "platform_auditor": 200, **dict.fromkeys(USERS[2:], 403), _ALL: 401}
    ),
    # The whole verifiable bundle covers every tenant's events: platform readers only.
    # With ?tenant_id= (scoped, others' events withheld): SCOPED_AUDIT_EXPORT below.
    ("GET", "/v1/audit/export"): row(
        {"platform_admin": 200, "platform_auditor": 200, **dict.fromkeys(USERS[2:], 403), _ALL: 401}
    ),
    # Keys: managers rotate (MFA; sessions here are fresh); a repeat resumes, also 202.
    ("POST", "/v1/tenants/{tenant_id}/keys/rotate"): row(
        {**_TENANT_MANAGERS, "platform_admin": 202, "owner": 202, "admin": 202}
    ),
    ("GET", "/v1/tenants/{tenant_id}/keys"): row(
        {**_TENANT_MANAGERS, "auditor": 200, "platform_auditor": 200}
    ),
    # Runners (platform admins manage them; auditors list them, and so do tenant owners
    # and admins, so that they can grant them: id, name, created_at, status only).
    ("POST", "/v1/runners"): row(_PLATFORM_ADMIN_ONLY, body=lambda w: {"name": "matrix runner"}),
    ("GET", "/v1/runners"): row(
        {**_PLATFORM_READERS, "owner": 200, "admin": 200, "other_owner": 200}
    ),
    ("GET", "/v1/runners/{runner_id}"): row(_PLATFORM_READERS),
    ("POST", "/v1/runners/{runner_id}/rotate-secret"): row(
        {**_PLATFORM_ADMIN_ONLY, "platform_admin": 200}, params=_fresh_runner
    ),
    ("DELETE", "/v1/runners/{runner_id}"): row(
        {**_PLATFORM_ADMIN_ONLY, "platform_admin": 204}, params=_fresh_runner
    ),
    # OAuth client credentials: the form body decides; this JSON body is refused for all.
    ("POST", "/v1/runner/token"): row({_ALL: 400}),
    # A runner gives its token up: always 204 (nothing to reveal).
    ("DELETE", "/v1/runner/token"): row({_ALL: 204}),
    # Grants (owner/admin write; tenant auditors and platform auditors read).
    ("POST", "/v1/tenants/{tenant_id}/grants"): row(
        {**_TENANT_MANAGERS, "platform_admin": 201, "owner": 201, "admin": 201},
        body=lambda w: {"runner_id": _runner(w)["id"], "lines": ["*"]},
    ),
    ("GET", "/v1/tenants/{tenant_id}/grants"): row(
        {**_TENANT_MANAGERS, "auditor": 200, "platform_auditor": 200}
    ),
    ("DELETE", "/v1/tenants/{tenant_id}/grants/{grant_id}"): row(
        {**_TENANT_MANAGERS, "platform_admin": 204, "owner": 204, "admin": 204},
        params=_fresh_grant,
    ),
    # Webhooks: a tenant's owners/admins (creating needs MFA), and the platform's admins.
    ("POST", "/v1/tenants/{tenant_id}/webhooks"): row(
        {**_TENANT_MANAGERS, "platform_admin": 201, "owner": 201, "admin": 201},
        body=lambda w: dict(_HOOK),
    ),
    ("GET", "/v1/tenants/{tenant_id}/webhooks"): row(_TENANT_MANAGERS),
    ("DELETE", "/v1/tenants/{tenant_id}/webhooks/{webhook_id}"): row(
        {**_TENANT_MANAGERS, "platform_admin": 204, "owner": 204, "admin": 204},
        params=_fresh_tenant_webhook,
    ),
    ("POST", "/v1/tenants/{tenant_id}/webhooks/{webhook_id}/test"): row(
        {**_TENANT_MANAGERS, "platform_admin": 202, "owner": 202, "admin": 202},
        params=_tenant_webhook,
    ),
    ("GET", "/v1/tenants/{tenant_id}/webhooks/{webhook_id}/deliveries"): row(
        _TENANT_MANAGERS, params=_tenant_webhook
    ),
    ("POST", "/v1/webhooks"): row(_PLATFORM_ADMIN_ONLY, body=lambda w: dict(_HOOK)),
    ("GET", "/v1/webhooks"): row(_PLATFORM_READERS),
    ("DELETE", "/v1/webhooks/{webhook_id}"): row(
        {**_PLATFORM_ADMIN_ONLY, "platform_admin": 204}, params=_fresh_platform_webhook
    ),
    ("POST", "/v1/webhooks/{webhook_id}/test"): row(
        {**_PLATFORM_ADMIN_ONLY, "platform_admin": 202}, params=_platform_webhook
    ),
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): row(
        _PLATFORM_READERS, params=_platform_webhook
    ),
    # Only runners receive secrets: every human session gets 403, a granted runner 200.
    ("GET", "/v1/tenants/{tenant_id}/lines/{line_id}/credential"): row(
        {**dict.fromkeys(USERS, 403), "runner": 200, _ALL: 401}, params=_fresh_line
    ),
    # Use without reveal: the fetch's own decision, so the fetch's statuses.
    ("POST", "/v1/tenants/{tenant_id}/lines/{line_id}/sign"): row(
        {**dict.fromkeys(USERS, 403), "runner": 200, _ALL: 401},
        params=_fresh_widget,
        body=lambda w: {"message": "hello"},
    ),
    ("POST", "/v1/tenants/{tenant_id}/lines/{line_id}/appsecret-proof"): row(
        {**dict.fromkeys(USERS, 403), "runner": 200, _ALL: 401}, params=_fresh_messenger
    ),
    # The Vault-compatible read API (Vault's statuses: 400 for a failed AppRole login,
    # 403 "permission denied" for any token that is not a live runner token).
    ("POST", "/v1/auth/approle/login"): row(
        {_ALL: 400}, body=lambda w: {"role_id": "rnc_none", "secret_id": "wrong"}
    ),
    ("GET", "/v1/auth/token/lookup-self"): row({"runner": 200, _ALL: 403}),
    ("POST", "/v1/auth/token/revoke-self"): row({"runner": 204, _ALL: 403}),
    # The same fetch as above: humans 403 (refused, audited), a granted runner 200.
    ("GET", "/v1/lines/data/{tenant_id}/{line_id}"): row(
        {**dict.fromkeys(USERS, 403), "runner": 200, _ALL: 403}, params=_fresh_line
    ),
}


def path_params(world: World) -> dict[str, str]:
    """Values for path parameters; other capabilities add theirs (line_id, ...)."""
    return {
        "tenant_id": world.tenant_id,
        "line_id": _line(world),
        "runner_id": _runner(world)["id"],
        "grant_id": "grt_none",
        "webhook_id": "whk_none",  # rows that need a real one name it in ``params``
        "user_id": "usr_none",
        "session_id": "ses_none",
    }


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    # Hundreds of deliberate failures from one client address: no throttling here.
    return make_settings(
        data_dir=tmp_path / "var",
        database_url=db_url,
        log_level="warning",
        **UNTHROTTLED,
        webhook_allow_private=True,
    )


@pytest.fixture
def world(runtime: Runtime) -> Iterator[World]:
    tenant, other = make_tenant(runtime, "T1"), make_tenant(runtime, "T2")
    w = World(runtime, tenant, other)
    platform = {"platform_admin": "admin", "platform_auditor": "auditor"}
    for role in USERS:
        user = make_user(runtime, f"{role}@matrix.test", platform_role=platform.get(role))
        w.user_ids[role] = user.id
        if role in ("owner", "admin", "member", "auditor"):
            add_membership(runtime, tenant, user.id, role)
        if role == "other_owner":
            add_membership(runtime, other, user.id, "owner")
    yield w


def _headers(world: World, role: str, *, fresh: bool) -> dict[str, str]:
    if role == "anonymous":
        return {}
    if role == "runner":
        # A fresh token per request (like sessions): DELETE /v1/runner/token ends one.
        from tests.support.runners import issue_token

        runner = _runner(world)
        return bearer(issue_token(world.runtime, runner["client_id"], runner["secret"]))
    return bearer(new_session(world.runtime, world.user_ids[role], mfa_fresh=fresh))


# GET /v1/audit/export?tenant_id=<the main tenant>: the tenant's owner and auditor (and
# the platform readers, who act as them), other members 403, strangers 404.
SCOPED_AUDIT_EXPORT = {
    "platform_admin": 200,
    "platform_auditor": 200,
    "owner": 200,
    "auditor": 200,
    "admin": 403,
    "member": 403,
    "no_role": 404,
    "other_owner": 404,
    "anonymous": 401,
    "runner": 401,
}


def test_scoped_audit_export_for_every_role(client: TestClient, world: World) -> None:
    assert set(SCOPED_AUDIT_EXPORT) == set(ROLES)
    got = {}
    for role in ROLES:
        response = client.get(
            "/v1/audit/export",
            params={"tenant_id": world.tenant_id},
            headers=_headers(world, role, fresh=False),  # no second factor needed
        )
        got[role] = response.status_code
        if response.status_code == 200:
            assert json.loads(response.text.splitlines()[0])["tenant_id"] == world.tenant_id
    assert got == SCOPED_AUDIT_EXPORT


def test_every_route_for_every_role(client: TestClient, world: World) -> None:
    mismatches: list[str] = []
    missing: list[str] = []
    seen: set[tuple[str, str]] = set()
    for path, methods in app_routes(client.app.routes):  # type: ignore[attr-defined]
        for method in sorted(methods - {"HEAD", "OPTIONS"}):
            key = (method, path)
            seen.add(key)
            spec = EXPECTATIONS.get(key)
            if spec is None:
                missing.append(f"{method} {path}")
                continue
            url = path.format(**path_params(world))
            for role in ROLES:
                if spec["params"] is not None:
                    url = path.format(**{**path_params(world), **spec["params"](world)})
                expected = spec["expected"].get(role, spec["expected"].get(_ALL))
                body = spec["body"](world) if spec["body"] else None
                response = client.request(
                    method, url, json=body, headers=_headers(world, role, fresh=spec["fresh"])
                )
                if response.status_code != expected:
                    mismatches.append(
                        f"{method} {path} as {role}: {response.status_code} != {expected}"
                        f" ({response.text[:120]})"
                    )
    assert not missing, "routes without an EXPECTATIONS row: " + ", ".join(missing)
    stale = set(EXPECTATIONS) - seen
    assert not stale, f"EXPECTATIONS rows for routes that do not exist: {sorted(stale)}"
    assert not mismatches, "\n".join(mismatches)


# Routes that read no row of vault/authz.py's tables, and why. Every other route must
# read one, so a new route cannot leave the table out unnoticed.
_PUBLIC_ROUTE = "public: no caller to authorize"
_OWN = "the caller acts on their own session, account or token"
WITHOUT_A_ROW: dict[tuple[str, str], str] = {
    ("GET", "/v1/sys/health"): _PUBLIC_ROUTE,
    ("GET", "/metrics"): _PUBLIC_ROUTE,
    ("GET", "/openapi.json"): _PUBLIC_ROUTE,
    ("GET", "/docs"): _PUBLIC_ROUTE,
    ("GET", "/docs/oauth2-redirect"): _PUBLIC_ROUTE,
    ("GET", "/redoc"): _PUBLIC_ROUTE,
    ("GET", "/"): _PUBLIC_ROUTE,
    ("POST", "/v1/auth/login"): "public: the credentials in the body decide",
    ("POST", "/v1/auth/mfa"): "public: the challenge and code in the body decide",
    ("POST", "/v1/runner/token"): "public: the client credentials decide",
    ("POST", "/v1/auth/approle/login"): "public: the role_id and secret_id decide",
    ("POST", "/v1/auth/step-up"): _OWN,
    ("POST", "/v1/auth/logout"): _OWN,
    ("GET", "/v1/me"): _OWN,
    ("POST", "/v1/me/totp"): _OWN,
    ("POST", "/v1/me/totp/confirm"): _OWN,
    ("POST", "/v1/me/password"): _OWN,
    ("GET", "/v1/me/sessions"): _OWN,
    ("DELETE", "/v1/me/sessions/{session_id}"): _OWN,
    ("GET", "/v1/me/export"): _OWN,
    ("DELETE", "/v1/me"): _OWN,
    ("DELETE", "/v1/runner/token"): _OWN,
    ("GET", "/v1/auth/token/lookup-self"): _OWN,
    ("POST", "/v1/auth/token/revoke-self"): _OWN,
    # The runner row: checked by the fetch's one SQL read, never looked up per request.
    ("GET", "/v1/tenants/{tenant_id}/lines/{line_id}/credential"): (
        RunnerPermission.CREDENTIAL_FETCH
    ),
    ("GET", "/v1/lines/data/{tenant_id}/{line_id}"): RunnerPermission.CREDENTIAL_FETCH,
    ("POST", "/v1/tenants/{tenant_id}/lines/{line_id}/sign"): RunnerPermission.CREDENTIAL_SIGN,
    ("POST", "/v1/tenants/{tenant_id}/lines/{line_id}/appsecret-proof"): (
        RunnerPermission.CREDENTIAL_PROOF
    ),
}


class _ReadRows(dict[Any, frozenset[str]]):
    """A permission table that notes each row looked up in it."""

    def __init__(self, rows: Any, read: set[Any]) -> None:
        super().__init__(rows)
        self.read = read

    def get(self, key: Any, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: Any) -> frozenset[str]:
        self.read.add(key)
        return super().__getitem__(key)


def test_every_route_reads_the_permission_table(
    client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sent once by a platform admin (whom every row lets through to the end), each route
    looks up a row of the table, or is one of WITHOUT_A_ROW and looks up none."""
    read: set[Any] = set()
    for name in ("TENANT_PERMISSIONS", "PLATFORM_PERMISSIONS"):
        monkeypatch.setattr(authz, name, _ReadRows(getattr(authz, name), read))
    runner_rows = {p for p in WITHOUT_A_ROW.values() if isinstance(p, RunnerPermission)}
    assert runner_rows, "the fetch is the runner row's route"
    assert runner_rows == RUNNER_PERMISSIONS
    wrong: list[str] = []
    for path, methods in app_routes(client.app.routes):  # type: ignore[attr-defined]
        for method in sorted(methods - {"HEAD", "OPTIONS"}):
            spec = EXPECTATIONS[(method, path)]
            params = spec["params"](world) if spec["params"] is not None else {}
            url = path.format(**{**path_params(world), **params})
            body = spec["body"](world) if spec["body"] else None
            headers = _headers(world, "platform_admin", fresh=spec["fresh"])
            read.clear()  # making the world above reads rows too: only the request counts
            client.request(method, url, json=body, headers=headers)
            if bool(read) == ((method, path) in WITHOUT_A_ROW):
                wrong.append(f"{method} {path}: read {sorted(read) or 'no row'}")
    assert not wrong, "\n".join(wrong)


# The "needs MFA" column, route by route: True when an otherwise-allowed caller with a
# stale session (past its MFA freshness, no code) gets 403 mfa_required; False when that
# session works; a string says why the question does not arise. A route without a
# decision fails the test, so a new route cannot leave sudo mode out unnoticed.
_NO_SESSION = "n/a: no session decides (public, or credentials in the request)"
NEEDS_MFA: dict[tuple[str, str], bool | str] = {
    **dict.fromkeys(
        [k for k, why in WITHOUT_A_ROW.items() if str(why).startswith("public")], _NO_SESSION
    ),
    ("POST", "/v1/auth/step-up"): "n/a: the step-up is how a session becomes fresh",
    ("POST", "/v1/me/totp/confirm"): "n/a: the code in the body decides",
    ("DELETE", "/v1/runner/token"): _NO_SESSION,
    ("GET", "/v1/auth/token/lookup-self"): _NO_SESSION,
    ("POST", "/v1/auth/token/revoke-self"): _NO_SESSION,
    ("GET", "/v1/lines/data/{tenant_id}/{line_id}"): "n/a: runners only",
    ("GET", "/v1/tenants/{tenant_id}/lines/{line_id}/credential"): "n/a: runners only",
    ("POST", "/v1/tenants/{tenant_id}/lines/{line_id}/sign"): "n/a: runners only",
    ("POST", "/v1/tenants/{tenant_id}/lines/{line_id}/appsecret-proof"): "n/a: runners only",
    ("POST", "/v1/auth/logout"): False,
    ("GET", "/v1/me"): False,
    ("POST", "/v1/me/totp"): False,  # first enrolment; re-enrolment: tests/api/test_sessions
    ("POST", "/v1/me/password"): False,
    ("POST", "/v1/users"): True,
    ("GET", "/v1/users"): False,
    ("DELETE", "/v1/users/{user_id}"): True,
    ("POST", "/v1/users/{user_id}/disable"): True,
    ("POST", "/v1/users/{user_id}/enable"): True,
    ("GET", "/v1/me/sessions"): False,
    ("DELETE", "/v1/me/sessions/{session_id}"): False,
    ("GET", "/v1/me/export"): False,
    ("DELETE", "/v1/me"): "n/a: the password and code in the body decide (even when fresh)",
    # Plain members here; owner/admin targets need MFA: test_last_owner_rules below.
    ("PATCH", "/v1/tenants/{tenant_id}/members/{user_id}"): False,
    ("DELETE", "/v1/tenants/{tenant_id}/members/{user_id}"): False,
    ("POST", "/v1/tenants"): False,
    ("GET", "/v1/tenants"): False,
    ("GET", "/v1/tenants/{tenant_id}/members"): False,
    # A plain member here; owner/admin members: tests/security/test_stolen_session.py.
    ("POST", "/v1/tenants/{tenant_id}/members"): False,
    ("POST", "/v1/tenants/{tenant_id}/lines"): False,
    ("GET", "/v1/tenants/{tenant_id}/lines"): False,
    ("GET", "/v1/tenants/{tenant_id}/lines/{line_id}"): False,
    ("PUT", "/v1/tenants/{tenant_id}/lines/{line_id}/credential"): True,
    ("POST", "/v1/tenants/{tenant_id}/lines/{line_id}/revoke"): True,
    ("POST", "/v1/tenants/{tenant_id}/lines/{line_id}/suspend"): False,
    ("POST", "/v1/tenants/{tenant_id}/lines/{line_id}/resume"): True,
    ("POST", "/v1/tenants/{tenant_id}/suspend"): False,
    ("POST", "/v1/tenants/{tenant_id}/resume"): True,
    ("POST", "/v1/tenants/{tenant_id}/lines/{line_id}/check"): False,
    ("POST", "/v1/tenants/{tenant_id}/lines/{line_id}/refresh"): False,
    ("DELETE", "/v1/tenants/{tenant_id}"): True,
    ("GET", "/v1/tenants/{tenant_id}/export"): True,
    ("GET", "/v1/audit/events"): False,
    ("GET", "/v1/audit/verify"): False,
    ("GET", "/v1/audit/export"): False,
    ("POST", "/v1/tenants/{tenant_id}/keys/rotate"): True,
    ("GET", "/v1/tenants/{tenant_id}/keys"): False,
    ("POST", "/v1/runners"): True,
    ("GET", "/v1/runners"): False,
    ("GET", "/v1/runners/{runner_id}"): False,
    ("POST", "/v1/runners/{runner_id}/rotate-secret"): True,
    ("DELETE", "/v1/runners/{runner_id}"): True,
    ("POST", "/v1/tenants/{tenant_id}/grants"): True,
    ("GET", "/v1/tenants/{tenant_id}/grants"): False,
    ("DELETE", "/v1/tenants/{tenant_id}/grants/{grant_id}"): True,
    ("POST", "/v1/tenants/{tenant_id}/webhooks"): True,
    ("GET", "/v1/tenants/{tenant_id}/webhooks"): False,
    ("DELETE", "/v1/tenants/{tenant_id}/webhooks/{webhook_id}"): False,
    ("POST", "/v1/tenants/{tenant_id}/webhooks/{webhook_id}/test"): False,
    ("GET", "/v1/tenants/{tenant_id}/webhooks/{webhook_id}/deliveries"): False,
    ("POST", "/v1/webhooks"): True,
    ("GET", "/v1/webhooks"): False,
    ("DELETE", "/v1/webhooks/{webhook_id}"): False,
    ("POST", "/v1/webhooks/{webhook_id}/test"): False,
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): False,
}


def test_every_permission_row_decides_mfa() -> None:
    assert set(authz.TENANT_NEEDS_MFA) == set(authz.Permission)
    assert set(authz.PLATFORM_NEEDS_MFA) == set(authz.PlatformPermission)


def test_every_route_has_an_mfa_decision_that_holds(client: TestClient, world: World) -> None:
    """A platform admin (allowed on every session route) with a stale session."""
    wrong: list[str] = []
    for path, methods in app_routes(client.app.routes):  # type: ignore[attr-defined]
        for method in sorted(methods - {"HEAD", "OPTIONS"}):
            decision = NEEDS_MFA.get((method, path))
            if decision is None:
                wrong.append(f"{method} {path}: no MFA decision")
                continue
            if isinstance(decision, str):
                continue
            spec = EXPECTATIONS[(method, path)]
            params = spec["params"](world) if spec["params"] is not None else {}
            url = path.format(**{**path_params(world), **params})
            body = spec["body"](world) if spec["body"] else None
            stale = _headers(world, "platform_admin", fresh=False)
            response = client.request(method, url, json=body, headers=stale)
            allowed = spec["expected"].get("platform_admin", spec["expected"].get(_ALL))
            if decision and (response.status_code, _code(response)) != (403, "mfa_required"):
                wrong.append(f"{method} {path}: stale session got {response.status_code}")
            if not decision and response.status_code != allowed:
                wrong.append(f"{method} {path}: stale session got {response.status_code}")
    assert not wrong, "\n".join(wrong)


def _code(response: Any) -> str | None:
    if response.headers.get("content-type", "").startswith("application/problem+json"):
        code = response.json().get("code")
        return code if isinstance(code, str) else None
    return None


def test_last_owner_rules_and_mfa_for_managers(client: TestClient, world: World) -> None:
    """409 for leaving a tenant without an owner, by each route that could; 403
    mfa_required for touching an owner or admin, or deleting a user, on a stale session."""
    runtime, tenant = world.runtime, world.tenant_id
    owner_id = world.user_ids["owner"]  # the main tenant's only owner
    owner = bearer(new_session(runtime, owner_id, mfa_fresh=True))
    admin = bearer(new_session(runtime, world.user_ids["platform_admin"], mfa_fresh=True))
    members = f"/v1/tenants/{tenant}/members/{owner_id}"
    refused = {
        "demote": client.patch(members, json={"role": "admin"}, headers=owner),
        "remove": client.delete(members, headers=owner),
        "delete user": client.delete(f"/v1/users/{owner_id}", headers=admin),
        "delete me": client.request(
            "DELETE", "/v1/me", json={"password": TEST_PASSWORD}, headers=owner
        ),
    }
    for what, response in refused.items():
        assert (response.status_code, _code(response)) == (409, "conflict"), what
    assert client.get("/v1/me", headers=owner).status_code == 200  # still there
    stale = bearer(new_session(runtime, owner_id))
    admin_id = world.user_ids["admin"]
    for method, path, body in (
        ("PATCH", f"/v1/tenants/{tenant}/members/{admin_id}", {"role": "member"}),
        ("DELETE", f"/v1/tenants/{tenant}/members/{admin_id}", None),
        ("PATCH", f"/v1/tenants/{tenant}/members/{world.user_ids['member']}", {"role": "owner"}),
    ):
        response = client.request(method, path, json=body, headers=stale)
        assert (response.status_code, _code(response)) == (403, "mfa_required"), path
    target = _fresh_user(world)["user_id"]
    stale_admin = bearer(new_session(runtime, world.user_ids["platform_admin"]))
    response = client.delete(f"/v1/users/{target}", headers=stale_admin)
    assert (response.status_code, _code(response)) == (403, "mfa_required")
    # Strangers to the tenant get 404 for its members, whoever the member is.
    stranger = bearer(new_session(runtime, world.user_ids["other_owner"], mfa_fresh=True))
    assert client.delete(members, headers=stranger).status_code == 404
    assert client.patch(members, json={"role": "member"}, headers=stranger).status_code == 404
