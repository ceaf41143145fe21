"""``pip install ./clients/python`` into a fresh venv: the client, httpx (and its own
dependencies), stamina (and tenacity), nothing of the server; and the client's own tests
pass there, with nothing of linevault importable."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.testdata import REPO_ROOT

pytestmark = pytest.mark.slow

CLIENT = REPO_ROOT / "clients" / "python"
# What the client may bring: httpx's own tree and stamina's.
ALLOWED = {
    "linevault-client",
    "httpx",
    "httpcore",
    "h11",
    "anyio",
    "idna",
    "certifi",
    "sniffio",
    "typing-extensions",
    "stamina",
    "tenacity",
}


def _installed(python: Path) -> set[str]:
    listed = json.loads(_run(python, "-m", "pip", "list", "--format=json"))
    return {row["name"].lower().replace("_", "-") for row in listed}


def _run(*args: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=540, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_fresh_venv_gets_the_client_and_httpx_only(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    # A copy, so the build leaves nothing in the repository (build/, *.egg-info).
    source = shutil.copytree(
        CLIENT, tmp_path / "client", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__")
    )
    seeded = _installed(python)  # what the venv starts with (pip, maybe setuptools)
    _run(python, "-m", "pip", "install", "-q", source)
    names = _installed(python) - seeded
    assert "linevault-client" in names and "httpx" in names and "stamina" in names
    assert names <= ALLOWED, f"unexpected distributions: {sorted(names - ALLOWED)}"
    for server_module in ("fastapi", "sqlalchemy", "vault", "api", "kms"):
        probe = subprocess.run(
            [str(python), "-c", f"import {server_module}"],
            cwd=tmp_path,
            capture_output=True,
            timeout=60,
        )
        assert probe.returncode != 0, f"{server_module} is importable in the client's venv"
    _run(
        python,
        "-c",
        "import linevault_client, pathlib; "
        "assert (pathlib.Path(linevault_client.__file__).parent / 'py.typed').is_file()",
    )

    # The client's own tests, run there (pytest added after the listing above).
    _run(python, "-m", "pip", "install", "-q", "pytest")
    out = _run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", source / "tests", cwd=source)
    assert " passed" in out and "failed" not in out, out
