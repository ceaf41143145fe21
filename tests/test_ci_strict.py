"""With LINEVAULT_TEST_REQUIRE_ALL=1 (set by .ci/run) an unreachable or unconfigured
PostgreSQL fails the run instead of skipping its tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.server import free_port

ROOT = Path(__file__).resolve().parents[1]
TARGET = "tests/vault/test_storage.py::test_migrations_match_models"


def _pytest(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # The outer run's PYTEST_ADDOPTS (e.g. test paths, to narrow .ci/standalone) would
    # make the inner pytest run those tests, this one included, again and again.
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LINEVAULT_") and k != "PYTEST_ADDOPTS"
    }
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TARGET],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_unreachable_postgres_fails_in_strict_mode() -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nope"
    result = _pytest({"LINEVAULT_TEST_REQUIRE_ALL": "1", "LINEVAULT_TEST_POSTGRES_URL": url})
    assert result.returncode != 0
    assert "PostgreSQL is unreachable" in result.stdout


def test_missing_postgres_url_fails_in_strict_mode() -> None:
    result = _pytest({"LINEVAULT_TEST_REQUIRE_ALL": "1"})
    assert result.returncode != 0
    assert "LINEVAULT_TEST_POSTGRES_URL is not set" in result.stdout


def test_missing_postgres_skips_outside_ci() -> None:
    result = _pytest({})
    assert result.returncode == 0
    assert "1 passed, 1 skipped" in result.stdout
