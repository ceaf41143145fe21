"""The one id rule: what the API accepts as an id before any query runs."""

from __future__ import annotations

import re

import pytest

from vault.ids import new_id
from vault.validation import ID_MAX_LENGTH, ID_PATTERN, is_valid_id


def test_every_made_id_is_valid() -> None:
    for prefix in ("tnt", "lin", "run", "grt", "usr"):
        assert is_valid_id(new_id(prefix))


@pytest.mark.parametrize(
    "value",
    ["", "a" * (ID_MAX_LENGTH + 1), "../etc", "a b", "a\x00b", "tnt_ä", "a/b", "a.b"],
)
def test_anything_else_is_not(value: str) -> None:
    assert not is_valid_id(value)


def test_the_longest_valid_id() -> None:
    assert is_valid_id("a" * ID_MAX_LENGTH)


def test_the_pattern_embeds() -> None:
    """ID_PATTERN has no anchors of its own, so path patterns can be built from it."""
    path = re.compile(rf"^/x/({ID_PATTERN})/y$")
    match = path.match("/x/lin_1/y")
    assert match is not None
    assert match.group(1) == "lin_1"
    assert path.match("/x/" + "a" * (ID_MAX_LENGTH + 1) + "/y") is None


def test_display_names_refuse_every_deceptive_category() -> None:
    from vault.validation import clean_display_name

    for char in (
        "\u202e",
        "\u2066",
        "\u200b",
        "\u200d",
        "\ufeff",
        "\u0085",
        "\x00",
        "\x9f",
        "\u2028",
        "\u2029",
        "\ue000",
        "\U000f0000",
        "\u0378",
    ):
        assert clean_display_name(f"name{char}") is None, hex(ord(char))
        assert clean_display_name(f"{char}name") is None, hex(ord(char))
    assert clean_display_name("  Café Ünïcode 名前 ") == "Café Ünïcode 名前"
