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
