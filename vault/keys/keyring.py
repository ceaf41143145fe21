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
from vault.keys.context import associated_data
from vault.storage.models import Kek

__all__ = ["KeyRing", "SealedCredential", "credential_ad", "dek_ad", "kek_ad"]


def kek_ad(tenant_id: str, version: int) -> bytes:
    return associated_data("tenant-kek", tenant=tenant_id, version=version)


def dek_ad(tenant_id: str, line_id: str, credential_version: int, kek_version: int) -> bytes:
    return associated_data(
        "credential-dek",
        tenant=tenant_id,
        line=line_id,
        credential_version=credential_version,
        kek_version=kek_version,
    )


def credential_ad(tenant_id: str, line_id: str, line_type: str, credential_version: int) -> bytes:
    return associated_data(
        "credential",
        tenant=tenant_id,
        line=line_id,
        type=line_type,
        credential_version=credential_version,
    )


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

    def load_kek(self, session: Session, *, tenant_id: str, version: int) -> bytes:
        row = session.execute(
            select(Kek).where(Kek.tenant_id == tenant_id, Kek.version == version)
        ).scalar_one_or_none()
        if row is None:
            raise NotFound("no such key version")
        return self.unwrap_kek(
            tenant_id=tenant_id, version=version, root_key_id=row.root_key_id, wrapped=row.wrapped
        )

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
        """Unwrap the DEK and open the secret; any mismatch raises one opaque error."""
        dek = open_sealed(
            kek, wrapped_dek, aad=dek_ad(tenant_id, line_id, credential_version, kek_version)
        )
        return open_sealed(
            dek, ciphertext, aad=credential_ad(tenant_id, line_id, line_type, credential_version)
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
