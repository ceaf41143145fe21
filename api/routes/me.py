"""The signed-in user: profile, TOTP enrollment, password change, and POST /v1/users."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from api.deps import Ctx, CurrentUser, Rt, Users
from vault.authz import PlatformRole, require_second_factor

__all__ = ["router"]

router = APIRouter(tags=["users"])


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
