"""The signed-in person's own account: profile, sessions, their data, their factors.

The same calls as ``/v1/me*`` (api/routes/me.py's shared functions and services), so
ending a session or exporting one's data is audited exactly as through the API. Changing
the password and re-enrolling the authenticator are the set-up pages of
:mod:`api.console.signin` (``/ui/password``, ``POST /ui/enrol`` with the current code).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.console.web import (
    CONSOLE_PREFIX,
    SESSION_COOKIE,
    ConsoleRoute,
    ConsoleUser,
    clear_cookie,
    json_download,
    page,
    see_other,
)
from api.deps import Ctx, Db, Rt, Tenants, UserExport, Users
from api.routes.me import end_own_session, my_session_list

__all__ = ["router"]

router = APIRouter(prefix=CONSOLE_PREFIX, route_class=ConsoleRoute, include_in_schema=False)

EXPORT_FILENAME = "linevault-my-data.json"


@router.get("/account")
def account_page(
    request: Request, *, runtime: Rt, db: Db, user: ConsoleUser, users: Users, tenants: Tenants
) -> Response:
    """Profile, memberships (by tenant name) and live sessions; links to the actions."""
    profile = users.profile(user.user_id)
    context = {
        "title": "Account",
        "profile": profile,
        "memberships": tenants.list_for(user),
        "sessions": my_session_list(runtime, db, user),
    }
    return page(request, "account.html", context)


@router.post("/account/sessions/{session_id}/end")
def end_session(
    session_id: str,
    request: Request,
    *,
    runtime: Rt,
    db: Db,
    ctx: Ctx,
    user: ConsoleUser,
    users: Users,
) -> Response:
    """``DELETE /v1/me/sessions/{id}``; ending this browser's own session signs it out."""
    end_own_session(runtime, db, ctx=ctx, user=user, users=users, session_id=session_id)
    if session_id != user.session_id:
        return see_other(f"{CONSOLE_PREFIX}/account")
    response = see_other(f"{CONSOLE_PREFIX}/login")
    clear_cookie(response, request, SESSION_COOKIE)
    return response


@router.get("/account/export")
def export_my_data(ctx: Ctx, user: ConsoleUser, export: UserExport) -> Response:
    """``GET /v1/me/export`` as a file download."""
    return json_download(export.export(user, context=ctx), EXPORT_FILENAME)
