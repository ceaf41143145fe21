"""Lines and their credentials: create, list, read, replace and revoke.

(Suspending and resuming lines and tenants: :mod:`vault.lines.states`.)

Each credential version is sealed through the key hierarchy (tenant KEK -> fresh DEK ->
AES-GCM) and only the current version is stored: replacing overwrites the envelope, so
the previous version's DEK and ciphertext are gone when the transaction commits, and
revoking destroys them (crypto-shredding) in the same transaction as the status change
and its audit event. Both also request a rotation of the tenant's KEK (debounced,
``vault/keys/schedule.py``), so a copy of the old envelope written back into the
database stops opening once the superseded KEK version is destroyed; and both stamp the
line's status MAC (``vault/keys/integrity.py``). Humans get metadata only; this service
never returns a stored secret, only a vault-generated one, once, at the moment it is made.

Writers lock what they change: the line row (``FOR UPDATE``) so two replacements cannot
both produce version N+1, and the tenant row (``FOR SHARE``) so a KEK rotation cannot
flip the active version between our read of it and our commit. On SQLite the
``BEGIN IMMEDIATE`` write lock already serializes writers.

Create, replace and check ask the line's platform about the credential
(``vault.connectors``). That call is never made inside a transaction: the access checks
and the parsing run first, the request's transaction is then committed (which keeps a
consumed MFA code consumed and drops SQLite's write lock and PostgreSQL's row locks),
the platform is asked, and only then are the rows locked and written, re-reading
anything that may have changed meanwhile.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.audit.events import Actor, AuditEvent, RequestContext, sanitize
from vault.audit.trail import AuditTrail
from vault.authz import Permission, UserPrincipal, authorize
from vault.clock import Clock, rfc3339
from vault.connectors import CheckOutcome, ProviderChecks
from vault.errors import Conflict, NotFound, Unprocessable
from vault.ids import new_id
from vault.keys.integrity import row_macs, stamp_line
from vault.keys.keyring import KeyRing
from vault.keys.schedule import request_rotation
from vault.keys.shred import shred_line_credential
from vault.keys.system import SystemKeys
from vault.lines.expiry import parse_window
from vault.lines.guard import attempt_audited
from vault.lines.provider import (
    account_of,
    apply_outcome,
    credential_fields,
    open_line,
    refuse_rejected,
)
from vault.lines.schemas import ParsedCredential, parse_credential, parse_line_name, parse_line_type
from vault.lines.status import ACTIVE, REVOKED
from vault.storage.models import Line, Tenant
from vault.webhooks.outbox import enqueue

if TYPE_CHECKING:  # the runtime builds the services that use this module
    from vault.lines.refresh import Refresher
    from vault.runtime import Runtime

__all__ = [
    "FINGERPRINT_PURPOSE",
    "LineService",
    "LineView",
    "fingerprint",
    "line_event",
    "line_service_for",
    "line_view",
    "load_line",
    "load_tenant",
    "new_line",
    "seal_line",
]

FINGERPRINT_PURPOSE = "credential-fingerprint"
_NO_CONTEXT = RequestContext()
MAX_REASON = 500


@dataclass(frozen=True, slots=True)
class LineView:
    """Line metadata, exactly the contract's fields; never any secret."""

    id: str
    tenant_id: str
    type: str
    name: str
    status: str
    version: int
    fingerprint: str | None
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    account: Mapping[str, str] | None = None
    provider_status: str = "not_checked"
    checked_at: datetime | None = None
    last_refreshed_at: datetime | None = None
    last_fetched_at: datetime | None = None
    generated: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The JSON metadata (``generated`` is not part of it; the route adds it once)."""
        return {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "type": self.type,
            "name": self.name,
            "status": self.status,
            "version": self.version,
            "fingerprint": self.fingerprint,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
            "expires_at": rfc3339(self.expires_at),
            "revoked_at": rfc3339(self.revoked_at),
            "account": dict(self.account) if self.account is not None else None,
            "provider_status": self.provider_status,
            "checked_at": rfc3339(self.checked_at),
            "last_refreshed_at": rfc3339(self.last_refreshed_at),
            "last_fetched_at": rfc3339(self.last_fetched_at),
        }


def line_view(line: Line, *, generated: Mapping[str, str] | None = None) -> LineView:
    return LineView(
        id=line.id,
        tenant_id=line.tenant_id,
        type=line.type,
        name=line.name,
        status=line.status,
        version=line.version,
        fingerprint=line.fingerprint,
        created_at=line.created_at,
        updated_at=line.updated_at,
        expires_at=line.expires_at,
        revoked_at=line.revoked_at,
        account=account_of(line),
        provider_status=line.provider_status or "not_checked",
        checked_at=line.checked_at,
        last_refreshed_at=line.last_refreshed_at,
        last_fetched_at=line.last_fetched_at,
        generated=dict(generated or {}),
    )


def fingerprint(system_keys: SystemKeys, *, tenant_id: str, plaintext: bytes) -> str:
    """96 bits of a keyed HMAC over (tenant, canonical credential), as 24 hex digits.

    Keyed, so it cannot be brute-forced offline from a database copy; tenant-scoped, so
    equal tokens in two tenants do not correlate; the same token in one tenant keeps its
    fingerprint, so an owner can tell whether a replacement really changed it.
    """
    tag = system_keys.mac(FINGERPRINT_PURPOSE, tenant_id.encode() + b"\x00" + plaintext)
    return tag[:12].hex()


def seal_line(
    line: Line,
    parsed: ParsedCredential,
    *,
    kek: bytes,
    kek_version: int,
    keyring: KeyRing,
    system_keys: SystemKeys,
) -> None:
    """Seal ``parsed`` as the line's current version: envelope, expiry and fingerprint.

    Takes the plaintext KEK rather than a session, so that rows built in bulk outside
    this service (the benchmark seeder) hold exactly what the service stores.
    """
    sealed = keyring.seal_credential(
        kek=kek,
        kek_version=kek_version,
        tenant_id=line.tenant_id,
        line_id=line.id,
        line_type=line.type,
        credential_version=line.version,
        plaintext=parsed.plaintext,
    )
    line.kek_version = sealed.kek_version
    line.wrapped_dek = sealed.wrapped_dek
    line.ciphertext = sealed.ciphertext
    line.expires_at = parsed.expires_at
    line.fingerprint = fingerprint(
        system_keys, tenant_id=line.tenant_id, plaintext=parsed.plaintext
    )
    stamp_line(line, row_macs(system_keys))


def new_line(
    parsed: ParsedCredential,
    *,
    tenant_id: str,
    name: str,
    kek: bytes,
    kek_version: int,
    keyring: KeyRing,
    system_keys: SystemKeys,
    now: datetime,
) -> Line:
    """A new active line at version 1 holding ``parsed``, not yet added to any session."""
    line = Line(
        id=new_id("ln"),
        tenant_id=tenant_id,
        type=parsed.line_type,
        name=name,
        status=ACTIVE,
        version=1,
        created_at=now,
        updated_at=now,
    )
    seal_line(
        line, parsed, kek=kek, kek_version=kek_version, keyring=keyring, system_keys=system_keys
    )
    return line


def load_tenant(session: Session, tenant_id: str, *, share_lock: bool = False) -> Tenant:
    """The live tenant row, or NotFound (deleted tenants are gone)."""
    stmt = select(Tenant).where(Tenant.id == tenant_id, Tenant.deleted_at.is_(None))
    if share_lock:
        # populate_existing: a row this session read before (unlocked) is refreshed from
        # the locked read, not served stale from the identity map.
        stmt = stmt.with_for_update(read=True).execution_options(populate_existing=True)
    tenant = session.execute(stmt).scalar_one_or_none()
    if tenant is None:
        raise NotFound()
    return tenant


def load_line(session: Session, tenant_id: str, line_id: str, *, lock: bool) -> Line:
    """The tenant's line (``FOR UPDATE`` if ``lock``), or NotFound."""
    stmt = select(Line).where(Line.id == line_id, Line.tenant_id == tenant_id)
    if lock:
        # Refreshed from the locked read: the session may hold the row from an unlocked
        # one (before the platform was asked, in a transaction since committed), and it
        # does not expire objects on commit.
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    line = session.execute(stmt).scalar_one_or_none()
    if line is None:
        raise NotFound()
    return line


def line_event(
    action: str,
    principal: UserPrincipal,
    line: Line,
    context: RequestContext,
    *,
    reason: str | None = None,
) -> AuditEvent:
    """The success event of a person's change to ``line``."""
    return line_event_by(Actor("user", principal.user_id), action, line, context, reason=reason)


def line_event_by(
    actor: Actor,
    action: str,
    line: Line,
    context: RequestContext,
    *,
    outcome: Literal["success", "error"] = "success",
    reason: str | None = None,
) -> AuditEvent:
    """The event of a change to ``line`` by any actor (a person, the refresher): ids,
    type, version, fingerprint and key version only."""
    return AuditEvent.by(
        actor,
        action,
        outcome,
        tenant_id=line.tenant_id,
        resource_type="line",
        resource_id=line.id,
        reason=reason,
        context=context,
        details={
            "type": line.type,
            "version": line.version,
            "fingerprint": line.fingerprint,
            "kek_version": line.kek_version,
        },
    )


class LineService:
    def __init__(
        self,
        session: Session,
        *,
        keyring: KeyRing,
        system_keys: SystemKeys,
        audit: AuditTrail,
        clock: Clock,
        rotation_delay: timedelta,
        checks: ProviderChecks,
        refresher: Refresher | None = None,
    ) -> None:
        self._session = session
        self._checks = checks
        self._refresher = refresher
        self._keyring = keyring
        self._system_keys = system_keys
        self._audit = audit
        self._clock = clock
        self._rotation_delay = rotation_delay

    # -- reads ------------------------------------------------------------------------

    def list(
        self,
        principal: UserPrincipal,
        tenant_id: str,
        *,
        expiring_within: timedelta | str | None = None,
        context: RequestContext = _NO_CONTEXT,
    ) -> Sequence[LineView]:
        """Every line of the tenant; with a window, only active lines expiring within it.

        Already-expired active lines are included in the window (they need attention
        most); revoked lines are not, nothing can be done with them. A window given as
        text (``7d``) is parsed after the access check, so a stranger still gets 404.
        """
        with self._guard("line.list", principal, tenant_id, ("tenant", tenant_id), context):
            authorize(principal, tenant_id, Permission.LINE_READ)
            load_tenant(self._session, tenant_id)
            if isinstance(expiring_within, str):
                expiring_within = parse_window(expiring_within)
        stmt = select(Line).where(Line.tenant_id == tenant_id)
        if expiring_within is not None:
            cutoff = self._clock.now() + expiring_within
            stmt = stmt.where(
                Line.status == ACTIVE, Line.expires_at.is_not(None), Line.expires_at <= cutoff
            )
        stmt = stmt.order_by(Line.created_at, Line.id)
        return [line_view(row) for row in self._session.execute(stmt).scalars()]

    def get(
        self,
        principal: UserPrincipal,
        tenant_id: str,
        line_id: str,
        *,
        context: RequestContext = _NO_CONTEXT,
    ) -> LineView:
        with self._guard("line.read", principal, tenant_id, ("line", line_id), context):
            authorize(principal, tenant_id, Permission.LINE_READ)
            load_tenant(self._session, tenant_id)
            return line_view(self._line(tenant_id, line_id, lock=False))

    # -- writes -----------------------------------------------------------------------

    def create(
        self,
        principal: UserPrincipal,
        tenant_id: str,
        *,
        line_type: object,
        name: object,
        credential: object,
        context: RequestContext,
    ) -> LineView:
        guard = ("credential.create", principal, tenant_id, ("tenant", tenant_id), context)
        with self._guard(*guard):
            authorize(principal, tenant_id, Permission.LINE_WRITE)
            load_tenant(self._session, tenant_id)
            kind = parse_line_type(line_type)
            display = parse_line_name(name)
            parsed = parse_credential(kind, credential)
        outcome = self._ask_platform(guard, kind, credential_fields(parsed))
        with self._guard(*guard):
            tenant = load_tenant(self._session, tenant_id, share_lock=True)
        line = new_line(
            parsed,
            tenant_id=tenant_id,
            name=display,
            kek=self._kek(tenant),
            kek_version=tenant.active_kek_version,
            keyring=self._keyring,
            system_keys=self._system_keys,
            now=self._clock.now(),
        )
        apply_outcome(line, outcome, now=self._clock.now())
        self._session.add(line)
        self._session.flush()
        self._record("credential.create", principal, line, context)
        self._emit("line.created", line)
        return line_view(line, generated=parsed.generated)

    def replace(
        self,
        principal: UserPrincipal,
        tenant_id: str,
        line_id: str,
        *,
        credential: object,
        context: RequestContext,
    ) -> LineView:
        """Seal a new version (version + 1); the previous envelope is overwritten.

        A revoked line stays revoked (409): revocation is terminal, create a new line.
        A suspended line may be replaced and stays suspended.
        """
        guard = ("credential.replace", principal, tenant_id, ("line", line_id), context)
        with self._guard(*guard):
            authorize(principal, tenant_id, Permission.LINE_REPLACE)
            load_tenant(self._session, tenant_id)
            line = self._line(tenant_id, line_id, lock=False)
            parsed = parse_credential(line.type, credential)
            self._refuse_revoked(line)
        outcome = self._ask_platform(guard, line.type, credential_fields(parsed))
        with self._guard(*guard):
            tenant = load_tenant(self._session, tenant_id, share_lock=True)
            line = self._live_line(tenant_id, line_id, lock=True)
        line.version += 1
        line.updated_at = self._clock.now()
        seal_line(
            line,
            parsed,
            kek=self._kek(tenant),
            kek_version=tenant.active_kek_version,
            keyring=self._keyring,
            system_keys=self._system_keys,
        )
        apply_outcome(line, outcome, now=line.updated_at)
        self._session.flush()
        self._request_rotation(tenant_id)
        self._record("credential.replace", principal, line, context)
        self._emit("line.replaced", line)
        return line_view(line, generated=parsed.generated)

    def check(
        self,
        principal: UserPrincipal,
        tenant_id: str,
        line_id: str,
        *,
        context: RequestContext,
    ) -> LineView:
        """Ask the platform again and keep the answer (a refusal makes it ``invalid``).

        The credential is opened in a read transaction that ends before the call; the
        answer is kept only if the line still holds the version that was checked.
        """
        guard = ("credential.check", principal, tenant_id, ("line", line_id), context)
        with self._guard(*guard):
            authorize(principal, tenant_id, Permission.LINE_CHECK)
            load_tenant(self._session, tenant_id)
            line = self._live_line(tenant_id, line_id, lock=False)
            checked_version, kind = line.version, line.type
            fields = open_line(self._session, self._keyring, line)
        if self._checks.calls_out(kind):
            self._session.commit()  # no transaction is held during the call
        outcome = self._checks.check(kind, fields)
        del fields
        with self._guard(*guard):
            line = self._line(tenant_id, line_id, lock=True)
        if line.status != "revoked" and line.version == checked_version:
            apply_outcome(line, outcome, now=self._clock.now())
            self._session.flush()
        self._record("credential.check", principal, line, context, reason=outcome.status)
        return line_view(line)

    def refresh(
        self,
        principal: UserPrincipal,
        tenant_id: str,
        line_id: str,
        *,
        context: RequestContext,
    ) -> LineView:
        """Ask the platform for a new token now (Instagram lines): ``version`` + 1.

        Goes through the refresher's single-flight path (vault/lines/refresh.py) with no
        transaction held: a refresh already in flight in any process is waited for and
        its result answered. Other line types, calls switched off, and a platform
        refusal (its reason in the detail) are 409."""
        guard = ("credential.refresh", principal, tenant_id, ("line", line_id), context)
        with self._guard(*guard):
            authorize(principal, tenant_id, Permission.LINE_REFRESH)
            load_tenant(self._session, tenant_id)
            line = self._live_line(tenant_id, line_id, lock=False)
            refresher = self._refresher
            if line.type != "instagram":
                raise Conflict("only Instagram lines have a token that the platform renews")
            if refresher is None or not refresher.enabled:
                raise Conflict("calls to the platforms are switched off on this server")
            seen = line.version
        self._session.commit()  # no transaction is held during the call
        outcome = refresher.refresh_now(
            line_id, actor=Actor("user", principal.user_id), seen_version=seen, context=context
        )
        if outcome.result == "failed":  # audited by the refresher, with the line's status
            raise Conflict(f"the platform did not refresh the token: {outcome.reason}")
        with self._guard(*guard):
            if outcome.result not in ("refreshed", "joined"):
                raise Conflict("the line changed or another refresh is in progress; try again")
            self._session.expire_all()
            return line_view(self._line(tenant_id, line_id, lock=False))

    def revoke(
        self,
        principal: UserPrincipal,
        tenant_id: str,
        line_id: str,
        *,
        reason: str | None,
        context: RequestContext,
    ) -> LineView:
        """Destroy the secret and its DEK and mark the line revoked, in one transaction.

        The table's MFA column is checked after the access checks (``authorize``), so a
        stranger still gets 404 and a member 403 rather than a hint to bring a code.
        Revoking a revoked line is idempotent: 200 with the same metadata, and an event
        saying so.
        """
        with self._guard("credential.revoke", principal, tenant_id, ("line", line_id), context):
            authorize(principal, tenant_id, Permission.LINE_REVOKE)
            load_tenant(self._session, tenant_id)
            line = self._line(tenant_id, line_id, lock=True)
            if reason is not None and len(reason) > MAX_REASON:
                raise Unprocessable(
                    f"invalid value for: reason (at most {MAX_REASON} characters)", field="reason"
                )
        if line.status == REVOKED:
            self._record("credential.revoke", principal, line, context, reason="already_revoked")
            return line_view(line)
        now = self._clock.now()
        shred_line_credential(self._session, line=line)
        line.status = REVOKED
        line.revoked_at = now
        line.updated_at = now
        line.revoke_reason = sanitize(reason, MAX_REASON) if reason else None
        stamp_line(line, row_macs(self._system_keys))
        self._session.flush()
        self._request_rotation(tenant_id)
        self._record("credential.revoke", principal, line, context, reason=line.revoke_reason)
        self._emit("line.revoked", line)
        return line_view(line)

    # -- internals --------------------------------------------------------------------

    def _guard(
        self,
        action: str,
        principal: UserPrincipal,
        tenant_id: str,
        resource: tuple[str, str],
        context: RequestContext,
    ) -> AbstractContextManager[None]:
        return attempt_audited(
            self._session,
            self._audit,
            action,
            principal,
            tenant_id=tenant_id,
            resource=resource,
            context=context,
        )

    def _ask_platform(
        self, guard: tuple[Any, ...], line_type: str, fields: Mapping[str, Any]
    ) -> CheckOutcome:
        """End the transaction, then ask the platform; a definite refusal is 422 (audited)."""
        if self._checks.calls_out(line_type):
            self._session.commit()
        outcome = self._checks.check(line_type, fields)
        with self._guard(*guard):
            refuse_rejected(outcome)
        return outcome

    def _live_line(self, tenant_id: str, line_id: str, *, lock: bool) -> Line:
        line = self._line(tenant_id, line_id, lock=lock)
        self._refuse_revoked(line)
        return line

    @staticmethod
    def _refuse_revoked(line: Line) -> None:
        """Revocation is terminal (other states, e.g. suspended, may be replaced/checked)."""
        if line.status == "revoked":
            raise Conflict("the line is revoked; create a new line instead")

    def _line(self, tenant_id: str, line_id: str, *, lock: bool) -> Line:
        return load_line(self._session, tenant_id, line_id, lock=lock)

    def _request_rotation(self, tenant_id: str) -> None:
        """The superseded envelope may survive in a copy of the database: schedule the
        rotation that destroys the KEK version it is wrapped by (same transaction)."""
        request_rotation(
            self._session,
            tenant_id=tenant_id,
            now=self._clock.now(),
            delay=self._rotation_delay,
        )

    def _emit(self, event_type: str, line: Line) -> None:
        """The webhook event of this change, in its transaction (vault/webhooks/outbox.py)."""
        enqueue(
            self._session,
            tenant_id=line.tenant_id,
            event_type=event_type,
            data={"line_id": line.id, "version": line.version, "type": line.type},
            now=self._clock.now(),
        )

    def _kek(self, tenant: Tenant) -> bytes:
        """The tenant's active KEK, its row held for this transaction (see ``load_kek``)."""
        return self._keyring.load_kek(
            self._session, tenant_id=tenant.id, version=tenant.active_kek_version
        )

    def _record(
        self,
        action: str,
        principal: UserPrincipal,
        line: Line,
        context: RequestContext,
        *,
        reason: str | None = None,
    ) -> None:
        self._audit.record(
            self._session, line_event(action, principal, line, context, reason=reason)
        )


def line_service_for(runtime: Runtime, session: Session) -> LineService:
    """The line service of one request or command (the API's ``Lines``, tests, benches)."""
    return LineService(
        session,
        keyring=runtime.keyring,
        system_keys=runtime.system_keys,
        audit=runtime.audit,
        clock=runtime.clock,
        rotation_delay=timedelta(seconds=runtime.settings.revocation_rotation_delay_seconds),
        checks=runtime.checks,
        refresher=runtime.refresher,
    )
