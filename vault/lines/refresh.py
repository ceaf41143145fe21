"""Instagram token refresh: once per line across every server process (docs/connectors.md).

A long-lived Instagram token lasts 60 days and can be renewed (``refresh_access_token``)
once it is at least 24 hours old and not yet expired. :class:`Refresher` does it in
three steps, never holding a database transaction during the platform call:

1. claim: one short transaction claims the line's lease (:mod:`vault.lines.leases`:
   one conditional upsert, fencing + 1), re-reads the line *after* the claim (so a
   refresh another process committed just before is seen) and opens the credential;
2. the platform is asked, with no transaction open; the line keeps serving the old
   version meanwhile;
3. commit: one transaction checks the lease is still ours (owner and fencing, else
   nothing is written), and seals the new token as a new version exactly like a
   replace (``version`` + 1, fresh DEK, ``expires_at`` from ``expires_in``), sets
   ``last_refreshed_at`` and ``provider_status: ok``, requests the KEK rotation that
   retires the superseded envelope, records ``credential.refresh`` and enqueues the
   ``line.refreshed`` webhook. A line replaced meanwhile keeps the replacement.

A failed attempt (the platform refused or could not be reached) releases the lease with
a back-off (exponential with jitter, never shorter than the first delay), sets
``provider_status`` to ``refresh_failing`` (``invalid`` for Graph error 190: the token
is dead and only a replace helps; the background refresher then leaves the line alone),
and enqueues ``line.refresh_failed`` once per failure streak.

The background refresher (:class:`RefreshWorker`, one thread per server process) takes
due lines: active Instagram lines whose token expires within the window and is at least
24 hours old. ``POST .../refresh`` goes through :meth:`Refresher.refresh_now`: the same
claim, without the 24-hour wait and the back-off; a request that finds another
process's refresh in flight waits for it and answers its result (single flight), and so
does one that comes within a lease period after a refresh succeeded.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from vault.audit.events import Actor, RequestContext
from vault.audit.trail import AuditTrail
from vault.clock import Clock, rfc3339
from vault.connectors import ProviderChecks, Refreshed, RefreshResult, Refused, Rejected
from vault.errors import VaultError
from vault.keys.keyring import KeyRing
from vault.keys.schedule import request_rotation
from vault.keys.system import SystemKeys
from vault.lines.leases import Lease, claim_lease, failures_of, lease_failed, release_lease
from vault.lines.provider import open_line
from vault.lines.schemas import ParsedCredential, parse_credential
from vault.lines.service import line_event_by, load_line, load_tenant, seal_line
from vault.lines.status import ACTIVE, REVOKED
from vault.storage.engine import SessionFactory, unit_of_work
from vault.storage.models import Line, RefreshLease
from vault.webhooks.dispatcher import backoff
from vault.webhooks.outbox import enqueue

if TYPE_CHECKING:
    from vault.runtime import Runtime

__all__ = [
    "MIN_TOKEN_AGE",
    "REFRESH_ACTOR_ID",
    "RefreshConfig",
    "RefreshOutcome",
    "RefreshWorker",
    "Refresher",
    "refresh_worker_for",
    "refresher_for",
]

log = logging.getLogger("linevault.connectors")
REFRESH_ACTOR_ID = "linevault-refresher"
#: Instagram refreshes only a token at least this old (the background refresher waits).
MIN_TOKEN_AGE = timedelta(hours=24)
INSTAGRAM = "instagram"
_NO_CONTEXT = RequestContext()

Result = Literal["refreshed", "joined", "busy", "skipped", "failed", "lost"]


@dataclass(frozen=True, slots=True)
class RefreshConfig:
    before: timedelta  # refresh tokens expiring within this window
    interval: float  # the background refresher's poll, seconds (0: off)
    lease_seconds: float
    retry_first: float
    retry_max: float
    rotation_delay: timedelta
    batch: int = 50


@dataclass(frozen=True, slots=True)
class RefreshOutcome:
    """``refreshed`` (by us), ``joined`` (another refresh or replace got there first),
    ``busy`` (another process holds the lease), ``skipped`` (not due, not Instagram,
    gone), ``failed`` (``status`` and the platform's ``reason``), ``lost`` (our lease was
    taken over before we could commit: nothing written)."""

    result: Result
    version: int | None = None
    status: str | None = None
    reason: str | None = None
    failures: int = 0  # with ``busy``: the line's failure streak when we looked


@dataclass(frozen=True, slots=True)
class _Claim:
    lease: Lease
    tenant_id: str
    version: int
    fields: dict[str, Any] = field(repr=False)


def process_owner() -> str:
    """This process's lease owner id: host, pid and a random tag (pids get reused)."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{secrets.token_hex(4)}"


class Refresher:
    def __init__(
        self,
        sessions: SessionFactory,
        *,
        keyring: KeyRing,
        system_keys: SystemKeys,
        checks: ProviderChecks,
        audit: AuditTrail,
        clock: Clock,
        config: RefreshConfig,
        owner: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._sessions, self._keyring, self._system_keys = sessions, keyring, system_keys
        self._checks, self._audit, self._clock = checks, audit, clock
        self.config = config
        self.owner = owner or process_owner()
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret

    @property
    def enabled(self) -> bool:
        return self._checks.refreshes(INSTAGRAM)

    # -- the flow ---------------------------------------------------------------------

    def refresh(
        self,
        line_id: str,
        *,
        actor: Actor,
        manual: bool,
        seen_version: int | None = None,
        seen_failures: int | None = None,
        context: RequestContext = _NO_CONTEXT,
    ) -> RefreshOutcome:
        """One attempt: claim, ask the platform (no transaction open), commit or fail.
        ``seen_version``/``seen_failures``: what a waiting manual refresh saw, so that it
        answers the outcome of the refresh it waited for instead of asking again."""
        claim = self._claim(line_id, manual=manual, seen=(seen_version, seen_failures))
        if isinstance(claim, RefreshOutcome):
            return claim
        result = self._checks.refresh(INSTAGRAM, claim.fields)
        if isinstance(result, Refreshed):
            parsed = self._parsed(claim.fields, result)
            if parsed is not None:
                return self._commit(claim, parsed, actor, context)
            result = Refused("the platform's new token is not a valid token")
        return self._fail(claim, result, actor, context)

    def refresh_now(
        self, line_id: str, *, actor: Actor, seen_version: int, context: RequestContext
    ) -> RefreshOutcome:
        """The manual refresh: at once, without the 24 h wait or the back-off. While
        another process holds the lease, wait for its outcome (at most a lease TTL and a
        bit): once it commits, the line's version moved past ``seen_version`` and this
        answers ``joined``; if it failed, this answers that failure (no second call); if
        it died, its lease lapses and this claims it."""
        deadline = time.monotonic() + self.config.lease_seconds + 5.0
        failures: int | None = None
        while True:
            outcome = self.refresh(
                line_id,
                actor=actor,
                manual=True,
                seen_version=seen_version,
                seen_failures=failures,
                context=context,
            )
            if outcome.result != "busy" or time.monotonic() > deadline:
                return outcome
            failures = outcome.failures if failures is None else failures
            time.sleep(0.05 + self._rng.uniform(0, 0.1))

    def _claim(
        self, line_id: str, *, manual: bool, seen: tuple[int | None, int | None]
    ) -> _Claim | RefreshOutcome:
        with unit_of_work(self._sessions) as session:
            now = self._clock.now()
            lease = claim_lease(
                session,
                line_id,
                owner=self.owner,
                now=now,
                ttl=timedelta(seconds=self.config.lease_seconds),
                respect_backoff=not manual,
            )
            if lease is None:
                return RefreshOutcome("busy", failures=failures_of(session, line_id))
            # Read after the claim: a refresh committed before our claim is visible now.
            line = session.execute(
                select(Line).where(Line.id == line_id).execution_options(populate_existing=True)
            ).scalar_one_or_none()
            refusal = self._not_now(line, now, manual=manual, seen_version=seen[0])
            if refusal is None and line is not None:
                refusal = self._waited_for_a_failure(session, line, seen[1])
            if refusal is not None or line is None:
                joined = refusal is not None and refusal.result == "joined"
                release_lease(session, lease, end_streak=joined)
                return refusal or RefreshOutcome("skipped")
            fields = open_line(session, self._keyring, line)
            return _Claim(lease, line.tenant_id, line.version, fields)

    @staticmethod
    def _waited_for_a_failure(
        session: Session, line: Line, seen_failures: int | None
    ) -> RefreshOutcome | None:
        """A waiting manual refresh whose awaited refresh failed answers that failure."""
        if seen_failures is None or failures_of(session, line.id) <= seen_failures:
            return None
        return RefreshOutcome(
            "failed",
            version=line.version,
            status=line.provider_status,
            reason="the refresh in flight at the same time failed",
        )

    def _not_now(
        self, line: Line | None, now: datetime, *, manual: bool, seen_version: int | None
    ) -> RefreshOutcome | None:
        if line is None or line.type != INSTAGRAM or line.status == REVOKED:
            return RefreshOutcome("skipped")
        if manual:
            if seen_version is not None and line.version != seen_version:
                return RefreshOutcome("joined", version=line.version)
            if self._just_refreshed(line, now):
                return RefreshOutcome("joined", version=line.version)
            return None
        if line.status != ACTIVE or not self.is_due(line, now):
            return RefreshOutcome("skipped", version=line.version)
        return None

    def _just_refreshed(self, line: Line, now: datetime) -> bool:
        """A manual refresh asked within one lease period after a refresh succeeded is
        answered with that refresh: requests racing at several processes (one may read
        the line only after the other's commit) make one call, and a button pressed
        twice does not ask the platform twice."""
        done = line.last_refreshed_at
        return done is not None and now - done < timedelta(seconds=self.config.lease_seconds)

    def is_due(self, line: Line, now: datetime) -> bool:
        """Expires within the window (not yet expired), token at least 24 h old, and not
        known dead (``invalid``: only a replace helps)."""
        old = now - MIN_TOKEN_AGE
        return (
            line.expires_at is not None
            and now < line.expires_at <= now + self.config.before
            and line.updated_at <= old
            and (line.last_refreshed_at is None or line.last_refreshed_at <= old)
            and line.provider_status != "invalid"
        )

    def _parsed(self, fields: dict[str, Any], result: Refreshed) -> ParsedCredential | None:
        """The line's credential with the new token and its expiry, validated as any
        credential (a platform answer is input too)."""
        new = {k: v for k, v in fields.items() if k != "expires_at"}
        new["access_token"] = result.access_token
        if result.expires_in is not None:
            expires = self._clock.now() + timedelta(seconds=result.expires_in)
            new["expires_at"] = rfc3339(expires.replace(microsecond=0))
        try:
            return parse_credential(INSTAGRAM, new)
        except VaultError:
            return None

    def _commit(
        self, claim: _Claim, parsed: ParsedCredential, actor: Actor, context: RequestContext
    ) -> RefreshOutcome:
        with unit_of_work(self._sessions) as session:
            now = self._clock.now()
            # Lock order as a replace (tenant, line), then the lease (as a line's delete).
            tenant = load_tenant(session, claim.tenant_id, share_lock=True)
            line = load_line(session, claim.tenant_id, claim.lease.line_id, lock=True)
            if not release_lease(session, claim.lease):
                return RefreshOutcome("lost")  # taken over after our lease ran out
            if line.version != claim.version or line.status == REVOKED:
                return RefreshOutcome("joined", version=line.version)  # replaced meanwhile
            line.version += 1
            line.updated_at = now
            kek = self._keyring.load_kek(
                session, tenant_id=tenant.id, version=tenant.active_kek_version
            )
            seal_line(
                line,
                parsed,
                kek=kek,
                kek_version=tenant.active_kek_version,
                keyring=self._keyring,
                system_keys=self._system_keys,
            )
            line.provider_status, line.checked_at, line.last_refreshed_at = "ok", now, now
            session.flush()
            request_rotation(
                session, tenant_id=tenant.id, now=now, delay=self.config.rotation_delay
            )
            self._record(session, actor, line, context, outcome="success")
            self._emit(session, "line.refreshed", line, now)
            return RefreshOutcome("refreshed", version=line.version)

    def _fail(
        self, claim: _Claim, result: RefreshResult, actor: Actor, context: RequestContext
    ) -> RefreshOutcome:
        status = "invalid" if isinstance(result, Rejected) else "refresh_failing"
        if isinstance(result, Rejected | Refused):
            reason = result.reason
        else:
            reason = "the platform could not be reached"
        with unit_of_work(self._sessions) as session:
            now = self._clock.now()
            line = session.execute(
                select(Line)
                .where(Line.id == claim.lease.line_id)
                .with_for_update()
                .execution_options(populate_existing=True)
            ).scalar_one_or_none()
            failures = lease_failed(session, claim.lease, now=now, delay_for=self.retry_delay)
            if failures is None:
                return RefreshOutcome("lost")
            if line is not None and line.version == claim.version and line.status != REVOKED:
                line.provider_status = status
                self._record(session, actor, line, context, outcome="error", reason=status)
                if failures == 1:  # once per failure streak
                    self._emit(session, "line.refresh_failed", line, now, provider_status=status)
        return RefreshOutcome("failed", version=claim.version, status=status, reason=reason)

    def retry_delay(self, failures: int) -> float:
        """Seconds before the next background attempt after ``failures`` in a row: the
        webhook back-off (exponential, equal jitter), floored at the first delay."""
        first, most = self.config.retry_first, self.config.retry_max
        return max(first, backoff(failures, first=first, maximum=most, rng=self._rng))

    def _record(
        self,
        session: Session,
        actor: Actor,
        line: Line,
        context: RequestContext,
        *,
        outcome: Literal["success", "error"],
        reason: str | None = None,
    ) -> None:
        self._audit.record(
            session,
            line_event_by(
                actor, "credential.refresh", line, context, outcome=outcome, reason=reason
            ),
        )

    @staticmethod
    def _emit(session: Session, event: str, line: Line, now: datetime, **extra: str) -> None:
        data = {"line_id": line.id, "version": line.version, "type": line.type, **extra}
        enqueue(session, tenant_id=line.tenant_id, event_type=event, data=data, now=now)

    # -- the background scan ----------------------------------------------------------

    def due_lines(self) -> list[str]:
        """Due lines whose lease is free and whose back-off has passed (a first look;
        the claim decides)."""
        now = self._clock.now()
        old = now - MIN_TOKEN_AGE
        lease = RefreshLease
        with unit_of_work(self._sessions) as session:
            stmt = (
                select(Line.id)
                .outerjoin(lease, lease.line_id == Line.id)
                .where(Line.type == INSTAGRAM, Line.status == ACTIVE)
                .where(Line.provider_status != "invalid", Line.expires_at.is_not(None))
                .where(Line.expires_at > now, Line.expires_at <= now + self.config.before)
                .where(Line.updated_at <= old)
                .where(or_(Line.last_refreshed_at.is_(None), Line.last_refreshed_at <= old))
                .where(
                    or_(
                        lease.line_id.is_(None),
                        and_(
                            lease.expires_at < now,
                            or_(lease.next_attempt_at.is_(None), lease.next_attempt_at <= now),
                        ),
                    )
                )
                .order_by(Line.expires_at, Line.id)
                .limit(self.config.batch)
            )
            return list(session.execute(stmt).scalars())

    def tick(self) -> int:
        """Refresh every due line once (up to the batch); the number refreshed."""
        if not self.enabled:
            return 0
        actor = Actor("system", REFRESH_ACTOR_ID)
        done = 0
        for line_id in self.due_lines():
            try:
                outcome = self.refresh(line_id, actor=actor, manual=False)
            except VaultError as exc:  # e.g. its tenant was deleted meanwhile: next line
                log.warning("instagram refresh of a line: %s", type(exc).__name__)
                continue
            done += outcome.result == "refreshed"
        return done


class RefreshWorker:
    """The background refresher's thread: :meth:`Refresher.tick` every ``interval``."""

    def __init__(self, refresher: Refresher, interval: float) -> None:
        self._refresher, self._interval = refresher, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._loop, name="linevault-instagram-refresh", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        # The first look comes after a random part of the interval, so processes started
        # together do not scan together.
        first = random.uniform(0, self._interval)  # noqa: S311 - jitter
        wait = first
        while not self._stop.wait(wait):
            wait = self._interval
            try:
                self._refresher.tick()
            except Exception as exc:  # a database hiccup must not end the thread
                log.warning("instagram refresh: %s", type(exc).__name__)


def refresh_config(runtime: Runtime) -> RefreshConfig:
    settings = runtime.settings
    return RefreshConfig(
        before=settings.instagram_refresh_window,
        interval=settings.instagram_refresh_interval_seconds,
        lease_seconds=settings.instagram_refresh_lease_seconds,
        retry_first=settings.instagram_refresh_retry_first_seconds,
        retry_max=settings.instagram_refresh_retry_max_seconds,
        rotation_delay=timedelta(seconds=settings.revocation_rotation_delay_seconds),
    )


def refresher_for(runtime: Runtime) -> Refresher:
    """The process's refresher (the manual route and the background thread share it)."""
    return Refresher(
        runtime.sessions,
        keyring=runtime.keyring,
        system_keys=runtime.system_keys,
        checks=runtime.checks,
        audit=runtime.audit,
        clock=runtime.clock,
        config=refresh_config(runtime),
    )


def refresh_worker_for(runtime: Runtime) -> RefreshWorker | None:
    """The background refresher, or None when it is off (interval 0, or checks off)."""
    refresher = runtime.refresher
    if refresher.config.interval <= 0 or not refresher.enabled:
        return None
    return RefreshWorker(refresher, refresher.config.interval)
