"""The test data vendored under ``tests/data/`` (the Wycheproof vectors).

The data is part of the repository, so a missing file is an error, never a skip: a
clone that lacks it is broken (``tests/data/wycheproof/SOURCE.md`` says where the
files come from).
"""

from __future__ import annotations

from pathlib import Path

import pytest

__all__ = ["REPO_ROOT", "wycheproof_file"]

REPO_ROOT = Path(__file__).resolve().parents[2]
_WYCHEPROOF = REPO_ROOT / "tests" / "data" / "wycheproof"


def wycheproof_file(name: str) -> Path:
    """A vendored Wycheproof vector file; fails the test when it is missing."""
    path = _WYCHEPROOF / name
    if not path.is_file():
        pytest.fail(f"Wycheproof file {path} is missing")
    return path
