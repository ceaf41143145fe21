"""Each expected CLI failure, run as a real process in a folder with no data dir: one
line on stderr, the exit code docs/cli.md documents, no traceback (issue 19)."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINEVAULT = str(Path(sys.executable).with_name("linevault"))
UNREACHABLE = "postgresql+psycopg://nobody@127.0.0.1:1/none"


def documented_exit_codes() -> dict[int, str]:
    table = (REPO / "docs/cli.md").read_text()
    return {int(code): text for code, text in re.findall(r"^\| (\d+) \| ([^|]+) \|", table, re.M)}


def run(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LINEVAULT_")}
    return subprocess.run(
        [LINEVAULT, *args],
        cwd=cwd,
        env={**clean, "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


DEV_WARNING = "local root-of-trust provider in use"


def assert_one_line(
    result: subprocess.CompletedProcess[str], code: int, *needles: str, warned: bool = False
) -> str:
    """``warned``: the local provider was opened before the failure, so its development
    warning (logged once per process) may precede the error line."""
    assert code in documented_exit_codes(), f"exit code {code} is not in docs/cli.md"
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if warned and lines and lines[0].startswith(DEV_WARNING):
        lines = lines[1:]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "args",
    [
        ("keys", "status"),
        ("keys", "rotate", "--tenant", "tnt_x"),
        ("audit", "verify"),
        ("audit", "public-key"),
        ("audit", "export", "--out", "x.jsonl"),
        ("audit", "prune", "--before", "2020-01-01", "--yes"),
        ("users", "create", "--email", "a@example.test"),
        ("serve",),
    ],
)
def test_no_data_dir(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = run(tmp_path, *args)
    line = assert_one_line(result, 2, "--data-dir", "LINEVAULT_DATA_DIR", "linevault init")
    assert str(tmp_path) in line
    assert not (tmp_path / "var").exists()  # nothing was created on the way


def test_unreachable_database(tmp_path: Path) -> None:
    for args in (("keys", "status"), ("audit", "verify")):
        result = run(tmp_path, *args, LINEVAULT_DATABASE_URL=UNREACHABLE)
        assert_one_line(result, 3, "cannot open the database at 127.0.0.1:1", "DATABASE_URL")


def test_bad_settings(tmp_path: Path) -> None:
    provider = run(tmp_path, "keys", "status", LINEVAULT_KMS_PROVIDER="hsm")
    assert_one_line(provider, 2, "LINEVAULT_KMS_PROVIDER", "'local' or 'pkcs11'")
    port = run(tmp_path, "serve", LINEVAULT_PORT="eighty")
    assert_one_line(port, 2, "LINEVAULT_PORT")


@pytest.fixture(scope="module")
def initialised(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("initialised")
    done = run(home, "init", "--admin-email", "admin@example.test", "--json")
    assert done.returncode == 0, done.stderr
    return home / "var"


def test_wrong_key_provider_settings(tmp_path: Path, initialised: Path) -> None:
    data = ("--data-dir", str(initialised))
    garbage = run(tmp_path, "keys", "status", *data, LINEVAULT_ROOT_KEY="not base64!")
    assert_one_line(garbage, 4, "LINEVAULT_ROOT_KEY must be standard base64")
    other = base64.b64encode(os.urandom(32)).decode()
    wrong = run(tmp_path, "audit", "verify", *data, LINEVAULT_ROOT_KEY=other)
    line = assert_one_line(wrong, 4, "key provider cannot be opened", warned=True)
    assert other not in line
    hsm = run(
        tmp_path,
        "keys",
        "status",
        *data,
        LINEVAULT_KMS_PROVIDER="pkcs11",
        LINEVAULT_PKCS11_MODULE=str(tmp_path / "missing.so"),
        LINEVAULT_PKCS11_TOKEN_LABEL="linevault",
        LINEVAULT_PKCS11_PIN="123456",
    )
    line = assert_one_line(hsm, 4, "LINEVAULT_PKCS11_")
    assert "123456" not in line
    unset = run(tmp_path, "keys", "status", *data, LINEVAULT_KMS_PROVIDER="pkcs11")
    assert_one_line(unset, 2, "LINEVAULT_PKCS11_MODULE")


def test_help_version_and_text_output(tmp_path: Path, initialised: Path) -> None:
    version = run(tmp_path, "--version")
    assert version.returncode == 0 and version.stdout.startswith("linevault ")
    for command in (("serve",), ("keys", "status"), ("audit", "prune"), ("audit", "verify-export")):
        shown = run(tmp_path, *command, "--help").stdout
        assert "<bool>" not in shown
        options = re.findall(r"^  (--[a-z-]+)(.*)$", shown, re.M)
        assert options
        for name, rest in options:
            assert rest.strip(), f"{' '.join(command)} {name} has no help text"
    status = run(tmp_path, "keys", "status", "--data-dir", str(initialised))
    assert status.returncode == 0, status.stderr
    assert "{" not in status.stdout and "key provider:" in status.stdout
    assert status.stderr.count("local root-of-trust provider in use") == 1
    as_json = run(tmp_path, "keys", "status", "--data-dir", str(initialised), "--format", "json")
    assert as_json.stdout.strip().startswith("{") and '"provider": "local"' in as_json.stdout
