"""linevault's root of trust: providers that hold root keys and wrap other keys.

This is the lowest layer: it knows nothing of tenants, credentials or HTTP. The
vault asks it to wrap and unwrap tenant key-encryption keys; which provider does
that (a local key file or an HSM over PKCS#11) is configuration. ``kms.crypto``
is the one module in the project that touches ``cryptography.hazmat``.
"""

from __future__ import annotations

from kms.base import KeyProvider, WrappedKey
from kms.errors import (
    DecryptionError,
    InsecureKeyFile,
    KmsError,
    KmsUnavailable,
    RootKeyExists,
    RootKeyNotFound,
    UnsupportedOperation,
)
from kms.factory import (
    KmsConfig,
    LocalKmsConfig,
    Pkcs11KmsConfig,
    initialize_provider,
    open_provider,
)
from kms.local import LocalKeyProvider
from kms.pkcs11 import Pkcs11KeyProvider

__all__ = [
    "DecryptionError",
    "InsecureKeyFile",
    "KeyProvider",
    "KmsConfig",
    "KmsError",
    "KmsUnavailable",
    "LocalKeyProvider",
    "LocalKmsConfig",
    "Pkcs11KeyProvider",
    "Pkcs11KmsConfig",
    "RootKeyExists",
    "RootKeyNotFound",
    "UnsupportedOperation",
    "WrappedKey",
    "initialize_provider",
    "open_provider",
]
