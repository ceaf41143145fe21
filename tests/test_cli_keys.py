"""``linevault keys rotate | rotate-root | status`` against a real data dir."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from api.cli.core import app
from tests.support.keys import make_tenant, open_all, seed_lines, uncached
from vault.runtime import Runtime
from vault.settings import Settings
from vault.storage.engine import unit_of_work


def _invoke(settings: Settings, *args: str) -> dict[str, object]:
    result = CliRunner().invoke(
        app,
        [*args, "--data-dir", str(settings.data_dir), "--json"],
        env={"LINEVAULT_DATABASE_URL": settings.sqlalchemy_url},
    )
    assert result.exit_code == 0, result.output
    out: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return out


def test_keys_cli_rotates_tenant_and_root(
    runtime: Runtime, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with unit_of_work(runtime.sessions) as session:
        tenant = make_tenant(session, runtime.keyring, now=runtime.clock.now())
    secrets = seed_lines(
        runtime.sessions, runtime.keyring, tenant_id=tenant, count=10, now=runtime.clock.now()
    )
    rotated = _invoke(settings, "keys", "rotate", "--tenant", tenant, "--batch-size", "3")
    assert rotated["state"] == "done" and rotated["kek_version"] == 2
    assert rotated["rewrapped"] == 10
    status = _invoke(settings, "keys", "status", "--tenant", tenant)
    assert status["tenant"]["versions"] == [  # type: ignore[index]
        {"version": 1, "state": "destroyed"},
        {"version": 2, "state": "active"},
    ]
    assert status["running_rotations"] == []
    old_root = status["active_root_key_id"]
    root = _invoke(settings, "keys", "rotate-root", "--grace-seconds", "0", "--batch-size", "2")
    assert root["destroyed_root_key_ids"] == [old_root]
    assert root["rewrapped_keks"] == 1 and root["rewrapped_system_secrets"] == 3
    after = _invoke(settings, "keys", "status")
    assert after["root_key_ids"] == [root["active_root_key_id"]]
    assert open_all(runtime.engine, uncached(runtime.provider), tenant) == secrets


def test_keys_cli_unknown_tenant(runtime: Runtime, settings: Settings) -> None:
    result = CliRunner().invoke(
        app,
        ["keys", "rotate", "--tenant", "tnt_nope", "--data-dir", str(settings.data_dir)],
        env={"LINEVAULT_DATABASE_URL": settings.sqlalchemy_url},
    )
    assert result.exit_code == 1
