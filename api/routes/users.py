"""Platform administration of people: list, disable and enable, delete (erase).

``POST /v1/users`` lives in ``api/routes/me.py``. Deleting a user erases them
(``vault/privacy/erasure.py``); a DELETE has no body, so its one-request code comes in
the ``X-MFA-Code`` header (never in the URL).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Header, Response
from pydantic import BaseModel, ConfigDict, Field

from api.deps import Ctx, CurrentUser, Rt, UserErasure, Users
from vault.clock import rfc3339
from vault.privacy.scrub import scrub_after_shred

__all__ = ["router"]

router = APIRouter(tags=["users"])


class MfaBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mfa_code: str | None = Field(default=None, max_length=32, description="sudo mode")


@router.get("/v1/users")
def list_users(ctx: Ctx, user: CurrentUser, users: Users) -> dict[str, Any]:
    """List users.

    Platform admins and auditors: id, email, platform role, whether TOTP is enrolled,
    when created."""
    return {
        "users": [
            {
                "id": u.id,
                "email": u.email,
                "platform_role": u.platform_role,
                "totp_enrolled": u.totp_enrolled,
                "created_at": rfc3339(u.created_at),
                "disabled": u.disabled_at is not None,
                "password_change_required": u.password_change_required,
            }
            for u in users.list_by(user, ctx=ctx)
        ]
    }


@router.delete("/v1/users/{user_id}", status_code=204)
def delete_user(
    user_id: str,
    *,
    runtime: Rt,
    ctx: Ctx,
    user: CurrentUser,
    erasure: UserErasure,
    tasks: BackgroundTasks,
    mfa_code: Annotated[str | None, Header(alias="X-MFA-Code", max_length=32)] = None,
) -> Response:
    """Delete a user.

    Platform admins, with a fresh second factor (`X-MFA-Code`). Their sessions end,
    their memberships go and their email is erased; audit events keep only the opaque
    id. The last owner of a tenant cannot be deleted (409)."""
    del mfa_code  # declared for the docs; the principal reads it (api/deps.py)
    erasure.delete_by(user, user_id, context=ctx)
    tasks.add_task(scrub_after_shred, runtime.engine)  # runs after the commit
    return Response(status_code=204)


def _state(changed: Any) -> dict[str, Any]:
    return {"id": changed.id, "disabled": changed.disabled_at is not None}


@router.post("/v1/users/{user_id}/disable")
def disable_user(
    user_id: str, *, ctx: Ctx, user: CurrentUser, users: Users, body: MfaBody | None = None
) -> dict[str, Any]:
    """Disable a user.

    Platform admins, with a fresh second factor. Every session of the user ends at once
    and sign-in is refused until enabled again."""
    del body  # mfa_code: read by the principal (api/deps.py)
    return _state(users.set_disabled(user, user_id, disabled=True, ctx=ctx))


@router.post("/v1/users/{user_id}/enable")
def enable_user(
    user_id: str, *, ctx: Ctx, user: CurrentUser, users: Users, body: MfaBody | None = None
) -> dict[str, Any]:
    """Enable a user.

    Platform admins, with a fresh second factor: sign-in works again."""
    del body
    return _state(users.set_disabled(user, user_id, disabled=False, ctx=ctx))
