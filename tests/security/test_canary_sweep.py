"""The canary sweep: plant known secrets through every write path of a real server, then
look for them everywhere an operator, a reviewer or an attacker with a copy could look.

A real ``linevault serve`` process (debug logging, stdout and stderr captured) on SQLite
and on PostgreSQL. Secrets planted or minted: the bootstrap admin's password and TOTP
seed, mfa tokens, session tokens, TOTP codes, a created user's initial password, a new
TOTP seed, recovery codes (one used to log in), a changed password, runner client
secrets (incl. a rotated one) and access tokens (form and HTTP Basic), every credential
field of every line type incl. a generated widget secret (and their use through sign and
appsecret-proof), replacements, and wrong
guesses that look like secrets (a password typed into the email field, a secret in a
query string, malformed credentials). Each may appear only in the one response that
legitimately returns it (its create or token response, a runner's fetch) and nowhere
else: no other response body or header (the console's pages included: every GET
console route, as a platform admin, once everything is planted), no server log line,
no audit event (API and database), no audit export file, no byte of the database
(SQLite file and WAL while the server runs; PostgreSQL: ``pg_dump`` of the whole database).

tests/security/test_no_secret_leaks.py is the in-process companion (caplog, every
text column, shredded envelopes leaving the SQLite files).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import os
import re
import secrets
import string
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from fastapi import FastAPI

from api.console import install_console
from tests.support.db import pg_dump
from tests.support.lines import planted
from tests.support.platforms import PlatformStandIn, platform_standin
from tests.support.routes import console_routes
from tests.support.server import LINEVAULT, Admin, ServerProcess, running_server

# Every unauthenticated failure audited in full (not aggregated after the first), so the
# sweep sees what each one would record.
LOG_ENV = {"LINEVAULT_LOG_LEVEL": "debug", "LINEVAULT_UNAUTH_AUDITED_PER_WINDOW": "1000"}


class Codes:
    """TOTP codes in strictly increasing steps (each code works once), with no sleeping:
    the server accepts the previous, current and next step, so three uses per 30 s."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}
        self.used: list[str] = []

    def next(self, secret: str) -> str:
        totp = pyotp.TOTP(secret)
        now_step = int(totp.timecode(datetime.now(UTC)))
        step = max(now_step - 1, self.last.get(secret, -(10**9)) + 1)
        assert step <= now_step + 1, "more than three codes in one 30 s step"
        self.last[secret] = step
        code = totp.at(step * 30)
        self.used.append(code)
        return code


class Sweep:
    """Calls the server, keeps every response, and knows which may carry which secret."""

    def __init__(self, server: ServerProcess) -> None:
        self.http = httpx.Client(base_url=server.url, timeout=30)
        self.seen: list[str] = []
        self.secrets: set[str] = set()
        self.allowed: dict[str, set[int]] = defaultdict(set)

    def plant(self, *values: str) -> None:
        for value in values:
            assert len(value) >= 6
            self.secrets.add(value)

    def call(self, method: str, url: str, *, expect: int, **kwargs: Any) -> httpx.Response:
        response = self.http.request(method, url, **kwargs)
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        self.seen.append(f"{method} {url} -> {response.status_code}\n{headers}\n\n{response.text}")
        assert response.status_code == expect, (method, url, response.text)
        return response

    def returns(self, response: httpx.Response, *values: str) -> None:
        """``response`` (the latest) legitimately carries ``values``, once."""
        index = len(self.seen) - 1
        assert response.text in self.seen[index]
        for value in values:
            assert value in response.text
            self.plant(value)
            self.allowed[value].add(index)


def _token_field_swaps(s: Sweep, client_id: str, client_secret: str) -> None:
    """Every way the token request's values can land in the wrong fields, by form and by
    HTTP Basic: refused, and the secret recorded nowhere (a ``client_id`` without the
    client id format is kept only as a keyed reference)."""
    form = "application/x-www-form-urlencoded"
    values = {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_secret": client_secret,
    }
    for order in itertools.permutations(values.values()):
        fields = dict(zip(values, order, strict=True))
        if fields == values:
            continue
        expect = 401 if fields["grant_type"] == "client_credentials" else 400
        s.call("POST", "/v1/runner/token", data=fields, expect=expect)
        del fields["client_secret"]  # the secret alone in a wrong field
        if client_secret in fields.values():
            s.call("POST", "/v1/runner/token", data=fields, expect=expect)

    def basic(user: str, password: str, body: str = "grant_type=client_credentials") -> None:
        raw = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers = {"Content-Type": form, "Authorization": f"Basic {raw}"}
        expect = 401 if body == "grant_type=client_credentials" else 400
        s.call("POST", "/v1/runner/token", content=body, headers=headers, expect=expect)

    basic(client_secret, client_id)  # swapped
    basic(client_secret, "")  # the secret as the user name, no password
    basic(client_secret, client_secret)
    basic(client_id, client_secret, body=f"grant_type={client_secret}")
    basic(client_id, client_secret, body=f"grant_type=client_credentials&client_id={client_secret}")


def _set_cookies(response: httpx.Response) -> dict[str, str]:
    """The cookie values a console response sets (the jar would keep the Secure ones from
    a plain-HTTP loopback server to itself)."""
    found = {}
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        found[name] = rest.split(";", 1)[0].strip('"')
    return found


def _console_cookie_header(jar: dict[str, str]) -> dict[str, str]:
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in jar.items() if v)}


def _console_sign_in(s: Sweep, admin: Admin, codes: Codes) -> dict[str, str]:
    """The console's two sign-in steps; the cookies it sets are planted as secrets, each
    allowed only in the response that sets it."""
    jar: dict[str, str] = {}

    def step(method: str, url: str, form: dict[str, str] | None, expect: int) -> httpx.Response:
        r = s.call(method, url, data=form, headers=_console_cookie_header(jar), expect=expect)
        for name, value in _set_cookies(r).items():
            jar[name] = value
            if value:
                s.plant(value)
                s.allowed[value].add(len(s.seen) - 1)
        return r

    page = step("GET", "/ui/login", None, 200)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    form = {"csrf_token": token.group(1), "email": admin.email, "password": admin.password}
    assert step("POST", "/ui/login", form, 303).headers["location"].startswith("/ui/login/code")
    page = step("GET", "/ui/login/code", None, 200)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    form = {"csrf_token": token.group(1), "mfa_code": codes.next(admin.totp_secret)}
    step("POST", "/ui/login/code", form, 303)
    assert jar.get("lv_session")
    return jar


def _console_sweep(s: Sweep, admin: Admin, codes: Codes, values: dict[str, list[str]]) -> list[str]:
    """Every GET route of the console (tests.support.routes.console_routes, so a new page
    is swept without a change here), for every known value of its path parameters; the
    answers join ``s.seen``, where the final search looks for every planted secret."""
    app = FastAPI()
    install_console(app)
    jar = _console_sign_in(s, admin, codes)
    pages: list[str] = []
    for path, methods in console_routes(app.routes):
        if "GET" not in methods:
            continue
        names = [n for _, n, _, _ in string.Formatter().parse(path) if n]
        missing = [n for n in names if n not in values]
        assert not missing, f"the canary sweep has no value for {missing} of GET {path}"
        for combo in itertools.product(*(values[n] for n in names)):
            url = path.format(**dict(zip(names, combo, strict=True)))
            r = s.http.get(url, headers=_console_cookie_header(jar))
            headers = "\n".join(f"{k}: {v}" for k, v in r.headers.items())
            s.seen.append(f"GET {url} -> {r.status_code}\n{headers}\n\n{r.text}")
            assert r.status_code < 500, (url, r.text[-500:])
            pages.append(r.text)
    assert len(pages) >= 8
    return pages


@pytest.fixture
def served(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[ServerProcess, Admin, str | None, PlatformStandIn]]:
    """The server, with platform checks on against the local stand-in: every planted
    token also travels in an outbound URL (and httpx would log it at debug)."""
    database_url: str | None = None
    if backend == "postgresql":
        database_url = request.getfixturevalue("postgres_server").create_database()
    with platform_standin() as standin:
        env = {
            **LOG_ENV,
            "LINEVAULT_PROVIDER_CHECKS": "on",
            "LINEVAULT_TELEGRAM_API_URL": standin.url,
            "LINEVAULT_GRAPH_API_URL": standin.url,
            "LINEVAULT_INSTAGRAM_API_URL": standin.url,
        }
        with running_server(tmp_path, database_url=database_url, env=env) as (server, admin):
            yield server, admin, database_url, standin


def test_planted_secrets_appear_only_where_they_belong(
    served: tuple[ServerProcess, Admin, str | None, PlatformStandIn], tmp_path: Path
) -> None:
    server, admin, database_url, standin = served
    s = Sweep(server)
    codes = Codes()
    s.plant(admin.password, admin.totp_secret)

    # -- humans: login, the second factor, a created user, enrollment, password change ---
    r = s.call(
        "POST",
        "/v1/auth/login",
        json={"email": admin.email, "password": admin.password},
        expect=200,
    )
    s.returns(r, r.json()["mfa_token"])
    code = codes.next(admin.totp_secret)
    r = s.call(
        "POST", "/v1/auth/mfa", json={"mfa_token": r.json()["mfa_token"], "code": code}, expect=200
    )
    s.returns(r, r.json()["session_token"])
    root = {"Authorization": f"Bearer {r.json()['session_token']}"}

    r = s.call(
        "POST",
        "/v1/users",
        json={"email": "owner@canary.test", "platform_role": None},
        headers=root,
        expect=201,
    )
    initial = r.json()["initial_password"]
    s.returns(r, initial)
    r = s.call(
        "POST",
        "/v1/auth/login",
        json={"email": "owner@canary.test", "password": initial},
        expect=200,
    )
    s.returns(r, r.json()["session_token"])
    owner = {"Authorization": f"Bearer {r.json()['session_token']}"}
    owner_id = s.call("GET", "/v1/me", headers=owner, expect=200).json()["id"]
    r = s.call("POST", "/v1/me/totp", json={}, headers=owner, expect=200)
    totp_secret = r.json()["secret"]
    s.returns(r, totp_secret)
    r = s.call(
        "POST",
        "/v1/me/totp/confirm",
        json={"code": codes.next(totp_secret)},
        headers=owner,
        expect=200,
    )
    recovery = r.json()["recovery_codes"]
    s.returns(r, *recovery)
    new_password = "PLANTpw-" + secrets.token_urlsafe(24)
    s.plant(new_password)
    s.call(
        "POST",
        "/v1/me/password",
        json={"current_password": initial, "new_password": new_password},
        headers=owner,
        expect=204,
    )
    r = s.call(
        "POST",
        "/v1/auth/login",
        json={"email": "owner@canary.test", "password": new_password},
        expect=200,
    )
    s.returns(r, r.json()["mfa_token"])
    r = s.call(
        "POST",
        "/v1/auth/mfa",
        json={"mfa_token": r.json()["mfa_token"], "code": recovery[0]},
        expect=200,
    )
    s.returns(r, r.json()["session_token"])
    owner = {"Authorization": f"Bearer {r.json()['session_token']}"}
    s.call(
        "POST",
        "/v1/auth/step-up",
        json={"code": codes.next(totp_secret)},
        headers=owner,
        expect=200,
    )

    # Mistakes that carry secrets: a password typed into the email field, wrong codes.
    typo = "PLANTtypo-" + secrets.token_urlsafe(20)
    s.plant(typo)
    s.call("POST", "/v1/auth/login", json={"email": typo, "password": typo}, expect=401)
    s.call(
        "POST", "/v1/auth/login", json={"email": "owner@canary.test", "password": typo}, expect=401
    )
    # The owner's email and password swapped: the password sits in the email field.
    s.call(
        "POST",
        "/v1/auth/login",
        json={"email": new_password, "password": "owner@canary.test"},
        expect=401,
    )
    s.call("POST", "/v1/auth/mfa", json={"mfa_token": typo, "code": "123456"}, expect=401)
    s.call("GET", "/v1/me", headers={"Authorization": f"Bearer {typo}"}, expect=401)

    # -- tenants and lines: every credential field of every type ----------------------
    r = s.call(
        "POST",
        "/v1/tenants",
        json={"name": "Canary", "owner_user_id": owner_id},
        headers=root,
        expect=201,
    )
    tenant = r.json()["id"]
    base = f"/v1/tenants/{tenant}/lines"
    lines: dict[str, str] = {}
    current: dict[str, dict[str, str]] = {}
    for kind in ("telegram", "instagram", "messenger", "widget"):
        cred = planted(kind)
        s.plant(*(v for k, v in cred.items() if k not in ("user_id", "page_id")))
        r = s.call(
            "POST",
            base,
            json={"type": kind, "name": kind, "credential": cred},
            headers=owner,
            expect=201,
        )
        lines[kind], current[kind] = r.json()["id"], cred
    r = s.call(
        "POST",
        base,
        json={"type": "widget", "name": "generated", "credential": {}},
        headers=owner,
        expect=201,
    )
    generated = r.json()["generated"]["signing_secret"]
    s.returns(r, generated)
    lines["generated"], current["generated"] = r.json()["id"], {"signing_secret": generated}
    for kind in ("telegram", "instagram"):
        cred = planted(kind)
        s.plant(*(v for k, v in cred.items() if k != "user_id"))
        s.call(
            "PUT",
            f"{base}/{lines[kind]}/credential",
            json={"credential": cred},
            headers=owner,
            expect=200,
        )
        current[kind] = cred
    leak = "PLANTbad" + secrets.token_urlsafe(30)
    s.plant(leak)
    for body in (
        {"type": "telegram", "name": "x", "credential": {"bot_token": leak}},
        {"type": "instagram", "name": "x", "credential": {"access_token": leak, leak: leak}},
        {"type": leak, "name": "x", "credential": {}},
    ):
        s.call("POST", base, json=body, headers=owner, expect=422)
    # -- platform checks: a token the platform refuses, and checks of every line ----------
    standin.fail = "401"
    refused = planted("telegram")
    s.plant(refused["bot_token"])
    r = s.call(
        "POST",
        base,
        json={"type": "telegram", "name": "x", "credential": refused},
        headers=owner,
        expect=422,
    )
    assert r.json()["code"] == "credential_rejected"
    standin.fail = None
    for kind in ("telegram", "instagram", "messenger", "widget"):
        r = s.call("POST", f"{base}/{lines[kind]}/check", headers=owner, expect=200)
        assert r.json()["provider_status"] == ("not_checked" if kind == "widget" else "ok")
    assert standin.calls["telegram.getMe"] >= 4 and standin.calls["graph.page"] >= 2
    s.call(
        "PUT",
        f"{base}/{lines['messenger']}/credential",
        json={"credential": {"page_access_token": 7, "x": leak}},
        headers=owner,
        expect=422,
    )

    # -- runners: secrets, rotation, tokens by form and by Basic, fetches ------------------
    r = s.call("POST", "/v1/runners", json={"name": "canary"}, headers=root, expect=201)
    runner_id, client_id = r.json()["id"], r.json()["client_id"]
    old_secret = r.json()["client_secret"]
    s.returns(r, old_secret)
    r = s.call("POST", f"/v1/runners/{runner_id}/rotate-secret", headers=root, expect=200)
    client_secret = r.json()["client_secret"]
    s.returns(r, client_secret)
    grant_id = s.call(
        "POST",
        f"/v1/tenants/{tenant}/grants",
        json={"runner_id": runner_id, "lines": ["*"]},
        headers=owner,
        expect=201,
    ).json()["id"]
    form = {"grant_type": "client_credentials", "client_id": client_id}
    s.call("POST", "/v1/runner/token", data={**form, "client_secret": old_secret}, expect=401)
    s.call(
        "POST", "/v1/runner/token", params={"client_secret": client_secret}, data=form, expect=400
    )
    r = s.call(
        "POST", "/v1/runner/token", data={**form, "client_secret": client_secret}, expect=200
    )
    s.returns(r, r.json()["access_token"])
    by_form = {"Authorization": f"Bearer {r.json()['access_token']}"}
    basic = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
    r = s.call(
        "POST",
        "/v1/runner/token",
        content="grant_type=client_credentials",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": f"Basic {basic}",
        },
        expect=200,
    )
    s.returns(r, r.json()["access_token"])
    by_basic = {
        "Authorization": f"Bearer {r.json()['access_token']}",
        "X-Workflow-Id": "wf-1",
        "X-Run-Id": "run-1",
    }
    _token_field_swaps(s, client_id, client_secret)
    for kind, line_id in lines.items():
        r = s.call(
            "GET",
            f"{base}/{line_id}/credential",
            headers=by_form if kind < "m" else by_basic,
            expect=200,
        )
        s.returns(r, *(v for k, v in current[kind].items() if k not in ("user_id", "page_id")))
    s.call("GET", f"{base}/{lines['telegram']}/credential", headers=owner, expect=403)
    # Use without reveal: the answer is an HMAC, never the secret it was made with.
    r = s.call(
        "POST",
        f"{base}/{lines['widget']}/sign",
        json={"message": "hi"},
        headers=by_form,
        expect=200,
    )
    key = current["widget"]["signing_secret"].encode()
    assert r.json()["signature"] == hmac.new(key, b"hi", hashlib.sha256).hexdigest()
    for kind in ("instagram", "messenger"):
        r = s.call("POST", f"{base}/{lines[kind]}/appsecret-proof", headers=by_form, expect=200)
        assert len(r.json()["appsecret_proof"]) == 64
    s.call(
        "POST", f"{base}/{lines['widget']}/sign", json={"message": "x"}, headers=owner, expect=403
    )

    # -- revocation (a reason is stored: a benign one), reads, the audit trail ------------
    s.call(
        "POST",
        f"{base}/{lines['messenger']}/revoke",
        json={"reason": "rotated after review", "mfa_code": codes.next(totp_secret)},
        headers={"Authorization": owner["Authorization"]},
        expect=200,
    )
    s.call("GET", f"{base}/{lines['messenger']}/credential", headers=by_form, expect=410)
    s.call("GET", base, headers=owner, expect=200)
    s.call("GET", f"/v1/tenants/{tenant}/export", headers=owner, expect=200)
    s.call("GET", "/v1/runners", headers=root, expect=200)
    s.call("DELETE", "/v1/runner/token", headers=by_basic, expect=204)
    s.call("GET", f"{base}/{lines['telegram']}/credential", headers=by_basic, expect=401)
    events: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
        page = s.call("GET", "/v1/audit/events", params=params, headers=root, expect=200).json()
        events += page["events"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert s.call("GET", "/v1/audit/verify", headers=root, expect=200).json()["ok"] is True
    # -- the console: every GET page as a platform admin, with every line planted ---------
    path_values = {
        "tenant_id": [tenant],
        "line_id": list(lines.values()),
        "runner_id": [runner_id],
        "grant_id": [grant_id],
        "user_id": [owner_id],
        "seq": [str(events[-1]["seq"])],
        "event_id": [str(events[-1]["seq"])],
    }
    pages = _console_sweep(s, admin, codes, path_values)
    assert any("Canary" in p and "telegram" in p for p in pages)  # the sweep sees the lines
    assert len(events) > 40
    actions = {e["action"] for e in events}
    for action in (
        "auth.login",
        "auth.mfa",
        "credential.create",
        "credential.check",
        "credential.fetch",
        "credential.sign",
        "credential.proof",
        "runner.token",
    ):
        assert action in actions
    s.call("POST", "/v1/auth/logout", headers=owner, expect=204)
    s.call("GET", "/v1/me", headers=owner, expect=401)

    export = tmp_path / "audit.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEVAULT_")}
    env["LINEVAULT_DATA_DIR"] = str(server.data_dir)
    if database_url:
        env["LINEVAULT_DATABASE_URL"] = database_url
    done = subprocess.run(
        [LINEVAULT, "audit", "export", "--out", str(export)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    exported = export.read_text()
    assert exported.count("\n") >= len(events)

    # -- the search ------------------------------------------------------------------------
    if database_url is None:
        db = server.data_dir / "linevault.db"
        stored = [p.read_bytes() for p in (db, db.with_name(db.name + "-wal")) if p.exists()]
    else:
        stored = [pg_dump(database_url)]
    assert sum(map(len, stored)) > 20_000
    logs = server.log_path.read_text(errors="replace")
    assert '"level": "debug"' in logs or '"level": "info"' in logs  # debug logging was on
    audit_api = repr(events)
    # Positive controls: each place searched does hold what it should (so the search sees).
    assert any(client_id.encode() in blob for blob in stored)
    assert any(f"{tenant}".encode() in blob for blob in stored)
    assert "/v1/runner/token" in logs and client_id in exported and runner_id in audit_api
    assert len(s.secrets) >= 30
    for secret in s.secrets:
        name = secret[:10] + "..."
        leaked = [
            i for i, text in enumerate(s.seen) if secret in text and i not in s.allowed[secret]
        ]
        assert not leaked, f"{name} in response(s) {[s.seen[i].splitlines()[0] for i in leaked]}"
        assert secret not in logs, f"{name} in the server log"
        assert secret not in audit_api, f"{name} in an audit event (API)"
        assert secret not in exported, f"{name} in the audit export"
        assert not any(secret.encode() in blob for blob in stored), f"{name} in the database"
    # TOTP codes: six digits would match by chance in binary or hex bytes, so the database
    # is left out (it stores only the last used step); everywhere else, as a whole number.
    assert len(codes.used) >= 4
    for code in [*codes.used, "123456"]:
        pattern = re.compile(rf"(?<![0-9.]){code}(?![0-9])")
        for where, text in (("log", logs), ("audit", audit_api), ("export", exported)):
            assert not pattern.search(text), f"a TOTP code in the {where}"
        assert not any(pattern.search(text.split("\n\n", 1)[1]) for text in s.seen)
