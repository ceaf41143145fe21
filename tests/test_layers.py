"""The layer contracts (api -> vault -> kms, no web framework below api, the database
driver only under vault/storage/) are enforced."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _run_linter(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _copy_tree(dst: Path) -> Path:
    for name in ("vault", "kms", "api"):
        shutil.copytree(ROOT / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", dst / "pyproject.toml")
    return dst


def test_contract_holds_on_the_real_tree(tmp_path: Path) -> None:
    result = _run_linter(_copy_tree(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_contract_fails_when_vault_imports_fastapi(tmp_path: Path) -> None:
    tree = _copy_tree(tmp_path)
    (tree / "vault" / "leak.py").write_text(
        "from fastapi import FastAPI\n\n__all__ = ['FastAPI']\n"
    )
    result = _run_linter(tree)
    assert result.returncode != 0
    assert "vault.leak" in result.stdout


def test_contract_fails_when_kms_imports_vault(tmp_path: Path) -> None:
    tree = _copy_tree(tmp_path)
    (tree / "kms" / "leak.py").write_text("import vault.errors\n")
    result = _run_linter(tree)
    assert result.returncode != 0
    assert "kms.leak" in result.stdout


def test_contract_fails_when_the_driver_is_imported_outside_storage(tmp_path: Path) -> None:
    tree = _copy_tree(tmp_path)
    (tree / "vault" / "runners" / "leak.py").write_text("import psycopg\n")
    (tree / "api" / "leak.py").write_text("from psycopg_pool import ConnectionPool\n")
    result = _run_linter(tree)
    assert result.returncode != 0
    assert "vault.runners.leak -> psycopg" in result.stdout
    assert "api.leak -> psycopg_pool" in result.stdout


def test_storage_may_import_the_driver(tmp_path: Path) -> None:
    tree = _copy_tree(tmp_path)
    (tree / "vault" / "storage" / "driver.py").write_text("import psycopg\n")
    result = _run_linter(tree)
    assert result.returncode == 0, result.stdout + result.stderr


_HAZMAT = re.compile(r"^\s*(from|import)\s+cryptography\.hazmat", re.MULTILINE)


def test_only_one_module_imports_hazmat() -> None:
    users = sorted(
        str(p.relative_to(ROOT))
        for package in ("vault", "kms", "api")
        for p in (ROOT / package).rglob("*.py")
        if _HAZMAT.search(p.read_text())
    )
    assert users == ["kms/crypto.py"]
