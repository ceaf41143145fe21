"""Canonical associated data: what each ciphertext and wrapped key is bound to.

Every part is length-prefixed, so no two different (purpose, fields) tuples can encode
to the same bytes; a ciphertext copied to another tenant, line, version or purpose
fails to open because its associated data no longer matches.
"""

from __future__ import annotations

__all__ = ["associated_data"]

_PREFIX = b"linevault/ad/v1"


def associated_data(purpose: str, **parts: str | int) -> bytes:
    out = [_PREFIX, _item("purpose", purpose)]
    for name in sorted(parts):
        out.append(_item(name, str(parts[name])))
    return b"|".join(out)


def _item(name: str, value: str) -> bytes:
    raw = value.encode()
    return name.encode() + b"=" + str(len(raw)).encode() + b":" + raw
