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

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Engine, Table, and_, bindparam, delete, exists, literal, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from vault.audit.events import AuditEvent, RequestContext
from vault.audit.trail import AuditTrail
from vault.audit.writer import BatchHook
from vault.clock import Clock
from vault.errors import Forbidden, NotFound, RateLimited, Revoked, Unauthenticated
from vault.keys.keyring import KeyRing
from vault.keys.system import SystemKeys
from vault.runners.secrets import looks_like_runner_token, token_hash
from vault.storage.engine import is_sqlite, readonly
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


@dataclass(frozen=True, slots=True)
class FetchedCredential:
    line_id: str
    tenant_id: str
    type: str
    version: int
    credential: dict[str, Any]
    expires_at: datetime | None
    lease_ttl: int

    def __repr__(self) -> str:  # the secret never reaches a log by accident
        return f"FetchedCredential(line_id={self.line_id!r}, version={self.version})"


class CredentialFetcher:
    """Serves ``GET /v1/tenants/{t}/lines/{l}/credential`` for runner tokens."""

    def __init__(
        self,
        *,
        engine: Engine,
        keyring: KeyRing,
        system_keys: SystemKeys,
        audit: AuditTrail,
        clock: Clock,
        rate_limit_per_minute: int,
        lease_ttl_seconds: int,
    ) -> None:
        # SQLite: a deferred (shared) transaction; PostgreSQL: autocommit, so the read is
        # the only round trip (no BEGIN/ROLLBACK around one consistent statement).
        self._engine = (
            readonly(engine)
            if is_sqlite(engine)
            else engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        self._keyring = keyring
        self._keys = system_keys
        self._audit = audit
        self._clock = clock
        self._limit = rate_limit_per_minute
        self._lease_ttl = lease_ttl_seconds

    # -- the hot path -----------------------------------------------------------------

    def fetch(
        self, *, token: str | None, tenant_id: str, line_id: str, context: RequestContext
    ) -> FetchedCredential:
        """Return the secret after its audit event is durable, or raise a typed error.

        Every refusal is audited (``denied``) before it is raised. A tenant or line the
        runner holds no grant for is ``NotFound``, whether or not it exists.
        """
        if not token or not looks_like_runner_token(token):
            self._deny(None, tenant_id, line_id, context, "invalid_token")
            raise Unauthenticated("a valid runner access token is required")
        now = self._clock.now()
        window = minute_window(now)
        params = {
            "token_hash": token_hash(self._keys, token),
            "tenant_id": tenant_id[:_ID_MAX],
            "line_id": line_id[:_ID_MAX],
            "window": window,
        }
        with self._engine.connect() as conn:
            row = conn.execute(_STATEMENT, params).first()
        if row is None:
            self._deny(None, tenant_id, line_id, context, "invalid_token")
            raise Unauthenticated("a valid runner access token is required")
        runner_id: str = row.runner_id
        if row.token_expires_at <= now:
            self._deny(runner_id, tenant_id, line_id, context, "token_expired")
            raise Unauthenticated("the access token has expired")
        if row.runner_disabled_at is not None:
            self._deny(runner_id, tenant_id, line_id, context, "runner_disabled")
            raise Unauthenticated("a valid runner access token is required")
        if row.used is not None and row.used >= self._limit:
            self._deny(runner_id, tenant_id, line_id, context, RATE_LIMITED)
            raise RateLimited(retry_after=math.ceil(60 - now.timestamp() % 60))
        if row.tenant_id is None or row.tenant_deleted_at is not None:
            self._deny(runner_id, tenant_id, line_id, context, "no_such_tenant")
            raise NotFound()
        if not row.granted:
            self._deny(runner_id, tenant_id, line_id, context, "not_granted")
            raise NotFound()
        if row.line_id is None:
            self._deny(runner_id, tenant_id, line_id, context, "no_such_line")
            raise NotFound()
        if (
            row.status != "active"
            or row.ciphertext is None
            or row.wrapped_dek is None
            or row.kek_state in (None, "destroyed")
            or row.kek_wrapped is None
        ):
            self._deny(runner_id, tenant_id, line_id, context, "revoked")
            raise Revoked()
        try:
            kek = self._keyring.unwrap_kek(
                tenant_id=tenant_id,
                version=row.kek_version,
                root_key_id=row.root_key_id,
                wrapped=row.kek_wrapped,
            )
            credential = decode_credential(
                self._keyring.open_credential(
                    kek=kek,
                    kek_version=row.kek_version,
                    tenant_id=tenant_id,
                    line_id=line_id,
                    line_type=row.type,
                    credential_version=row.version,
                    wrapped_dek=row.wrapped_dek,
                    ciphertext=row.ciphertext,
                )
            )
        except Exception as exc:
            self._event(
                runner_id, tenant_id, line_id, context, outcome="error", reason=type(exc).__name__
            )
            raise
        self._audit.emit(
            AuditEvent(
                action=FETCH_ACTION,
                outcome="success",
                actor_type="runner",
                actor_id=runner_id,
                tenant_id=tenant_id,
                resource_type="line",
                resource_id=line_id,
                context=context,
                details={"version": row.version},
            )
        )
        return FetchedCredential(
            line_id=line_id,
            tenant_id=tenant_id,
            type=row.type,
            version=row.version,
            credential=credential,
            expires_at=row.line_expires_at,
            lease_ttl=self._lease_ttl,
        )

    def refuse_user(
        self, *, user_id: str, tenant_id: str, line_id: str, context: RequestContext
    ) -> None:
        """Humans never receive a stored secret: audit the attempt, then refuse."""
        self._audit.emit(
            AuditEvent(
                action=FETCH_ACTION,
                outcome="denied",
                actor_type="user",
                actor_id=user_id,
                tenant_id=tenant_id,
                resource_type="line",
                resource_id=line_id,
                reason="not_a_runner",
                context=context,
            )
        )
        raise Forbidden("only workflow runners receive credentials")

    # -- refusals ---------------------------------------------------------------------

    def _deny(
        self,
        runner_id: str | None,
        tenant_id: str,
        line_id: str,
        context: RequestContext,
        reason: str,
    ) -> None:
        self._event(runner_id, tenant_id, line_id, context, outcome="denied", reason=reason)

    def _event(
        self,
        runner_id: str | None,
        /,
        tenant_id: str,
        line_id: str,
        context: RequestContext,
        *,
        outcome: Any,
        reason: str,
    ) -> None:
        self._audit.emit(
            AuditEvent(
                action=FETCH_ACTION,
                outcome=outcome,
                actor_type="runner",
                actor_id=runner_id,
                tenant_id=tenant_id,
                resource_type="line",
                resource_id=line_id,
                reason=reason,
                context=context,
            )
        )


# -- cross-process usage counters ---------------------------------------------------------


def usage_hook(clock: Clock, *, keep_windows: int = 10) -> BatchHook:
    """A batch hook adding each batch's fetches per runner to this minute's counter.

    Fetches refused for the rate limit itself are not counted (a runner over its limit
    gets going again next minute). Old windows are pruned when the minute changes.
    """
    state = {"pruned": -1}

    def hook(
        session: Session, events: Sequence[AuditEvent], _rows: Sequence[dict[str, object]]
    ) -> None:
        counts = Counter(
            e.actor_id
            for e in events
            if e.action == FETCH_ACTION
            and e.actor_type == "runner"
            and e.actor_id is not None
            and e.reason != RATE_LIMITED
        )
        if not counts:
            return
        window = minute_window(clock.now())
        dialect = session.get_bind().dialect.name
        insert_ = sqlite_insert if dialect == "sqlite" else pg_insert
        stmt = insert_(_U)
        stmt = stmt.on_conflict_do_update(
            index_elements=[_U.c.runner_id, _U.c.window],
            set_={"count": _U.c.count + stmt.excluded.count},
        )
        session.execute(
            stmt,
            [{"runner_id": rid, "window": window, "count": n} for rid, n in sorted(counts.items())],
        )
        if state["pruned"] != window:
            session.execute(delete(_U).where(_U.c.window < window - keep_windows))
            state["pruned"] = window

    return hook
