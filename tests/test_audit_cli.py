"""``linevault audit verify | export | verify-export | public-key | prune`` end to end."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import text
from typer.testing import CliRunner

from api.cli.core import app
from tests.support.audit import fill_chain, sample_event
from vault.runtime import Runtime
from vault.settings import Settings

runner = CliRunner()


def cli(settings: Settings, *args: str, db: bool = True):  # type: ignore[no-untyped-def]
    env = {
        "LINEVAULT_DATABASE_URL": settings.sqlalchemy_url
        if db
        else "postgresql://nobody@127.0.0.1:1/none"
    }
    return runner.invoke(app, ["audit", *args], env=env)


def test_verify_export_and_verify_export(
    runtime: Runtime, settings: Settings, tmp_path: Path
) -> None:
    fill_chain(runtime, 12)
    data = ["--data-dir", str(settings.data_dir)]
    ok = cli(settings, "verify", *data)
    assert ok.exit_code == 0, ok.output
    assert "intact" in ok.output

    key = cli(settings, "public-key", "--raw", *data)
    assert key.exit_code == 0, key.output
    key_hex = key.stdout.strip()  # the whole output, as --public-key takes it
    assert bytes.fromhex(key_hex) == runtime.system_keys.audit_public_key
    described = cli(settings, "public-key", *data)
    assert f"public key: {key_hex}" in described.stdout and "key id:" in described.stdout
    as_json = json.loads(cli(settings, "public-key", "--format", "json", *data).stdout)
    assert as_json["public_key"] == key_hex

    out = tmp_path / "audit.jsonl"
    exported = cli(settings, "export", "--out", str(out), *data)
    assert exported.exit_code == 0, exported.output
    lines = out.read_text().splitlines()
    assert json.loads(lines[0])["kind"] == "linevault-audit-export"
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    assert any(json.loads(x).get("action") == "audit.export" for x in lines[1:])

    # No database needed (the URL points nowhere), only the public key.
    checked = cli(settings, "verify-export", str(out), "--public-key", key_hex, db=False)
    assert checked.exit_code == 0, checked.output
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join(x.replace("10.0.0.1", "10.0.0.2", 1) for x in lines) + "\n")
    bad = cli(settings, "verify-export", str(tampered), "--public-key", key_hex, db=False)
    assert bad.exit_code == 1 and "TAMPERED" in bad.output

    # Without a trusted key it refuses, unless told to trust the file's own key, loudly.
    refused = cli(settings, "verify-export", str(out), db=False)
    assert refused.exit_code == 2 and "--public-key is required" in refused.stderr
    trusting = cli(settings, "verify-export", str(out), "--trust-embedded-key", db=False)
    assert trusting.exit_code == 0, trusting.output
    assert "WARNING" in trusting.stderr and "INSIDE the file" in trusting.stderr

    with runtime.engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET user_agent='evil' WHERE seq=5"))
    broken = cli(settings, "verify", *data)
    assert broken.exit_code == 1
    assert "first bad seq: 5" in broken.output and "first bad event" in broken.output
    as_json = cli(settings, "verify", "--json", "--read-only", *data)
    assert as_json.exit_code == 1
    assert json.loads(as_json.output.splitlines()[0])["first_bad_seq"] == 5


def test_prune_cli(runtime: Runtime, settings: Settings) -> None:
    fill_chain(runtime, 6)
    data = ["--data-dir", str(settings.data_dir)]
    count = _events(runtime)
    dry = cli(settings, "prune", "--before", "2999-01-01", "--dry-run", *data)
    assert dry.exit_code == 0, dry.output
    assert f"would delete {count} events" in dry.stdout and _events(runtime) == count
    declined = runner.invoke(
        app,
        ["audit", "prune", "--before", "2999-01-01", *data],
        env={"LINEVAULT_DATABASE_URL": settings.sqlalchemy_url},
        input="n\n",
    )
    assert declined.exit_code == 1 and "nothing was deleted" in declined.stderr
    assert _events(runtime) == count
    pruned = cli(settings, "prune", "--before", "2999-01-01", "--yes", *data)
    assert pruned.exit_code == 0, pruned.output
    assert "None" not in pruned.stdout and f"pruned {count} events" in pruned.stdout
    ok = cli(settings, "verify", *data)
    assert ok.exit_code == 0, ok.output
    assert cli(settings, "prune", "--before", "yesterday", *data).exit_code == 2
    # adopt-prune is an upgrade path for chains pruned before prune anchors were signed:
    # it asks for --yes, and refuses a chain that needs nothing.
    unconfirmed = cli(settings, "adopt-prune", *data)
    assert unconfirmed.exit_code == 2 and "--yes" in unconfirmed.output
    nothing = cli(settings, "adopt-prune", "--yes", *data)
    assert nothing.exit_code == 1 and "nothing to adopt" in nothing.output


def _events(runtime: Runtime) -> int:
    with runtime.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM audit_events")).scalar_one())


def test_export_scoped_to_a_tenant(runtime: Runtime, settings: Settings, tmp_path: Path) -> None:
    """``export --tenant``: the same scoped bundle as the HTTP export; its own event
    names the tenant, and every other event is a withheld line."""
    fill_chain(runtime, 6)  # tenant "tnt_a"
    runtime.audit.emit(sample_event(1, tenant="tnt_b"))
    data = ["--data-dir", str(settings.data_dir)]
    out = tmp_path / "tnt_b.jsonl"
    exported = cli(settings, "export", "--out", str(out), "--tenant", "tnt_b", *data)
    assert exported.exit_code == 0, exported.output
    assert "for tenant tnt_b (" in exported.stdout
    docs = [json.loads(x) for x in out.read_text().splitlines()]
    assert docs[0]["tenant_id"] == "tnt_b"
    events = [d for d in docs if d["kind"] == "event"]
    assert [(e["action"], e["tenant_id"]) for e in events] == [
        ("credential.fetch", "tnt_b"),
        ("audit.export", "tnt_b"),
    ]
    assert '"tnt_a"' not in out.read_text()  # quoted: our random id may start so
    key_hex = runtime.system_keys.audit_public_key.hex()
    checked = cli(settings, "verify-export", str(out), "--public-key", key_hex, db=False)
    assert checked.exit_code == 0, checked.output
    assert f"scope: tenant tnt_b; {docs[0]['withheld']} events" in checked.stdout
