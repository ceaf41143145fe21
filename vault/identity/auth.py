"""Authentication flows: password login, the TOTP step, step-up, session checks, logout.

Unlike ordinary domain services, these flows own their short transactions, for two
reasons: a failed attempt must leave its throttle counter and audit event behind even
though the request fails (so they are written in a transaction of their own), and the
argon2 work must not run while holding a write transaction (on SQLite that is the
database lock). Every attempt, successful or not, leaves one ``auth.*`` audit event,
except that refusals made before any session exists are unauthenticated failures:
after an address's first in a window they are counted into one aggregated event
(``vault.audit.flood``). None carries the password, code or token.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from vault.audit.events import RequestContext
from vault.audit.flood import FailureFlood
from vault.audit.trail import AuditTrail
from vault.authz import UserPrincipal
from vault.clock import Clock
from vault.errors import MfaInvalid, MfaRequired, RateLimited, Unauthenticated
from vault.identity.attempts import Attempts, Denied, auth_event
from vault.identity.passwords import Passwords
from vault.identity.recovery import RecoveryCodes
from vault.identity.sessions import IssuedSession, SessionStore
from vault.identity.throttle import Reservation, Throttler
from vault.identity.totp import consume_step, match_step
from vault.ids import new_id, new_token
from vault.keys.system import SystemKeys
from vault.metrics import TOTP_CHECKS
from vault.storage.engine import SessionFactory, unit_of_work
from vault.storage.models import MfaChallenge, User

# How far (in 30 s steps) a refused code is looked for to tell "clock off" from "wrong".
_SKEW_HINT_STEPS = 10

__all__ = ["Authenticator", "LoginResult"]

_MFA_TOKEN_PREFIX = "lvm_"  # noqa: S105 - a scheme tag, not a secret


@dataclass(frozen=True, slots=True)
class LoginResult:
    mfa_token: str | None = None
    session: IssuedSession | None = None

    def __repr__(self) -> str:
        return f"LoginResult(mfa_required={self.mfa_token is not None})"


class Authenticator:
    def __init__(
        self,
        *,
        sessions: SessionFactory,
        readonly_sessions: SessionFactory,
        clock: Clock,
        audit: AuditTrail,
        passwords: Passwords,
        system_keys: SystemKeys,
        store: SessionStore,
        throttler: Throttler,
        recovery: RecoveryCodes,
        mfa_token_ttl_seconds: int,
        flood: FailureFlood | None = None,
    ) -> None:
        self._sessions = sessions
        self._audit = audit
        self.readonly_sessions = readonly_sessions
        self.clock = clock
        self._passwords = passwords
        self._keys = system_keys
        self.store = store
        self.recovery = recovery
        self.attempts = Attempts(
            sessions=sessions, clock=clock, audit=audit, throttler=throttler, flood=flood
        )
        self._mfa_ttl = mfa_token_ttl_seconds
        self._count_lock = threading.Lock()
        self.totp_checks = 0  # codes evaluated (exposed on /metrics)

    # -- helpers ----------------------------------------------------------------------

    def password_keys(self, email: str, ctx: RequestContext) -> list[str]:
        # The account key is a keyed hash of the address: unknown addresses are throttled
        # exactly like known ones, and the table never lists who tried what.
        tag = self._keys.reference("throttle-email", email.strip().lower())
        return [f"pw:acct:{tag}", f"pw:ip:{ctx.ip or '-'}"]

    @staticmethod
    def code_keys(user_id: str, ctx: RequestContext) -> list[str]:
        return [f"otp:acct:{user_id}", f"otp:ip:{ctx.ip or '-'}"]

    def count_totp_check(self) -> None:
        with self._count_lock:
            self.totp_checks += 1
        TOTP_CHECKS.inc()

    def verify_code(
        self, session: Session, user: User, code: str, *, now: datetime, allow_recovery: bool
    ) -> str | None:
        """Check and consume a TOTP (or recovery) code; returns which kind matched."""
        self.count_totp_check()
        if user.totp_enrolled and user.totp_secret_enc is not None:
            secret = self._keys.open_totp(user_id=user.id, envelope=user.totp_secret_enc)
            step = match_step(secret, code, now=now)
            if step is not None and consume_step(session, user_id=user.id, step=step):
                return "totp"
        if (
            allow_recovery
            and user.totp_enrolled
            and self.recovery.consume(session, user_id=user.id, code=code, now=now)
        ):
            return "recovery code"
        return None

    def code_refusal(self, user: User | None, code: str, *, now: datetime) -> MfaInvalid:
        """The ``mfa_invalid`` error for a refused code, saying what to do next: a code
        already used (wait for the next one), one from outside the accepted window (the
        device clock is off) or a wrong one. Computed after the attempt was counted by
        the throttle, so it helps the person holding the device, not a guesser."""
        if user is None or not user.totp_enrolled or user.totp_secret_enc is None:
            return MfaInvalid()
        secret = self._keys.open_totp(user_id=user.id, envelope=user.totp_secret_enc)
        if match_step(secret, code, now=now) is not None:
            return MfaInvalid(
                "code already used: each code works once, wait for the next one (at most 30 s)"
            )
        if match_step(secret, code, now=now, window=_SKEW_HINT_STEPS) is not None:
            return MfaInvalid(
                "code outside the accepted window (30 s either side): set the authenticator"
                " device's clock to automatic time, then use the current code"
            )
        return MfaInvalid(
            "code not accepted: enter the current 6-digit code from the authenticator app"
        )

    # -- login ------------------------------------------------------------------------

    def login(self, *, email: str, password: str, ctx: RequestContext) -> LoginResult:
        now = self.clock.now()
        keys = self.password_keys(email, ctx)
        reservation = self.attempts.reserved(keys, "auth.login", None, ctx)
        with unit_of_work(self.readonly_sessions) as session:
            user = session.execute(
                select(User).where(User.email == email.strip().lower())
            ).scalar_one_or_none()
        # Same argon2 work whether or not the account exists (a dummy hash otherwise).
        good = self.verify_password(reservation, user.password_hash if user else None, password)
        if user is None or not good or user.disabled_at is not None:
            denied = Denied(
                "wrong email or password",
                actor_id=user.id if user else None,
                error=Unauthenticated("the email or password is not correct"),
            )
            raise self.attempts.deny("auth.login", denied, ctx)
        with unit_of_work(self._sessions) as session:
            if self._passwords.needs_rehash(user.password_hash):
                session.execute(
                    update(User)
                    .where(User.id == user.id)
                    .values(password_hash=self._passwords.hash(password))
                )
            if user.totp_enrolled:
                token = self._challenge(session, user.id, now=now)
                reason = "password accepted; second factor required"
                self.attempts.accept(
                    session,
                    keys,
                    reservation,
                    "auth.login",
                    actor_id=user.id,
                    reason=reason,
                    ctx=ctx,
                )
                return LoginResult(mfa_token=token)
            issued = self.store.create(
                session,
                user_id=user.id,
                now=now,
                mfa_fresh=False,
                ip=ctx.ip,
                user_agent=ctx.user_agent,
            )
            self.attempts.accept(
                session,
                keys,
                reservation,
                "auth.login",
                actor_id=user.id,
                reason="password accepted",
                ctx=ctx,
                session_id=issued.session_id,
            )
            return LoginResult(session=issued)

    def verify_password(
        self, reservation: Reservation, stored_hash: str | None, password: str
    ) -> bool:
        """argon2 within the memory budget; with no slot free, the attempt is given back
        (it was never checked) and refused with 429."""
        try:
            return self._passwords.verify(stored_hash, password)
        except RateLimited:
            self.attempts.give_back(reservation)
            raise

    def _challenge(self, session: Session, user_id: str, *, now: datetime) -> str:
        """A new MFA challenge for ``user_id``; returns its token (stored only as a MAC)."""
        token = new_token(_MFA_TOKEN_PREFIX)
        session.add(
            MfaChallenge(
                id=new_id("mfa"),
                token_hash=self._keys.mac("mfa-token", token.encode()),
                user_id=user_id,
                expires_at=now + timedelta(seconds=self._mfa_ttl),
            )
        )
        session.flush()
        return token

    def complete_mfa(self, *, mfa_token: str, code: str, ctx: RequestContext) -> IssuedSession:
        now = self.clock.now()
        with self.attempts.transaction("auth.mfa", ctx) as session:
            challenge_id, user_id = self._open_challenge(session, mfa_token, now=now, ctx=ctx)
        keys = self.code_keys(user_id, ctx)
        reservation = self.attempts.reserved(keys, "auth.mfa", user_id, ctx)
        with self.attempts.transaction("auth.mfa", ctx) as session:
            user = session.get(User, user_id)
            assert user is not None
            kind = self.verify_code(session, user, code, now=now, allow_recovery=True)
            if kind is None:
                refusal = self.code_refusal(user, code, now=now)
                raise Denied("wrong or used code", actor_id=user.id, error=refusal)
            claimed = session.execute(
                update(MfaChallenge)
                .where(MfaChallenge.id == challenge_id, MfaChallenge.used_at.is_(None))
                .values(used_at=now)
                .execution_options(synchronize_session=False)
            )
            if getattr(claimed, "rowcount", 0) != 1:
                raise Denied("mfa_token already used", actor_id=user.id, error=MfaInvalid())
            issued = self.store.create(
                session,
                user_id=user.id,
                now=now,
                mfa_fresh=True,
                ip=ctx.ip,
                user_agent=ctx.user_agent,
            )
            self.attempts.accept(
                session,
                keys,
                reservation,
                "auth.mfa",
                actor_id=user.id,
                reason=f"{kind} accepted",
                ctx=ctx,
                session_id=issued.session_id,
            )
            return issued

    def _open_challenge(
        self, session: Session, mfa_token: str, *, now: datetime, ctx: RequestContext
    ) -> tuple[str, str]:
        """The live challenge behind ``mfa_token`` and its user's id; Denied (by IP) otherwise."""
        challenge = session.execute(
            select(MfaChallenge).where(
                MfaChallenge.token_hash == self._keys.mac("mfa-token", mfa_token.encode())
            )
        ).scalar_one_or_none()
        if challenge is None or challenge.used_at is not None or now >= challenge.expires_at:
            raise Denied(
                "unknown, used or expired mfa_token",
                keys=[f"otp:ip:{ctx.ip or '-'}"],
                actor_id=None,
                error=MfaInvalid("the mfa_token is not valid; log in again"),
            )
        return challenge.id, challenge.user_id

    # -- sessions ---------------------------------------------------------------------

    def authenticate(self, token: str | None, *, ctx: RequestContext) -> UserPrincipal:
        """The principal behind a session token; 401 (audited) for anything else."""
        now = self.clock.now()
        resolved = None
        if token:
            with unit_of_work(self.readonly_sessions) as session:
                resolved = self.store.resolve(session, token, now=now)
        if resolved is None:
            reason = "invalid or expired session token" if token else "no session token"
            self.attempts.record_denial(
                auth_event("auth.session", "denied", actor_id=None, reason=reason, ctx=ctx), ctx
            )
            raise Unauthenticated()
        if self.store.needs_touch(resolved, now=now):
            with unit_of_work(self._sessions) as session:
                self.store.touch(session, resolved.session_id, now=now)
        platform_role = resolved.platform_role
        return UserPrincipal(
            user_id=resolved.user_id,
            email=resolved.email,
            platform_role=platform_role if platform_role in ("admin", "auditor") else None,  # type: ignore[arg-type]
            session_id=resolved.session_id,
            mfa_fresh=resolved.mfa_fresh,
            tenant_roles=resolved.tenant_roles,
            totp_enrolled=resolved.totp_enrolled,
            password_change_required=resolved.password_change_required,
        )

    def step_up(self, principal: UserPrincipal, *, code: str, ctx: RequestContext) -> datetime:
        now = self.clock.now()
        keys = self.code_keys(principal.user_id, ctx)
        with unit_of_work(self.readonly_sessions) as session:
            user = session.get(User, principal.user_id)
            enrolled = user is not None and user.totp_enrolled
        if not enrolled:  # nothing to guess: refused before any reservation
            denied = Denied(
                "no second factor enrolled",
                actor_id=principal.user_id,
                error=MfaInvalid("no second factor is enrolled for this account"),
            )
            raise self.attempts.deny("auth.step_up", denied, ctx)
        reservation = self.attempts.reserved(keys, "auth.step_up", principal.user_id, ctx)
        with self.attempts.transaction("auth.step_up", ctx) as session:
            user = session.get(User, principal.user_id)
            if user is None or (
                self.verify_code(session, user, code, now=now, allow_recovery=False) is None
            ):
                refusal = self.code_refusal(user, code, now=now)
                raise Denied("wrong or used code", actor_id=principal.user_id, error=refusal)
            until = self.store.mark_fresh(session, principal.session_id, now=now)
            self.attempts.accept(
                session,
                keys,
                reservation,
                "auth.step_up",
                actor_id=user.id,
                reason="totp accepted",
                ctx=ctx,
                session_id=principal.session_id,
            )
            return until

    def logout(self, principal: UserPrincipal, *, ctx: RequestContext) -> None:
        now = self.clock.now()
        with unit_of_work(self._sessions) as session:
            self.store.revoke(session, principal.session_id, now=now)
            self._audit.record(
                session,
                auth_event(
                    "auth.logout",
                    "success",
                    actor_id=principal.user_id,
                    reason="logged out",
                    ctx=ctx,
                    session_id=principal.session_id,
                ),
            )

    # -- per-request second factor ----------------------------------------------------

    def require_mfa(
        self,
        session: Session,
        principal: UserPrincipal,
        mfa_code: str | None,
        ctx: RequestContext,
    ) -> None:
        """Pass if the session is MFA-fresh or ``mfa_code`` is a valid unused TOTP code.

        The code is consumed in the caller's transaction (it authorizes that request
        only, and only if the request commits), and so is the attempt's reservation: it
        holds the throttle rows (a row lock on PostgreSQL, the write lock on SQLite) until
        the caller's transaction ends, so concurrent codes are counted one after another.
        On failure the caller's transaction is committed here, with the reservation and
        nothing else: callers call this before their own changes (after reads and locks
        only), and a rollback would lose the count.
        """
        if principal.mfa_fresh:
            return
        if not mfa_code:
            raise MfaRequired()
        now = self.clock.now()
        keys = self.code_keys(principal.user_id, ctx)
        if session.new or session.dirty or session.deleted:
            raise RuntimeError("require_mfa must run before the request's own changes")
        reservation = self.attempts.reserve(session, keys, "auth.mfa_code", principal.user_id, ctx)
        user = session.get(User, principal.user_id)
        if (
            user is None
            or self.verify_code(session, user, mfa_code, now=now, allow_recovery=False) is None
        ):
            session.commit()  # the reservation, counted as the failure it is
            denied = Denied(
                "wrong or used mfa_code",
                actor_id=principal.user_id,
                error=self.code_refusal(user, mfa_code, now=now),
            )
            raise self.attempts.deny("auth.mfa_code", denied, ctx)
        self.attempts.accept(
            session,
            keys,
            reservation,
            "auth.mfa_code",
            actor_id=user.id,
            reason="per-request totp accepted",
            ctx=ctx,
            session_id=principal.session_id,
        )
