"""Webhook signing secrets, sealed like credentials and shredded with their tenant.

A tenant's webhook secret goes through the credential envelope of :class:`KeyRing`:
a fresh DEK seals the secret, the tenant's active KEK wraps the DEK, and the associated
data binds both to the webhook (its id in the ``line`` slot, type ``webhook``; webhook
ids and line ids never collide, their prefixes differ). Deleting the tenant destroys
every KEK version, so the row, or any copy of it, opens nothing afterwards.

A KEK rotation must not strand a secret: the rewrap's finishing transaction calls
:func:`rewrap_webhook_secrets` before it destroys the old versions (``vault/keys/rewrap.py``).

The platform's webhooks (every tenant) have no tenant KEK: their secret is sealed under
a key derived from the root-protected HMAC secret (:class:`SystemKeys`), which root key
rotation carries over.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from kms.crypto import open_sealed, seal
from vault.errors import NotFound
from vault.keys.context import associated_data
from vault.keys.keyring import KeyRing
from vault.keys.system import SystemKeys
from vault.storage.models import Webhook

__all__ = ["open_webhook_secret", "rewrap_webhook_secrets", "seal_webhook_secret"]

_TYPE = "webhook"
_VERSION = 1
_PLATFORM_PURPOSE = "webhook-secret"


def _platform_ad(webhook_id: str) -> bytes:
    return associated_data(_PLATFORM_PURPOSE, webhook=webhook_id)


def seal_webhook_secret(
    session: Session,
    webhook: Webhook,
    secret: bytes,
    *,
    keyring: KeyRing,
    system_keys: SystemKeys,
) -> None:
    """Seal ``secret`` into ``webhook``'s columns (tenant KEK, or the platform key)."""
    if webhook.tenant_id is None:
        key = system_keys.mac_key(_PLATFORM_PURPOSE)
        webhook.kek_version = None
        webhook.wrapped_dek = None
        webhook.secret_ciphertext = seal(key, secret, aad=_platform_ad(webhook.id))
        return
    version, kek = keyring.active_kek(session, tenant_id=webhook.tenant_id)
    sealed = keyring.seal_credential(
        kek=kek,
        kek_version=version,
        tenant_id=webhook.tenant_id,
        line_id=webhook.id,
        line_type=_TYPE,
        credential_version=_VERSION,
        plaintext=secret,
    )
    webhook.kek_version = sealed.kek_version
    webhook.wrapped_dek = sealed.wrapped_dek
    webhook.secret_ciphertext = sealed.ciphertext


def open_webhook_secret(
    session: Session, webhook: Webhook, *, keyring: KeyRing, system_keys: SystemKeys
) -> bytes:
    """The plaintext secret; raises ``NotFound`` (key destroyed) or a KMS error."""
    if webhook.secret_ciphertext is None:
        raise NotFound("the webhook's secret has been destroyed")
    if webhook.tenant_id is None:
        key = system_keys.mac_key(_PLATFORM_PURPOSE)
        return open_sealed(key, webhook.secret_ciphertext, aad=_platform_ad(webhook.id))
    if webhook.kek_version is None or webhook.wrapped_dek is None:
        raise NotFound("the webhook's secret has been destroyed")
    kek = keyring.load_kek(
        session, tenant_id=webhook.tenant_id, version=webhook.kek_version, lock=False
    )
    return keyring.open_credential(
        kek=kek,
        kek_version=webhook.kek_version,
        tenant_id=webhook.tenant_id,
        line_id=webhook.id,
        line_type=_TYPE,
        credential_version=_VERSION,
        wrapped_dek=webhook.wrapped_dek,
        ciphertext=webhook.secret_ciphertext,
    )


def rewrap_webhook_secrets(
    session: Session, *, keyring: KeyRing, tenant_id: str, to_version: int
) -> int:
    """Rewrap the DEKs of the tenant's webhook secrets still under an older KEK version.

    Runs inside the rotation's finishing transaction, with the old versions locked, so
    the old KEKs are still readable and no secret is left under one about to be
    destroyed. A tenant has at most a handful of webhooks: one pass, no batching.
    """
    rows = list(
        session.execute(
            select(Webhook)
            .where(
                Webhook.tenant_id == tenant_id,
                Webhook.kek_version < to_version,
                Webhook.wrapped_dek.is_not(None),
            )
            .with_for_update()
        ).scalars()
    )
    if not rows:
        return 0
    new_kek = keyring.load_kek(session, tenant_id=tenant_id, version=to_version)
    for row in rows:
        assert row.kek_version is not None and row.wrapped_dek is not None
        old_kek = keyring.load_kek(session, tenant_id=tenant_id, version=row.kek_version)
        row.wrapped_dek = keyring.rewrap_dek(
            old_kek=old_kek,
            new_kek=new_kek,
            old_version=row.kek_version,
            new_version=to_version,
            tenant_id=tenant_id,
            line_id=row.id,
            credential_version=_VERSION,
            wrapped_dek=row.wrapped_dek,
        )
        row.kek_version = to_version
    session.flush()
    return len(rows)
