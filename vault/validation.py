"""Rules for text that every capability shares: display names and ids."""

from __future__ import annotations

import re
import unicodedata

__all__ = ["DISPLAY_NAME_MAX", "ID_MAX_LENGTH", "ID_PATTERN", "clean_display_name", "is_valid_id"]

DISPLAY_NAME_MAX = 200
# Control (Cc, C0 and C1 alike), format (Cf: bidi overrides such as U+202E, zero-width
# U+200B, BOM U+FEFF), line/paragraph separators, private-use and unassigned characters:
# each can make a name display as something it is not, or forge lines in logs.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp", "Co", "Cn"})

# Every id is opaque and server-made (vault.ids.new_id: a short prefix, "_" and 32 hex
# digits). Text longer than this or made of other characters cannot name a row, so the
# API answers 404 for it before any query runs. The pattern has no anchors, so it can be embedded
# (the fetch fast path's path pattern is built from it).
ID_MAX_LENGTH = 64
ID_PATTERN = rf"[A-Za-z0-9_-]{{1,{ID_MAX_LENGTH}}}"
_ID = re.compile(rf"^{ID_PATTERN}$")


def is_valid_id(value: str) -> bool:
    """Could ``value`` be an id? (``$`` also takes one trailing newline, as a route's
    own path pattern does; such an id is then simply not found.)"""
    return _ID.match(value) is not None


def clean_display_name(value: object) -> str | None:
    """The trimmed name, or None when it is not 1-200 characters of printable text.

    Control characters (NUL above all, which PostgreSQL refuses in text) would also let a
    name forge lines in logs and terminals, and bidi or invisible characters make it read
    as another name, so they are refused everywhere alike: before trimming, since
    ``str.strip`` would silently drop some of them (U+0085, U+2028).
    """
    if not isinstance(value, str):
        return None
    if any(unicodedata.category(ch) in _FORBIDDEN_CATEGORIES for ch in value):
        return None
    name = value.strip()
    if not name or len(name) > DISPLAY_NAME_MAX:
        return None
    return name
