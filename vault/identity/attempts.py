"""The sequence every authentication attempt follows: reserve, verify, deny, record.

An attempt with a guessable input (a password, a TOTP or recovery code) first reserves
its place in the throttle (:meth:`Throttler.reserve`): it is counted as a failure, in a
committed statement, before any verification work, so concurrent guesses cannot all
slip past one stale count. A blocked attempt is audited as "rate limited" and refused. A
failed verification (already counted) is audited in a short transaction of its own,
after the attempt's transaction has rolled back: the request fails, yet its trace must
stay. A success forgets the account's failures, gives back its reservation on the other
keys and is audited in the attempt's transaction. Verifying is the caller's part; this
module owns the rest, so every attempt counts and records failures the same way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy.orm import Session

from vault.audit.events import Actor, AuditEvent, Outcome, RequestContext
from vault.audit.flood import FailureFlood
from vault.audit.trail import AuditTrail
from vault.clock import Clock
from vault.errors import RateLimited
from vault.identity.throttle import Reservation, Throttler
from vault.storage.engine import SessionFactory, unit_of_work

__all__ = ["PRE_SESSION", "Attempts", "Denied", "auth_event"]

# Attempts made before any session exists: their refusals are unauthenticated failures,
# limited and aggregated per client address (vault.audit.flood).
PRE_SESSION = frozenset({"auth.login", "auth.mfa", "auth.session"})


class Denied(Exception):
    """An attempt failed; carries what to record once the transaction is gone.

    ``keys`` are the throttle keys still to count (none when the attempt was reserved:
    its reservation already counted it)."""

    def __init__(
        self,
        reason: str,
        *,
        actor_id: str | None,
        error: Exception,
        keys: list[str] | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.keys = keys or []
        self.actor_id = actor_id
        self.error = error


def auth_event(
    action: str,
    outcome: Outcome,
    *,
    actor_id: str | None,
    reason: str,
    ctx: RequestContext,
    session_id: str | None = None,
) -> AuditEvent:
    """An authentication event: the user (None while unknown) and, once known, the session."""
    return AuditEvent.by(
        Actor("user", actor_id),
        action,
        outcome,
        resource_type="session" if session_id else None,
        resource_id=session_id,
        reason=reason,
        context=ctx,
    )


class Attempts:
    """The throttle, deny and record steps around the caller's verification."""

    def __init__(
        self,
        *,
        sessions: SessionFactory,
        clock: Clock,
        audit: AuditTrail,
        throttler: Throttler,
        flood: FailureFlood | None = None,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._audit = audit
        self._throttler = throttler
        self._flood = flood

    def record_denial(self, event: AuditEvent, ctx: RequestContext) -> None:
        """Audit a refusal durably; one made before any session exists goes through the
        per-address flood limit (it may raise ``RateLimited`` instead)."""
        if self._flood is not None and event.action in PRE_SESSION:
            self._flood.record(event, ctx)
        else:
            self._audit.emit(event)

    def reserve(
        self,
        session: Session,
        keys: Sequence[str],
        action: str,
        actor_id: str | None,
        ctx: RequestContext,
    ) -> Reservation:
        """Count the attempt in ``session`` before it is checked; refuse while blocked.

        A refusal rolls ``session`` back first (on SQLite the attempt's transaction holds
        the write lock the audit writer needs), then audits it. ``actor_id`` is read by
        the caller before, since touching an ORM object after the rollback would need the
        database again. The caller commits ``session`` before verifying, unless it holds
        the transaction open until the outcome is recorded (:meth:`Authenticator.require_mfa`).
        """
        try:
            return self._throttler.reserve(session, keys, now=self._clock.now())
        except RateLimited as exc:
            self.record_denial(
                auth_event(action, "denied", actor_id=actor_id, reason="rate limited", ctx=ctx),
                ctx,
            )
            raise exc from None

    def reserved(
        self, keys: Sequence[str], action: str, actor_id: str | None, ctx: RequestContext
    ) -> Reservation:
        """:meth:`reserve` in a short transaction of its own, committed before the check."""
        with unit_of_work(self._sessions) as session:
            return self.reserve(session, keys, action, actor_id, ctx)

    def give_back(self, reservation: Reservation) -> None:
        """The attempt was never checked (no capacity, nothing to check): uncount it."""
        with unit_of_work(self._sessions) as session:
            self._throttler.release(session, reservation, reservation.keys)

    def deny(self, action: str, denied: Denied, ctx: RequestContext) -> Exception:
        """Count the failure and audit it in one short transaction; returns the error to raise."""
        if denied.keys:
            with unit_of_work(self._sessions) as session:
                self._throttler.fail(session, denied.keys, now=self._clock.now())
        self.record_denial(
            auth_event(action, "denied", actor_id=denied.actor_id, reason=denied.reason, ctx=ctx),
            ctx,
        )
        return denied.error

    def accept(
        self,
        session: Session,
        keys: Sequence[str],
        reservation: Reservation,
        action: str,
        *,
        actor_id: str,
        reason: str,
        ctx: RequestContext,
        session_id: str | None = None,
    ) -> None:
        """A success: forget the account key's failures (the first key), give back the
        reservation on the others (a success is no failure) and record it."""
        self._throttler.reset(session, keys[:1])
        self._throttler.release(session, reservation, keys[1:])
        self._audit.record(
            session,
            auth_event(
                action, "success", actor_id=actor_id, reason=reason, ctx=ctx, session_id=session_id
            ),
        )

    @contextmanager
    def transaction(self, action: str, ctx: RequestContext) -> Iterator[Session]:
        """The attempt's write transaction: a :class:`Denied` raised in it rolls it back,
        is recorded by :meth:`deny`, and reaches the caller as its error."""
        try:
            with unit_of_work(self._sessions) as session:
                yield session
        except Denied as denied:
            raise self.deny(action, denied, ctx) from None
