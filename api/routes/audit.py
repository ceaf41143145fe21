"""``GET /v1/audit/events`` and ``GET /v1/audit/verify``: thin adapters over AuditReader.

Both are audited before they answer (``audit.read``); if that event cannot be written
the caller gets 503 ``audit_unavailable`` and no events.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel

from api.deps import Ctx, CurrentUser, Rt
from vault.audit.service import EventFilter

__all__ = ["router"]

router = APIRouter(tags=["audit"])


class Actor(BaseModel):
    type: Literal["user", "runner", "system"]
    id: str | None


class Resource(BaseModel):
    type: str | None
    id: str | None


class AuditEventOut(BaseModel):
    seq: int
    ts: str
    action: str
    outcome: Literal["success", "denied", "error"]
    actor: Actor
    tenant_id: str | None
    resource: Resource
    reason: str | None
    request_id: str | None
    ip: str | None
    user_agent: str | None
    workflow_id: str | None
    run_id: str | None
    details: dict[str, Any] | None = None
    prev_hash: str
    hash: str


class EventsPage(BaseModel):
    events: list[AuditEventOut]
    next_cursor: str | None


class Head(BaseModel):
    seq: int
    hash: str


class VerifyOut(BaseModel):
    ok: bool
    events_checked: int
    head: Head
    first_bad_seq: int | None
    problem: str | None
    checkpoints_checked: int


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@router.get("/v1/audit/events", response_model=EventsPage)
def list_events(
    *,
    runtime: Rt,
    user: CurrentUser,
    ctx: Ctx,
    response: Response,
    tenant_id: Annotated[str | None, Query(max_length=40)] = None,
    actor_type: Literal["user", "runner", "system"] | None = None,
    actor_id: Annotated[str | None, Query(max_length=128)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    outcome: Literal["success", "denied", "error"] | None = None,
    line_id: Annotated[str | None, Query(max_length=128)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, description="At most 1000 per page.")] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """Events oldest first; pass ``next_cursor`` back as ``cursor`` for the next page."""
    page = runtime.audit_reader.list_events(
        user,
        EventFilter(
            tenant_id=tenant_id,
            actor_type=actor_type,
            actor_id=actor_id,
            action=action,
            outcome=outcome,
            line_id=line_id,
            since=_utc(since),
            until=_utc(until),
            limit=limit,
            cursor=cursor,
        ),
        context=ctx,
    )
    response.headers["Cache-Control"] = "no-store"
    return {"events": page.events, "next_cursor": page.next_cursor}


@router.get("/v1/audit/verify", response_model=VerifyOut)
def verify(*, runtime: Rt, user: CurrentUser, ctx: Ctx, response: Response) -> dict[str, Any]:
    """Verify the whole chain against its signed checkpoints (platform admin/auditor)."""
    result = runtime.audit_reader.verify(user, context=ctx)
    response.headers["Cache-Control"] = "no-store"
    return result.to_dict()
