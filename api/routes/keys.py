"""Tenant key rotation and key state (docs/api.md, "Keys").

The POST commits the new KEK version with its audit event before answering 202; the
rewrap of older DEKs then runs in this server process's background worker, started
only after the commit (a response background task), and resumed at the next start if
the process dies first.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from api.deps import Ctx, CurrentUser, TenantKeys
from vault.clock import rfc3339
from vault.keys.rotation import RotationView
from vault.keys.worker import RewrapWorker

__all__ = ["router"]

router = APIRouter(tags=["keys"])


class RotateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mfa_code: str | None = Field(default=None, max_length=32)


def _rotation(view: RotationView) -> dict[str, Any]:
    return {
        "id": view.id,
        "state": view.state,
        "from_version": view.from_version,
        "to_version": view.to_version,
        "rewrapped": view.rewrapped,
        "pending_rewrap": view.pending_rewrap,
        "started_at": rfc3339(view.started_at),
        "finished_at": rfc3339(view.finished_at),
        "resumed": view.resumed,
    }


@router.post("/v1/tenants/{tenant_id}/keys/rotate", status_code=202)
def rotate_keys(
    tenant_id: str,
    *,
    request: Request,
    background: BackgroundTasks,
    ctx: Ctx,
    user: CurrentUser,
    keys: TenantKeys,
    body: RotateBody | None = None,
) -> JSONResponse:
    """Rotate the tenant's key-encryption key.

    Creates a new KEK version and rewraps every data key in the background; a repeat while
    one runs resumes it (owner or admin, fresh second factor). Answers 202 with the new
    version and how many keys wait for rewrapping."""
    view = keys.rotate_as(user, tenant_id, context=ctx)  # body.mfa_code: see api/deps.py
    worker: RewrapWorker | None = getattr(request.app.state, "rewrap_worker", None)
    if worker is not None:
        background.add_task(worker.submit, view.id)
    return JSONResponse(
        {
            "kek_version": view.to_version,
            "pending_rewrap": view.pending_rewrap,
            "rotation": _rotation(view),
        },
        status_code=202,
        background=background,
    )


@router.get("/v1/tenants/{tenant_id}/keys")
def list_keys(tenant_id: str, user: CurrentUser, keys: TenantKeys) -> dict[str, Any]:
    """List the tenant's key versions.

    Every KEK version and its state, and the running rotation if any (owner, admin or
    auditor). No key material."""
    view = keys.status_as(user, tenant_id)
    return {
        "tenant_id": view.tenant_id,
        "active_version": view.active_version,
        "versions": [
            {
                "version": v.version,
                "state": v.state,
                "created_at": rfc3339(v.created_at),
                "destroyed_at": rfc3339(v.destroyed_at),
            }
            for v in view.versions
        ],
        "rotation": _rotation(view.rotation) if view.rotation is not None else None,
    }
