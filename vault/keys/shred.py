"""Crypto-shredding: destroying key material so ciphertext can never be opened again.

A destroyed tenant KEK keeps its row as a tombstone (state ``destroyed``, ``wrapped`` and
``root_key_id`` NULL) so rotations and the audit trail can still name the version. Every
process's KEK cache is bypassed for destroyed rows because the fetch path reads the row
state each time; this process's cache is emptied as well.

What this does not reach: copies of the database (backups, replicas' WAL, PostgreSQL dead
tuples before VACUUM). Those still hold the wrapped KEK, which the root key can unwrap;
erasure is complete for them only once the root key version that wrapped it is destroyed
(``linevault keys rotate-root``) or they age out. docs/keys.md says this in full.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from vault.keys.cache import KekCache
from vault.storage.models import Kek, KeyRotation, Line

__all__ = ["shred_line_credential", "shred_tenant_keys"]


def shred_tenant_keys(
    session: Session, *, tenant_id: str, now: datetime, cache: KekCache | None = None
) -> int:
    """Destroy every KEK version of a tenant and every credential envelope it holds.

    Returns the number of KEK versions destroyed by this call. Running rotations of the
    tenant are cancelled in the same transaction (there is nothing left to rewrap), so a
    background rewrap stops instead of looking for keys that no longer exist.
    """
    session.execute(
        update(Line)
        .where(Line.tenant_id == tenant_id)
        .values(wrapped_dek=None, ciphertext=None, kek_version=None)
        .execution_options(synchronize_session=False)
    )
    result = session.execute(
        update(Kek)
        .where(Kek.tenant_id == tenant_id, Kek.state != "destroyed")
        .values(state="destroyed", wrapped=None, root_key_id=None, destroyed_at=now)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(KeyRotation)
        .where(KeyRotation.tenant_id == tenant_id, KeyRotation.state == "running")
        .values(state="cancelled", finished_at=now)
        .execution_options(synchronize_session=False)
    )
    # Objects already loaded in this session must not keep the old bytes either.
    for obj in list(session.identity_map.values()):
        if isinstance(obj, (Line, Kek)) and obj.tenant_id == tenant_id:
            session.expire(obj)
    if cache is not None:
        cache.forget_tenant(tenant_id)
    return int(getattr(result, "rowcount", 0) or 0)


def shred_line_credential(session: Session, *, line: Line) -> None:
    """Destroy a credential version: its wrapped DEK and its ciphertext.

    ``kek_version`` is cleared too: the line no longer references any KEK version, so a
    rotation neither rewraps it nor waits for it before destroying the old version.
    """
    line.wrapped_dek = None
    line.ciphertext = None
    line.kek_version = None
    session.flush()
