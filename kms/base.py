"""The contract every root-of-trust provider fulfils.

The vault only ever asks a provider to wrap and unwrap tenant key-encryption keys
under the root key; it never sees the root key itself. Keeping that contract
small (and a ``Protocol`` rather than a base class) lets a local key file, an
HSM over PKCS#11 or a cloud KMS be swapped by configuration, and lets one shared
conformance test suite hold every provider to the same behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["ROOT_WRAP_AAD_PREFIX", "KeyProvider", "WrappedKey"]

#: Domain-separation prefix for the associated data of every root wrap, so a
#: root-wrapped blob can never be confused with a ciphertext made for another purpose.
ROOT_WRAP_AAD_PREFIX = b"linevault/root-wrap/v1|"


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A key wrapped by one root key version.

    ``root_key_id`` is stored next to ``blob`` (in its own database column) so a
    rotation can find every key still wrapped by an old root before destroying it.
    """

    root_key_id: str
    blob: bytes

    def __repr__(self) -> str:
        # The blob is ciphertext, but there is no reason to spray it into logs.
        return f"WrappedKey(root_key_id={self.root_key_id!r}, blob=<{len(self.blob)} bytes>)"


@runtime_checkable
class KeyProvider(Protocol):
    """A holder of versioned root keys that wraps and unwraps other keys.

    Rotation is three steps driven from above: :meth:`create_root_key` (new
    wraps use it), rewrap everything still under old ids (unwrap + wrap),
    then :meth:`destroy_root_key` for the old ids. Every method is safe to call
    from several threads at once.
    """

    @property
    def name(self) -> str:
        """Provider kind: ``"local"`` or ``"pkcs11"``."""
        ...

    def active_root_key_id(self) -> str:
        """The id new wraps are made with."""
        ...

    def root_key_ids(self) -> list[str]:
        """Every root key version still held, oldest first."""
        ...

    def wrap(self, key: bytes, *, context: bytes) -> WrappedKey:
        """Encrypt ``key`` under the active root, bound to ``context`` (associated data)."""
        ...

    def unwrap(self, wrapped: WrappedKey, *, context: bytes) -> bytes:
        """Inverse of :meth:`wrap`.

        Raises RootKeyNotFound for an unknown or destroyed root id and
        DecryptionError for every other failure (tampering, wrong context).
        """
        ...

    def create_root_key(self) -> str:
        """Create a new root version, make it active and return its id."""
        ...

    def destroy_root_key(self, root_key_id: str) -> None:
        """Irreversibly destroy a non-active root version (UnsupportedOperation if active)."""
        ...

    def health(self) -> None:
        """Return if usable, raise KmsUnavailable otherwise."""
        ...

    def close(self) -> None:
        """Release sessions and forget key material held in memory."""
        ...
