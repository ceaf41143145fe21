"""Runner identities: registration, secret rotation, disabling, and their access tokens.

A runner is a machine identity of the workflow runtime (like an AppRole or an Infisical
machine identity). It authenticates with OAuth 2.0 client credentials and receives a
short-lived bearer token; only keyed hashes of the secret and the tokens are stored.
Disabling a runner or rotating its secret deletes its tokens in the same transaction.
The fetch path decides from the token and runner rows; a decision it cached is used only
while the authorization epoch is unchanged, and changing or deleting either row moves
the epoch (:mod:`vault.runners.fetch`), so either takes effect on the next request in
every server process.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from kms.crypto import constant_time_equal
from vault.audit.events import RequestContext
from vault.audit.flood import FailureFlood
from vault.audit.trail import AuditTrail
from vault.authz import (
    PlatformPermission,
    UserPrincipal,
    authorize_platform,
    platform_allows,
    runner_directory_allowed,
)
from vault.clock import Clock
from vault.errors import Forbidden, NotFound, Unauthenticated, Unprocessable
from vault.ids import new_id
from vault.keys.system import SystemKeys
from vault.lines.guard import failures_audited
from vault.runners.events import runner_event, token_event
from vault.runners.secrets import (
    client_id_for_audit,
    looks_like_runner_token,
    new_client_id,
    new_client_secret,
    new_runner_token,
    secret_hash,
    token_hash,
)
from vault.storage.models import Runner, RunnerToken
from vault.validation import clean_display_name

__all__ = ["IssuedToken", "NewRunner", "RunnerRegistry", "TokenInfo", "TokenIssuer"]

# Hash computed for an unknown client id, so a miss costs what a hit costs.
_DUMMY_RUNNER = "rnr_" + "0" * 32


@dataclass(frozen=True)
class NewRunner:
    """A freshly registered (or re-keyed) runner; ``client_secret`` exists only here."""

    runner: Runner
    client_secret: str

    def __repr__(self) -> str:
        return f"NewRunner(id={self.runner.id!r})"


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int
    runner_id: str

    def __repr__(self) -> str:
        return f"IssuedToken(runner_id={self.runner_id!r}, expires_in={self.expires_in})"


@dataclass(frozen=True)
class TokenInfo:
    """What the holder of a live runner token may learn about it (Vault's lookup-self)."""

    runner_id: str
    runner_name: str
    accessor: str
    created_at: datetime
    expires_at: datetime


def _clean_name(name: str) -> str:
    # The one rule for display names (vault/validation.py), as for tenants and lines.
    cleaned = clean_display_name(name)
    if cleaned is None:
        raise Unprocessable(
            "invalid value for: name (1-200 characters, no control, bidi or invisible characters)",
            field="name",
        )
    return cleaned


class RunnerRegistry:
    """Platform-admin management of runners; flushes, never commits."""

    def __init__(
        self,
        session: Session,
        *,
        system_keys: SystemKeys,
        audit: AuditTrail,
        clock: Clock,
        actor_id: str,
        context: RequestContext,
    ) -> None:
        self._session = session
        self._keys = system_keys
        self._audit = audit
        self._clock = clock
        self._actor_id = actor_id
        self._context = context

    def _event(self, action: str, runner_id: str, **details: str | int | bool | None) -> None:
        self._audit.record(
            self._session,
            runner_event(
                action,
                actor_id=self._actor_id,
                runner_id=runner_id,
                context=self._context,
                details=details,
            ),
        )

    def authorize(
        self,
        principal: UserPrincipal,
        permission: PlatformPermission,
        action: str,
        runner_id: str | None = None,
    ) -> None:
        """``authorize_platform``; a refusal (forbidden, sudo mode) is audited as denied."""
        with failures_audited(
            self._session,
            self._audit,
            action=action,
            principal=principal,
            tenant_id=None,
            resource_type="runner",
            resource_id=runner_id,
            context=self._context,
        ):
            authorize_platform(principal, permission)

    def register(self, *, name: str) -> NewRunner:
        now = self._clock.now()
        runner_id = new_id("rnr")
        secret = new_client_secret()
        runner = Runner(
            id=runner_id,
            name=_clean_name(name),
            client_id=new_client_id(),
            secret_hash=secret_hash(self._keys, runner_id=runner_id, secret=secret),
            created_at=now,
        )
        self._session.add(runner)
        self._session.flush()
        self._event("runner.create", runner_id)
        return NewRunner(runner=runner, client_secret=secret)

    def get(self, runner_id: str) -> Runner:
        runner = self._session.get(Runner, runner_id)
        if runner is None:
            raise NotFound("no such runner")
        return runner

    def list(self) -> list[Runner]:
        return list(
            self._session.execute(select(Runner).order_by(Runner.created_at, Runner.id)).scalars()
        )

    def visible_to(self, principal: UserPrincipal) -> tuple[builtins.list[Runner], bool]:
        """The runners ``principal`` may list, and whether they see every field.

        Platform readers see the full rows (True); a tenant owner or admin sees the
        directory (False: id, name, created and status, enough to grant a runner); anyone
        else is refused. One rule for ``GET /v1/runners`` and the console's list."""
        if platform_allows(principal, PlatformPermission.RUNNER_READ):
            return self.list(), True
        if not runner_directory_allowed(principal):
            raise Forbidden()
        return self.list(), False

    def rotate_secret(self, runner_id: str) -> NewRunner:
        """A new secret; the old one and every token issued under it stop working at once."""
        runner = self.get(runner_id)
        if runner.disabled_at is not None:
            raise NotFound("no such runner")
        secret = new_client_secret()
        runner.secret_hash = secret_hash(self._keys, runner_id=runner.id, secret=secret)
        runner.secret_rotated_at = self._clock.now()
        revoked = self._revoke_tokens(runner.id)
        self._session.flush()
        self._event("runner.rotate_secret", runner.id, tokens_revoked=revoked)
        return NewRunner(runner=runner, client_secret=secret)

    def disable(self, runner_id: str) -> Runner:
        """Disabled runners keep their row (the audit trail names them) but lose every token."""
        runner = self.get(runner_id)
        if runner.disabled_at is not None:
            raise NotFound("no such runner")
        runner.disabled_at = self._clock.now()
        revoked = self._revoke_tokens(runner.id)
        self._session.flush()
        self._event("runner.disable", runner.id, tokens_revoked=revoked)
        return runner

    def _revoke_tokens(self, runner_id: str) -> int:
        result = self._session.execute(
            delete(RunnerToken).where(RunnerToken.runner_id == runner_id)
        )
        return int(getattr(result, "rowcount", 0) or 0)


class TokenIssuer:
    """OAuth 2.0 client credentials (RFC 6749 section 4.4) for runners."""

    def __init__(
        self,
        session: Session,
        *,
        system_keys: SystemKeys,
        audit: AuditTrail,
        clock: Clock,
        ttl_seconds: int,
        flood: FailureFlood | None = None,
    ) -> None:
        self._session = session
        self._keys = system_keys
        self._audit = audit
        self._clock = clock
        self._ttl = ttl_seconds
        self._flood = flood

    def issue(self, *, client_id: str, client_secret: str, context: RequestContext) -> IssuedToken:
        """Check the client and mint a token; a failure is audited durably and raised.

        The success event is recorded in the caller's unit of work, with the token row.
        """
        found = self._session.execute(
            select(Runner.id, Runner.secret_hash, Runner.disabled_at).where(
                Runner.client_id == client_id[:64]
            )
        ).first()
        runner_id = found.id if found is not None else None
        expected = found.secret_hash if found is not None else b"\0" * 32
        presented = secret_hash(
            self._keys, runner_id=runner_id or _DUMMY_RUNNER, secret=client_secret
        )
        matches = constant_time_equal(expected, presented)
        if found is None or not matches or found.disabled_at is not None:
            reason = (
                "unknown_client"
                if found is None
                else ("bad_secret" if not matches else "runner_disabled")
            )
            # End this unit of work first: on SQLite it holds the write lock the audit
            # writer needs, and nothing in it may be kept anyway.
            self._session.rollback()
            self.deny(reason=reason, runner_id=runner_id, client_id=client_id, context=context)
            raise Unauthenticated("client authentication failed")
        assert runner_id is not None
        now = self._clock.now()
        # Housekeeping: this runner's expired tokens go now (indexed by runner_id).
        self._session.execute(
            delete(RunnerToken).where(
                RunnerToken.runner_id == runner_id, RunnerToken.expires_at <= now
            )
        )
        token = new_runner_token()
        self._session.add(
            RunnerToken(
                token_hash=token_hash(self._keys, token),
                runner_id=runner_id,
                created_at=now,
                expires_at=now + timedelta(seconds=self._ttl),
            )
        )
        self._session.flush()
        self._audit.record(
            self._session,
            token_event(
                "runner.token", "success", runner_id, context, details={"expires_in": self._ttl}
            ),
        )
        return IssuedToken(access_token=token, expires_in=self._ttl, runner_id=runner_id)

    def deny(
        self,
        *,
        reason: str,
        context: RequestContext,
        runner_id: str | None = None,
        client_id: str | None = None,
    ) -> None:
        """Durably record a refused token request (its own transaction) before answering:
        an unauthenticated failure, limited and aggregated per address (``RateLimited``
        past the limit)."""
        event = token_event(
            "runner.token",
            "denied",
            runner_id,
            context,
            reason=reason,
            details=client_id_for_audit(self._keys, client_id) if client_id else None,
        )
        if self._flood is not None:
            self._flood.record(event, context)
        else:
            self._audit.emit(event)

    def accessor(self, token: str) -> str:
        """A stable handle of the token that does not reveal it (Vault's accessor)."""
        return self._keys.mac("runner-token-accessor", token.encode())[:12].hex()

    def lookup(self, token: str, *, context: RequestContext) -> TokenInfo:
        """The live token's runner and lifetime; an unknown, expired or disabled one is
        audited like a refused token request and raised as ``Unauthenticated``."""
        found = None
        if looks_like_runner_token(token):
            found = self._session.execute(
                select(Runner.id, Runner.name, RunnerToken.created_at, RunnerToken.expires_at)
                .join(Runner, Runner.id == RunnerToken.runner_id)
                .where(
                    RunnerToken.token_hash == token_hash(self._keys, token),
                    RunnerToken.expires_at > self._clock.now(),
                    Runner.disabled_at.is_(None),
                )
            ).first()
        if found is None:
            self._session.rollback()
            self.deny(reason="invalid_token", context=context)
            raise Unauthenticated("a valid runner access token is required")
        return TokenInfo(
            runner_id=found.id,
            runner_name=found.name,
            accessor=self.accessor(token),
            created_at=found.created_at,
            expires_at=found.expires_at,
        )

    def revoke(self, token: str, *, context: RequestContext) -> bool:
        """Delete one token (the runner logging out); True when it existed."""
        th = token_hash(self._keys, token)
        row = self._session.get(RunnerToken, th)
        if row is None:
            return False
        runner_id = row.runner_id
        self._session.delete(row)
        self._session.flush()
        self._audit.record(
            self._session, token_event("runner.token_revoke", "success", runner_id, context)
        )
        return True
