"""Canonical associated data: what each ciphertext and wrapped key is bound to.

Every part is length-prefixed, so no two different (purpose, fields) tuples can encode
to the same bytes; a ciphertext copied to another tenant, line, version or purpose
fails to open because its associated data no longer matches.

Encoding (``linevault/ad/v1``)::

    b"linevault/ad/v1" ("|" name "=" len(value) ":" value)*

with ``purpose`` first and the remaining fields sorted by name; ``len`` is the decimal
length of the UTF-8 value in bytes. :func:`associated_data` is the definition; the
fixed-shape encoders below build exactly the same bytes from one prebuilt format string
each, because they sit on the credential fetch path (tests hold them equal).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

__all__ = [
    "associated_data",
    "credential_data",
    "dek_data",
    "grant_line_data",
    "line_status_data",
]

_PREFIX = b"linevault/ad/v1"


def associated_data(purpose: str, **parts: str | int) -> bytes:
    out = [_PREFIX, _item("purpose", purpose)]
    for name in sorted(parts):
        out.append(_item(name, str(parts[name])))
    return b"|".join(out)


def _item(name: str, value: str) -> bytes:
    raw = value.encode()
    return name.encode() + b"=" + str(len(raw)).encode() + b":" + raw


def _encoder(purpose: str, *names: str) -> Callable[..., bytes]:
    """A fixed-shape encoder: the values of ``names`` (sorted, as :func:`associated_data`
    sorts them) in that order, to the same bytes, with one prebuilt format string."""
    assert list(names) == sorted(names)
    head = (_PREFIX + b"|" + _item("purpose", purpose)).replace(b"%", b"%%")
    template = head + b"".join(b"|" + name.encode() + b"=%d:%s" for name in names)

    def encode(*values: str | int) -> bytes:
        args: list[int | bytes] = []
        for value in values:
            raw = str(value).encode()
            args += (len(raw), raw)
        return template % tuple(args)

    return encode


_dek = _encoder("credential-dek", "credential_version", "kek_version", "line", "tenant")
_credential = _encoder("credential", "credential_version", "line", "tenant", "type")
_grant_line = _encoder("grant-line", "access", "grant", "line", "runner", "tenant")
_line_status = _encoder("line-status", "line", "status", "tenant", "version")


@lru_cache(maxsize=16_384)  # hot lines' encodings are reused on every fetch
def dek_data(tenant_id: str, line_id: str, credential_version: int, kek_version: int) -> bytes:
    """``associated_data("credential-dek", tenant=, line=, credential_version=, kek_version=)``."""
    return _dek(credential_version, kek_version, line_id, tenant_id)


@lru_cache(maxsize=16_384)
def credential_data(tenant_id: str, line_id: str, line_type: str, credential_version: int) -> bytes:
    """``associated_data("credential", tenant=, line=, type=, credential_version=)``."""
    return _credential(credential_version, line_id, tenant_id, line_type)


@lru_cache(maxsize=16_384)  # hot grants and lines are checked again after each epoch move
def grant_line_data(
    grant_id: str, tenant_id: str, runner_id: str, line_id: str, access: str
) -> bytes:
    """``associated_data("grant-line", access=, grant=, line=, runner=, tenant=)``: what a
    grant entry's MAC covers (checked on every fresh fetch decision)."""
    return _grant_line(access, grant_id, line_id, runner_id, tenant_id)


@lru_cache(maxsize=16_384)
def line_status_data(line_id: str, tenant_id: str, status: str, version: int) -> bytes:
    """``associated_data("line-status", line=, status=, tenant=, version=)``: what a line's
    status MAC covers."""
    return _line_status(line_id, status, tenant_id, version)
