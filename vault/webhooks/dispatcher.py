"""The webhook dispatcher: every server process sends due outbox rows in the background.

Claiming. A due delivery (``pending``, ``next_attempt_at`` passed, no live lease, and no
earlier pending delivery of the same line to the same webhook) is claimed by a
conditional UPDATE that sets ``claimed_by`` and ``lease_until`` only if no live lease is
there: of two processes racing for a row exactly one updates it, on PostgreSQL and
SQLite alike. On PostgreSQL the candidate SELECT also takes ``FOR UPDATE SKIP LOCKED``,
so concurrent dispatchers pick different rows instead of queueing behind each other.
The claim commits before anything is sent; the lease (longer than the HTTP timeout)
keeps other processes off the row while it is in flight. A process killed mid-delivery
leaves its lease behind; once it runs out another process takes the row over and sends
it again with the same ``webhook-id``: at least once, never lost, and a receiver that
deduplicates on ``webhook-id`` sees it once. The outcome is recorded only by the claim's
owner (``WHERE claimed_by = me``).

Order. The "no earlier pending delivery" condition means a line's later event is not
sent before an earlier one has been delivered (or has died), per webhook.

Retries. A failed attempt (non-2xx, timeout, connection error, refused target) is
retried after :func:`backoff` (exponential, with jitter) until the retry window from
the event's creation has passed; then the delivery is ``dead``. The delays and the
window are settings, so tests run them in seconds.

Off the request path. Requests only write outbox rows (:mod:`vault.webhooks.outbox`);
this thread and its small pool (``webhook_concurrency``) do the HTTP, with a timeout
on every request, so a slow receiver slows nothing but its own deliveries.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import httpx
from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.elements import ColumnElement
from standardwebhooks.webhooks import Webhook as Signer

from vault.clock import Clock
from vault.errors import NotFound
from vault.keys.keyring import KeyRing
from vault.keys.system import SystemKeys
from vault.keys.webhook_secrets import open_webhook_secret
from vault.settings import Settings
from vault.storage.engine import SessionFactory, unit_of_work
from vault.storage.models import Webhook, WebhookAttempt, WebhookDelivery
from vault.webhooks.expiring import scan_expiring
from vault.webhooks.outbox import PENDING, prune_finished
from vault.webhooks.targets import Resolver, TargetRefused, check_target, system_resolver

if TYPE_CHECKING:  # the runtime builds the dispatcher
    from vault.runtime import Runtime

__all__ = [
    "DEAD",
    "DELIVERED",
    "DispatchConfig",
    "Dispatcher",
    "Outcome",
    "backoff",
    "dispatch_config",
    "dispatcher_for",
]

log = logging.getLogger("linevault.webhooks")

DELIVERED = "delivered"
DEAD = "dead"


def backoff(
    attempt: int, *, first: float, maximum: float, rng: random.Random | None = None
) -> float:
    """Seconds before retry number ``attempt`` (1-based): ``first * 2**(attempt-1)``,
    capped at ``maximum``, with "equal jitter" (between half and all of it), so
    receivers that come back are not hit by every sender at the same instant."""
    base = min(maximum, first * 2 ** min(attempt - 1, 32))
    return float(base / 2 + (rng or random).uniform(0, base / 2))


@dataclass(frozen=True, slots=True)
class DispatchConfig:
    allow_private: bool
    concurrency: int = 4
    timeout_seconds: float = 10.0
    lease_seconds: float = 60.0
    retry_first_seconds: float = 5.0
    retry_max_seconds: float = 3600.0
    retry_window_seconds: float = 3 * 86_400.0
    poll_seconds: float = 1.0
    expiring_window_seconds: float = 7 * 86_400.0
    expiry_scan_seconds: float = 300.0
    log_retention_days: float = 30.0


@dataclass(frozen=True, slots=True)
class Outcome:
    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True, slots=True)
class _Job:
    seq: int
    attempt: int
    event_id: str
    url: str
    payload: str
    secret: bytes | None
    error: str | None  # set when the job cannot be sent at all


class Dispatcher:
    """Claims and sends due deliveries; one per server process (``start``/``stop``)."""

    def __init__(
        self,
        sessions: SessionFactory,
        *,
        keyring: KeyRing,
        system_keys: SystemKeys,
        clock: Clock,
        config: DispatchConfig,
        resolver: Resolver = system_resolver,
        readonly_sessions: SessionFactory | None = None,
    ) -> None:
        self._sessions = sessions
        # Idle polls look in a read-only transaction (no SQLite write lock) first.
        self._readonly = readonly_sessions or sessions
        self._keyring = keyring
        self._system_keys = system_keys
        self._clock = clock
        self._config = config
        self._resolver = resolver
        self.owner = f"{socket.gethostname()[:30]}:{os.getpid()}:{secrets.token_hex(4)}"
        self._http = httpx.Client(
            timeout=httpx.Timeout(config.timeout_seconds),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=config.concurrency * 2),
            headers={"user-agent": "linevault-webhooks"},
        )
        self._pool = ThreadPoolExecutor(config.concurrency, thread_name_prefix="linevault-webhook")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_scan = 0.0

    # -- one round --------------------------------------------------------------------

    def tick(self) -> int:
        """Claim up to ``concurrency`` due deliveries and send them; how many were claimed."""
        jobs = self.claim(self._clock.now(), limit=self._config.concurrency)
        for job, outcome in zip(jobs, self._pool.map(self._send, jobs), strict=True):
            self._record(job, outcome)
        return len(jobs)

    def drain(self, rounds: int = 1000) -> int:
        """Tick until nothing is due (tests, and the shutdown of a quiet process)."""
        total = 0
        for _ in range(rounds):
            n = self.tick()
            total += n
            if n == 0:
                break
        return total

    def claim(self, now: datetime, *, limit: int) -> list[_Job]:
        """Claim due deliveries (see the module docstring); the jobs this process owns."""
        lease_until = now + timedelta(seconds=self._config.lease_seconds)
        with unit_of_work(self._readonly) as session:
            if not _any_due(session, now):
                return []
        with unit_of_work(self._sessions) as session:
            claimed: list[int] = []
            for seq in _candidates(session, now, limit):
                result = session.execute(
                    update(WebhookDelivery)
                    .where(WebhookDelivery.seq == seq, WebhookDelivery.state == PENDING, _free(now))
                    .values(
                        claimed_by=self.owner,
                        lease_until=lease_until,
                        attempts=WebhookDelivery.attempts + 1,
                    )
                    .execution_options(synchronize_session=False)
                )
                if getattr(result, "rowcount", 0) == 1:
                    claimed.append(seq)
            return [self._job(session, seq) for seq in claimed]

    def _job(self, session: Session, seq: int) -> _Job:
        row = session.get(WebhookDelivery, seq)
        assert row is not None
        hook = session.get(Webhook, row.webhook_id)
        secret: bytes | None = None
        error: str | None = None
        if hook is None:
            error = "webhook_deleted"
        else:
            try:
                secret = open_webhook_secret(
                    session, hook, keyring=self._keyring, system_keys=self._system_keys
                )
            except (NotFound, ValueError):
                error = "secret_unavailable"
            except Exception:  # a damaged envelope: the same, without details
                error = "secret_unavailable"
        return _Job(
            seq=seq,
            attempt=row.attempts,
            event_id=row.event_id,
            url=hook.url if hook is not None else "",
            payload=row.payload,
            secret=secret,
            error=error,
        )

    # -- sending ----------------------------------------------------------------------

    def _send(self, job: _Job) -> Outcome:
        started = time.monotonic()

        def done(status: int | None, error: str | None) -> Outcome:
            return Outcome(status, error, int((time.monotonic() - started) * 1000))

        if job.error is not None or job.secret is None:
            return done(None, job.error or "secret_unavailable")
        try:
            check_target(job.url, allow_private=self._config.allow_private, resolver=self._resolver)
        except TargetRefused as exc:
            return done(None, exc.reason)
        except Exception:
            return done(None, "invalid_url")
        return self._post(job, started)

    def _post(self, job: _Job, started: float) -> Outcome:
        """One signed POST (Standard Webhooks headers); its status or error class."""
        assert job.secret is not None

        def done(status: int | None, error: str | None) -> Outcome:
            return Outcome(status, error, int((time.monotonic() - started) * 1000))

        now = self._clock.now()
        headers = {
            "content-type": "application/json",
            "webhook-id": job.event_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Signer(job.secret).sign(job.event_id, now, job.payload),
        }
        try:
            response = self._http.post(job.url, content=job.payload.encode(), headers=headers)
        except httpx.TimeoutException:
            return done(None, "timeout")
        except httpx.ConnectError:
            return done(None, "connect_error")
        except httpx.HTTPError:
            return done(None, "http_error")
        return done(response.status_code, None if response.is_success else "http_status")

    def _record(self, job: _Job, outcome: Outcome) -> None:
        """Store the attempt and the delivery's next state (only while we own the claim)."""
        now = self._clock.now()
        with unit_of_work(self._sessions) as session:
            row = session.get(WebhookDelivery, job.seq)
            if row is None or row.claimed_by != self.owner:
                return  # deleted meanwhile, or our lease ran out and another took it over
            next_at: datetime | None = None
            if outcome.ok:
                state = DELIVERED
            else:
                delay = backoff(
                    job.attempt,
                    first=self._config.retry_first_seconds,
                    maximum=self._config.retry_max_seconds,
                )
                next_at = now + timedelta(seconds=delay)
                window_end = row.created_at + timedelta(seconds=self._config.retry_window_seconds)
                state = DEAD if next_at > window_end or job.error == "webhook_deleted" else PENDING
                next_at = next_at if state == PENDING else None
            row.state = state
            row.claimed_by = None
            row.lease_until = None
            row.last_status = outcome.status_code
            row.last_error = outcome.error
            row.next_attempt_at = next_at or row.next_attempt_at
            row.finished_at = now if state != PENDING else None
            session.add(
                WebhookAttempt(
                    delivery_seq=job.seq,
                    attempt=job.attempt,
                    webhook_id=row.webhook_id,
                    attempted_at=now,
                    status_code=outcome.status_code,
                    error=outcome.error,
                    duration_ms=outcome.duration_ms,
                    next_attempt_at=next_at,
                )
            )

    # -- the background thread --------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._loop, name="linevault-webhook-dispatch", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._http.close()

    def scan(self) -> int:
        """Emit ``line.expiring`` for lines entering the window (once per line and expiry),
        and forget finished deliveries older than the log's retention."""
        prune_finished(
            self._sessions,
            before=self._clock.now() - timedelta(days=self._config.log_retention_days),
        )
        return scan_expiring(
            self._sessions,
            now=self._clock.now(),
            window=timedelta(seconds=self._config.expiring_window_seconds),
        )

    def _loop(self) -> None:
        while not self._stop.is_set():
            claimed = 0
            try:
                if time.monotonic() >= self._next_scan:
                    self._next_scan = time.monotonic() + self._config.expiry_scan_seconds
                    self.scan()
                claimed = self.tick()
            except Exception as exc:  # a database hiccup must not end the thread
                log.warning("webhook dispatch: %s", type(exc).__name__)
            if claimed < self._config.concurrency:
                self._stop.wait(self._config.poll_seconds)


def _free(now: datetime) -> ColumnElement[bool]:
    return or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < now)


def _any_due(session: Session, now: datetime) -> bool:
    """A cheap look before claiming: is any delivery due and unleased?"""
    stmt = select(WebhookDelivery.seq).where(
        WebhookDelivery.state == PENDING, WebhookDelivery.next_attempt_at <= now, _free(now)
    )
    return session.execute(stmt.limit(1)).first() is not None


def _candidates(session: Session, now: datetime, limit: int) -> list[int]:
    """Due, unleased deliveries with no earlier pending one of the same line and webhook."""
    earlier = aliased(WebhookDelivery)
    blocked = exists().where(
        and_(
            earlier.webhook_id == WebhookDelivery.webhook_id,
            earlier.order_key == WebhookDelivery.order_key,
            earlier.seq < WebhookDelivery.seq,
            earlier.state == PENDING,
        )
    )
    stmt = (
        select(WebhookDelivery.seq)
        .where(
            WebhookDelivery.state == PENDING,
            WebhookDelivery.next_attempt_at <= now,
            _free(now),
            ~blocked,
        )
        .order_by(WebhookDelivery.seq)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True, of=WebhookDelivery)
    return list(session.execute(stmt).scalars())


def dispatch_config(settings: Settings) -> DispatchConfig:
    return DispatchConfig(
        allow_private=settings.webhook_allow_private,
        concurrency=settings.webhook_concurrency,
        timeout_seconds=settings.webhook_timeout_seconds,
        lease_seconds=settings.webhook_lease_seconds,
        retry_first_seconds=settings.webhook_retry_first_seconds,
        retry_max_seconds=settings.webhook_retry_max_seconds,
        retry_window_seconds=settings.webhook_retry_window_seconds,
        poll_seconds=settings.webhook_poll_seconds,
        expiring_window_seconds=settings.webhook_expiring_window_seconds,
        expiry_scan_seconds=settings.webhook_expiry_scan_seconds,
        log_retention_days=settings.webhook_log_retention_days,
    )


def dispatcher_for(runtime: Runtime) -> Dispatcher:
    """The dispatcher of a server process (started and stopped with the app)."""
    return Dispatcher(
        runtime.sessions,
        keyring=runtime.keyring,
        system_keys=runtime.system_keys,
        clock=runtime.clock,
        config=dispatch_config(runtime.settings),
        readonly_sessions=runtime.readonly_sessions,
    )
