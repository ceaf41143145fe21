"""Canonical associated data: what each ciphertext and wrapped key is bound to.

Every part is length-prefixed, so no two different (purpose, fields) tuples can encode
to the same bytes; a ciphertext copied to another tenant, line, version or purpose
fails to open because its associated data no longer matches.

Encoding (``linevault/ad/v1``)::

    b"linevault/ad/v1" ("|" name "=" len(value) ":" value)*

with ``purpose`` first and the remaining fields sorted by name; ``len`` is the decimal
length of the UTF-8 value in bytes. :func:`associated_data` is the definition; the
fixed-shape encoders below build exactly the same bytes without the generic loop,
because they sit on the credential fetch path (tests hold them equal).
"""

from __future__ import annotations

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


_DEK_HEAD = _PREFIX + b"|" + _item("purpose", "credential-dek")
_CRED_HEAD = _PREFIX + b"|" + _item("purpose", "credential")
_GRANT_HEAD = _PREFIX + b"|" + _item("purpose", "grant-line")
_STATUS_HEAD = _PREFIX + b"|" + _item("purpose", "line-status")


@lru_cache(maxsize=16_384)  # hot lines' encodings are reused on every fetch
def dek_data(tenant_id: str, line_id: str, credential_version: int, kek_version: int) -> bytes:
    """``associated_data("credential-dek", tenant=, line=, credential_version=, kek_version=)``."""
    t = tenant_id.encode()
    ln = line_id.encode()
    cv = str(credential_version).encode()
    kv = str(kek_version).encode()
    return b"%s|credential_version=%d:%s|kek_version=%d:%s|line=%d:%s|tenant=%d:%s" % (
        _DEK_HEAD,
        len(cv),
        cv,
        len(kv),
        kv,
        len(ln),
        ln,
        len(t),
        t,
    )


@lru_cache(maxsize=16_384)
def credential_data(tenant_id: str, line_id: str, line_type: str, credential_version: int) -> bytes:
    """``associated_data("credential", tenant=, line=, type=, credential_version=)``."""
    t = tenant_id.encode()
    ln = line_id.encode()
    ty = line_type.encode()
    cv = str(credential_version).encode()
    return b"%s|credential_version=%d:%s|line=%d:%s|tenant=%d:%s|type=%d:%s" % (
        _CRED_HEAD,
        len(cv),
        cv,
        len(ln),
        ln,
        len(t),
        t,
        len(ty),
        ty,
    )


@lru_cache(maxsize=16_384)  # hot grants and lines are checked again after each epoch move
def grant_line_data(
    grant_id: str, tenant_id: str, runner_id: str, line_id: str, access: str
) -> bytes:
    """``associated_data("grant-line", access=, grant=, line=, runner=, tenant=)``: what a
    grant entry's MAC covers (checked on every fresh fetch decision)."""
    a = access.encode()
    g = grant_id.encode()
    ln = line_id.encode()
    r = runner_id.encode()
    t = tenant_id.encode()
    return b"%s|access=%d:%s|grant=%d:%s|line=%d:%s|runner=%d:%s|tenant=%d:%s" % (
        _GRANT_HEAD,
        len(a),
        a,
        len(g),
        g,
        len(ln),
        ln,
        len(r),
        r,
        len(t),
        t,
    )


@lru_cache(maxsize=16_384)
def line_status_data(line_id: str, tenant_id: str, status: str, version: int) -> bytes:
    """``associated_data("line-status", line=, status=, tenant=, version=)``: what a line's
    status MAC covers."""
    ln = line_id.encode()
    s = status.encode()
    t = tenant_id.encode()
    v = str(version).encode()
    return b"%s|line=%d:%s|status=%d:%s|tenant=%d:%s|version=%d:%s" % (
        _STATUS_HEAD,
        len(ln),
        ln,
        len(s),
        s,
        len(t),
        t,
        len(v),
        v,
    )
