"""docs/console.md shows the pages as the browser tests saw them: every screenshot it
names exists, is a small PNG, and every page a journey photographs is shown."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "console.md"
_IMAGE = re.compile(r"!\[[^\]]+\]\((console/[a-z0-9-]+\.png)\)")
_SAVED = re.compile(r'save_screenshot\(\s*\w+,\s*"([a-z0-9-]+)"\)')


def test_every_screenshot_named_exists_and_is_small() -> None:
    named = _IMAGE.findall(DOC.read_text())
    assert len(named) >= 10
    for relative in named:
        image = DOC.parent / relative
        assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", relative
        assert image.stat().st_size < 100_000, f"{relative} is not small"


def test_every_page_the_journeys_photograph_is_in_the_doc() -> None:
    journeys = (t for t in (ROOT / "tests" / "ui").glob("test_*.py") if t.name != "test_harness.py")
    saved = {name for test in journeys for name in _SAVED.findall(test.read_text())}
    shown = {Path(p).stem for p in _IMAGE.findall(DOC.read_text())}
    assert saved, "no journey saves a screenshot"
    assert saved <= shown, f"screenshots not in docs/console.md: {sorted(saved - shown)}"
