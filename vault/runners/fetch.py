"""The audited credential fetch: the hot path of the whole service.

A request costs at most one indexed SQL read, microseconds of crypto and one share of a
group commit:

1. ONE Core ``SELECT`` keyed by the token's keyed hash joins the token and its runner,
   the tenant, the line, the line's KEK version row, the grant (the ``grant_lines``
   entries on (runner, tenant, line-or-*)), this minute's usage counter and the
   authorization epoch (:class:`vault.storage.models.AuthzEpoch`). It runs on the
   process's one pool, in a thread (:class:`vault.runners.statement.FetchRead`). The
   grant entry and the line's status carry MACs under a root-derived key, checked in
   memory (:mod:`vault.keys.integrity`, about 2 µs each): a row written by
   direct SQL without the key is refused like a missing grant, and recorded as an
   ``integrity.violation`` event (fresh reads only; a cached row was checked when read).
2. The tenant KEK comes from the bounded in-memory cache (an HSM round trip on a miss),
   then the key ring opens the DEK and the secret (two AES-GCM opens).
3. The ``credential.fetch`` event goes to the group-commit writer; the secret is returned
   only once the event is durable (fail-closed: 503 and no secret otherwise).

A suspended line or a line of a suspended tenant is refused with 423 ``suspended``
(:func:`vault.lines.status.state_refusal`, from the statuses of that same read); a
suspension moves the epoch like a revocation, so it reaches every process at once.

Step 1 is skipped when the same (token, tenant, line) was served before: the row that
allowed it is kept in a bounded in-memory cache (envelopes stay sealed in it) with the
epoch it was read under, and the event is submitted with that epoch as its guard. The
writer appends it only if the database's epoch still equals the guard, in the same
statement that writes the event; triggers move the epoch on every change of a table
step 1 reads, so a revocation (token, runner, grant, line, KEK, tenant) committed in
any process makes the next request decide again from the database, before any secret
is sent (:class:`vault.audit.writer.StaleDecision`). Time-dependent checks (token
expiry, rate limit, credential expiry) are made afresh on every request.

A ``use`` grant (``grant_lines.access``, bound by the grant MAC) gets the credential
without its signing material (:func:`vault.runners.use.without_signing_material`). The
uses of that material without revealing it, ``sign`` and ``appsecret-proof``
(:mod:`vault.runners.use`), run this same path through :meth:`CredentialFetcher.use`:
the same read, cache and decision, audited under their own action.

Rate limits are per runner per minute and shared by every process (fetches, signs and
proofs count alike): the audit writer
adds each batch's served fetches to ``runner_usage`` inside the batch and reads back the
totals (:mod:`vault.runners.usage`). The count can lag by at most the batches in flight,
the right trade for not adding a write per request.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from kms.crypto import hmac_sha256
from kms.errors import KmsUnavailable
from vault.audit.events import AuditEvent, RequestContext
from vault.audit.flood import FailureFlood
from vault.audit.trail import AuditTrail
from vault.audit.writer import AuditWriter, StaleDecision
from vault.clock import Clock
from vault.errors import (
    AuditUnavailable,
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    Revoked,
    Unauthenticated,
    Unavailable,
    VaultError,
)
from vault.keys.integrity import FULL_ACCESS, integrity_event, row_macs
from vault.keys.keyring import KeyRing
from vault.keys.system import SystemKeys
from vault.lines.expiry import fetch_expiry_reason
from vault.lines.status import state_refusal
from vault.metrics import DECISIONS
from vault.runners.bridge import AuditBridge
from vault.runners.decisions import DecisionCache, Key
from vault.runners.events import fetch_event
from vault.runners.secrets import looks_like_runner_token, token_mac_key
from vault.runners.statement import FetchRead, decode_credential, fetch_statement
from vault.runners.usage import FETCH_ACTION, RATE_LIMITED, UsageCounter
from vault.runners.use import (
    NO_APP_SECRET,
    WRONG_TYPE,
    LineUse,
    UsedCredential,
    without_signing_material,
)
from vault.storage.usage import minute_window

__all__ = [
    "FETCH_ACTION",
    "CredentialFetcher",
    "FetchedCredential",
    "UsedCredential",
    "decode_credential",
    "fetch_statement",
]


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
    # When the line's current version was written (the KV v2 read's ``created_time``).
    updated_at: datetime | None = None

    @property
    def credential(self) -> dict[str, Any]:
        return decode_credential(self.credential_json)

    def __repr__(self) -> str:  # the secret never reaches a log by accident
        return f"FetchedCredential(line_id={self.line_id!r}, version={self.version})"


@dataclass(frozen=True, slots=True)
class _Decision:
    """What to audit, then what to answer: the secret or a typed error."""

    event: AuditEvent
    result: FetchedCredential | UsedCredential | None = None
    error: VaultError | None = None
    alarm: AuditEvent | None = None  # an integrity.violation, written before ``event``


_INVALID_TOKEN = "a valid runner access token is required"  # noqa: S105
# Audited reasons of a row that failed its MAC (refused as a missing grant would be).
GRANT_TAMPERED = "grant_integrity"
LINE_TAMPERED = "line_integrity"
_TAMPERED = {GRANT_TAMPERED: "grant", LINE_TAMPERED: "line"}


def _ignore(_seq: int | None, _error: BaseException | None) -> None:
    """The alarm's outcome: the fetch event written after it fails closed for both."""


class CredentialFetcher:
    """Serves ``GET /v1/tenants/{t}/lines/{l}/credential`` for runner tokens.

    :meth:`fetch` is the one entry point: the route, the fast path in front of it and
    the tests all run it, on the event loop.
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
        usage: UsageCounter,
        rate_limit_per_minute: int,
        lease_ttl_seconds: int,
        audit_timeout: float = 10.0,
        cache_size: int = 10_000,
        flood: FailureFlood | None = None,
    ) -> None:
        self._flood = flood
        self._read = FetchRead(engine)
        self._keyring = keyring
        self._token_key = token_mac_key(system_keys)
        self._macs = row_macs(system_keys)
        self._audit = audit
        self._writer = writer
        self._clock = clock
        self._limit = rate_limit_per_minute
        self._near_limit = rate_limit_per_minute - max(1, rate_limit_per_minute // 10)
        self._lease_ttl = lease_ttl_seconds
        self._audit_timeout = audit_timeout
        self._usage = usage
        self._cache = DecisionCache(cache_size)
        self._bridges: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AuditBridge] = (
            weakref.WeakKeyDictionary()
        )

    async def fetch(
        self, *, token: str | None, tenant_id: str, line_id: str, context: RequestContext
    ) -> FetchedCredential:
        """Return the secret after its audit event is durable, or raise a typed error.

        Every refusal is audited (``denied``) before it is raised. A tenant or line the
        runner holds no grant for is ``NotFound``, whether or not it exists. The ids are
        the API's (its id rule, :mod:`vault.validation`), used as given. A ``use``
        grant's answer has no signing material.
        """
        got = await self._serve(token, tenant_id, line_id, context, None)
        assert isinstance(got, FetchedCredential)
        return got

    async def use(
        self,
        how: LineUse,
        *,
        token: str | None,
        tenant_id: str,
        line_id: str,
        context: RequestContext,
    ) -> UsedCredential:
        """Use the line's secret without revealing it (sign, appsecret_proof): the fetch's
        decision and denials exactly, audited as ``how.action``; a line of another type
        (or without the secret ``how`` needs) is ``Conflict``, after the access checks."""
        got = await self._serve(token, tenant_id, line_id, context, how)
        assert isinstance(got, UsedCredential)
        return got

    async def _serve(
        self,
        token: str | None,
        tenant_id: str,
        line_id: str,
        context: RequestContext,
        use: LineUse | None,
    ) -> FetchedCredential | UsedCredential:
        now = self._clock.now()
        params = self._params(token, tenant_id, line_id, now)
        row = None
        if params is not None:
            hit = self._from_cache(params, now=now, context=context, use=use)
            if hit is not None:
                decision, guard = hit
                try:
                    await self._durable(decision.event, guard)
                    DECISIONS("hit").inc()
                    return self._answer(decision)
                except StaleDecision:
                    DECISIONS("stale").inc()
                    self._forget(params)
            DECISIONS("miss").inc()
            try:
                # The read's own timeouts (statement, TCP, pool) bound the thread; the
                # request waits no longer than the audit wait either way.
                read = asyncio.to_thread(self._read, params)
                row = self._pick(await asyncio.wait_for(read, self._audit_timeout))
            except (DBAPIError, PoolTimeout, TimeoutError):
                raise Unavailable("the database is unavailable") from None
        decision = self._fresh(
            row, params, now=now, context=context, ids=(tenant_id, line_id), use=use
        )
        if decision.alarm is not None:
            self._writer.submit_callback(decision.alarm, _ignore)
        if self._flood is not None and isinstance(decision.error, Unauthenticated):
            # An unauthenticated failure (no valid token): limited and aggregated per
            # address. Only refusals come here; a valid token never does.
            await asyncio.to_thread(self._flood.record, decision.event, context)
            raise decision.error
        await self._durable(decision.event, None)
        return self._answer(decision)

    async def _durable(self, event: AuditEvent, guard: int | None) -> None:
        waiter, done = self._bridge().watch(timeout=self._audit_timeout)
        self._writer.submit_callback(event, done, guard=guard)
        try:
            await waiter
        except StaleDecision:
            raise
        except Exception:
            raise AuditUnavailable() from None

    def _bridge(self) -> AuditBridge:
        loop = asyncio.get_running_loop()
        bridge = self._bridges.get(loop)
        if bridge is None:
            bridge = self._bridges[loop] = AuditBridge(loop)
        return bridge

    def refuse_user(
        self,
        *,
        user_id: str,
        tenant_id: str,
        line_id: str,
        context: RequestContext,
        action: str = FETCH_ACTION,
    ) -> None:
        """Humans never receive (or use) a stored secret: audit the attempt, then refuse."""
        self._audit.emit(
            fetch_event(
                user_id,
                tenant_id,
                line_id,
                context,
                outcome="denied",
                reason="not_a_runner",
                actor_type="user",
                action=action,
            )
        )
        raise Forbidden("only workflow runners receive credentials")

    # -- the decision cache -------------------------------------------------------------

    @staticmethod
    def _key(params: dict[str, Any]) -> Key:
        return (params["token_hash"], params["tenant_id"], params["line_id"])

    def _from_cache(
        self,
        params: dict[str, Any],
        *,
        now: datetime,
        context: RequestContext,
        use: LineUse | None,
    ) -> tuple[_Decision, int] | None:
        """A decision to serve from a cached row, with its guard; None to read instead.

        Only rows that allowed a fetch are cached, and only a decision that still allows
        it is taken from them (an expired token, a rate limit or a count within 10 % of
        it reads afresh, so every refusal is made from the database's current state)."""
        cached = self._cache.get(self._key(params), newest_epoch=self._writer.epoch)
        if cached is None:
            return None
        if self._usage.used(cached.row.runner_id, params["window"]) >= self._near_limit:
            # Close to the limit, the database's count (other processes' fetches
            # included) decides, not this process's view of it.
            return None
        decision = self._decide(
            cached.row,
            now=now,
            window=params["window"],
            row_window=cached.window,
            ids=(params["tenant_id"], params["line_id"]),
            context=context,
            use=use,
        )
        if decision.result is None:
            return None
        return decision, cached.epoch

    def _fresh(
        self,
        row: Any,
        params: dict[str, Any] | None,
        *,
        now: datetime,
        context: RequestContext,
        ids: tuple[str, str],
        use: LineUse | None,
    ) -> _Decision:
        window = params["window"] if params is not None else minute_window(now)
        decision = self._decide(
            row,
            now=now,
            window=window,
            row_window=window,
            ids=ids,
            context=context,
            fresh=True,
            use=use,
        )
        if decision.result is not None and params is not None and row.epoch is not None:
            self._cache.put(self._key(params), row, epoch=int(row.epoch), window=window)
        return decision

    def _forget(self, params: dict[str, Any]) -> None:
        self._cache.forget(self._key(params))

    def _pick(self, rows: Any) -> Any:
        """The read's row to decide on: with several grant entries, one whose MAC holds,
        a ``full`` one before a ``use`` one."""
        if not rows:
            return None
        if len(rows) > 1:
            valid = [row for row in rows if self._grant_ok(row)]
            for row in valid:
                if row.grant_access == FULL_ACCESS:
                    return row
            if valid:
                return valid[0]
        return rows[0]

    def _grant_ok(self, row: Any) -> bool:
        return self._macs.grant_line_ok(
            row.grant_mac,
            grant_id=row.grant_id,
            tenant_id=row.tenant_id,
            runner_id=row.runner_id,
            line_id=row.grant_line,
            access=row.grant_access,
        )

    # -- one decision -------------------------------------------------------------------

    def _params(
        self, token: str | None, tenant_id: str, line_id: str, now: datetime
    ) -> dict[str, Any] | None:
        if not token or not looks_like_runner_token(token):
            return None
        return {
            "token_hash": hmac_sha256(self._token_key, token.encode()),
            "tenant_id": tenant_id,
            "line_id": line_id,
            "window": minute_window(now),
        }

    @staticmethod
    def _answer(decision: _Decision) -> FetchedCredential | UsedCredential:
        if decision.error is not None:
            raise decision.error
        assert decision.result is not None
        return decision.result

    def _decide(
        self,
        row: Any,
        *,
        now: datetime,
        window: int,
        row_window: int,
        ids: tuple[str, str],
        context: RequestContext,
        fresh: bool = False,
        use: LineUse | None = None,
    ) -> _Decision:
        """The one decision, from a row read now or cached (None: no such token).

        Only a ``fresh`` row's MACs are checked: a cached row was checked when it was
        read, and any change to the rows it came from moves the epoch. With ``use`` the
        same checks come first; then the line's type, then the secret is used."""
        tenant_id, line_id = ids
        action = FETCH_ACTION if use is None else use.action
        refusal = self._refusal(row, now=now, window=window, row_window=row_window, verify=fresh)
        if refusal is None and use is not None and row.type not in use.types:
            refusal = WRONG_TYPE, Conflict(use.refusal_detail)
        if refusal is not None:
            return self._refused(row, refusal, ids=ids, context=context, action=action)
        try:
            plaintext = self._open(row, tenant_id, line_id)
            values = None if use is None else use.compute(row.type, decode_credential(plaintext))
        except Conflict as exc:  # the line lacks what the use needs (an app_secret)
            return self._refused(row, (NO_APP_SECRET, exc), ids=ids, context=context, action=action)
        except KmsUnavailable as exc:
            reason, error = "kms_unavailable", Unavailable(str(exc) or "key provider unavailable")
        except Exception as exc:
            reason, error = type(exc).__name__, Unavailable("the credential could not be opened")
        else:
            return self._served(
                row, plaintext, values, now=now, ids=ids, context=context, action=action
            )
        event = fetch_event(
            row.runner_id,
            tenant_id,
            line_id,
            context,
            outcome="error",
            reason=reason,
            action=action,
        )
        return _Decision(event=event, error=error)

    @staticmethod
    def _refused(
        row: Any,
        refusal: tuple[str, VaultError],
        *,
        ids: tuple[str, str],
        context: RequestContext,
        action: str,
    ) -> _Decision:
        """A refusal's decision: its ``denied`` event, and an alarm for a failed MAC."""
        reason, error = refusal
        tenant_id, line_id = ids
        runner_id = None if row is None else row.runner_id
        event = fetch_event(
            runner_id, tenant_id, line_id, context, outcome="denied", reason=reason, action=action
        )
        alarm = None
        if reason in _TAMPERED:
            kind = _TAMPERED[reason]
            alarm = integrity_event(
                runner_id=runner_id,
                tenant_id=tenant_id,
                resource=(kind, row.grant_id if kind == "grant" else line_id),
                reason=reason,
                context=context,
            )
        return _Decision(event=event, error=error, alarm=alarm)

    # One return per refusal, in the order they are audited: a table of checks would cost
    # a closure call per check on the hot path.
    def _refusal(
        self, row: Any, *, now: datetime, window: int, row_window: int, verify: bool
    ) -> tuple[str, VaultError] | None:
        """Why ``row`` allows no fetch now (the audited reason and the error), or None."""
        if row is None:
            return "invalid_token", Unauthenticated(_INVALID_TOKEN)
        if row.token_expires_at <= now:
            return "token_expired", Unauthenticated("the access token has expired")
        if row.runner_disabled_at is not None:
            return "runner_disabled", Unauthenticated(_INVALID_TOKEN)
        used = self._usage.used(row.runner_id, window)
        if row.used is not None and row_window == window:
            used = max(used, row.used)
        if used >= self._limit:
            return RATE_LIMITED, RateLimited(retry_after=math.ceil(60 - now.timestamp() % 60))
        return self._access_refusal(row, verify=verify)

    def _access_refusal(  # noqa: PLR0911
        self, row: Any, *, verify: bool
    ) -> tuple[str, VaultError] | None:
        """The tenant, grant and line checks of :meth:`_refusal`, MACs first if ``verify``."""
        if row.tenant_id is None or row.tenant_deleted_at is not None:
            return "no_such_tenant", NotFound()
        if row.grant_id is None:
            return "not_granted", NotFound()
        if verify and not self._grant_ok(row):
            return GRANT_TAMPERED, NotFound()
        if row.line_id is None:
            return "no_such_line", NotFound()
        if verify and not self._macs.line_status_ok(
            row.status_mac,
            line_id=row.line_id,
            tenant_id=row.tenant_id,
            status=row.status,
            version=row.version,
        ):
            return LINE_TAMPERED, NotFound()
        # Suspended line or tenant: 423; revoked: 410 (the one rule, vault/lines/status.py).
        refusal = state_refusal(row.status, row.tenant_status)
        if refusal is not None:
            return refusal
        if (
            row.ciphertext is None
            or row.wrapped_dek is None
            or row.kek_state in (None, "destroyed")
            or row.kek_wrapped is None
        ):
            return "revoked", Revoked()
        return None

    def _open(self, row: Any, tenant_id: str, line_id: str) -> bytes:
        """The sealed credential of ``row``, opened by the key ring (KEK from its cache)."""
        kek = self._keyring.unwrap_kek(
            tenant_id=tenant_id,
            version=row.kek_version,
            root_key_id=row.root_key_id,
            wrapped=row.kek_wrapped,
        )
        plaintext = self._keyring.open_credential(
            kek=kek,
            kek_version=row.kek_version,
            tenant_id=tenant_id,
            line_id=line_id,
            line_type=row.type,
            credential_version=row.version,
            wrapped_dek=bytes(row.wrapped_dek),
            ciphertext=bytes(row.ciphertext),
        )
        if not (plaintext.startswith(b"{") and plaintext.endswith(b"}")):
            raise ValueError("a credential must be a JSON object")
        return plaintext

    def _served(
        self,
        row: Any,
        plaintext: bytes,
        values: dict[str, str] | None,
        *,
        now: datetime,
        ids: tuple[str, str],
        context: RequestContext,
        action: str,
    ) -> _Decision:
        tenant_id, line_id = ids
        event = fetch_event(
            row.runner_id,
            tenant_id,
            line_id,
            context,
            outcome="success",
            # A credential past its own expiry is still served (the platform decides), but
            # the event says so, so reviewers and alerts see runners using stale tokens.
            reason=fetch_expiry_reason(row.line_expires_at, now=now),
            details={"version": row.version},
            action=action,
        )
        result: FetchedCredential | UsedCredential
        if values is not None:
            result = UsedCredential(line_id, tenant_id, row.version, values)
        else:
            if row.grant_access != FULL_ACCESS:  # "use": no signing material
                plaintext = without_signing_material(plaintext)
            result = FetchedCredential(
                line_id=line_id,
                tenant_id=tenant_id,
                type=row.type,
                version=row.version,
                credential_json=plaintext,
                expires_at=row.line_expires_at,
                lease_ttl=self._lease_ttl,
                updated_at=row.line_updated_at,
            )
        return _Decision(event=event, result=result)
