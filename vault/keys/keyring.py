"""Tenant KEKs and credential envelopes: root -> tenant KEK -> per-version DEK -> secret.

A tenant's KEK versions are stored wrapped by the root key provider; each credential
version gets a fresh DEK, wrapped by the tenant's active KEK; the secret is sealed with
the DEK. Associated data binds the wrapped KEK to (tenant, version), the wrapped DEK to
(tenant, line, credential version, KEK version) and the ciphertext to (tenant, line,
type, credential version).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from kms import KeyProvider, WrappedKey
from kms.crypto import new_key, open_sealed, seal
from vault.errors import NotFound
from vault.keys.cache import KekCache
from vault.keys.context import associated_data, credential_data, dek_data
from vault.storage.models import Kek, Tenant

__all__ = ["KeyRing", "SealedCredential", "credential_ad", "dek_ad", "kek_ad"]


def kek_ad(tenant_id: str, version: int) -> bytes:
    return associated_data("tenant-kek", tenant=tenant_id, version=version)


def dek_ad(tenant_id: str, line_id: str, credential_version: int, kek_version: int) -> bytes:
    """A wrapped DEK belongs to one credential version of one line, under one KEK version."""
    return dek_data(tenant_id, line_id, credential_version, kek_version)


def credential_ad(tenant_id: str, line_id: str, line_type: str, credential_version: int) -> bytes:
    """A credential ciphertext belongs to one version of one line of one type."""
    return credential_data(tenant_id, line_id, line_type, credential_version)


@dataclass(frozen=True, slots=True)
class SealedCredential:
    kek_version: int
    wrapped_dek: bytes
    ciphertext: bytes


class KeyRing:
    """Creates, unwraps (through a bounded cache) and uses tenant KEKs."""

    def __init__(self, provider: KeyProvider, *, cache: KekCache) -> None:
        self._provider = provider
        self._cache = cache

    @property
    def provider(self) -> KeyProvider:
        return self._provider

    @property
    def cache(self) -> KekCache:
        return self._cache

    # -- KEKs -------------------------------------------------------------------------

    def create_kek(self, session: Session, *, tenant_id: str, version: int, now: datetime) -> Kek:
        wrapped = self._provider.wrap(new_key(), context=kek_ad(tenant_id, version))
        row = Kek(
            tenant_id=tenant_id,
            version=version,
            state="active",
            root_key_id=wrapped.root_key_id,
            wrapped=wrapped.blob,
            created_at=now,
        )
        session.add(row)
        session.flush()
        return row

    def unwrap_kek(
        self, *, tenant_id: str, version: int, root_key_id: str | None, wrapped: bytes | None
    ) -> bytes:
        """The plaintext KEK for a row already read; raises NotFound once it is destroyed."""
        cached = self._cache.get(tenant_id, version)
        if cached is not None and wrapped is not None:
            return cached
        if wrapped is None or root_key_id is None:
            raise NotFound("the key of this credential has been destroyed")
        kek = self._provider.unwrap(
            WrappedKey(root_key_id=root_key_id, blob=wrapped), context=kek_ad(tenant_id, version)
        )
        self._cache.put(tenant_id, version, kek)
        return kek

    def load_kek(
        self, session: Session, *, tenant_id: str, version: int, lock: bool = True
    ) -> bytes:
        """The plaintext KEK of one version, for sealing or rewrapping in ``session``.

        With ``lock`` (the default) the KEK row is held ``FOR SHARE`` until the caller's
        transaction ends (PostgreSQL; SQLite writers are serialized anyway), so a
        rotation cannot destroy this version while a DEK wrapped by it is uncommitted.
        """
        stmt = select(Kek).where(Kek.tenant_id == tenant_id, Kek.version == version)
        if lock:
            stmt = stmt.with_for_update(read=True)
        row = session.execute(stmt).scalar_one_or_none()
        if row is None or row.state == "destroyed":
            raise NotFound("no such key version")
        return self.unwrap_kek(
            tenant_id=tenant_id, version=version, root_key_id=row.root_key_id, wrapped=row.wrapped
        )

    def active_kek(self, session: Session, *, tenant_id: str) -> tuple[int, bytes]:
        """``(version, key)`` of the tenant's active KEK, both locked for this transaction.

        The tenant row is read ``FOR SHARE``: a rotation's switch to a new version updates
        that row, so it waits for this transaction, and a seal that starts after the
        switch sees the new version. Prefer this over reading ``active_kek_version``
        yourself and calling :meth:`load_kek`.
        """
        version = session.execute(
            select(Tenant.active_kek_version)
            .where(Tenant.id == tenant_id, Tenant.deleted_at.is_(None))
            .with_for_update(read=True)
        ).scalar_one_or_none()
        if version is None:
            raise NotFound()
        return version, self.load_kek(session, tenant_id=tenant_id, version=version)

    # -- credential envelopes ---------------------------------------------------------

    def seal_credential(
        self,
        *,
        kek: bytes,
        kek_version: int,
        tenant_id: str,
        line_id: str,
        line_type: str,
        credential_version: int,
        plaintext: bytes,
    ) -> SealedCredential:
        dek = new_key()
        ciphertext = seal(
            dek,
            plaintext,
            aad=credential_ad(tenant_id, line_id, line_type, credential_version),
        )
        wrapped_dek = seal(
            kek,
            dek,
            aad=dek_ad(tenant_id, line_id, credential_version, kek_version),
            key_version=kek_version,
        )
        return SealedCredential(
            kek_version=kek_version, wrapped_dek=wrapped_dek, ciphertext=ciphertext
        )

    @staticmethod
    def open_credential(
        *,
        kek: bytes,
        kek_version: int,
        tenant_id: str,
        line_id: str,
        line_type: str,
        credential_version: int,
        wrapped_dek: bytes,
        ciphertext: bytes,
    ) -> bytes:
        """Unwrap the DEK and open the secret; any mismatch raises one opaque error.

        The credential fetch's decryption: the associated data comes straight from the
        cached encoders (:mod:`vault.keys.context`), nothing else runs around the opens.
        """
        dek = open_sealed(
            kek, wrapped_dek, aad=dek_data(tenant_id, line_id, credential_version, kek_version)
        )
        return open_sealed(
            dek, ciphertext, aad=credential_data(tenant_id, line_id, line_type, credential_version)
        )

    @staticmethod
    def rewrap_dek(
        *,
        old_kek: bytes,
        new_kek: bytes,
        old_version: int,
        new_version: int,
        tenant_id: str,
        line_id: str,
        credential_version: int,
        wrapped_dek: bytes,
    ) -> bytes:
        dek = open_sealed(
            old_kek, wrapped_dek, aad=dek_ad(tenant_id, line_id, credential_version, old_version)
        )
        return seal(
            new_kek,
            dek,
            aad=dek_ad(tenant_id, line_id, credential_version, new_version),
            key_version=new_version,
        )
