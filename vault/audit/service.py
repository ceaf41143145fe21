"""Reading the trail: listing events with filters, and verifying the chain, for people.

Scoping follows the contract: platform admins and auditors read everything; a tenant
owner or auditor reads their tenant's events only and must name the tenant. Every read
is itself audited (``audit.read``), denied ones too, and the event is durable before a
single row is returned: no record, no answer.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Literal

from sqlalchemy import Engine, select, true

from vault.audit.actions import AUDIT_FAMILIES, action_filter
from vault.audit.activity import ActivityGroup, FetchActivity, fetch_activity
from vault.audit.chain import format_ts
from vault.audit.events import Actor, AuditEvent, RequestContext
from vault.audit.export import ExportSummary, write_export
from vault.audit.render import EVENT_COLUMNS, event_json
from vault.audit.store import snapshot, verify_database
from vault.audit.trail import AuditTrail
from vault.audit.verify import TailPolicy, VerifyResult
from vault.authz import (
    Permission,
    PlatformPermission,
    UserPrincipal,
    authorize,
    platform_allows,
    platform_forbidden,
)
from vault.errors import Forbidden, InvalidRequest, NotFound
from vault.storage.engine import SessionFactory
from vault.storage.models import AuditEventRow

__all__ = ["MAX_LIMIT", "AuditReader", "EventFilter", "EventPage", "decode_cursor", "encode_cursor"]

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
_EV = AuditEventRow.__table__
_CURSOR_PREFIX = "lvc1:"
_ACTIVITY = "fetch_activity"  # the audit.read event's resource id for the fetch chart


@dataclass(frozen=True, slots=True)
class EventFilter:
    tenant_id: str | None = None
    actor_type: Literal["user", "runner", "system"] | None = None
    actor_id: str | None = None
    action: str | None = None
    outcome: Literal["success", "denied", "error"] | None = None
    line_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None
    # Newest first (a line's recent accesses); the cursor then pages towards older events.
    newest_first: bool = False


@dataclass(frozen=True, slots=True)
class EventPage:
    events: list[dict[str, Any]]
    next_cursor: str | None


def encode_cursor(after_seq: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{after_seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
        if not raw.startswith(_CURSOR_PREFIX):
            raise ValueError
        value = int(raw[len(_CURSOR_PREFIX) :])
        if value < 0:
            raise ValueError
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest("the cursor is not valid", field="cursor") from None
    return value


class AuditReader:
    def __init__(
        self,
        *,
        engine: Engine,
        audit: AuditTrail,
        public_key: bytes,
        tail: TailPolicy,
        anchor_dir: Path | None = None,
        sessions: SessionFactory | None = None,
    ) -> None:
        """``public_key`` comes from the unwrapped signing key, never from the database;
        with ``anchor_dir`` the chain is also checked against the anchors kept there.
        ``sessions`` (write transactions) is needed by :meth:`export` only."""
        self._sessions = sessions
        self._engine = engine
        self._audit = audit
        self._public_key = public_key
        self._tail = tail
        self._anchor_dir = anchor_dir

    def list_events(
        self, principal: UserPrincipal, query: EventFilter, *, context: RequestContext
    ) -> EventPage:
        after = decode_cursor(query.cursor) if query.cursor is not None else None
        if query.action is not None:
            _action_clause(query.action)  # refuse an unknown action before any audit event
        if query.since and query.until and query.since > query.until:
            raise InvalidRequest("since must not be after until", field="since")
        limit = max(1, min(query.limit, MAX_LIMIT))
        self._authorize_read(principal, query.tenant_id, context=context)
        self._audit.emit(self._read_event(principal, "events", query.tenant_id, context, "success"))
        stmt = select(*(_EV.c[name] for name in EVENT_COLUMNS)).where(
            _seq_clause(after, newest_first=query.newest_first)
        )
        if query.action is not None:
            stmt = stmt.where(_action_clause(query.action))
        for column, value in (
            ("tenant_id", query.tenant_id),
            ("actor_type", query.actor_type),
            ("actor_id", query.actor_id),
            ("outcome", query.outcome),
            ("resource_id", query.line_id),
        ):
            if value is not None:
                stmt = stmt.where(_EV.c[column] == value)
        if query.since is not None:
            stmt = stmt.where(_EV.c.ts >= format_ts(query.since))
        if query.until is not None:
            stmt = stmt.where(_EV.c.ts < format_ts(query.until))
        order = _EV.c.seq.desc() if query.newest_first else _EV.c.seq
        stmt = stmt.order_by(order).limit(limit + 1)
        with snapshot(self._engine) as conn:
            rows = [dict(zip(EVENT_COLUMNS, row, strict=True)) for row in conn.execute(stmt)]
        more = len(rows) > limit
        rows = rows[:limit]
        events = [event_json(row) for row in rows]
        next_cursor = encode_cursor(int(rows[-1]["seq"])) if more else None
        return EventPage(events=events, next_cursor=next_cursor)

    def fetch_activity(
        self,
        principal: UserPrincipal,
        *,
        group: ActivityGroup,
        tenant_id: str | None,
        context: RequestContext,
    ) -> FetchActivity:
        """Credential fetches per hour over the last 7 days, per line or per runner, served
        and denied (:mod:`vault.audit.activity`). The same people as :meth:`list_events`
        may read it, and it is the same read of the trail, so it is audited the same way:
        ``audit.read`` (``resource.id = "fetch_activity"``), denied attempts too, durable
        before a count is returned."""
        self._authorize_read(principal, tenant_id, context=context, what=_ACTIVITY)
        self._audit.emit(self._read_event(principal, _ACTIVITY, tenant_id, context, "success"))
        with snapshot(self._engine) as conn:
            return fetch_activity(
                conn, group=group, tenant_id=tenant_id, now=self._audit.clock.now()
            )

    def verify(self, principal: UserPrincipal, *, context: RequestContext) -> VerifyResult:
        if not platform_allows(principal, PlatformPermission.AUDIT_VERIFY):
            self._audit.emit(self._read_event(principal, "verify", None, context, "denied"))
            raise platform_forbidden(principal, PlatformPermission.AUDIT_VERIFY)
        self._audit.emit(self._read_event(principal, "verify", None, context, "success"))
        return verify_database(
            self._engine,
            public_key=self._public_key,
            seal=self._audit.seal,
            tail=self._tail,
            anchor_dir=self._anchor_dir,
        )

    def export(
        self,
        principal: UserPrincipal,
        out: IO[str],
        *,
        context: RequestContext,
        tenant_id: str | None = None,
    ) -> ExportSummary:
        """Write the verifiable bundle of ``linevault audit export`` to ``out``: the whole
        chain (platform admin/auditor), or scoped to ``tenant_id`` (its owner or auditor;
        every other event withheld, see :mod:`vault.audit.export`). The ``audit.export``
        event is part of the export and committed, with the checkpoint that signs it,
        before a byte is written (fail closed)."""
        self._authorize_export(principal, tenant_id, context=context)
        checkpointer = self._audit.checkpointer
        if checkpointer is None or self._sessions is None:
            raise InvalidRequest("this server cannot sign an export")
        return write_export(
            out,
            engine=self._engine,
            sessions=self._sessions,
            checkpointer=checkpointer,
            clock=self._audit.clock,
            event=self._export_event(principal, context, tenant_id, None),
            tail=self._tail,
            anchor_dir=self._anchor_dir,
            tenant_id=tenant_id,
        )

    def _authorize_export(
        self, principal: UserPrincipal, tenant_id: str | None, *, context: RequestContext
    ) -> None:
        """Refused attempts are audited too, with the real reason (and the tenant asked)."""
        if tenant_id is None:
            if not platform_allows(principal, PlatformPermission.AUDIT_EXPORT):
                denied = platform_forbidden(principal, PlatformPermission.AUDIT_EXPORT)
                self._audit.emit(self._export_event(principal, context, None, denied))
                raise denied
            return
        try:
            authorize(principal, tenant_id, Permission.AUDIT_EXPORT)
        except (Forbidden, NotFound) as exc:
            self._audit.emit(self._export_event(principal, context, tenant_id, exc))
            raise

    @staticmethod
    def _export_event(
        principal: UserPrincipal,
        context: RequestContext,
        tenant_id: str | None,
        denied: Forbidden | NotFound | None,
    ) -> AuditEvent:
        return AuditEvent.by(
            Actor("user", principal.user_id),
            "audit.export",
            "success" if denied is None else "denied",
            tenant_id=tenant_id,
            resource_type="audit",
            resource_id="export",
            reason="HTTP export" if denied is None else _denied_reason(denied),
            context=context,
        )

    # -- internals -------------------------------------------------------------------

    def _authorize_read(
        self,
        principal: UserPrincipal,
        tenant_id: str | None,
        *,
        context: RequestContext,
        what: str = "events",
    ) -> None:
        """Platform readers read every tenant; a tenant's owner or auditor must name it.
        A refusal is recorded (``resource.id = what``) before it is raised."""
        if platform_allows(principal, PlatformPermission.AUDIT_READ_ALL):
            return
        if tenant_id is None:
            self._audit.emit(self._read_event(principal, what, None, context, "denied"))
            raise InvalidRequest("tenant_id is required", field="tenant_id")
        try:
            authorize(principal, tenant_id, Permission.AUDIT_READ)
        except (Forbidden, NotFound):
            self._audit.emit(self._read_event(principal, what, tenant_id, context, "denied"))
            raise

    @staticmethod
    def _read_event(
        principal: UserPrincipal,
        what: str,
        tenant_id: str | None,
        context: RequestContext,
        outcome: Literal["success", "denied"],
    ) -> AuditEvent:
        return AuditEvent.by(
            Actor("user", principal.user_id),
            "audit.read",
            outcome,
            tenant_id=tenant_id,
            resource_type="audit",
            resource_id=what,
            context=context,
        )


def _denied_reason(exc: Forbidden | NotFound) -> str:
    """The audit reason of a refused export: the 403's real reason; a stranger's 404."""
    if isinstance(exc, NotFound):
        return "not a member of the tenant"
    return exc.detail


def _seq_clause(after: int | None, *, newest_first: bool) -> Any:
    """Where a page starts: after the cursor's event, or before it when newest first."""
    if newest_first:
        return _EV.c.seq < after if after is not None else true()
    return _EV.c.seq > (after or 0)


def _action_clause(value: str) -> Any:
    """The WHERE clause for ``action``: one exact action, or ``family.*`` (a prefix)."""
    parsed = action_filter(value)
    if parsed is None:
        families = ", ".join(f"{f}.*" for f in sorted(AUDIT_FAMILIES))
        raise InvalidRequest(
            "action: expected a known action such as credential.fetch, or a family with"
            f" .* (one of {families})",
            field="action",
        )
    text, prefix = parsed
    if not prefix:
        return _EV.c.action == text
    return _EV.c.action.startswith(text, autoescape=True)
