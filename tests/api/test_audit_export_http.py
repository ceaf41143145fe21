"""GET /v1/audit/export: the same verifiable bundle as `linevault audit export`, for
platform admins and auditors (or scoped to a tenant, for its owner or auditor), audited,
and accepted by `audit verify-export --public-key`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.cli.core import app as cli_app
from tests.support.audit import (
    OTHER_TENANT_VALUES,
    fill_chain,
    other_tenant_event,
    sample_event,
)
from tests.support.identity import add_membership, bearer, make_tenant, make_user, new_session
from vault.runtime import Runtime


def test_http_export_verifies_offline_with_the_public_key(
    client: TestClient, runtime: Runtime, tmp_path: Path
) -> None:
    fill_chain(runtime, 9)
    auditor = make_user(runtime, "auditor@example.test", platform_role="auditor")
    r = client.get("/v1/audit/export", headers=bearer(new_session(runtime, auditor.id)))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    assert r.headers["cache-control"] == "no-store"
    assert "attachment" in r.headers["content-disposition"]
    lines = r.text.splitlines()
    header = json.loads(lines[0])
    assert header["kind"] == "linevault-audit-export" and header["events"] >= 10
    events = [json.loads(x) for x in lines[1:] if json.loads(x)["kind"] == "event"]
    exports = [e for e in events if e["action"] == "audit.export"]
    assert exports and exports[-1]["actor"] == {"type": "user", "id": auditor.id}
    assert exports[-1]["outcome"] == "success"

    out = tmp_path / "http-export.jsonl"
    out.write_text(r.text)
    key = runtime.system_keys.audit_public_key.hex()
    checked = CliRunner().invoke(cli_app, ["audit", "verify-export", str(out), "--public-key", key])
    assert checked.exit_code == 0, checked.output
    assert "audit chain intact" in checked.stdout
    tampered = tmp_path / "tampered.jsonl"
    doc = json.loads(lines[-3])
    assert doc["kind"] == "event"
    doc["outcome"] = "denied" if doc["outcome"] != "denied" else "success"
    tampered.write_text("\n".join([*lines[:-3], json.dumps(doc), *lines[-2:]]) + "\n")
    bad = CliRunner().invoke(
        cli_app, ["audit", "verify-export", str(tampered), "--public-key", key]
    )
    assert bad.exit_code == 1


def test_http_export_refused_and_audited_for_others(client: TestClient, runtime: Runtime) -> None:
    tenant = make_tenant(runtime)
    owner = make_user(runtime, "owner@example.test")
    add_membership(runtime, tenant, owner.id, "owner")
    r = client.get("/v1/audit/export", headers=bearer(new_session(runtime, owner.id)))
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    assert "platform role admin or auditor" in r.json()["detail"]
    manager = make_user(runtime, "manager@example.test")
    add_membership(runtime, tenant, manager.id, "admin")
    r = client.get(
        "/v1/audit/export",
        params={"tenant_id": tenant},
        headers=bearer(new_session(runtime, manager.id)),
    )
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    assert "tenant role owner or auditor; yours is admin" in r.json()["detail"]
    stranger = make_user(runtime, "stranger@example.test")
    r = client.get(
        "/v1/audit/export",
        params={"tenant_id": tenant},
        headers=bearer(new_session(runtime, stranger.id)),
    )
    assert r.status_code == 404
    admin = make_user(runtime, "second-admin@example.test", platform_role="admin")
    events = client.get(
        "/v1/audit/events",
        params={"action": "audit.export", "outcome": "denied"},
        headers=bearer(new_session(runtime, admin.id)),
    ).json()["events"]
    assert [(e["actor"]["id"], e["tenant_id"]) for e in events] == [
        (owner.id, None),
        (manager.id, tenant),
        (stranger.id, tenant),
    ]
    assert "platform role admin or auditor" in events[0]["reason"]
    assert "yours is admin" in events[1]["reason"]


@pytest.mark.parametrize("role", ["owner", "auditor"])
def test_tenant_export_verifies_and_holds_only_the_tenants_events(
    client: TestClient, runtime: Runtime, tmp_path: Path, role: str
) -> None:
    tenant, other = make_tenant(runtime, "Mine"), make_tenant(runtime, "Theirs")
    reader = make_user(runtime, "reader@example.test")
    add_membership(runtime, tenant, reader.id, role)
    other_owner = make_user(runtime, "other-owner@example.test")
    add_membership(runtime, other, other_owner.id, "owner")
    fill_chain(runtime, 6)  # tenant "tnt_a": neither of these
    for i in range(3):
        runtime.audit.emit(other_tenant_event(i, other))
    runtime.audit.emit(sample_event(1, tenant=tenant))
    r = client.get(
        "/v1/audit/export",
        params={"tenant_id": tenant},
        headers=bearer(new_session(runtime, reader.id)),
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    docs = [json.loads(x) for x in r.text.splitlines()]
    header, events = docs[0], [d for d in docs if d["kind"] == "event"]
    assert header["tenant_id"] == tenant
    assert header["withheld"] == sum(d["kind"] == "withheld" for d in docs) > 0
    assert {e["tenant_id"] for e in events} == {tenant}
    export = events[-1]
    assert export["action"] == "audit.export" and export["outcome"] == "success"
    assert export["actor"] == {"type": "user", "id": reader.id}
    # "tnt_a" quoted: a random tenant id of ours may begin with those five characters.
    for leak in (other, other_owner.id, '"tnt_a"', *OTHER_TENANT_VALUES):
        assert leak.encode() not in r.content, leak

    out = tmp_path / "tenant-export.jsonl"
    out.write_bytes(r.content)
    key = runtime.system_keys.audit_public_key.hex()
    checked = CliRunner().invoke(cli_app, ["audit", "verify-export", str(out), "--public-key", key])
    assert checked.exit_code == 0, checked.output
    assert "audit chain intact" in checked.stdout
    assert f"scope: tenant {tenant}; {header['withheld']} events" in checked.stdout
    # A withheld line's hash changed: the next line's link breaks.
    lines = r.text.splitlines()
    i = next(i for i, x in enumerate(lines) if json.loads(x)["kind"] == "withheld")
    doc = json.loads(lines[i])
    doc["hash"] = "f" * 64
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join([*lines[:i], json.dumps(doc), *lines[i + 1 :]]) + "\n")
    bad = CliRunner().invoke(
        cli_app, ["audit", "verify-export", str(tampered), "--public-key", key]
    )
    assert bad.exit_code == 1, bad.output
