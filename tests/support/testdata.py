"""Locate the shared test data (Wycheproof vectors) outside the repository.

The data lives in a ``shared/testdata`` directory next to the checkout (or
further up, for worktrees nested one level deeper); ``LINEVAULT_TESTDATA``
overrides. When absent, tests skip, unless ``LINEVAULT_TEST_REQUIRE_ALL=1``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.softhsm import require_all

__all__ = ["REPO_ROOT", "testdata_dir", "wycheproof_file"]

REPO_ROOT = Path(__file__).resolve().parents[2]


def testdata_dir() -> Path:
    """The testdata directory; skips (or fails under REQUIRE_ALL) when not found."""
    override = os.environ.get("LINEVAULT_TESTDATA")
    if override:
        if not Path(override).is_dir():
            pytest.fail(f"LINEVAULT_TESTDATA={override} is not a directory")
        return Path(override)
    candidates = [ancestor / "shared" / "testdata" for ancestor in REPO_ROOT.parents]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    reason = "shared test data not found (set LINEVAULT_TESTDATA)"
    if require_all():
        pytest.fail(f"{reason} (LINEVAULT_TEST_REQUIRE_ALL=1)")
    pytest.skip(reason)


def wycheproof_file(name: str) -> Path:
    """A Wycheproof vector file; a missing file is always an error, never a skip."""
    path = testdata_dir() / "wycheproof" / name
    if not path.is_file():
        pytest.fail(f"Wycheproof file {path} is missing")
    return path
