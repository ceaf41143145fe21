"""Opaque identifiers and random tokens.

Ids carry a readable prefix and 128 random bits; tokens carry 256 bits from the OS CSPRNG.
"""

from __future__ import annotations

import hashlib
import secrets

__all__ = ["new_id", "new_token", "sha256"]


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


def new_token(prefix: str = "") -> str:
    """A 256-bit bearer token, URL-safe, with an optional scheme prefix (e.g. ``lvs_``)."""
    return prefix + secrets.token_urlsafe(32)


def sha256(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()
