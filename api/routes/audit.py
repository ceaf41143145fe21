"""``GET /v1/audit/events`` and ``GET /v1/audit/verify``: thin adapters over AuditReader.

Both are audited before they answer (``audit.read``); if that event cannot be written
the caller gets 503 ``audit_unavailable`` and no events.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO, Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from api.deps import Ctx, CurrentUser, Rt
from vault.audit.events import RequestContext
from vault.audit.service import EventFilter
from vault.authz import UserPrincipal
from vault.runtime import Runtime

__all__ = ["export_response", "router"]

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
    """List audit events, oldest first.

    Platform admins and auditors read every event; a tenant owner or auditor reads their
    tenant's only and must pass `tenant_id`. Filters combine with AND. `action` takes one
    action (`credential.fetch`) or a family with `.*` (`credential.*`); an unknown action
    or outcome is 422. Pass `next_cursor` back as `cursor` for the next page. The read is
    itself audited (`audit.read`) before any event is returned."""
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
    """Verify the audit chain.

    Checks every event's hash link and the signed checkpoints, with the public key derived
    from the protected signing key (platform admin or auditor). Audited as `audit.read`."""
    result = runtime.audit_reader.verify(user, context=ctx)
    response.headers["Cache-Control"] = "no-store"
    return result.to_dict()


_EXPORT_MEDIA_TYPE = "application/x-ndjson"
_CHUNK = 64 * 1024


def _stream(spool: IO[str]) -> Iterator[bytes]:
    try:
        spool.seek(0)
        while chunk := spool.read(_CHUNK):
            yield chunk.encode("utf-8")
    finally:
        spool.close()


@router.get(
    "/v1/audit/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "JSON Lines: a header, the signed checkpoints, every event",
            "content": {_EXPORT_MEDIA_TYPE: {"schema": {"type": "string"}}},
        }
    },
)
def export(
    *,
    runtime: Rt,
    user: CurrentUser,
    ctx: Ctx,
    tenant_id: Annotated[
        str | None,
        Query(
            max_length=40,
            description="Scope the bundle to this tenant (its owner or auditor may ask):"
            " every event of another tenant, or of none, is a withheld line.",
        ),
    ] = None,
) -> StreamingResponse:
    """Export the verifiable audit bundle.

    The same file as `linevault audit export` (platform admin or auditor): one header line,
    the signed checkpoints, then every event, as JSON Lines. With `tenant_id` (the tenant's
    owner or auditor, or a platform admin or auditor) every event that is not the tenant's
    is written as a withheld line, `{"kind": "withheld", "withheld": true, "seq",
    "prev_hash", "hash"}`, and the header names the tenant and counts them. Check it offline
    with `linevault audit verify-export FILE --public-key KEY`, the key from
    `linevault audit public-key --raw` obtained out of band. The export is itself recorded
    (`audit.export`) and signed before the first byte is sent; a chain that does not verify
    is refused (409) rather than exported."""
    return export_response(runtime, user, ctx, tenant_id)


def export_response(
    runtime: Runtime, user: UserPrincipal, ctx: RequestContext, tenant_id: str | None
) -> StreamingResponse:
    """The export as a download, for this route and the console's button alike: written
    (and its ``audit.export`` event committed) before the response starts, so a refusal
    or a broken chain is still an ordinary error answer."""
    # Closed by _stream once sent (a with-block would close it before the response).
    spool = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024, mode="w+", encoding="utf-8")  # noqa: SIM115
    try:
        summary = runtime.audit_reader.export(user, spool, context=ctx, tenant_id=tenant_id)
    except BaseException:
        spool.close()
        raise
    headers = {
        "Cache-Control": "no-store",
        "Content-Disposition": f'attachment; filename="linevault-audit-{summary.last_seq}.jsonl"',
    }
    return StreamingResponse(_stream(spool), media_type=_EXPORT_MEDIA_TYPE, headers=headers)
