"""Changing an authentication factor: confirming a TOTP enrollment, changing a password;
and proving both factors again before an account is deleted by its own user.

Both are attempts with a guessable input (a code, the current password), so they are
reserved in the throttle, then checked and audited like logins, in transactions of their
own (see ``auth.py`` and ``attempts.py``). A
successful change ends every other session of the user (ASVS V7.4.3); the session that
made the change, which just proved the factors, continues.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from vault.audit.events import RequestContext
from vault.authz import UserPrincipal
from vault.errors import Conflict, InvalidRequest, MfaInvalid, MfaRequired, Unauthenticated
from vault.identity.attempts import Denied
from vault.identity.auth import Authenticator
from vault.identity.passwords import Passwords
from vault.identity.throttle import Reservation
from vault.identity.totp import match_step
from vault.keys.system import SystemKeys
from vault.storage.engine import SessionFactory, unit_of_work
from vault.storage.models import User

__all__ = ["MAX_PASSWORD", "MIN_PASSWORD", "FactorChanges"]

MIN_PASSWORD = 12
MAX_PASSWORD = 128


class FactorChanges:
    def __init__(
        self,
        *,
        authenticator: Authenticator,
        sessions: SessionFactory,
        passwords: Passwords,
        system_keys: SystemKeys,
    ) -> None:
        self._auth = authenticator
        self._attempts = authenticator.attempts
        self._sessions = sessions
        self._passwords = passwords
        self._keys = system_keys

    def confirm_totp(
        self, principal: UserPrincipal, *, code: str, ctx: RequestContext
    ) -> list[str]:
        """Activate the pending secret if ``code`` matches it; returns new recovery codes."""
        now = self._auth.clock.now()
        keys = self._auth.code_keys(principal.user_id, ctx)
        action = "user.totp_confirm"
        with unit_of_work(self._auth.readonly_sessions) as session:
            user = session.get(User, principal.user_id)
            if user is None or user.totp_pending_enc is None:  # nothing to guess
                raise Conflict("no TOTP enrollment is pending: POST /v1/me/totp first")
        reservation = self._attempts.reserved(keys, action, principal.user_id, ctx)
        with self._attempts.transaction(action, ctx) as session:
            user = session.get(User, principal.user_id)
            if user is None or user.totp_pending_enc is None:
                raise Conflict("no TOTP enrollment is pending: POST /v1/me/totp first")
            pending = user.totp_pending_enc
            secret = self._keys.open_totp(user_id=user.id, envelope=pending)
            self._auth.count_totp_check()
            step = match_step(secret, code, now=now)
            if step is None:
                raise Denied("wrong code", actor_id=user.id, error=MfaInvalid())
            # Compare-and-set on the pending envelope: two racing confirms, one wins.
            # The step is recorded so this very code cannot be used again.
            result = session.execute(
                update(User)
                .where(User.id == user.id, User.totp_pending_enc == pending)
                .values(
                    totp_secret_enc=pending,
                    totp_pending_enc=None,
                    totp_enrolled=True,
                    totp_last_step=step,
                    credentials_changed_at=now,
                )
                .execution_options(synchronize_session=False)
            )
            if getattr(result, "rowcount", 0) != 1:
                raise Denied("enrollment already confirmed", actor_id=user.id, error=MfaInvalid())
            codes = self._auth.recovery.issue(session, user_id=user.id)
            self._changed(
                session,
                principal,
                action=action,
                what="second factor enrolled",
                keys=keys,
                reservation=reservation,
                now=now,
                ctx=ctx,
            )
            return codes

    def change_password(
        self, principal: UserPrincipal, *, current: str, new: str, ctx: RequestContext
    ) -> None:
        if not MIN_PASSWORD <= len(new) <= MAX_PASSWORD:
            raise InvalidRequest(
                f"the new password must have {MIN_PASSWORD} to {MAX_PASSWORD} characters",
                field="new_password",
            )
        action = "user.password_change"
        keys = self._auth.password_keys(principal.email, ctx)
        reservation = self._attempts.reserved(keys, action, principal.user_id, ctx)
        with unit_of_work(self._auth.readonly_sessions) as session:
            user = session.get(User, principal.user_id)
            stored = user.password_hash if user else None
        if not self._auth.verify_password(reservation, stored, current):
            denied = Denied(
                "wrong current password",
                actor_id=principal.user_id,
                error=Unauthenticated("the current password is not correct"),
            )
            raise self._attempts.deny(action, denied, ctx)
        new_hash = self._passwords.hash(new)  # outside the write transaction
        now = self._auth.clock.now()
        with unit_of_work(self._sessions) as session:
            session.execute(
                update(User)
                .where(User.id == principal.user_id)
                .values(
                    password_hash=new_hash,
                    credentials_changed_at=now,
                    password_change_required=False,
                )
            )
            self._changed(
                session,
                principal,
                action=action,
                what="password changed",
                keys=keys,
                reservation=reservation,
                now=now,
                ctx=ctx,
            )

    def _changed(
        self,
        session: Session,
        principal: UserPrincipal,
        *,
        action: str,
        what: str,
        keys: list[str],
        reservation: Reservation,
        now: datetime,
        ctx: RequestContext,
    ) -> None:
        """A factor changed: end the user's other sessions, then record the success."""
        ended = self._auth.store.revoke_all(
            session, principal.user_id, now=now, keep=principal.session_id
        )
        self._attempts.accept(
            session,
            keys,
            reservation,
            action,
            actor_id=principal.user_id,
            reason=f"{what}; {ended} other sessions ended",
            ctx=ctx,
            session_id=principal.session_id,
        )

    def prove_identity(
        self,
        principal: UserPrincipal,
        *,
        password: str,
        code: str | None,
        action: str,
        ctx: RequestContext,
    ) -> None:
        """Check the password and, when a factor is enrolled, an unused TOTP code (both
        throttled and audited like logins), even on an MFA-fresh session."""
        keys = self._auth.password_keys(principal.email, ctx)
        reservation = self._attempts.reserved(keys, action, principal.user_id, ctx)
        with unit_of_work(self._auth.readonly_sessions) as session:
            user = session.get(User, principal.user_id)
            stored = user.password_hash if user else None
            enrolled = bool(user is not None and user.totp_enrolled)
        if not self._auth.verify_password(reservation, stored, password):
            denied = Denied(
                "wrong password",
                actor_id=principal.user_id,
                error=Unauthenticated("the password is not correct"),
            )
            raise self._attempts.deny(action, denied, ctx)
        with unit_of_work(self._sessions) as session:
            self._attempts.accept(
                session,
                keys,
                reservation,
                action,
                actor_id=principal.user_id,
                reason="password accepted",
                ctx=ctx,
                session_id=principal.session_id,
            )
        if not enrolled:
            return
        if not code:
            raise MfaRequired("send the current code of your authenticator app as mfa_code")
        with unit_of_work(self._sessions) as session:
            self._auth.require_mfa(session, replace(principal, mfa_fresh=False), code, ctx)
