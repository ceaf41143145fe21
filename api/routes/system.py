"""Health and metrics: what a load balancer and Prometheus read."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import Rt
from api.metrics import render as render_metrics
from vault import __version__
from vault.storage.engine import readonly

__all__ = ["router"]

router = APIRouter(tags=["system"])


@router.get(
    "/v1/sys/health",
    responses={
        503: {
            "description": "a part is down: the same body, status unavailable, and `failing`",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
def health(runtime: Rt) -> JSONResponse:
    """Health of the service.

    `ok` with the state of the database, the key provider and the audit trail; 503 naming
    the failing part when one is down. No authentication."""
    parts: dict[str, str] = {}
    try:
        # A read-only transaction: on SQLite a plain one would BEGIN IMMEDIATE and wait
        # (30 s busy timeout) whenever another process holds the write lock.
        with readonly(runtime.engine).connect() as conn:
            conn.execute(text("SELECT 1"))
        parts["database"] = "ok"
    except Exception:
        parts["database"] = "unavailable"
    try:
        runtime.provider.health()
        parts["kms"] = "ok"
    except Exception:
        parts["kms"] = "unavailable"
    # The writer's own view: its last write failed, or one has been blocked for seconds
    # (a full disk, a lock held elsewhere) while SELECT 1 still answers; or a signed
    # checkpoint could not be appended to the anchor directory (docs/audit.md).
    checkpointer = runtime.audit.checkpointer
    anchored = checkpointer is None or checkpointer.anchors_healthy
    parts["audit"] = (
        "ok"
        if runtime.audit_writer.healthy and anchored and parts["database"] == "ok"
        else "unavailable"
    )
    healthy = all(v == "ok" for v in parts.values())
    body: dict[str, Any] = {
        "status": "ok" if healthy else "unavailable",
        "version": __version__,
        **parts,
    }
    if not healthy:
        body["failing"] = [k for k, v in parts.items() if v != "ok"]
    return JSONResponse(body, status_code=200 if healthy else 503)


@router.get("/metrics", include_in_schema=False)
def metrics() -> Response:
    """Prometheus metrics.

    Request counts and latencies, fetch latency, decision-cache hits, audit batch sizes
    and the guessable-input checks, in the text exposition format; with several workers,
    all of them summed (api/metrics.py)."""
    body, content_type = render_metrics()
    return Response(body, media_type=content_type)
