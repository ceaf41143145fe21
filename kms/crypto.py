"""The project's only doorway to ``cryptography.hazmat``.

Everything else in linevault calls these few functions instead of touching
primitives, in the spirit of pyca's recipes layer: callers choose no algorithms,
modes, nonce sizes or tag lengths, so they cannot choose badly, and the whole
cryptographic surface can be reviewed (and swapped) in one file.

Decisions made here on behalf of every caller:

* AES-256-GCM with a fresh random 96-bit nonce per message. With random nonces
  NIST SP 800-38D caps one key at 2**32 messages; the key hierarchy keeps every
  key far below that (one data key per credential version, KEKs and root keys
  only wrap keys).
* Every decryption or parse failure surfaces as one opaque
  :class:`~kms.errors.DecryptionError` with nothing chained, so failures cannot
  be told apart (no padding/format oracle, no details leaking into logs).
* Sealed messages carry a small authenticated header (format and key version) so
  ciphertexts can be routed to the right key version during rotation, and so a
  tampered header fails authentication like any other byte.
"""

from __future__ import annotations

import hmac
import os
from hashlib import sha256
from typing import Any, Final

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from kms.errors import DecryptionError

__all__ = [
    "ED25519_PUBLIC_KEY_BYTES",
    "ED25519_SIGNATURE_BYTES",
    "ENVELOPE_FORMAT_V1",
    "ENVELOPE_OVERHEAD",
    "HKDF_MAX_LENGTH",
    "KEY_BYTES",
    "NONCE_BYTES",
    "TAG_BYTES",
    "MacKey",
    "SigningKey",
    "constant_time_equal",
    "envelope_key_version",
    "hkdf_sha256",
    "hmac_sha256",
    "new_key",
    "open_sealed",
    "seal",
    "verify_signature",
]

KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
ENVELOPE_FORMAT_V1: Final = 1
_HEADER_BYTES: Final = 1 + 4
ENVELOPE_OVERHEAD: Final = _HEADER_BYTES + NONCE_BYTES + TAG_BYTES
_MAX_KEY_VERSION: Final = 2**32 - 1
HKDF_MAX_LENGTH: Final = 255 * sha256().digest_size
ED25519_PUBLIC_KEY_BYTES: Final = 32
ED25519_SIGNATURE_BYTES: Final = 64
_SHA256_BLOCK: Final = 64


def new_key() -> bytes:
    """Return a fresh 256-bit key from the operating system CSPRNG."""
    return os.urandom(KEY_BYTES)


def _require_key(key: bytes) -> None:
    # A key of the wrong size is a bug in the caller, not bad input from outside,
    # so it is a ValueError rather than the opaque DecryptionError.
    if len(key) != KEY_BYTES:
        raise ValueError(f"key must be exactly {KEY_BYTES} bytes")


def _header(key_version: int) -> bytes:
    return bytes([ENVELOPE_FORMAT_V1]) + key_version.to_bytes(4, "big")


def seal(key: bytes, plaintext: bytes, *, aad: bytes, key_version: int = 0) -> bytes:
    """Encrypt and authenticate ``plaintext`` bound to ``aad``.

    Envelope: format byte (1) || key_version (4, big-endian) || nonce (12) ||
    ciphertext || tag (16). The 5-byte header is prepended to ``aad`` inside GCM,
    so it is authenticated: a ciphertext relabelled with another key version or
    format does not open. ``aad`` itself is not stored; the caller must supply
    the same value to :func:`open_sealed`.
    """
    _require_key(key)
    if not 0 <= key_version <= _MAX_KEY_VERSION:
        raise ValueError("key_version must fit in 32 bits unsigned")
    header = _header(key_version)
    nonce = os.urandom(NONCE_BYTES)
    body = AESGCM(key).encrypt(nonce, plaintext, header + aad)
    return header + nonce + body


def open_sealed(key: bytes, envelope: bytes, *, aad: bytes) -> bytes:
    """Inverse of :func:`seal`; every failure is the same opaque DecryptionError."""
    _require_key(key)
    if len(envelope) < ENVELOPE_OVERHEAD or envelope[0] != ENVELOPE_FORMAT_V1:
        raise DecryptionError() from None
    header = envelope[:_HEADER_BYTES]
    nonce = envelope[_HEADER_BYTES : _HEADER_BYTES + NONCE_BYTES]
    body = envelope[_HEADER_BYTES + NONCE_BYTES :]
    try:
        return AESGCM(key).decrypt(nonce, body, header + aad)
    except (InvalidTag, ValueError, TypeError, OverflowError):
        raise DecryptionError() from None


def envelope_key_version(envelope: bytes) -> int:
    """Read the (not yet authenticated) key version so the right key can be fetched.

    The value is only a routing hint: it is authenticated when the envelope is
    opened, so a forged version merely selects a key that then fails to decrypt.
    """
    if len(envelope) < ENVELOPE_OVERHEAD or envelope[0] != ENVELOPE_FORMAT_V1:
        raise DecryptionError() from None
    return int.from_bytes(envelope[1:_HEADER_BYTES], "big")


def hkdf_sha256(ikm: bytes, *, salt: bytes | None, info: bytes, length: int) -> bytes:
    """HKDF (RFC 5869) with SHA-256, for deriving purpose-separated subkeys.

    ``length`` must be 1..8160 (255 hash lengths, the RFC's limit): longer
    outputs would repeat blocks, so they are refused with ValueError.
    """
    if not 1 <= length <= HKDF_MAX_LENGTH:
        raise ValueError(f"HKDF-SHA256 output length must be 1..{HKDF_MAX_LENGTH} bytes")
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 (stdlib is enough; kept here so MAC choices live in one place)."""
    return hmac.digest(key, message, "sha256")  # one-shot: no HMAC object per call


def constant_time_equal(a: bytes, b: bytes) -> bool:
    """Compare secrets (tokens, MACs, hashes) without a timing side channel."""
    return hmac.compare_digest(a, b)


class MacKey:
    """An HMAC-SHA256 key prepared once, for MACs checked on a hot path.

    :func:`hmac_sha256` sets the key up again on every call (about 5 µs with OpenSSL 3);
    this keeps SHA-256 states that have already absorbed the padded key (RFC 2104's
    ``K xor ipad`` and ``K xor opad`` blocks, as CPython's own HMAC does) and copies them
    per message, so a tag costs two short hashes (about 1.5 µs). Same tags as
    :func:`hmac_sha256` (tests pin the two together, RFC 4231 vectors included).
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > _SHA256_BLOCK:  # RFC 2104: a key longer than a block is hashed first
            key = sha256(key).digest()
        block = key.ljust(_SHA256_BLOCK, b"\x00")
        self._inner: Any = sha256(bytes(b ^ 0x36 for b in block))
        self._outer: Any = sha256(bytes(b ^ 0x5C for b in block))

    def tag(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return bytes(outer.digest())

    def verify(self, message: bytes, tag: bytes | None) -> bool:
        """True only if ``tag`` is this key's tag of ``message`` (constant-time compare)."""
        return tag is not None and hmac.compare_digest(self.tag(message), bytes(tag))

    def __repr__(self) -> str:
        return "MacKey(<HMAC-SHA256>)"


class SigningKey:
    """An Ed25519 private key, used to sign audit checkpoints.

    The raw private bytes are only handed out by :meth:`private_bytes`, for the
    caller to wrap with the root key before storing; ``repr`` never shows them.
    """

    __slots__ = ("_key",)

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def generate(cls) -> SigningKey:
        """Create a fresh key from the OS CSPRNG."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> SigningKey:
        """Load a raw 32-byte seed; ValueError if it is not 32 bytes."""
        if len(raw) != KEY_BYTES:
            raise ValueError(f"an Ed25519 private key is exactly {KEY_BYTES} bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    def private_bytes(self) -> bytes:
        """The raw 32-byte seed (wrap it before it touches storage)."""
        return self._key.private_bytes(
            encoding=serialization.Encoding.Raw,
            format=serialization.PrivateFormat.Raw,
            encryption_algorithm=serialization.NoEncryption(),
        )

    def public_key_bytes(self) -> bytes:
        """The raw 32-byte public key, for offline verifiers."""
        return self._key.public_key().public_bytes(
            encoding=serialization.Encoding.Raw,
            format=serialization.PublicFormat.Raw,
        )

    def sign(self, message: bytes) -> bytes:
        """A 64-byte Ed25519 signature over ``message``."""
        return self._key.sign(message)

    def __repr__(self) -> str:
        return "SigningKey(<Ed25519, private>)"


def verify_signature(*, public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True only for a valid Ed25519 signature; never raises for malformed input.

    Verification runs where input is untrusted (offline audit verification), so
    a malformed key or signature is just "not valid", not an exception to handle.
    """
    try:
        if len(public_key) != ED25519_PUBLIC_KEY_BYTES or len(signature) != ED25519_SIGNATURE_BYTES:
            return False
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
