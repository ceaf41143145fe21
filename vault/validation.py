"""Rules for human-chosen text that every capability shares."""

from __future__ import annotations

import re

__all__ = ["DISPLAY_NAME_MAX", "clean_display_name"]

DISPLAY_NAME_MAX = 200
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


def clean_display_name(value: object) -> str | None:
    """The trimmed name, or None when it is not 1-200 characters of printable text.

    Control characters (NUL above all, which PostgreSQL refuses in text) would also let a
    name forge lines in logs and terminals, so they are refused everywhere alike.
    """
    if not isinstance(value, str):
        return None
    name = value.strip()
    if not name or len(name) > DISPLAY_NAME_MAX or _FORBIDDEN.search(name):
        return None
    return name
