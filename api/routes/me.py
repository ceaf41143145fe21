"""The signed-in user: profile, TOTP enrollment, password change, their sessions, their
own data (export, deletion), and POST /v1/users."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, BackgroundTasks, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from api.deps import Ctx, CurrentUser, Db, Rt, UserErasure, UserExport, Users
from vault.audit.events import Actor, RequestContext
from vault.authz import PlatformRole, UserPrincipal, require_second_factor
from vault.clock import rfc3339
from vault.errors import NotFound
from vault.identity.users import UserService
from vault.privacy.scrub import scrub_after_shred
from vault.runtime import Runtime

__all__ = ["end_own_session", "my_session_list", "router"]

router = APIRouter(tags=["users"])


def my_session_list(runtime: Runtime, db: Session, user: UserPrincipal) -> list[dict[str, Any]]:
    """The user's live sessions as ``GET /v1/me/sessions`` and the console's account page
    show them: ids (never tokens), times, address, user agent, which one is this one."""
    views = runtime.authenticator.store.live_sessions(db, user.user_id, now=runtime.clock.now())
    return [
        {
            "id": v.id,
            "created_at": rfc3339(v.created_at),
            "last_seen_at": rfc3339(v.last_seen_at),
            "ip": v.ip,
            "user_agent": v.user_agent,
            "current": v.id == user.session_id,
        }
        for v in views
    ]


def end_own_session(
    runtime: Runtime,
    db: Session,
    *,
    ctx: RequestContext,
    user: UserPrincipal,
    users: UserService,
    session_id: str,
) -> None:
    """End one of the user's own live sessions, audited (the API and the console both).
    Another user's session id, or one already ended, is 404."""
    now = runtime.clock.now()
    if not runtime.authenticator.store.revoke_own(db, user.user_id, session_id, now=now):
        raise NotFound("no such session")
    users.session_ended(user, session_id, ctx=ctx)


class TotpBeginBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mfa_code: str | None = Field(default=None, max_length=32)


class CodeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(min_length=1, max_length=32)


class PasswordBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


class DeleteMeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: str = Field(min_length=1, max_length=1024)
    mfa_code: str | None = Field(default=None, max_length=32)


class NewUserBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(min_length=3, max_length=320)
    platform_role: PlatformRole | None = Field(
        default=None, description="admin or auditor of the whole platform; null for neither"
    )
    mfa_code: str | None = Field(default=None, max_length=32, description="sudo mode")


@router.get("/v1/me")
def me(user: CurrentUser, users: Users) -> dict[str, Any]:
    """Who am I.

    The signed-in user's profile, platform role and tenant memberships."""
    profile = users.profile(user.user_id)
    return {
        "id": profile.id,
        "email": profile.email,
        "totp_enrolled": profile.totp_enrolled,
        "platform_role": profile.platform_role,
        "tenants": [{"id": tenant_id, "role": role} for tenant_id, role in profile.tenants],
        "mfa_fresh": user.mfa_fresh,
    }


@router.post("/v1/me/totp")
def begin_totp(
    *,
    ctx: Ctx,
    user: CurrentUser,
    users: Users,
    body: TotpBeginBody | None = None,
) -> dict[str, Any]:
    """Begin TOTP enrolment.

    Returns a new secret and its `otpauth://` URI (pending until confirmed). Re-enrolling
    an enrolled user needs a fresh second factor."""
    if users.is_enrolled(user.user_id):  # replacing a factor needs the current one
        require_second_factor(user)  # body.mfa_code, read by the principal (api/deps.py)
    secret, uri = users.begin_totp(user_id=user.user_id, ctx=ctx)
    return {"secret": secret, "otpauth_uri": uri}


@router.post("/v1/me/totp/confirm")
def confirm_totp(body: CodeBody, runtime: Rt, ctx: Ctx, user: CurrentUser) -> dict[str, Any]:
    """Confirm TOTP enrolment.

    A current code from the new secret completes the enrolment; the answer carries
    one-time recovery codes, shown this once."""
    codes = runtime.factor_changes.confirm_totp(user, code=body.code, ctx=ctx)
    return {"totp_enrolled": True, "recovery_codes": codes}


@router.post("/v1/me/password", status_code=204)
def change_password(body: PasswordBody, runtime: Rt, ctx: Ctx, user: CurrentUser) -> Response:
    """Change my password.

    Needs the current password; every other session of the user ends."""
    runtime.factor_changes.change_password(
        user, current=body.current_password, new=body.new_password, ctx=ctx
    )
    return Response(status_code=204)


@router.post("/v1/users", status_code=201)
def create_user(body: NewUserBody, ctx: Ctx, user: CurrentUser, users: Users) -> dict[str, Any]:
    """Create a user.

    Platform admin, with a fresh second factor. The generated `initial_password` is shown
    in this response only."""
    created, password = users.create_by(
        user, email=body.email, platform_role=body.platform_role, ctx=ctx
    )
    return {"id": created.id, "email": created.email, "initial_password": password}


@router.get("/v1/me/sessions")
def my_sessions(runtime: Rt, db: Db, user: CurrentUser) -> dict[str, Any]:
    """List my sessions.

    Each with its id (never the token), creation time, last use, address and user agent,
    and which one is this request's."""
    return {"sessions": my_session_list(runtime, db, user)}


@router.delete("/v1/me/sessions/{session_id}", status_code=204)
def end_my_session(
    session_id: str, *, runtime: Rt, db: Db, ctx: Ctx, user: CurrentUser, users: Users
) -> Response:
    """End one of my sessions.

    Another user's session id, or one already ended, is 404."""
    end_own_session(runtime, db, ctx=ctx, user=user, users=users, session_id=session_id)
    return Response(status_code=204)


@router.get("/v1/me/export")
def export_me(ctx: Ctx, user: CurrentUser, export: UserExport) -> dict[str, Any]:
    """Export my data.

    My profile, memberships, sessions and the audit events where I am the actor, as
    JSON."""
    return export.export(user, context=ctx)


@router.delete("/v1/me", status_code=204)
def delete_me(
    body: DeleteMeBody,
    *,
    runtime: Rt,
    ctx: Ctx,
    user: CurrentUser,
    erasure: UserErasure,
    tasks: BackgroundTasks,
) -> Response:
    """Delete my account.

    Needs the password, and a TOTP code when one is enrolled. Refused (409) while I am
    the last owner of a tenant."""
    # Both factors first, in transactions of their own (nothing may hold the request's
    # write transaction meanwhile); then the erasure, which answers 409 for a last owner.
    runtime.factor_changes.prove_identity(
        user, password=body.password, code=body.mfa_code, action="user.delete", ctx=ctx
    )
    erasure.erase(user.user_id, actor=Actor("user", user.user_id), context=ctx)
    tasks.add_task(scrub_after_shred, runtime.engine)  # runs after the commit
    return Response(status_code=204)
