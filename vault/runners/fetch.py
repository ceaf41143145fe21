"""The audited credential fetch: the hot path of the whole service.

One request costs one indexed SQL read, microseconds of crypto and one share of a group
commit:

1. ONE Core ``SELECT`` keyed by the token's keyed hash joins the token and its runner,
   the tenant, the line, the line's KEK version row, the grant (an ``EXISTS`` over
   ``grant_lines`` on (runner, tenant, line-or-*)) and this minute's usage counter.
   Every revocation (token, runner, grant, line, KEK, tenant) is therefore seen by the
   next request in every server process: nothing here is cached except unwrapped KEKs,
   and the KEK row's state is read with every request.
2. The tenant KEK comes from the bounded in-memory cache (an HSM round trip on a miss),
   then two AES-GCM opens (DEK, secret).
3. The ``credential.fetch`` event goes to the group-commit writer; the secret is returned
   only once the event is durable (fail-closed: 503 and no secret otherwise).

Rate limits are per runner per minute and shared by every process: the audit writer's
batch hook adds each batch's served fetches to ``runner_usage`` inside the batch
transaction, and step 1 reads the current minute's count. The count can lag by at most
the batches in flight, which is the right trade for not adding a write per request.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import weakref
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, cast

import psycopg
from sqlalchemy import Engine, Table, and_, bindparam, exists, literal, or_, select
from sqlalchemy.orm import Session

from kms.crypto import hmac_sha256, open_sealed
from kms.errors import KmsUnavailable
from vault.audit.events import AuditEvent, Outcome, RequestContext
from vault.audit.trail import AuditTrail
from vault.audit.writer import AuditWriter, BatchHook
from vault.clock import Clock
from vault.errors import (
    AuditUnavailable,
    Forbidden,
    NotFound,
    RateLimited,
    Revoked,
    Unauthenticated,
    Unavailable,
    VaultError,
)
from vault.keys.keyring import KeyRing, credential_ad, dek_ad
from vault.keys.system import SystemKeys
from vault.lines.expiry import fetch_expiry_reason
from vault.runners.bridge import AuditBridge
from vault.runners.reader import AsyncPgReader, SyncReader
from vault.runners.secrets import looks_like_runner_token, token_mac_key
from vault.storage.engine import is_sqlite
from vault.storage.models import GrantLine, Kek, Line, Runner, RunnerToken, RunnerUsage, Tenant

__all__ = [
    "FETCH_ACTION",
    "CredentialFetcher",
    "FetchedCredential",
    "decode_credential",
    "fetch_statement",
    "minute_window",
    "usage_hook",
]

FETCH_ACTION = "credential.fetch"
RATE_LIMITED = "rate_limited"
_ID_MAX = 40

_RT = cast(Table, RunnerToken.__table__)
_R = cast(Table, Runner.__table__)
_T = cast(Table, Tenant.__table__)
_L = cast(Table, Line.__table__)
_K = cast(Table, Kek.__table__)
_G = cast(Table, GrantLine.__table__)
_U = cast(Table, RunnerUsage.__table__)


def minute_window(moment: datetime) -> int:
    return int(moment.timestamp()) // 60


def decode_credential(plaintext: bytes) -> dict[str, Any]:
    """Credentials are sealed as UTF-8 JSON objects."""
    value = json.loads(plaintext)
    if not isinstance(value, dict):
        raise ValueError("a credential must be a JSON object")
    return value


def fetch_statement() -> Any:
    """The single read of the fetch path (parameters: token_hash, tenant_id, line_id, window)."""
    tenant_id = bindparam("tenant_id", type_=_T.c.id.type)
    line_id = bindparam("line_id", type_=_L.c.id.type)
    granted = (
        exists()
        .where(
            _G.c.runner_id == _RT.c.runner_id,
            _G.c.tenant_id == tenant_id,
            or_(_G.c.line_id == line_id, _G.c.line_id == literal("*")),
        )
        .label("granted")
    )
    return (
        select(
            _RT.c.runner_id,
            _RT.c.expires_at.label("token_expires_at"),
            _R.c.disabled_at.label("runner_disabled_at"),
            _T.c.id.label("tenant_id"),
            _T.c.deleted_at.label("tenant_deleted_at"),
            _L.c.id.label("line_id"),
            _L.c.type,
            _L.c.status,
            _L.c.version,
            _L.c.kek_version,
            _L.c.wrapped_dek,
            _L.c.ciphertext,
            _L.c.expires_at.label("line_expires_at"),
            _K.c.state.label("kek_state"),
            _K.c.root_key_id,
            _K.c.wrapped.label("kek_wrapped"),
            _U.c.count.label("used"),
            granted,
        )
        .select_from(_RT)
        .join(_R, _R.c.id == _RT.c.runner_id)
        .outerjoin(_T, _T.c.id == tenant_id)
        .outerjoin(_L, and_(_L.c.id == line_id, _L.c.tenant_id == tenant_id))
        .outerjoin(_K, and_(_K.c.tenant_id == tenant_id, _K.c.version == _L.c.kek_version))
        .outerjoin(_U, and_(_U.c.runner_id == _RT.c.runner_id, _U.c.window == bindparam("window")))
        .where(_RT.c.token_hash == bindparam("token_hash"))
    )


_STATEMENT = fetch_statement()

# The associated data of a (tenant, line, version) never changes: encode it once.
_dek_ad = functools.lru_cache(maxsize=65_536)(dek_ad)
_credential_ad = functools.lru_cache(maxsize=65_536)(credential_ad)


@dataclass(frozen=True, slots=True)
class FetchedCredential:
    """A served credential. ``credential_json`` is the sealed canonical JSON object as
    stored, so the route can place it in the response without parsing it again."""

    line_id: str
    tenant_id: str
    type: str
    version: int
    credential_json: bytes
    expires_at: datetime | None
    lease_ttl: int

    @property
    def credential(self) -> dict[str, Any]:
        return decode_credential(self.credential_json)

    def __repr__(self) -> str:  # the secret never reaches a log by accident
        return f"FetchedCredential(line_id={self.line_id!r}, version={self.version})"


@dataclass(frozen=True, slots=True)
class _Decision:
    """What to audit, then what to answer: the secret or a typed error."""

    event: AuditEvent
    result: FetchedCredential | None = None
    error: VaultError | None = None


_INVALID_TOKEN = "a valid runner access token is required"  # noqa: S105


class CredentialFetcher:
    """Serves ``GET /v1/tenants/{t}/lines/{l}/credential`` for runner tokens.

    :meth:`fetch` is the blocking form, :meth:`fetch_async` the event-loop form used by
    the route; both make the same decision from the same single row.
    """

    def __init__(
        self,
        *,
        engine: Engine,
        keyring: KeyRing,
        system_keys: SystemKeys,
        audit: AuditTrail,
        writer: AuditWriter,
        clock: Clock,
        rate_limit_per_minute: int,
        lease_ttl_seconds: int,
        audit_timeout: float = 10.0,
    ) -> None:
        self._sync = SyncReader(engine, _STATEMENT)
        self._async_pg = None if is_sqlite(engine) else AsyncPgReader(engine, _STATEMENT)
        self._keyring = keyring
        self._keys = system_keys
        self._token_key = token_mac_key(system_keys)
        self._audit = audit
        self._writer = writer
        self._clock = clock
        self._limit = rate_limit_per_minute
        self._lease_ttl = lease_ttl_seconds
        self._audit_timeout = audit_timeout
        self._bridges: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AuditBridge] = (
            weakref.WeakKeyDictionary()
        )

    # -- the two entry points -----------------------------------------------------------

    def fetch(
        self, *, token: str | None, tenant_id: str, line_id: str, context: RequestContext
    ) -> FetchedCredential:
        """Return the secret after its audit event is durable, or raise a typed error.

        Every refusal is audited (``denied``) before it is raised. A tenant or line the
        runner holds no grant for is ``NotFound``, whether or not it exists.
        """
        now = self._clock.now()
        params = self._params(token, tenant_id, line_id, now)
        row = self._sync.read(params) if params is not None else None
        decision = self._decide(row, now=now, tenant_id=tenant_id, line_id=line_id, context=context)
        self._audit.emit(decision.event)
        return self._answer(decision)

    async def fetch_async(
        self, *, token: str | None, tenant_id: str, line_id: str, context: RequestContext
    ) -> FetchedCredential:
        now = self._clock.now()
        params = self._params(token, tenant_id, line_id, now)
        row = None
        if params is not None:
            if self._async_pg is not None:
                try:
                    row = await self._async_pg.read(params)
                except psycopg.Error:
                    raise Unavailable("the database is unavailable") from None
            else:
                row = await asyncio.to_thread(self._sync.read, params)
        decision = self._decide(row, now=now, tenant_id=tenant_id, line_id=line_id, context=context)
        try:
            async with asyncio.timeout(self._audit_timeout):
                await self._bridge().watch(self._writer.submit(decision.event))
        except Exception:
            raise AuditUnavailable() from None
        return self._answer(decision)

    def _bridge(self) -> AuditBridge:
        loop = asyncio.get_running_loop()
        bridge = self._bridges.get(loop)
        if bridge is None:
            bridge = self._bridges[loop] = AuditBridge(loop)
        return bridge

    async def aclose(self) -> None:
        if self._async_pg is not None:
            await self._async_pg.aclose()

    # -- one decision -------------------------------------------------------------------

    def _params(
        self, token: str | None, tenant_id: str, line_id: str, now: datetime
    ) -> dict[str, Any] | None:
        if not token or not looks_like_runner_token(token):
            return None
        return {
            "token_hash": hmac_sha256(self._token_key, token.encode()),
            "tenant_id": tenant_id[:_ID_MAX],
            "line_id": line_id[:_ID_MAX],
            "window": minute_window(now),
        }

    @staticmethod
    def _answer(decision: _Decision) -> FetchedCredential:
        if decision.error is not None:
            raise decision.error
        assert decision.result is not None
        return decision.result

    def _decide(
        self, row: Any, *, now: datetime, tenant_id: str, line_id: str, context: RequestContext
    ) -> _Decision:
        def deny(reason: str, error: VaultError, runner_id: str | None = None) -> _Decision:
            event = _event(runner_id, tenant_id, line_id, context, outcome="denied", reason=reason)
            return _Decision(event=event, error=error)

        if row is None:
            return deny("invalid_token", Unauthenticated(_INVALID_TOKEN))
        runner_id: str = row.runner_id
        if row.token_expires_at <= now:
            return deny("token_expired", Unauthenticated("the access token has expired"), runner_id)
        if row.runner_disabled_at is not None:
            return deny("runner_disabled", Unauthenticated(_INVALID_TOKEN), runner_id)
        if row.used is not None and row.used >= self._limit:
            retry = RateLimited(retry_after=math.ceil(60 - now.timestamp() % 60))
            return deny(RATE_LIMITED, retry, runner_id)
        if row.tenant_id is None or row.tenant_deleted_at is not None:
            return deny("no_such_tenant", NotFound(), runner_id)
        if not row.granted:
            return deny("not_granted", NotFound(), runner_id)
        if row.line_id is None:
            return deny("no_such_line", NotFound(), runner_id)
        if (
            row.status != "active"
            or row.ciphertext is None
            or row.wrapped_dek is None
            or row.kek_state in (None, "destroyed")
            or row.kek_wrapped is None
        ):
            return deny("revoked", Revoked(), runner_id)
        try:
            kek = self._keyring.unwrap_kek(
                tenant_id=tenant_id,
                version=row.kek_version,
                root_key_id=row.root_key_id,
                wrapped=row.kek_wrapped,
            )
            # KeyRing.open_credential's two opens, with the associated data cached.
            dek = open_sealed(
                kek,
                bytes(row.wrapped_dek),
                aad=_dek_ad(tenant_id, line_id, row.version, row.kek_version),
            )
            plaintext = open_sealed(
                dek,
                bytes(row.ciphertext),
                aad=_credential_ad(tenant_id, line_id, row.type, row.version),
            )
            if not (plaintext.startswith(b"{") and plaintext.endswith(b"}")):
                raise ValueError("a credential must be a JSON object")
        except KmsUnavailable as exc:
            event = _event(
                runner_id, tenant_id, line_id, context, outcome="error", reason="kms_unavailable"
            )
            return _Decision(event=event, error=Unavailable(str(exc) or "key provider unavailable"))
        except Exception as exc:
            reason = type(exc).__name__
            event = _event(runner_id, tenant_id, line_id, context, outcome="error", reason=reason)
            return _Decision(event=event, error=Unavailable("the credential could not be opened"))
        event = AuditEvent(
            action=FETCH_ACTION,
            outcome="success",
            actor_type="runner",
            actor_id=runner_id,
            tenant_id=tenant_id,
            resource_type="line",
            resource_id=line_id,
            # A credential past its own expiry is still served (the platform decides), but
            # the event says so, so reviewers and alerts see runners using stale tokens.
            reason=fetch_expiry_reason(row.line_expires_at, now=now),
            context=context,
            details={"version": row.version},
        )
        result = FetchedCredential(
            line_id=line_id,
            tenant_id=tenant_id,
            type=row.type,
            version=row.version,
            credential_json=plaintext,
            expires_at=row.line_expires_at,
            lease_ttl=self._lease_ttl,
        )
        return _Decision(event=event, result=result)

    def refuse_user(
        self, *, user_id: str, tenant_id: str, line_id: str, context: RequestContext
    ) -> None:
        """Humans never receive a stored secret: audit the attempt, then refuse."""
        event = _event(
            user_id, tenant_id, line_id, context, outcome="denied", reason="not_a_runner"
        )
        self._audit.emit(replace(event, actor_type="user"))
        raise Forbidden("only workflow runners receive credentials")


def _event(
    actor_id: str | None,
    tenant_id: str,
    line_id: str,
    context: RequestContext,
    *,
    outcome: Outcome,
    reason: str,
) -> AuditEvent:
    return AuditEvent(
        action=FETCH_ACTION,
        outcome=outcome,
        actor_type="runner",
        actor_id=actor_id,
        tenant_id=tenant_id,
        resource_type="line",
        resource_id=line_id,
        reason=reason,
        context=context,
    )


# -- cross-process usage counters ---------------------------------------------------------


# One statement text for both dialects (SQLite >= 3.24 and PostgreSQL share the upsert
# syntax), run on the driver connection: the hook runs inside every audit batch, on the
# writer's critical path, so it skips statement construction and SQLAlchemy's execution
# context (measured: they were 15 % of the writer's CPU).
_UPSERT_USAGE = (
    'INSERT INTO runner_usage (runner_id, "window", count) VALUES ({p}, {p}, {p}) '
    'ON CONFLICT (runner_id, "window") DO UPDATE SET count = runner_usage.count + excluded.count'
)
_PRUNE_USAGE = 'DELETE FROM runner_usage WHERE "window" < {p}'


def usage_hook(clock: Clock, *, keep_windows: int = 10) -> BatchHook:
    """A batch hook adding each batch's fetches per runner to this minute's counter.

    Fetches refused for the rate limit itself are not counted (a runner over its limit
    gets going again next minute). Old windows are pruned when the minute changes.
    """
    state = {"pruned": -1}

    def hook(
        session: Session, events: Sequence[AuditEvent], _rows: Sequence[dict[str, object]]
    ) -> None:
        counts: Counter[str] = Counter()
        for e in events:
            if (
                e.action == FETCH_ACTION
                and e.actor_type == "runner"
                and e.actor_id is not None
                and e.reason != RATE_LIMITED
            ):
                counts[e.actor_id] += 1
        if not counts:
            return
        window = minute_window(clock.now())
        conn = session.connection()
        mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            # Sorted, so two processes' batches lock counter rows in the same order.
            for runner_id, n in sorted(counts.items()):
                cursor.execute(_UPSERT_USAGE.format(p=mark), (runner_id, window, n))
            if state["pruned"] != window:
                cursor.execute(_PRUNE_USAGE.format(p=mark), (window - keep_windows,))
                state["pruned"] = window
        finally:
            cursor.close()

    return hook
