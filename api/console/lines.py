"""A tenant's lines in the console: add, replace a credential, revoke, suspend, resume,
and a line's page with its recent accesses.

Every action calls the same service as its API route with the same arguments and the
same background task (``scrub_after_shred`` after a replace or a revoke), so it is
authorized and audited exactly like the API action. A form the service refuses for a
reason the person can fix (a malformed field, the platform refusing the credential, a
wrong authenticator code) comes back with the message and the values that are not
secret; a secret is never written back into a page. A secret the vault generated (a
widget's signing secret) is shown once, in the answer to the POST that made it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Form, Query, Request
from fastapi.responses import Response

from api.console.tenants import abilities, tenant_of
from api.console.web import CONSOLE_PREFIX, ConsoleRoute, ConsoleUser, page, see_other
from api.deps import Ctx, Db, Lines, Rt, States, Tenants
from api.problems import describe
from vault.audit.service import EventFilter
from vault.authz import (
    Permission,
    PlatformPermission,
    UserPrincipal,
    effective_role,
    platform_allows,
    tenant_allows,
)
from vault.errors import (
    Forbidden,
    MfaInvalid,
    MfaRequired,
    NotFound,
    Unprocessable,
    VaultError,
)
from vault.lines.schemas import LINE_TYPES
from vault.lines.service import LineView
from vault.privacy.scrub import scrub_after_shred
from vault.runtime import Runtime

__all__ = ["CREDENTIAL_FIELDS", "router"]

router = APIRouter(prefix=CONSOLE_PREFIX, route_class=ConsoleRoute, include_in_schema=False)

RECENT_ACCESSES = 50
_FIXABLE = (Unprocessable, MfaInvalid, MfaRequired)  # errors the form itself can fix
_LOCAL_TIME = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2})?$")
Text = Annotated[str, Form(max_length=5000)]
Reason = Annotated[str, Form(max_length=500)]  # recorded in the audit


@dataclass(frozen=True, slots=True)
class CredentialField:
    """One input of a type's credential form (names from vault/lines/schemas.py)."""

    name: str
    label: str
    secret: bool
    required: bool
    hint: str = ""
    kind: str = "text"


CREDENTIAL_FIELDS: Mapping[str, tuple[CredentialField, ...]] = {
    "telegram": (
        CredentialField(
            "bot_token",
            "Bot token",
            True,
            True,
            "From BotFather: the bot id, a colon and about 35 characters",
        ),
    ),
    "instagram": (
        CredentialField("access_token", "Access token", True, True, "A long-lived user token"),
        CredentialField(
            "expires_at", "Token expiry (UTC)", False, False, "When the token expires", "datetime"
        ),
        CredentialField("user_id", "Instagram user id", False, False, "Digits only"),
        CredentialField("app_secret", "App secret", True, False, "Of the Meta app, optional"),
    ),
    "messenger": (
        CredentialField("page_id", "Page id", False, True, "Digits only"),
        CredentialField("page_access_token", "Page access token", True, True),
        CredentialField("app_secret", "App secret", True, False, "Of the Meta app, optional"),
    ),
    "widget": (
        CredentialField(
            "signing_secret",
            "Signing secret",
            True,
            False,
            "Leave empty and the vault generates one (shown once)",
        ),
    ),
}
TYPE_LABELS: Mapping[str, str] = {
    "telegram": "Telegram bot",
    "instagram": "Instagram account",
    "messenger": "Facebook Messenger page",
    "widget": "Website widget",
}


# -- helpers ---------------------------------------------------------------------------


def _base(tenant_id: str) -> str:
    return f"{CONSOLE_PREFIX}/tenants/{tenant_id}"


def _line_url(tenant_id: str, line_id: str) -> str:
    return f"{_base(tenant_id)}/lines/{line_id}"


def _may(user: UserPrincipal, tenant_id: str, permission: Permission) -> None:
    """A form page is for who may do its action (404 to a stranger, 403 to the others);
    the code a sudo-mode action needs is checked when the form is posted."""
    if effective_role(user, tenant_id) is None:
        raise NotFound()
    if not tenant_allows(user, tenant_id, permission):
        raise Forbidden(f"this page is for people who may do {permission.value}")


def _may_read_audit(user: UserPrincipal, tenant_id: str) -> bool:
    return tenant_allows(user, tenant_id, Permission.AUDIT_READ) or platform_allows(
        user, PlatformPermission.AUDIT_READ_ALL
    )


async def _form_data(request: Request) -> Mapping[str, Any]:
    """The posted form (read once; a sync route then runs in the thread pool, like the
    API's, so a platform check never blocks the event loop)."""
    return await request.form()


FormData = Annotated[Mapping[str, Any], Depends(_form_data)]
_ALL_FIELDS = tuple({f.name: f for fields in CREDENTIAL_FIELDS.values() for f in fields}.values())


def _credential(form: Mapping[str, Any]) -> dict[str, str]:
    """The credential object from the form: the credential fields it filled in (empty
    ones are optional ones left out), a browser's local date-time made RFC 3339 UTC. The
    service checks them against the line's type, refusing a field of another type."""
    found: dict[str, str] = {}
    for spec in _ALL_FIELDS:
        value = form.get(spec.name)
        if not isinstance(value, str) or not value.strip():
            continue
        value = value.strip()
        if spec.kind == "datetime" and _LOCAL_TIME.fullmatch(value):
            value = f"{value}:00Z" if value.count(":") == 1 else f"{value}Z"
        found[spec.name] = value
    return found


def _kept(credential: Mapping[str, str]) -> dict[str, str]:
    """The values a re-shown form may carry back: never a secret field's."""
    secret = {f.name for f in _ALL_FIELDS if f.secret}
    return {k: v for k, v in credential.items() if k not in secret}


def _problem(exc: VaultError) -> tuple[int, str, str]:
    """(status, message, field) of a form the service refused."""
    status, _code, title, detail = describe(exc)
    field = getattr(exc, "field", None) or ""
    return status, f"{title}: {detail}", field.removeprefix("credential.")


def _created(request: Request, tenant_id: str, view: LineView, heading: str) -> Response:
    """After an add or a replace: the generated secret once, else the line's page."""
    if not view.generated:
        return see_other(_line_url(tenant_id, view.id))
    context = {"title": heading, "tenant_id": tenant_id, "line": view, "generated": view.generated}
    return page(request, "line_secret.html", context, status=201)


# -- adding a line ---------------------------------------------------------------------


def _add_form(
    request: Request,
    tenants: Tenants,
    user: UserPrincipal,
    tenant_id: str,
    *,
    line_type: str,
    values: Mapping[str, str] | None = None,
    error: tuple[int, str, str] | None = None,
) -> Response:
    context: dict[str, Any] = {
        "title": "Add line",
        "tenant": tenant_of(tenants, user, tenant_id),
        "line_type": line_type,
        "types": [(t, TYPE_LABELS[t]) for t in LINE_TYPES],
        "fields": CREDENTIAL_FIELDS[line_type],
        "values": dict(values or {}),
        "error": error[1] if error else None,
        "error_field": error[2] if error else None,
    }
    return page(request, "line_add.html", context, status=error[0] if error else 200)


@router.get("/tenants/{tenant_id}/lines/new")
def add_line_page(
    tenant_id: str,
    request: Request,
    user: ConsoleUser,
    tenants: Tenants,
    chosen: Annotated[str, Query(alias="type", max_length=40)] = "telegram",
) -> Response:
    _may(user, tenant_id, Permission.LINE_WRITE)
    line_type = chosen if chosen in LINE_TYPES else "telegram"
    return _add_form(request, tenants, user, tenant_id, line_type=line_type)


@router.post("/tenants/{tenant_id}/lines")
def add_line(
    tenant_id: str,
    request: Request,
    *,
    ctx: Ctx,
    user: ConsoleUser,
    lines: Lines,
    tenants: Tenants,
    form: FormData,
    chosen: Annotated[str, Form(alias="type", max_length=40)],
    name: Text,
) -> Response:
    """``POST /v1/tenants/{id}/lines`` from the form; its 422 re-shows the form."""
    line_type = chosen if chosen in LINE_TYPES else "telegram"
    credential = _credential(form)
    try:
        view = lines.create(
            user, tenant_id, line_type=chosen, name=name, credential=credential, context=ctx
        )
    except _FIXABLE as exc:
        values = {"name": name, **_kept(credential)}
        problem = _problem(exc)
        return _add_form(
            request, tenants, user, tenant_id, line_type=line_type, values=values, error=problem
        )
    return _created(request, tenant_id, view, "Line added")


# -- a line's page ---------------------------------------------------------------------


def _recent_accesses(
    runtime: Runtime, user: UserPrincipal, tenant_id: str, line_id: str, ctx: Ctx
) -> list[dict[str, Any]] | None:
    """The line's latest audit events, newest first, through the audited reader of
    ``GET /v1/audit/events``; None for a person whose role may not read the audit."""
    if not _may_read_audit(user, tenant_id):
        return None
    query = EventFilter(
        tenant_id=tenant_id, line_id=line_id, limit=RECENT_ACCESSES, newest_first=True
    )
    return runtime.audit_reader.list_events(user, query, context=ctx).events


@router.get("/tenants/{tenant_id}/lines/{line_id}")
def line_page(
    tenant_id: str,
    line_id: str,
    request: Request,
    *,
    runtime: Rt,
    ctx: Ctx,
    db: Db,
    user: ConsoleUser,
    lines: Lines,
    tenants: Tenants,
) -> Response:
    view = lines.get(user, tenant_id, line_id, context=ctx)
    tenant = tenant_of(tenants, user, tenant_id)
    # End the request's (read-only) transaction before the audited read: the reader
    # writes its audit.read event on a connection of its own, which on SQLite would
    # wait for this one's lock.
    db.commit()
    context = {
        "title": view.name,
        "tenant": tenant,
        "line": view,
        "can": abilities(user, tenant_id),
        "events": _recent_accesses(runtime, user, tenant_id, line_id, ctx),
        "type_label": TYPE_LABELS.get(view.type, view.type),
    }
    return page(request, "line.html", context)


# -- replacing a credential --------------------------------------------------------------


def _replace_form(
    request: Request,
    view: LineView,
    tenant: Any,
    *,
    values: Mapping[str, str] | None = None,
    error: tuple[int, str, str] | None = None,
) -> Response:
    context: dict[str, Any] = {
        "title": f"Replace the credential of {view.name}",
        "tenant": tenant,
        "line": view,
        "fields": CREDENTIAL_FIELDS.get(view.type, ()),
        "values": dict(values or {}),
        "error": error[1] if error else None,
        "error_field": error[2] if error else None,
    }
    return page(request, "line_replace.html", context, status=error[0] if error else 200)


@router.get("/tenants/{tenant_id}/lines/{line_id}/credential")
def replace_page(
    tenant_id: str,
    line_id: str,
    request: Request,
    *,
    ctx: Ctx,
    user: ConsoleUser,
    lines: Lines,
    tenants: Tenants,
) -> Response:
    _may(user, tenant_id, Permission.LINE_REPLACE)
    view = lines.get(user, tenant_id, line_id, context=ctx)
    return _replace_form(request, view, tenant_of(tenants, user, tenant_id))


@router.post("/tenants/{tenant_id}/lines/{line_id}/credential")
def replace_credential(
    tenant_id: str,
    line_id: str,
    request: Request,
    *,
    runtime: Rt,
    ctx: Ctx,
    user: ConsoleUser,
    lines: Lines,
    tenants: Tenants,
    tasks: BackgroundTasks,
    form: FormData,
) -> Response:
    """``PUT /v1/tenants/{id}/lines/{id}/credential`` from the form (sudo mode)."""
    credential = _credential(form)
    try:
        view = lines.replace(user, tenant_id, line_id, credential=credential, context=ctx)
    except _FIXABLE as exc:
        current = lines.get(user, tenant_id, line_id, context=ctx)
        tenant = tenant_of(tenants, user, tenant_id)
        values = _kept(credential)
        return _replace_form(request, current, tenant, values=values, error=_problem(exc))
    tasks.add_task(scrub_after_shred, runtime.engine)  # the old version's bytes, too
    return _created(request, tenant_id, view, "Credential replaced")


# -- revoking, suspending, resuming -----------------------------------------------------


def _revoke_page(
    request: Request,
    view: LineView,
    tenant: Any,
    *,
    reason: str = "",
    error: tuple[int, str, str] | None = None,
) -> Response:
    context = {
        "title": f"Revoke {view.name}",
        "tenant": tenant,
        "line": view,
        "reason": reason,
        "error": error[1] if error else None,
    }
    return page(request, "line_revoke.html", context, status=error[0] if error else 200)


@router.get("/tenants/{tenant_id}/lines/{line_id}/revoke")
def revoke_page(
    tenant_id: str,
    line_id: str,
    request: Request,
    *,
    ctx: Ctx,
    user: ConsoleUser,
    lines: Lines,
    tenants: Tenants,
) -> Response:
    """The revoke dialog's content as a page of its own (no script, or a shared link)."""
    _may(user, tenant_id, Permission.LINE_REVOKE)
    view = lines.get(user, tenant_id, line_id, context=ctx)
    return _revoke_page(request, view, tenant_of(tenants, user, tenant_id))


@router.post("/tenants/{tenant_id}/lines/{line_id}/revoke")
def revoke_line(
    tenant_id: str,
    line_id: str,
    request: Request,
    *,
    runtime: Rt,
    ctx: Ctx,
    user: ConsoleUser,
    lines: Lines,
    tenants: Tenants,
    tasks: BackgroundTasks,
    reason: Reason = "",
) -> Response:
    """``POST /v1/tenants/{id}/lines/{id}/revoke`` from the dialog (sudo mode)."""
    try:
        lines.revoke(user, tenant_id, line_id, reason=reason.strip() or None, context=ctx)
    except _FIXABLE as exc:
        view = lines.get(user, tenant_id, line_id, context=ctx)
        tenant = tenant_of(tenants, user, tenant_id)
        return _revoke_page(request, view, tenant, reason=reason, error=_problem(exc))
    tasks.add_task(scrub_after_shred, runtime.engine)  # runs after the commit
    return see_other(_line_url(tenant_id, line_id))


@router.post("/tenants/{tenant_id}/lines/{line_id}/suspend")
def suspend_line(
    tenant_id: str,
    line_id: str,
    *,
    ctx: Ctx,
    user: ConsoleUser,
    states: States,
    reason: Reason = "",
) -> Response:
    """``POST .../suspend``: no second factor (it only takes access away)."""
    states.suspend_line(user, tenant_id, line_id, reason=reason.strip() or None, context=ctx)
    return see_other(_line_url(tenant_id, line_id))


@router.post("/tenants/{tenant_id}/lines/{line_id}/resume")
def resume_line(
    tenant_id: str,
    line_id: str,
    *,
    ctx: Ctx,
    user: ConsoleUser,
    states: States,
) -> Response:
    """``POST .../resume``: needs the form's authenticator code (or a fresh session)."""
    states.resume_line(user, tenant_id, line_id, context=ctx)
    return see_other(_line_url(tenant_id, line_id))
