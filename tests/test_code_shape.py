"""The shape rules the project holds its own code to, checked so they cannot drift.

- No function in the product (vault/, kms/, api/, the client package) is longer than 60
  lines: a longer one is doing several things that want names of their own. Alembic
  revisions are data, not logic, and are exempt.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.testdata import REPO_ROOT

MAX_FUNCTION_LINES = 60
PACKAGES = ("vault", "kms", "api", "clients/python/src/linevault_client")


def _product_files() -> list[Path]:
    files = []
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            if "migrations" not in path.parts:
                files.append(path)
    return files


def _long_functions(path: Path, root: Path = REPO_ROOT) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            length = (node.end_lineno or node.lineno) - first + 1
            if length > MAX_FUNCTION_LINES:
                rel = path.relative_to(root)
                found.append(f"{rel}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_the_product_has_files_to_check() -> None:
    assert len(_product_files()) > 50


@pytest.mark.parametrize("package", PACKAGES)
def test_no_function_is_longer_than_60_lines(package: str) -> None:
    files = [p for p in _product_files() if p.is_relative_to(REPO_ROOT / package)]
    long = [found for path in files for found in _long_functions(path)]
    assert long == [], "split these functions:\n" + "\n".join(long)


def test_the_checker_sees_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    sample = tmp_path / "sample.py"
    sample.write_text(f"def too_long():\n{body}\n", encoding="utf-8")
    assert _long_functions(sample, root=tmp_path) == [
        f"sample.py:1 too_long ({MAX_FUNCTION_LINES + 1} lines)"
    ]
    sample.write_text("def short():\n    return 1\n", encoding="utf-8")
    assert _long_functions(sample, root=tmp_path) == []
