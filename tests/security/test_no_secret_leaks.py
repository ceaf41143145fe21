"""A full scenario over HTTP, then a search for the planted secrets everywhere a human or
an operator could look: every response (status line, headers, body), every log record,
and the raw database (SQLite file bytes incl. WAL; on PostgreSQL every text/bytea column).
Also: after revocation and tenant deletion, the destroyed envelopes are gone from the
SQLite files themselves (secure_delete + WAL truncation).

In-process (TestClient, caplog), so it can reach the service layer directly. Its
real-server companion, tests/security/test_canary_sweep.py, plants secrets through every
write path (logins, codes, tokens, runner secrets, every line type) of a running
``linevault serve`` and searches its logs, the audit API and export, and pg_dump too."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from tests.support.identity import add_membership, bearer, make_user, new_session, totp_code
from tests.support.lines import make_tenant, planted
from vault.runtime import Runtime
from vault.settings import Settings
from vault.storage.engine import unit_of_work
from vault.storage.models import Kek, Line


class Recorder:
    """Wraps a TestClient and keeps the text of every response."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.seen: list[str] = []

    def __call__(self, method: str, url: str, **kwargs):  # type: ignore[no-untyped-def]
        response = self.client.request(method, url, **kwargs)
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        self.seen.append(f"{response.status_code}\n{headers}\n\n{response.text}")
        return response


def database_blobs(runtime: Runtime, settings: Settings) -> list[bytes]:
    """Everything stored, as bytes: the SQLite files, or every text/bytea value in PG."""
    if runtime.engine.dialect.name == "sqlite":
        # Read while the pool's connections are open, as on a live server: closing the
        # last connection would checkpoint and delete the WAL and hide what it holds.
        db = Path(runtime.engine.url.database or "")
        files = [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
        return [f.read_bytes() for f in files if f.exists()]
    blobs: list[bytes] = []
    with runtime.engine.connect() as conn:
        columns = conn.execute(
            text(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = 'public' AND data_type IN "
                "('text', 'character varying', 'bytea', 'json', 'jsonb', 'character')"
            )
        ).all()
        assert len(columns) > 20
        for table, column in columns:
            for (value,) in conn.execute(text(f'SELECT "{column}" FROM "{table}"')):
                if value is None:
                    continue
                blobs.append(
                    bytes(value) if isinstance(value, (bytes, memoryview)) else str(value).encode()
                )
    return blobs


def test_planted_secrets_never_leak(
    runtime: Runtime, client: TestClient, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    call = Recorder(client)
    tenant = make_tenant(runtime)
    owner = make_user(runtime, "owner@example.test", totp=True)
    member = make_user(runtime, "member@example.test")
    add_membership(runtime, tenant, owner.id, "owner")
    add_membership(runtime, tenant, member.id, "member")
    assert owner.totp_secret
    headers = bearer(new_session(runtime, owner.id))
    fresh = bearer(new_session(runtime, owner.id, mfa_fresh=True))
    member_headers = bearer(new_session(runtime, member.id))
    base = f"/v1/tenants/{tenant}/lines"

    secrets: list[str] = []
    ids: dict[str, str] = {}
    for kind in ("telegram", "instagram", "messenger", "widget"):
        cred = planted(kind)
        secrets += [v for k, v in cred.items() if k not in ("user_id", "page_id")]
        r = call(
            "POST", base, json={"type": kind, "name": kind, "credential": cred}, headers=headers
        )
        assert r.status_code == 201
        ids[kind] = r.json()["id"]
    # Replace twice, with new secrets each time.
    for _ in range(2):
        cred = planted("telegram")
        secrets.append(cred["bot_token"])
        r = call(
            "PUT",
            f"{base}/{ids['telegram']}/credential",
            json={"credential": cred},
            headers=fresh,  # replacing needs MFA (sudo mode)
        )
        assert r.status_code == 200
    # Mistakes that carry secrets: malformed, unknown field, wrong type, secret as a key.
    leaky = "PLANTleak" + "Z" * 30
    secrets.append(leaky)
    for body in (
        {"type": "telegram", "name": "x", "credential": {"bot_token": leaky}},
        {"type": "telegram", "name": "x", "credential": {"bot_token": "1:" + leaky, leaky: 1}},
        {"type": "instagram", "name": "x", "credential": {"access_token": leaky + " "}},
        {
            "type": "messenger",
            "name": "x",
            "credential": {"page_id": leaky, "page_access_token": leaky},
        },
        {"type": leaky, "name": "x", "credential": {}},
        {"type": "widget", "name": "x", "credential": leaky},
    ):
        assert call("POST", base, json=body, headers=headers).status_code == 422
    r = call(
        "PUT",
        f"{base}/{ids['instagram']}/credential",
        json={"credential": {"access_token": leaky, "x": leaky}},
        headers=fresh,
    )
    assert r.status_code == 422
    # Reads by every role, the expiry filter, the export, revocation, deletion.
    for h in (headers, member_headers):
        assert call("GET", base, headers=h).status_code == 200
        for line_id in ids.values():
            assert call("GET", f"{base}/{line_id}", headers=h).status_code == 200
    assert call("GET", base, params={"expiring_within": "7d"}, headers=headers).status_code == 200
    assert (
        call(
            "POST", f"{base}/{ids['messenger']}/revoke", json={"reason": "rotate"}, headers=headers
        ).status_code
        == 403
    )
    code = totp_code(owner.totp_secret, runtime)
    assert (
        call(
            "POST", f"{base}/{ids['messenger']}/revoke", json={"mfa_code": code}, headers=headers
        ).status_code
        == 200
    )
    assert call("GET", f"/v1/tenants/{tenant}/export", headers=fresh).status_code == 200
    assert call("GET", "/v1/me", headers=headers).status_code == 200
    assert call("GET", "/v1/tenants", headers=headers).status_code == 200
    # The audit trail as a reviewer reads it, when that route exists on this branch.
    call("GET", "/v1/audit/events", params={"tenant_id": tenant, "limit": 1000}, headers=fresh)

    assert len(secrets) == 9
    responses = "\n".join(call.seen)
    logs = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    for secret in secrets:
        assert secret not in responses, "a planted secret appeared in a response"
        assert secret not in logs, "a planted secret appeared in a log record"
        for chunk in (secret[:16], secret[-16:]):
            assert chunk not in responses
    blobs = database_blobs(runtime, settings)
    assert sum(len(b) for b in blobs) > 5_000
    for secret in secrets:
        needle = secret.encode()
        assert not any(needle in blob for blob in blobs), "a planted secret is in the database"


@pytest.mark.parametrize("backend", ["sqlite"])  # a file-level property; PG: docs/lines.md
def test_shredded_envelopes_leave_the_sqlite_files(
    runtime: Runtime, client: TestClient, settings: Settings
) -> None:
    tenant, kept = make_tenant(runtime), make_tenant(runtime, "kept")
    admin = make_user(runtime, "admin@corp.test", platform_role="admin")
    headers = bearer(new_session(runtime, admin.id, mfa_fresh=True))
    add_membership(runtime, tenant, admin.id, "owner")
    ids = []
    for t in (tenant, tenant, kept):
        r = client.post(
            f"/v1/tenants/{t}/lines",
            json={"type": "telegram", "name": "x", "credential": planted("telegram")},
            headers=headers,
        )
        assert r.status_code == 201
        ids.append(r.json()["id"])
    with unit_of_work(runtime.sessions) as session:
        revoked_env = session.execute(
            select(Line.wrapped_dek, Line.ciphertext).where(Line.id == ids[2])
        ).one()
        tenant_env = [
            blob
            for row in session.execute(
                select(Line.wrapped_dek, Line.ciphertext).where(Line.tenant_id == tenant)
            )
            for blob in row
        ]
        tenant_keks = list(
            session.execute(select(Kek.wrapped).where(Kek.tenant_id == tenant)).scalars()
        )
    doomed = [bytes(b) for b in [*revoked_env, *tenant_env, *tenant_keks] if b]
    assert len(doomed) == 7
    before = database_blobs(runtime, settings)
    assert all(any(d in blob for blob in before) for d in doomed)  # the scan can see them

    assert (
        client.post(
            f"/v1/tenants/{kept}/lines/{ids[2]}/revoke", json={}, headers=headers
        ).status_code
        == 200
    )
    assert client.request("DELETE", f"/v1/tenants/{tenant}", headers=headers).status_code == 200
    after = database_blobs(runtime, settings)
    left = [d for d in doomed if any(d in blob for blob in after)]
    assert left == [], f"{len(left)} destroyed envelopes still readable in the SQLite files"
