"""Crypto-shredding: destroying key material so ciphertext can never be opened again.

A destroyed tenant KEK keeps its row as a tombstone (state ``destroyed``, ``wrapped`` NULL)
so rotations and the audit trail can still name the version. Every process's KEK cache
is bypassed for destroyed rows because the fetch path reads the row state each time.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from vault.keys.cache import KekCache
from vault.storage.models import Kek, Line

__all__ = ["shred_line_credential", "shred_tenant_keys"]


def shred_tenant_keys(
    session: Session, *, tenant_id: str, now: datetime, cache: KekCache | None = None
) -> int:
    """Destroy every KEK version of a tenant (and its credentials' envelopes)."""
    session.execute(
        update(Line)
        .where(Line.tenant_id == tenant_id)
        .values(wrapped_dek=None, ciphertext=None)
        .execution_options(synchronize_session=False)
    )
    result = session.execute(
        update(Kek)
        .where(Kek.tenant_id == tenant_id, Kek.state != "destroyed")
        .values(state="destroyed", wrapped=None, root_key_id=None, destroyed_at=now)
        .execution_options(synchronize_session=False)
    )
    if cache is not None:
        cache.forget_tenant(tenant_id)
    return int(getattr(result, "rowcount", 0) or 0)


def shred_line_credential(session: Session, *, line: Line) -> None:
    """Destroy a credential version: its wrapped DEK and its ciphertext."""
    line.wrapped_dek = None
    line.ciphertext = None
    session.flush()
