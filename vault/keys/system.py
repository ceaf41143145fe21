"""Service-wide secrets, each wrapped directly by the root key provider.

- ``hmac``: the root of every keyed hash (token hashes, fingerprints, audit identifiers);
  per-purpose keys are derived with HKDF-SHA256 so one purpose's output never helps
  forge another's.
- ``totp``: the AEAD key for users' TOTP secrets.
- ``audit-signing``: the Ed25519 key that signs audit checkpoints (public half stored
  beside it in clear, for offline verification).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from kms import KeyProvider, WrappedKey
from kms.crypto import SigningKey, hkdf_sha256, hmac_sha256, new_key, open_sealed, seal
from vault.keys.context import associated_data
from vault.storage.models import SystemSecret

__all__ = ["SYSTEM_SECRET_NAMES", "SystemKeys", "system_secret_ad"]

SYSTEM_SECRET_NAMES = ("hmac", "totp", "audit-signing")


def system_secret_ad(name: str) -> bytes:
    return associated_data("system-secret", name=name)


@dataclass(frozen=True)
class SystemKeys:
    """The unwrapped system secrets of a running process."""

    hmac_root: bytes
    totp_key: bytes
    signing_key: SigningKey

    @property
    def audit_public_key(self) -> bytes:
        return self.signing_key.public_key_bytes()

    @property
    def audit_key_id(self) -> str:
        return hashlib.sha256(self.audit_public_key).hexdigest()[:16]

    def mac(self, purpose: str, message: bytes) -> bytes:
        """A keyed hash for one purpose (e.g. ``runner-token``, ``fingerprint``)."""
        return hmac_sha256(self.mac_key(purpose), message)

    def mac_key(self, purpose: str) -> bytes:
        """The derived key behind :meth:`mac`, for hot paths that derive it once."""
        return hkdf_sha256(
            self.hmac_root, salt=None, info=b"linevault/mac/" + purpose.encode(), length=32
        )

    def reference(self, purpose: str, value: str) -> str:
        """A keyed reference to ``value``, for a value that must not be kept as given: a
        caller's input that does not have its identifier's own format may be a secret
        typed into the wrong field. Equal inputs give equal references (events about one
        caller still line up); without the root key a copy of the trail cannot even test
        a guess against one."""
        return "hmac:" + self.mac(purpose, value.encode()).hex()[:32]

    def seal_totp(self, *, user_id: str, secret: str) -> bytes:
        return seal(self.totp_key, secret.encode(), aad=associated_data("totp", user=user_id))

    def open_totp(self, *, user_id: str, envelope: bytes) -> str:
        return open_sealed(
            self.totp_key, envelope, aad=associated_data("totp", user=user_id)
        ).decode()

    # -- lifecycle --------------------------------------------------------------------

    @classmethod
    def create(cls, session: Session, provider: KeyProvider, *, now: datetime) -> SystemKeys:
        signing = SigningKey.generate()
        material = {
            "hmac": (new_key(), None),
            "totp": (new_key(), None),
            "audit-signing": (signing.private_bytes(), signing.public_key_bytes()),
        }
        for name, (secret, public) in material.items():
            wrapped = provider.wrap(secret, context=system_secret_ad(name))
            session.add(
                SystemSecret(
                    name=name,
                    root_key_id=wrapped.root_key_id,
                    wrapped=wrapped.blob,
                    public=public,
                    created_at=now,
                )
            )
        session.flush()
        return cls(hmac_root=material["hmac"][0], totp_key=material["totp"][0], signing_key=signing)

    @classmethod
    def load(cls, session: Session, provider: KeyProvider) -> SystemKeys:
        rows = {r.name: r for r in session.execute(select(SystemSecret)).scalars()}
        missing = [n for n in SYSTEM_SECRET_NAMES if n not in rows]
        if missing:
            raise RuntimeError("the data dir is not initialised (system keys missing)")

        def unwrap(name: str) -> bytes:
            row = rows[name]
            return provider.unwrap(
                WrappedKey(root_key_id=row.root_key_id, blob=row.wrapped),
                context=system_secret_ad(name),
            )

        return cls(
            hmac_root=unwrap("hmac"),
            totp_key=unwrap("totp"),
            signing_key=SigningKey.from_private_bytes(unwrap("audit-signing")),
        )
