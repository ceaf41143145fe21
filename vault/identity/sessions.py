"""Human sessions: 256-bit bearer tokens, stored only as keyed hashes (ASVS V7).

A session ends at the first of: its absolute lifetime (``expires_at``), ``idle`` without
use, logout, or a change of the user's password or second factor (every other session
of that user is revoked then). ``mfa_fresh_until`` marks the short window in which the
session counts as having just proved the second factor.

The token never reaches the database or a log: lookups use an HMAC of it under a
purpose-bound key, so a stolen database copy cannot be turned back into a usable token.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from vault.ids import new_id, new_token
from vault.keys.system import SystemKeys
from vault.storage.models import Membership, Tenant, User
from vault.storage.models import Session as SessionRow

__all__ = [
    "SESSION_TOKEN_PREFIX",
    "IssuedSession",
    "ResolvedSession",
    "SessionStore",
    "SessionView",
]

SESSION_TOKEN_PREFIX = "lvs_"  # noqa: S105 - a scheme tag, not a secret


@dataclass(frozen=True, slots=True)
class IssuedSession:
    session_id: str
    token: str
    expires_at: datetime
    mfa_fresh_until: datetime | None

    def __repr__(self) -> str:  # the token must never be printed by accident
        return f"IssuedSession(session_id={self.session_id!r})"


@dataclass(frozen=True, slots=True)
class ResolvedSession:
    session_id: str
    user_id: str
    email: str
    platform_role: str | None
    mfa_fresh: bool
    last_seen_at: datetime
    tenant_roles: dict[str, str]
    totp_enrolled: bool = False
    password_change_required: bool = False


@dataclass(frozen=True, slots=True)
class SessionView:
    """What a user sees of one of their live sessions: never the token or its hash."""

    id: str
    created_at: datetime
    last_seen_at: datetime
    ip: str | None
    user_agent: str | None


class SessionStore:
    def __init__(
        self,
        *,
        system_keys: SystemKeys,
        idle: timedelta,
        absolute: timedelta,
        mfa_fresh: timedelta,
    ) -> None:
        self._keys = system_keys
        self.idle = idle
        self.absolute = absolute
        self.mfa_fresh = mfa_fresh
        # Refresh last_seen_at at most this often: one write per session per interval.
        self.touch_every = min(timedelta(seconds=60), idle / 10)

    def token_hash(self, token: str) -> bytes:
        return self._keys.mac("session-token", token.encode())

    def create(
        self,
        session: Session,
        *,
        user_id: str,
        now: datetime,
        mfa_fresh: bool,
        ip: str | None = None,
        user_agent: str | None = None,
    ) -> IssuedSession:
        token = new_token(SESSION_TOKEN_PREFIX)
        fresh_until = now + self.mfa_fresh if mfa_fresh else None
        row = SessionRow(
            id=new_id("ses"),
            token_hash=self.token_hash(token),
            user_id=user_id,
            created_at=now,
            last_seen_at=now,
            expires_at=now + self.absolute,
            mfa_fresh_until=fresh_until,
            ip=ip[:64] if ip else None,
            user_agent=user_agent[:512] if user_agent else None,
        )
        session.add(row)
        session.flush()
        return IssuedSession(row.id, token, row.expires_at, fresh_until)

    def resolve(self, session: Session, token: str, *, now: datetime) -> ResolvedSession | None:
        """The live session behind ``token`` with its user's roles, or None."""
        if not token.startswith(SESSION_TOKEN_PREFIX) or len(token) > 128:
            return None
        found = session.execute(
            select(SessionRow, User)
            .join(User, User.id == SessionRow.user_id)
            .where(SessionRow.token_hash == self.token_hash(token))
        ).first()
        if found is None:
            return None
        row, user = found
        if user.disabled_at is not None or not self.is_live(row, now=now):
            return None
        roles = session.execute(
            select(Membership.tenant_id, Membership.role)
            .join(Tenant, Tenant.id == Membership.tenant_id)
            .where(Membership.user_id == user.id, Tenant.deleted_at.is_(None))
        ).all()
        return ResolvedSession(
            session_id=row.id,
            user_id=user.id,
            email=user.email,
            platform_role=user.platform_role,
            mfa_fresh=row.mfa_fresh_until is not None and now < row.mfa_fresh_until,
            last_seen_at=row.last_seen_at,
            tenant_roles={str(t): str(r) for t, r in roles},
            totp_enrolled=bool(user.totp_enrolled),
            password_change_required=bool(user.password_change_required),
        )

    def is_live(self, row: SessionRow, *, now: datetime) -> bool:
        return (
            row.revoked_at is None and now < row.expires_at and now < row.last_seen_at + self.idle
        )

    def live_sessions(self, session: Session, user_id: str, *, now: datetime) -> list[SessionView]:
        """The user's sessions that still work, newest first."""
        rows = session.execute(
            select(SessionRow)
            .where(SessionRow.user_id == user_id, SessionRow.revoked_at.is_(None))
            .order_by(SessionRow.created_at.desc(), SessionRow.id)
        ).scalars()
        return [
            SessionView(r.id, r.created_at, r.last_seen_at, r.ip, r.user_agent)
            for r in rows
            if self.is_live(r, now=now)
        ]

    def revoke_own(self, session: Session, user_id: str, session_id: str, *, now: datetime) -> bool:
        """End one live session of ``user_id``; False when there is none by that id."""
        row = session.get(SessionRow, session_id)
        if row is None or row.user_id != user_id or not self.is_live(row, now=now):
            return False
        self.revoke(session, session_id, now=now)
        return True

    def needs_touch(self, resolved: ResolvedSession, *, now: datetime) -> bool:
        return now - resolved.last_seen_at >= self.touch_every

    def touch(self, session: Session, session_id: str, *, now: datetime) -> None:
        session.execute(
            update(SessionRow)
            .where(SessionRow.id == session_id, SessionRow.last_seen_at < now)
            .values(last_seen_at=now)
            .execution_options(synchronize_session=False)
        )

    def mark_fresh(self, session: Session, session_id: str, *, now: datetime) -> datetime:
        until = now + self.mfa_fresh
        session.execute(
            update(SessionRow)
            .where(SessionRow.id == session_id)
            .values(mfa_fresh_until=until, last_seen_at=now)
            .execution_options(synchronize_session=False)
        )
        return until

    def revoke(self, session: Session, session_id: str, *, now: datetime) -> None:
        session.execute(
            update(SessionRow)
            .where(SessionRow.id == session_id, SessionRow.revoked_at.is_(None))
            .values(revoked_at=now)
            .execution_options(synchronize_session=False)
        )

    def revoke_all(
        self, session: Session, user_id: str, *, now: datetime, keep: str | None = None
    ) -> int:
        """End every session of ``user_id`` (but ``keep``, the one making the change)."""
        stmt = update(SessionRow).where(
            SessionRow.user_id == user_id, SessionRow.revoked_at.is_(None)
        )
        if keep is not None:
            stmt = stmt.where(SessionRow.id != keep)
        result = session.execute(
            stmt.values(revoked_at=now).execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)
