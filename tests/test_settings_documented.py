"""Every setting is in the operator's reference (docs/operations.md, "Settings"), by its
full environment name: a setting nobody can find is a setting nobody sets right."""

from __future__ import annotations

from pathlib import Path

from vault.settings import Settings

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "operations.md"


def test_every_setting_has_a_row_in_the_reference() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    missing = [
        f"LINEVAULT_{name.upper()}"
        for name in Settings.model_fields
        if f"`LINEVAULT_{name.upper()}`" not in text
    ]
    assert missing == [], f"add these to docs/operations.md, Settings: {missing}"
