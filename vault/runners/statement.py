"""The one SQL read of the credential fetch, and how it runs.

Keyed by the token's keyed hash, it joins the token and its runner, the tenant (with its
status: a suspended tenant's lines are not served), the line (with its status),
the line's KEK version row, the grant (the ``grant_lines`` rows on (runner, tenant,
line-or-*), with their access and MACs, so more than one result row when several
grants match), this minute's usage counter and the authorization epoch. Every table
it reads must move the epoch when changed (migration 0002; pinned by
tests/vault/test_authz_epoch.py), or a cached decision could outlive a revocation.

:class:`FetchRead` runs it on a connection of the process's one pool (SQLite: a deferred
read transaction; PostgreSQL: autocommit, so the statement is its only round trip
after the pool's checkout ping). It blocks; the fetch runs it in a thread, and only on a
decision-cache miss.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast

from sqlalchemy import Engine, Table, and_, bindparam, literal, or_, select

from vault.storage.engine import is_sqlite, readonly, retry_on_disconnect
from vault.storage.models import (
    AuthzEpoch,
    GrantLine,
    Kek,
    Line,
    Runner,
    RunnerToken,
    RunnerUsage,
    Tenant,
)

__all__ = ["FetchRead", "decode_credential", "fetch_statement"]

_RT = cast(Table, RunnerToken.__table__)
_R = cast(Table, Runner.__table__)
_T = cast(Table, Tenant.__table__)
_L = cast(Table, Line.__table__)
_K = cast(Table, Kek.__table__)
_G = cast(Table, GrantLine.__table__)
_U = cast(Table, RunnerUsage.__table__)
_E = cast(Table, AuthzEpoch.__table__)


def decode_credential(plaintext: bytes) -> dict[str, Any]:
    """Credentials are sealed as UTF-8 JSON objects."""
    value = json.loads(plaintext)
    if not isinstance(value, dict):
        raise ValueError("a credential must be a JSON object")
    return value


def fetch_statement() -> Any:
    """The single read of the fetch path (parameters: token_hash, tenant_id, line_id, window).

    One row per matching grant entry (none matching: one row with ``grant_id`` NULL); the
    fetch checks each entry's MAC (:mod:`vault.keys.integrity`). Every table it reads
    must move the authorization epoch when changed (migration 0002; pinned by
    tests/vault/test_authz_epoch.py)."""
    tenant_id = bindparam("tenant_id", type_=_T.c.id.type)
    line_id = bindparam("line_id", type_=_L.c.id.type)
    return (
        select(
            _RT.c.runner_id,
            _RT.c.expires_at.label("token_expires_at"),
            _R.c.disabled_at.label("runner_disabled_at"),
            _T.c.id.label("tenant_id"),
            _T.c.deleted_at.label("tenant_deleted_at"),
            _T.c.status.label("tenant_status"),
            _L.c.id.label("line_id"),
            _L.c.type,
            _L.c.status,
            _L.c.version,
            _L.c.kek_version,
            _L.c.wrapped_dek,
            _L.c.ciphertext,
            _L.c.expires_at.label("line_expires_at"),
            _L.c.updated_at.label("line_updated_at"),
            _L.c.status_mac,
            _K.c.state.label("kek_state"),
            _K.c.root_key_id,
            _K.c.wrapped.label("kek_wrapped"),
            _U.c.count.label("used"),
            _G.c.grant_id,
            _G.c.line_id.label("grant_line"),
            _G.c.access.label("grant_access"),
            _G.c.mac.label("grant_mac"),
            select(_E.c.n).where(_E.c.id == 1).scalar_subquery().label("epoch"),
        )
        .select_from(_RT)
        .join(_R, _R.c.id == _RT.c.runner_id)
        .outerjoin(_T, _T.c.id == tenant_id)
        .outerjoin(_L, and_(_L.c.id == line_id, _L.c.tenant_id == tenant_id))
        .outerjoin(_K, and_(_K.c.tenant_id == tenant_id, _K.c.version == _L.c.kek_version))
        .outerjoin(_U, and_(_U.c.runner_id == _RT.c.runner_id, _U.c.window == bindparam("window")))
        .outerjoin(
            _G,
            and_(
                _G.c.runner_id == _RT.c.runner_id,
                _G.c.tenant_id == tenant_id,
                or_(_G.c.line_id == line_id, _G.c.line_id == literal("*")),
            ),
        )
        .where(_RT.c.token_hash == bindparam("token_hash"))
    )


class FetchRead:
    """The fetch's read: its rows (attribute access by column label); empty: no token."""

    def __init__(self, engine: Engine) -> None:
        self._engine = (
            readonly(engine)
            if is_sqlite(engine)
            else engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        self._statement = fetch_statement()

    def __call__(self, params: Mapping[str, Any]) -> Any:
        # A read applies nothing: a connection found dead is retried once.
        return retry_on_disconnect(lambda: self._once(params), what="credential fetch")

    def _once(self, params: Mapping[str, Any]) -> Any:
        with self._engine.connect() as conn:
            return conn.execute(self._statement, dict(params)).all()
