"""Tenants and sealed lines made straight through the models and the KeyRing, for key tests.

``open_line`` reads the line and its KEK row in one statement, like the fetch path, and
opens the credential with a cache-less KeyRing, so a destroyed or wrong key cannot hide
behind a cached plaintext KEK.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, select
from sqlalchemy.orm import Session

from kms import KeyProvider
from vault.ids import new_id
from vault.keys.cache import KekCache
from vault.keys.integrity import row_macs
from vault.keys.keyring import KeyRing
from vault.keys.system import SystemKeys
from vault.storage.engine import SessionFactory, unit_of_work
from vault.storage.models import Kek, Line, Tenant

__all__ = ["all_line_ids", "make_tenant", "open_all", "open_line", "seed_lines", "uncached"]


def uncached(provider: KeyProvider) -> KeyRing:
    return KeyRing(provider, cache=KekCache(max_entries=0, ttl_seconds=0))


def make_tenant(session: Session, keyring: KeyRing, *, now: datetime, name: str = "Acme") -> str:
    tenant = Tenant(id=new_id("tnt"), name=name, active_kek_version=1, created_at=now)
    session.add(tenant)
    session.flush()
    keyring.create_kek(session, tenant_id=tenant.id, version=1, now=now)
    return tenant.id


def seed_lines(
    sessions: SessionFactory,
    keyring: KeyRing,
    *,
    tenant_id: str,
    count: int,
    now: datetime,
    payloads: Iterable[bytes] | None = None,
    system_keys: SystemKeys | None = None,
) -> dict[str, bytes]:
    """``count`` telegram lines sealed under the tenant's active KEK: ``{line_id: plaintext}``.

    With ``system_keys`` each line also gets the status MAC the lines service stamps, which
    the credential fetch requires (vault/keys/integrity.py)."""
    macs = row_macs(system_keys) if system_keys is not None else None
    out: dict[str, bytes] = {}
    source = iter(payloads) if payloads is not None else None
    with unit_of_work(sessions) as session:
        version, kek = keyring.active_kek(session, tenant_id=tenant_id)
        for n in range(count):
            line_id = new_id("ln")
            plaintext = next(source) if source is not None else os.urandom(16) + str(n).encode()
            sealed = keyring.seal_credential(
                kek=kek,
                kek_version=version,
                tenant_id=tenant_id,
                line_id=line_id,
                line_type="telegram",
                credential_version=1,
                plaintext=plaintext,
            )
            session.add(
                Line(
                    id=line_id,
                    tenant_id=tenant_id,
                    type="telegram",
                    name=f"line {n}",
                    status="active",
                    version=1,
                    kek_version=sealed.kek_version,
                    wrapped_dek=sealed.wrapped_dek,
                    ciphertext=sealed.ciphertext,
                    created_at=now,
                    updated_at=now,
                    status_mac=None
                    if macs is None
                    else macs.line_status(
                        line_id=line_id, tenant_id=tenant_id, status="active", version=1
                    ),
                )
            )
            out[line_id] = plaintext
    return out


_JOIN = (
    select(
        Line.id,
        Line.tenant_id,
        Line.type,
        Line.version,
        Line.kek_version,
        Line.wrapped_dek,
        Line.ciphertext,
        Kek.state,
        Kek.root_key_id,
        Kek.wrapped,
    )
    .select_from(Line)
    .outerjoin(Kek, and_(Kek.tenant_id == Line.tenant_id, Kek.version == Line.kek_version))
)


def _open_row(keyring: KeyRing, r: Any) -> bytes:
    if r.wrapped_dek is None or r.ciphertext is None or r.state in (None, "destroyed"):
        raise LookupError("destroyed")
    kek = keyring.unwrap_kek(
        tenant_id=r.tenant_id,
        version=r.kek_version,
        root_key_id=r.root_key_id,
        wrapped=r.wrapped,
    )
    return keyring.open_credential(
        kek=kek,
        kek_version=r.kek_version,
        tenant_id=r.tenant_id,
        line_id=r.id,
        line_type=r.type,
        credential_version=r.version,
        wrapped_dek=r.wrapped_dek,
        ciphertext=r.ciphertext,
    )


def open_line(engine: Engine, keyring: KeyRing, line_id: str) -> bytes:
    """One consistent read of line + KEK row (as the fetch path does), then open."""
    with engine.connect() as conn:
        row = conn.execute(_JOIN.where(Line.id == line_id)).one()
    return _open_row(keyring, row)


def open_all(engine: Engine, keyring: KeyRing, tenant_id: str) -> dict[str, bytes]:
    with engine.connect() as conn:
        rows = conn.execute(_JOIN.where(Line.tenant_id == tenant_id)).all()
    return {row.id: _open_row(keyring, row) for row in rows}


def all_line_ids(engine: Engine, tenant_id: str) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(Line.id).where(Line.tenant_id == tenant_id)).scalars())
