"""Human authentication: login, the TOTP step, step-up and logout (docs/api.md, "Human
authentication"). Thin: each route parses, calls ``vault.identity`` and shapes the reply.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from api.deps import Ctx, CurrentUser, Rt
from vault.clock import rfc3339

__all__ = ["router"]

router = APIRouter(tags=["authentication"])


class LoginBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


class MfaBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mfa_token: str = Field(min_length=1, max_length=128)
    code: str = Field(min_length=1, max_length=32)


class CodeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(min_length=1, max_length=32)


@router.post("/v1/auth/login")
def login(body: LoginBody, runtime: Rt, ctx: Ctx) -> dict[str, Any]:
    """Log in with email and password.

    With TOTP enrolled the answer is an `mfa_token` for `POST /v1/auth/mfa`; otherwise a
    session token. A wrong email or password is 401 `unauthenticated`, the same body and
    timing for both; failures are throttled per account and per client."""
    result = runtime.authenticator.login(email=body.email, password=body.password, ctx=ctx)
    if result.mfa_token is not None:
        return {"mfa_required": True, "mfa_token": result.mfa_token}
    assert result.session is not None
    return {
        "mfa_required": False,
        "session_token": result.session.token,
        "expires_at": rfc3339(result.session.expires_at),
    }


@router.post("/v1/auth/mfa")
def mfa(body: MfaBody, runtime: Rt, ctx: Ctx) -> dict[str, Any]:
    """Complete a login with a TOTP code.

    Exchanges the `mfa_token` from `POST /v1/auth/login` and a current code (or a recovery
    code) for a session that is MFA-fresh for 5 minutes. A wrong, used or out-of-window
    code is 401 `mfa_invalid`, whose detail says which and what to do."""
    issued = runtime.authenticator.complete_mfa(mfa_token=body.mfa_token, code=body.code, ctx=ctx)
    return {
        "session_token": issued.token,
        "expires_at": rfc3339(issued.expires_at),
        "mfa_fresh_until": rfc3339(issued.mfa_fresh_until),
    }


@router.post("/v1/auth/step-up")
def step_up(body: CodeBody, runtime: Rt, ctx: Ctx, user: CurrentUser) -> dict[str, Any]:
    """Make the session MFA-fresh.

    A current TOTP code makes the session count as MFA-fresh for 5 minutes, for the
    actions that need a second factor (revoke, tenant deletion, key rotation, ...)."""
    until = runtime.authenticator.step_up(user, code=body.code, ctx=ctx)
    return {"mfa_fresh_until": rfc3339(until)}


@router.post("/v1/auth/logout", status_code=204)
def logout(runtime: Rt, ctx: Ctx, user: CurrentUser) -> Response:
    """Log out.

    The session token stops working at once, in every server process."""
    runtime.authenticator.logout(user, ctx=ctx)
    return Response(status_code=204)
