"""Exceptions raised by the root-of-trust layer.

Callers above this layer (the vault domain, the API error mapper) need to tell
"the key store is down" apart from "this ciphertext is not ours" without parsing
messages, so every failure mode gets its own class under one base. Messages are
fixed, operator-facing strings: they never carry key material, PINs, plaintext or
details of why a decryption failed (a detailed reason is an oracle for attackers).
"""

from __future__ import annotations

__all__ = [
    "DecryptionError",
    "InsecureKeyFile",
    "InvalidRootKey",
    "KmsError",
    "KmsUnavailable",
    "RootKeyExists",
    "RootKeyNotFound",
    "UnsupportedOperation",
]


class KmsError(Exception):
    """Base class, so callers can catch every root-of-trust failure in one place."""


class DecryptionError(KmsError):
    """Authenticated decryption or parsing failed.

    Deliberately opaque: wrong key, wrong associated data, truncation and
    tampering all look the same, so the error cannot be used as an oracle.
    Always raise it ``from None`` so no underlying detail is chained.
    """

    def __init__(self) -> None:
        super().__init__("decryption failed")


class KmsUnavailable(KmsError):
    """The provider (key file, HSM token, PKCS#11 module) cannot be used right now."""


class InvalidRootKey(KmsError, ValueError):
    """A root key given in the configuration (``LINEVAULT_ROOT_KEY``) is not a key.
    Also a ``ValueError``: it is a bad value, and callers have caught it as one."""


class RootKeyNotFound(KmsError):
    """No root key exists, or the requested root key version is no longer held."""


class RootKeyExists(KmsError):
    """Initialisation refused because a root key is already present.

    Overwriting a root key would make everything it wrapped unreadable, so
    initialisation never replaces one.
    """


class InsecureKeyFile(KmsError):
    """The local root key file is accessible to group or others (must be 0600)."""


class UnsupportedOperation(KmsError):
    """The provider cannot do this (for example rotating a key given in the environment)."""
