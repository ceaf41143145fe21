"""Webhook targets of a tenant (owners, admins) or of the platform (platform admins).

Creating one needs a fresh second factor (the permission table's MFA column): a webhook
receives every lifecycle event of the tenant. The signing secret (``whsec_...``) is
returned once, at creation, and stored sealed (:mod:`vault.keys.webhook_secrets`).
Bad input (a URL that is not https, a private target, an unknown event, one webhook too
many) is refused with a 4xx before anything is written. Changes and refusals are
audited; the URL itself is not (it may carry a token in its query), only its host.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from vault.audit.events import Actor, AuditEvent, RequestContext
from vault.audit.trail import AuditTrail
from vault.authz import (
    Permission,
    PlatformPermission,
    UserPrincipal,
    authorize,
    authorize_platform,
)
from vault.clock import Clock, rfc3339
from vault.errors import Conflict, NotFound, Unprocessable
from vault.ids import new_id
from vault.keys.keyring import KeyRing
from vault.keys.system import SystemKeys
from vault.keys.webhook_secrets import seal_webhook_secret
from vault.lines.guard import failures_audited
from vault.lines.service import load_tenant
from vault.storage.models import Tenant, Webhook, WebhookAttempt, WebhookDelivery
from vault.webhooks.events import EVENT_TYPES, TEST_EVENT
from vault.webhooks.outbox import write_deliveries
from vault.webhooks.targets import Resolver, TargetRefused, check_target, parse_url, system_resolver

__all__ = ["DeliveryView", "WebhookPolicy", "WebhookService", "WebhookView"]

# Which row of the permission table each operation reads, for a tenant and the platform.
_ROWS: dict[str, tuple[Permission, PlatformPermission]] = {
    "create": (Permission.WEBHOOK_CREATE, PlatformPermission.WEBHOOK_CREATE),
    "manage": (Permission.WEBHOOK_MANAGE, PlatformPermission.WEBHOOK_MANAGE),
    "read": (Permission.WEBHOOK_READ, PlatformPermission.WEBHOOK_READ),
}
_REFUSALS = {
    "private_address": "url resolves to a private, loopback or link-local address",
    "https_required": "url must be an https URL",
    "dns_error": "url's host does not resolve",
}


@dataclass(frozen=True, slots=True)
class WebhookPolicy:
    max_per_tenant: int
    allow_private: bool
    resolver: Resolver = system_resolver


@dataclass(frozen=True, slots=True)
class WebhookView:
    id: str
    tenant_id: str | None
    url: str
    events: list[str]
    created_at: datetime
    secret: str | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "url": self.url,
            "events": self.events,
            "created_at": rfc3339(self.created_at),
        }
        if self.secret is not None:
            out["secret"] = self.secret
        return out


@dataclass(frozen=True, slots=True)
class DeliveryView:
    """One event for one webhook, like a row of Stripe's or GitHub's delivery log."""

    event_id: str
    type: str
    state: str
    attempts: list[dict[str, Any]]
    created_at: datetime
    next_retry_at: datetime | None
    last_status: int | None
    last_error: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "type": self.type,
            "state": self.state,
            "attempt_count": len(self.attempts),
            "created_at": rfc3339(self.created_at),
            "next_retry_at": rfc3339(self.next_retry_at),
            "last_status": self.last_status,
            "last_error": self.last_error,
            "attempts": self.attempts,
        }


def _view(row: Webhook, secret: str | None = None) -> WebhookView:
    events = [e for e in row.events.split(",") if e]
    return WebhookView(row.id, row.tenant_id, row.url, events, row.created_at, secret)


def parse_events(events: object) -> list[str]:
    if not isinstance(events, list) or not events or len(events) > len(EVENT_TYPES):
        raise Unprocessable("events must name at least one event", field="events")
    unknown = [e for e in events if not isinstance(e, str) or e not in EVENT_TYPES]
    if unknown:
        raise Unprocessable(
            "events may only name: " + ", ".join(sorted(EVENT_TYPES)), field="events"
        )
    return sorted(set(events))


class WebhookService:
    """One request's webhook operations; ``tenant_id`` None means the platform's."""

    def __init__(
        self,
        session: Session,
        *,
        keyring: KeyRing,
        system_keys: SystemKeys,
        audit: AuditTrail,
        clock: Clock,
        principal: UserPrincipal,
        context: RequestContext,
        policy: WebhookPolicy,
    ) -> None:
        self._session = session
        self._keyring = keyring
        self._system_keys = system_keys
        self._audit = audit
        self._clock = clock
        self._principal = principal
        self._context = context
        self._policy = policy

    # -- operations -------------------------------------------------------------------

    def create(self, tenant_id: str | None, *, url: object, events: object) -> WebhookView:
        with self._checked("webhook.create", tenant_id, "create", None):
            wanted = parse_events(events)
            target = self._parse_target(url)  # may resolve DNS: before taking the lock
            self._lock_scope(tenant_id)
            self._check_room(tenant_id)
        row = Webhook(
            id=new_id("whk"),
            tenant_id=tenant_id,
            url=target,
            events="," + ",".join(wanted) + ",",
            created_at=self._clock.now(),
        )
        raw = secrets.token_bytes(32)  # HMAC-SHA256 key; shown once as whsec_<base64>
        secret = "whsec_" + base64.b64encode(raw).decode()
        seal_webhook_secret(
            self._session,
            row,
            raw,
            keyring=self._keyring,
            system_keys=self._system_keys,
        )
        self._session.add(row)
        self._session.flush()
        self._record("webhook.create", row, events=len(wanted), host=_host(target))
        return _view(row, secret=secret)

    def list(self, tenant_id: str | None) -> Sequence[WebhookView]:
        with self._checked("webhook.list", tenant_id, "read", None):
            pass
        stmt = select(Webhook).where(_scope(tenant_id)).order_by(Webhook.created_at, Webhook.id)
        return [_view(row) for row in self._session.execute(stmt).scalars()]

    def delete(self, tenant_id: str | None, webhook_id: str) -> None:
        with self._checked("webhook.delete", tenant_id, "manage", webhook_id):
            row = self._webhook(tenant_id, webhook_id)
        for stmt in (
            delete(WebhookAttempt).where(WebhookAttempt.webhook_id == webhook_id),
            delete(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id),
        ):
            self._session.execute(stmt.execution_options(synchronize_session=False))
        self._session.delete(row)
        self._session.flush()
        self._record("webhook.delete", row, host=_host(row.url))

    def test(self, tenant_id: str | None, webhook_id: str) -> str:
        """Queue a ``webhook.test`` event for this webhook alone; its event id."""
        with self._checked("webhook.test", tenant_id, "manage", webhook_id):
            row = self._webhook(tenant_id, webhook_id)
        event_id = write_deliveries(
            self._session,
            [row.id],
            tenant_id=row.tenant_id,
            event_type=TEST_EVENT,
            data={"webhook_id": row.id},
            now=self._clock.now(),
        )
        assert event_id is not None
        self._record("webhook.test", row, event_id=event_id)
        return event_id

    def deliveries(
        self, tenant_id: str | None, webhook_id: str, *, limit: int = 100
    ) -> Sequence[DeliveryView]:
        """The newest deliveries of the webhook first, each with its attempts."""
        with self._checked("webhook.deliveries", tenant_id, "read", webhook_id):
            self._webhook(tenant_id, webhook_id)
        rows = list(
            self._session.execute(
                select(WebhookDelivery)
                .where(WebhookDelivery.webhook_id == webhook_id)
                .order_by(WebhookDelivery.seq.desc())
                .limit(limit)
            ).scalars()
        )
        attempts = _attempts(self._session, [r.seq for r in rows])
        return [_delivery_view(r, attempts.get(r.seq, [])) for r in rows]

    # -- internals --------------------------------------------------------------------

    @contextmanager
    def _checked(
        self, action: str, tenant_id: str | None, op: str, webhook_id: str | None
    ) -> Iterator[None]:
        """Authorize ``op``, then run the block; refusals of either are audited."""
        with failures_audited(
            self._session,
            self._audit,
            action=action,
            principal=self._principal,
            tenant_id=tenant_id,
            resource_type="webhook" if webhook_id else "tenant",
            resource_id=webhook_id or tenant_id,
            context=self._context,
        ):
            self._authorize(tenant_id, op)
            yield

    def _authorize(self, tenant_id: str | None, op: str) -> None:
        tenant_row, platform_row = _ROWS[op]
        if tenant_id is None:
            authorize_platform(self._principal, platform_row)
        else:
            authorize(self._principal, tenant_id, tenant_row)
            load_tenant(self._session, tenant_id)

    def _lock_scope(self, tenant_id: str | None) -> None:
        """Serialize creators of one tenant, so the per-tenant limit holds."""
        if tenant_id is not None:
            self._session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())

    def _parse_target(self, url: object) -> str:
        parse_url(url, allow_private=self._policy.allow_private)
        assert isinstance(url, str)
        try:
            check_target(
                url,
                allow_private=self._policy.allow_private,
                resolver=self._policy.resolver,
                at_creation=True,
            )
        except TargetRefused as exc:
            raise Unprocessable(_REFUSALS.get(exc.reason, exc.reason), field="url") from None
        return url

    def _check_room(self, tenant_id: str | None) -> None:
        count = self._session.execute(
            select(func.count()).select_from(Webhook).where(_scope(tenant_id))
        ).scalar_one()
        if count >= self._policy.max_per_tenant:
            raise Conflict(
                f"at most {self._policy.max_per_tenant} webhooks per tenant; delete one first"
            )

    def _webhook(self, tenant_id: str | None, webhook_id: str) -> Webhook:
        row = self._session.get(Webhook, webhook_id)
        if row is None or row.tenant_id != tenant_id:
            raise NotFound("no such webhook")
        return row

    def _record(self, action: str, row: Webhook, **details: str | int | None) -> None:
        self._audit.record(
            self._session,
            AuditEvent.by(
                Actor("user", self._principal.user_id),
                action,
                tenant_id=row.tenant_id,
                resource_type="webhook",
                resource_id=row.id,
                context=self._context,
                details=details,
            ),
        )


def _scope(tenant_id: str | None) -> Any:
    if tenant_id is None:
        return Webhook.tenant_id.is_(None)
    return Webhook.tenant_id == tenant_id


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "")[:200]


def _attempts(session: Session, seqs: list[int]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    if not seqs:
        return out
    for a in session.execute(
        select(WebhookAttempt)
        .where(WebhookAttempt.delivery_seq.in_(seqs))
        .order_by(WebhookAttempt.delivery_seq, WebhookAttempt.attempt)
    ).scalars():
        out.setdefault(a.delivery_seq, []).append(
            {
                "attempt": a.attempt,
                "attempted_at": rfc3339(a.attempted_at),
                "status_code": a.status_code,
                "error": a.error,
                "duration_ms": a.duration_ms,
                "next_retry_at": rfc3339(a.next_attempt_at),
            }
        )
    return out


def _delivery_view(row: WebhookDelivery, attempts: list[dict[str, Any]]) -> DeliveryView:
    return DeliveryView(
        event_id=row.event_id,
        type=row.event_type,
        state=row.state,
        attempts=attempts,
        created_at=row.created_at,
        next_retry_at=row.next_attempt_at if row.state == "pending" else None,
        last_status=row.last_status,
        last_error=row.last_error,
    )
