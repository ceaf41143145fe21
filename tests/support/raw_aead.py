"""Raw AES-256-GCM with a caller-chosen nonce, for known-answer vectors only.

The product never takes a nonce from its caller (``kms.crypto.seal`` draws one per
message), so this lives with the tests. It keeps ``kms.crypto``'s conventions: only a
32-byte key and a 12-byte nonce are accepted, and every failure or unsupported size is
the one opaque ``DecryptionError`` with nothing chained.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kms.crypto import KEY_BYTES, NONCE_BYTES, TAG_BYTES
from kms.errors import DecryptionError

__all__ = ["aesgcm_decrypt_raw", "aesgcm_encrypt_raw"]


def aesgcm_encrypt_raw(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Ciphertext || 16-byte tag; an unsupported key or nonce size is DecryptionError."""
    if len(key) != KEY_BYTES or len(nonce) != NONCE_BYTES:
        raise DecryptionError() from None
    return AESGCM(key).encrypt(nonce, plaintext, aad)


def aesgcm_decrypt_raw(key: bytes, nonce: bytes, ciphertext_and_tag: bytes, aad: bytes) -> bytes:
    """The plaintext; any failure or unsupported size is DecryptionError."""
    if len(key) != KEY_BYTES or len(nonce) != NONCE_BYTES or len(ciphertext_and_tag) < TAG_BYTES:
        raise DecryptionError() from None
    try:
        return AESGCM(key).decrypt(nonce, ciphertext_and_tag, aad)
    except (InvalidTag, ValueError, TypeError, OverflowError):
        raise DecryptionError() from None
