"""Authentication dependencies for routes (owned by the identity capability).

Public names other routes rely on:
- ``CurrentUser``: the authenticated human (``UserPrincipal``) from ``Authorization: Bearer``
  with a session token; 401 ``unauthenticated`` otherwise (runner tokens included), and
  the denied attempt is audited (``auth.session``).
- ``require_mfa(runtime, session, principal, mfa_code, ctx)``: passes when the session is
  MFA-fresh or ``mfa_code`` is a valid unused TOTP code; else ``MfaRequired`` (403
  ``mfa_required``) or ``MfaInvalid`` (401 ``mfa_invalid``, throttled and audited).

The logic lives in ``vault.identity``; this module only adapts it to FastAPI.

Ordering note for route authors: ``CurrentUser`` reads the session in a read-only
transaction and, at most once a minute per session, refreshes its idle clock in a short
write transaction of its own. Declare it before (or instead of) any custom dependency
that already queries the request's ``Db`` session: on SQLite an open write transaction
in ``Db`` would make that refresh wait for the lock. ``require_mfa`` consumes the code in
the caller's ``Db`` transaction; call it before the route's own changes.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase
from sqlalchemy.orm import Session

from api.deps import Ctx, Rt, credentials_for
from vault.audit.events import RequestContext
from vault.authz import UserPrincipal
from vault.identity.service import authenticator_for
from vault.runtime import Runtime

__all__ = ["CurrentUser", "current_user", "require_mfa"]


class _SessionToken(SecurityBase):
    """The session token of ``Authorization: Bearer``, read like every other bearer header
    (:func:`api.deps.credentials_for`) and documented as FastAPI's ``HTTPBearer`` scheme."""

    def __init__(self) -> None:
        self.model = HTTPBearerModel(description="A session token from /v1/auth/login")
        self.scheme_name = "HTTPBearer"

    async def __call__(self, request: Request) -> str | None:
        return credentials_for("bearer", request.headers.get("authorization"))


def current_user(
    runtime: Rt, ctx: Ctx, token: Annotated[str | None, Depends(_SessionToken())]
) -> UserPrincipal:
    return authenticator_for(runtime).authenticate(token, ctx=ctx)


CurrentUser = Annotated[UserPrincipal, Depends(current_user)]


def require_mfa(
    runtime: Runtime,
    session: Session,
    principal: UserPrincipal,
    mfa_code: str | None,
    ctx: RequestContext,
) -> None:
    """Raise unless the session is MFA-fresh or ``mfa_code`` is a valid unused code.

    Call it before the route's own changes; on failure it rolls ``session`` back.
    """
    authenticator_for(runtime).require_mfa(session, principal, mfa_code, ctx)
