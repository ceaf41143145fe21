"""The repository stands alone: no tracked file sends a reader, or a test, outside it.

A clone copied anywhere must pass on its own (``.ci/standalone`` checks that end to end);
this test catches the cheap way to break it, a reference to the folder that sat beside
the first checkout. The patterns are assembled from parts, so this file does not match
them itself and is searched like every other.
"""

from __future__ import annotations

import subprocess

from tests.support.testdata import REPO_ROOT

_DIR = "shared"
FORBIDDEN = (f"../{_DIR}", f"{_DIR}/API.md", f"{_DIR}/BRIEF.md", f"{_DIR}/testdata")


def _tracked_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True, timeout=60
    )
    return [name for name in listed.stdout.decode().split("\0") if name]


def test_no_tracked_file_refers_outside_the_repository() -> None:
    files = _tracked_files()
    assert "docs/api.md" in files
    found = []
    for name in files:
        path = REPO_ROOT / name
        if not path.is_file():  # not a file: deleted, not committed
            continue
        data = path.read_bytes()
        if b"\0" in data:  # binary
            continue
        for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            found += [f"{name}:{number}: {p}" for p in FORBIDDEN if p in line]
    assert not found, "references outside the repository:\n" + "\n".join(found)
