"""The CLI: init (once, 0700 data dir, JSON output), refusing a second init, version."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pyotp

LINEVAULT = str(Path(sys.executable).with_name("linevault"))


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LINEVAULT, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def _digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.name.endswith(("-wal", "-shm"))
    }


def test_init_json_then_refuses_second_time(tmp_path: Path, db_url: str) -> None:
    data = tmp_path / "var"
    env = {"LINEVAULT_DATABASE_URL": db_url}
    first = run(
        "init", "--admin-email", "Admin@Example.test", "--data-dir", str(data), "--json", env=env
    )
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert set(doc) == {
        "admin_email",
        "admin_password",
        "admin_totp_secret",
        "admin_recovery_codes",
    }
    # Recovery codes for the bootstrap admin too, printed this once (tests/e2e/test_people.py
    # signs in with one).
    assert len(doc["admin_recovery_codes"]) == 10
    assert len(set(doc["admin_recovery_codes"])) == 10
    assert doc["admin_email"] == "admin@example.test"
    assert len(doc["admin_password"]) >= 20
    assert len(pyotp.TOTP(doc["admin_totp_secret"]).now()) == 6
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    key_file = data / "root.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # Nothing secret is left in stderr.
    assert doc["admin_password"] not in first.stderr

    before = _digest(data)
    second = run(
        "init", "--admin-email", "x@example.test", "--data-dir", str(data), "--json", env=env
    )
    assert second.returncode == 2
    assert second.stdout == ""
    assert _digest(data) == before

    again = run(
        "init", "--admin-email", "x@example.test", "--data-dir", str(data), "--if-needed", env=env
    )
    assert again.returncode == 0


def test_serve_refuses_uninitialised_dir(tmp_path: Path) -> None:
    result = run("serve", "--data-dir", str(tmp_path / "empty"), "--port", "1")
    assert result.returncode == 2
    assert "init" in result.stderr


def test_version_and_help() -> None:
    assert run("version").stdout.strip()
    for args in (["--help"], ["init", "--help"], ["serve", "--help"], ["migrate", "--help"]):
        result = run(*args)
        assert result.returncode == 0, args
        assert "Usage" in result.stdout
