"""The audit pages for reviewers: events with filters, one event, "Verify chain", the
verifiable export, and the chart of fetches per hour.

Every page reads through ``runtime.audit_reader``, the same calls as ``GET
/v1/audit/events``, ``/v1/audit/verify`` and ``/v1/audit/export``: the same people may
read (platform admins and auditors everything, a tenant's owner and auditor that tenant;
others 403, or 404 for a tenant they have no role in) and every read is recorded the same
way (``audit.read``, ``audit.export``), refusals too. Platform readers use ``/ui/audit``;
a tenant's readers ``/ui/tenants/{id}/audit``. Filters are a GET form (they change
nothing, and the URL can be shared); "Verify chain" is a POST with the CSRF token, since
a check over millions of rows is work no other site should be able to start.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from markupsafe import Markup

from api.console.chart import activity_rows, render_fetch_chart
from api.console.tenants import abilities, tenant_of
from api.console.web import CONSOLE_PREFIX, ConsoleRoute, ConsoleUser, page
from api.deps import Ctx, Rt, Tenants
from api.routes.audit import export_response
from vault.audit.actions import AUDIT_ACTIONS, AUDIT_FAMILIES
from vault.audit.activity import ActivityGroup
from vault.audit.events import RequestContext
from vault.audit.service import EventFilter, encode_cursor
from vault.authz import PlatformPermission, UserPrincipal, platform_allows
from vault.errors import InvalidRequest, NotFound
from vault.identity.tenants import TenantService
from vault.runtime import Runtime

__all__ = ["router"]

router = APIRouter(prefix=CONSOLE_PREFIX, route_class=ConsoleRoute, include_in_schema=False)

PAGE_SIZE = 50
OUTCOMES = ("success", "denied", "error")
ACTOR_TYPES = ("user", "runner", "system")
# The action filter's choices: every family (``credential.*``), then every action.
ACTION_CHOICES = (
    *(f"{family}.*" for family in sorted(AUDIT_FAMILIES)),
    *sorted(AUDIT_ACTIONS),
)
# Each filter field and its longest value: the limits of GET /v1/audit/events.
_FIELDS = {
    "tenant_id": 40,
    "action": 64,
    "outcome": 16,
    "actor_type": 16,
    "actor_id": 128,
    "line_id": 128,
    "from": 40,
    "to": 40,
    "order": 8,
}
ORDERS = ("oldest", "newest")  # the API's default first
_READER_ROLES = frozenset({"owner", "auditor"})

Seq = Annotated[int, Path(ge=1, le=2**62)]
Group = Annotated[Literal["line", "runner"], Query(alias="by")]
Cursor = Annotated[str | None, Query(max_length=200)]


@dataclass(frozen=True, slots=True)
class Filters:
    """The filter form as typed (echoed back into its fields) and as the reader's query."""

    values: dict[str, str]
    query: EventFilter

    def url(self, base: str, **extra: str) -> str:
        """``base`` with these filters (and ``extra``) as its query string."""
        pairs = {k: v for k, v in self.values.items() if v} | extra
        return f"{base}?{urlencode(pairs)}" if pairs else base


def _moment(value: str, field: str) -> datetime:
    """A ``datetime-local`` field's value, read as UTC (the page says so)."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(
            f"{field}: expected a date and time such as 2026-12-03T16:00 (UTC)", field=field
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _choice(value: str, allowed: tuple[str, ...], field: str) -> Any:
    if value and value not in allowed:
        raise InvalidRequest(f"{field}: expected one of {', '.join(allowed)}", field=field)
    return value or None


def read_filters(
    params: Mapping[str, str], *, tenant_id: str | None, cursor: str | None = None
) -> Filters:
    """The GET form's fields; an empty field is no filter. ``tenant_id`` is the page's
    tenant (it cannot be changed from the form) or, on the platform page, the form's."""
    values = {name: params.get(name, "").strip() for name in _FIELDS}
    for name, longest in _FIELDS.items():
        if len(values[name]) > longest:
            raise InvalidRequest(f"{name}: at most {longest} characters", field=name)
    if tenant_id is not None:
        values["tenant_id"] = ""  # the page's own, not a filter the form shows
    query = EventFilter(
        tenant_id=tenant_id or values["tenant_id"] or None,
        action=values["action"] or None,
        outcome=_choice(values["outcome"], OUTCOMES, "outcome"),
        actor_type=_choice(values["actor_type"], ACTOR_TYPES, "actor_type"),
        actor_id=values["actor_id"] or None,
        line_id=values["line_id"] or None,
        since=_moment(values["from"], "from") if values["from"] else None,
        until=_moment(values["to"], "to") if values["to"] else None,
        limit=PAGE_SIZE,
        cursor=cursor or None,
        newest_first=_choice(values["order"], ORDERS, "order") == "newest",
    )
    return Filters(values, query)


# -- who is looking, and where ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Visit:
    """One page view: the request, the signed-in reader and the services it reads with."""

    request: Request
    runtime: Runtime
    ctx: RequestContext
    user: UserPrincipal
    tenants: TenantService

    def scope(self, tenant_id: str | None, current: str) -> dict[str, Any]:
        """What every audit page shows about where it is and what the person may do; a
        tenant's pages also carry the tenant's sub-navigation (``tenant``, ``can``).
        Called after the reader authorized the read."""
        context: dict[str, Any] = {
            "base": _base(tenant_id),
            "tenant": None,
            "can_verify": platform_allows(self.user, PlatformPermission.AUDIT_VERIFY),
            "current": current,
        }
        if tenant_id is not None:
            context["tenant"] = tenant_of(self.tenants, self.user, tenant_id)
            context["can"] = abilities(self.user, tenant_id)
        return context

    def page(self, template: str, context: dict[str, Any]) -> Response:
        return page(self.request, template, context)


def _visit(request: Request, runtime: Rt, ctx: Ctx, user: ConsoleUser, tenants: Tenants) -> _Visit:
    return _Visit(request, runtime, ctx, user, tenants)


Visit = Annotated[_Visit, Depends(_visit)]


def _base(tenant_id: str | None) -> str:
    if tenant_id is None:
        return f"{CONSOLE_PREFIX}/audit"
    return f"{CONSOLE_PREFIX}/tenants/{tenant_id}/audit"


def _platform_reader(user: UserPrincipal) -> bool:
    return platform_allows(user, PlatformPermission.AUDIT_READ_ALL)


def _choose(visit: _Visit, what: str) -> Response:
    """A person who reads no tenant's trail but their own tenants': pick one (nothing
    of the trail is read here, so there is nothing to record)."""
    mine = [t for t in visit.tenants.list_for(visit.user) if t.role in _READER_ROLES]
    return visit.page("audit_choose.html", {"title": "Audit", "tenants": mine, "what": what})


# -- the events --------------------------------------------------------------------------


def _events_page(visit: _Visit, tenant_id: str | None, cursor: str | None) -> Response:
    filters = read_filters(visit.request.query_params, tenant_id=tenant_id, cursor=cursor)
    result = visit.runtime.audit_reader.list_events(visit.user, filters.query, context=visit.ctx)
    scope = visit.scope(tenant_id, "events")
    next_url = None
    if result.next_cursor:
        next_url = filters.url(scope["base"], cursor=result.next_cursor)
    context = {
        **scope,
        "title": "Audit" if scope["tenant"] is None else f"Audit · {scope['tenant'].name}",
        "events": result.events,
        "filters": filters.values,
        "filtered": any(v for k, v in filters.values.items() if k != "order"),
        "paged": cursor is not None,
        "first_url": filters.url(scope["base"]),
        "next_url": next_url,
        "actions": ACTION_CHOICES,
        "outcomes": OUTCOMES,
        "actor_types": ACTOR_TYPES,
        "newest": filters.query.newest_first,
    }
    return visit.page("audit.html", context)


@router.get("/audit")
def audit_all(visit: Visit, cursor: Cursor = None) -> Response:
    """Every tenant's events for platform readers; others choose one of their tenants."""
    if not _platform_reader(visit.user):
        return _choose(visit, "events")
    return _events_page(visit, None, cursor)


@router.get("/tenants/{tenant_id}/audit")
def audit_tenant(tenant_id: str, visit: Visit, cursor: Cursor = None) -> Response:
    return _events_page(visit, tenant_id, cursor)


def _event_page(visit: _Visit, tenant_id: str | None, seq: int) -> Response:
    """One event, read as the events list reads it (the page after ``seq - 1``, one
    row), so the same authorization, scope and ``audit.read`` record apply."""
    query = EventFilter(tenant_id=tenant_id, cursor=encode_cursor(seq - 1), limit=1)
    events = visit.runtime.audit_reader.list_events(visit.user, query, context=visit.ctx).events
    if not events or events[0]["seq"] != seq:
        raise NotFound()
    event = events[0]
    details = event["details"]
    context = {
        **visit.scope(tenant_id, "events"),
        "title": f"Audit event {seq}",
        "event": event,
        "details": json.dumps(details, indent=2, sort_keys=True) if details else None,
    }
    return visit.page("audit_event.html", context)


@router.get("/audit/events/{seq}")
def event_all(seq: Seq, visit: Visit) -> Response:
    return _event_page(visit, None, seq)


@router.get("/tenants/{tenant_id}/audit/events/{seq}")
def event_tenant(tenant_id: str, seq: Seq, visit: Visit) -> Response:
    return _event_page(visit, tenant_id, seq)


# -- verify and export -------------------------------------------------------------------


@router.post("/audit/verify")
def verify(visit: Visit) -> Response:
    """The same check as ``GET /v1/audit/verify`` (platform admins and auditors)."""
    result = visit.runtime.audit_reader.verify(visit.user, context=visit.ctx)
    context = {**visit.scope(None, "verify"), "title": "Verify chain", "result": result}
    return visit.page("audit_verify.html", context)


@router.get("/audit/export")
def export_all(runtime: Rt, ctx: Ctx, user: ConsoleUser) -> Response:
    """The same bundle as ``GET /v1/audit/export``, saved as a file."""
    return export_response(runtime, user, ctx, None)


@router.get("/tenants/{tenant_id}/audit/export")
def export_tenant(tenant_id: str, runtime: Rt, ctx: Ctx, user: ConsoleUser) -> Response:
    """The same bundle as ``GET /v1/audit/export?tenant_id=``, saved as a file."""
    return export_response(runtime, user, ctx, tenant_id)


# -- the chart ---------------------------------------------------------------------------


def _activity_page(visit: _Visit, tenant_id: str | None, group: ActivityGroup) -> Response:
    activity = visit.runtime.audit_reader.fetch_activity(
        visit.user, group=group, tenant_id=tenant_id, context=visit.ctx
    )
    svg = render_fetch_chart(activity, chart_id=f"fetches-{group}")
    context = {
        **visit.scope(tenant_id, "activity"),
        "title": "Fetches per hour",
        "group": group,
        "activity": activity,
        "chart": Markup(svg),  # noqa: S704 - render_fetch_chart escapes every text
        "rows": activity_rows(activity),
    }
    return visit.page("audit_activity.html", context)


@router.get("/audit/activity")
def activity_all(visit: Visit, group: Group = "line") -> Response:
    """Every tenant's fetches for platform readers; others choose one of their tenants."""
    if not _platform_reader(visit.user):
        return _choose(visit, "activity")
    return _activity_page(visit, None, group)


@router.get("/tenants/{tenant_id}/audit/activity")
def activity_tenant(tenant_id: str, visit: Visit, group: Group = "line") -> Response:
    return _activity_page(visit, tenant_id, group)
