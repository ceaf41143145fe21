"""GET /v1/audit/export: the same verifiable bundle as `linevault audit export`, for
platform admins and auditors, audited, and accepted by `audit verify-export --public-key`."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.cli.core import app as cli_app
from tests.support.audit import fill_chain
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
    r = client.get(
        "/v1/audit/export",
        params={"tenant_id": tenant},
        headers=bearer(new_session(runtime, owner.id)),
    )
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    assert "platform role admin or auditor" in r.json()["detail"]
    admin = make_user(runtime, "second-admin@example.test", platform_role="admin")
    events = client.get(
        "/v1/audit/events",
        params={"action": "audit.export", "outcome": "denied"},
        headers=bearer(new_session(runtime, admin.id)),
    ).json()["events"]
    assert [e["actor"]["id"] for e in events] == [owner.id]
