"""Request-scoped dependencies: the runtime, one unit of work, the request context, the
signed-in caller, and the services routes use.

The unit of work uses ``scope="function"`` so the commit happens when the route returns,
before the response is sent: a client never sees success for a transaction (or an
audit event) that did not commit.

A route reaches a service through one ``Annotated`` name: ``Lines``, ``States``, ``Grants``,
``Runners``, ``RunnerTokens``, ``Tenants``, ``Users``, ``TenantKeys``, ``TenantErasure``,
``TenantExport``, ``UserErasure``, ``UserExport``, ``Webhooks``, each made for the
request from the runtime and the request's unit of work. Services that act for the
caller (``Grants``, ``Runners``) come from a plain builder taking the principal
(``grant_service_for``, ``runner_registry_for``), which the console's dependencies call
with its cookie-session principal: one builder, so both paths authorize and audit alike.
Long-lived services (``runtime.authenticator``, ``runtime.factor_changes``,
``runtime.audit_reader``) are fields of the runtime (``Rt``).

Account safety: ``CurrentUser`` also applies ``vault.authz.check_account_ready`` with the
route's path template and the ``require_mfa`` / ``require_password_change`` settings, so
a user who has not yet enrolled a second factor (or changed a generated password)
reaches only the set-up routes, in every process alike (the flags are read with the
session, from the database, on every request). A refusal is audited (``auth.session``).

``CurrentUser`` is the signed-in person (:class:`~vault.authz.UserPrincipal`) behind an
``Authorization: Bearer`` session token; anything else (a runner token included) is 401
``unauthenticated``, and the denied attempt is audited (``auth.session``). It reads the
session in a read-only transaction and, at most once a minute per session, refreshes its
idle clock in a short write transaction of its own: declare it before (or instead of)
any custom dependency that already queries the request's ``Db`` session, since on SQLite
an open write transaction in ``Db`` would make that refresh wait for the lock.

Sudo mode: the principal carries ``second_factor``, which verifies the request's own
one-time code (``mfa_code`` in a JSON body, or the ``X-MFA-Code`` header, for a DELETE
without a body) with ``runtime.authenticator.require_mfa`` in the request's ``Db``
transaction, at most once per request. Routes never call it: ``vault.authz`` does,
for every permission row whose "needs MFA" column says so.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Annotated

from fastapi import Depends, Request, params
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase
from sqlalchemy.orm import Session
from starlette.types import Scope

from vault.audit.events import Actor, AuditEvent, RequestContext
from vault.authz import UserPrincipal, check_account_ready
from vault.errors import Forbidden, NotFound, PasswordChangeRequired, UnsupportedMediaType
from vault.identity.service import user_service_for
from vault.identity.tenants import TenantService
from vault.identity.users import UserService
from vault.keys.integrity import row_macs
from vault.keys.rotation import TenantKeyService
from vault.keys.service import tenant_key_service_for
from vault.lines.service import LineService, line_service_for
from vault.lines.states import LineStates, line_states_for
from vault.privacy.erasure import TenantEraser, UserEraser
from vault.privacy.export import TenantExporter, UserExporter
from vault.runners import GrantService, RunnerRegistry, TokenIssuer
from vault.runtime import Runtime
from vault.storage.engine import unit_of_work as storage_unit_of_work
from vault.validation import is_valid_id
from vault.webhooks.service import WebhookPolicy, WebhookService

__all__ = [
    "Ctx",
    "CurrentUser",
    "Db",
    "Grants",
    "Lines",
    "Rt",
    "RunnerTokens",
    "Runners",
    "SecondFactor",
    "States",
    "TenantErasure",
    "TenantExport",
    "TenantKeys",
    "Tenants",
    "UserErasure",
    "UserExport",
    "Users",
    "Webhooks",
    "account_ready",
    "check_content_type",
    "check_path_ids",
    "context_from_scope",
    "credentials_for",
    "current_user",
    "get_runtime",
    "grant_service_for",
    "request_context",
    "runner_registry_for",
    "unit_of_work",
]


async def check_path_ids(request: Request) -> None:
    """Every id in a path is opaque and server-made: anything else cannot exist.

    Runs for every route (an app-level dependency), so junk such as NUL bytes, traversal
    sequences or megabyte-long ids is answered with 404 before any route or query sees it.
    ``async`` on purpose: it does no I/O, and a sync dependency would cost every request
    of the app a thread-pool round trip (measured: ~18 % of a credential fetch's CPU).
    """
    for value in request.path_params.values():
        if isinstance(value, str) and not is_valid_id(value):
            raise NotFound()


async def check_content_type(request: Request) -> None:
    """A route that takes a JSON body refuses any other declared Content-Type with 415
    ``unsupported_media_type`` (rather than a confusing "body: field required").

    An app-level dependency, so every route (new ones included) gets it; routes that
    take form fields (the OAuth token endpoint) are left to their own parsing. A request
    without a Content-Type is parsed as JSON, as FastAPI does.
    """
    content_type = request.headers.get("content-type")
    if not content_type:
        return
    route = request.scope.get("route")
    body_field = getattr(route, "body_field", None)
    if body_field is None or isinstance(body_field.field_info, params.Form):
        return
    media = content_type.partition(";")[0].strip().lower()
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        return
    raise UnsupportedMediaType(
        "this endpoint takes a JSON body: send it with Content-Type: application/json"
    )


def credentials_for(scheme: str, authorization: str | None) -> str | None:
    """The credentials of an ``Authorization: <scheme> <credentials>`` header, stripped
    (empty when the scheme stands alone); None when the header is absent or names
    another scheme. ``scheme`` is lower case; the header's is matched in any case."""
    if not authorization:
        return None
    name, _, credentials = authorization.partition(" ")
    return credentials.strip() if name.lower() == scheme else None


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def unit_of_work(request: Request) -> Iterator[Session]:
    with storage_unit_of_work(get_runtime(request).sessions) as session:
        yield session


def request_context(request: Request) -> RequestContext:
    return context_from_scope(request.scope)


def context_from_scope(scope: Scope) -> RequestContext:
    """Who is calling and from where, read straight from the ASGI scope."""
    wanted = {b"user-agent": "", b"x-workflow-id": "", b"x-run-id": ""}
    found: dict[bytes, str] = {}
    for name, value in scope.get("headers", ()):
        if name in wanted and name not in found:
            found[name] = value.decode("latin-1")
    client = scope.get("client")
    return RequestContext(
        request_id=scope.get("state", {}).get("request_id"),
        ip=client[0] if client else None,
        user_agent=found.get(b"user-agent"),
        workflow_id=found.get(b"x-workflow-id"),
        run_id=found.get(b"x-run-id"),
    )


Rt = Annotated[Runtime, Depends(get_runtime)]
Db = Annotated[Session, Depends(unit_of_work, scope="function")]
Ctx = Annotated[RequestContext, Depends(request_context)]


# -- the caller -----------------------------------------------------------------------


class _SessionToken(SecurityBase):
    """The session token of ``Authorization: Bearer``, read with :func:`credentials_for`
    like every other bearer header and documented as FastAPI's ``HTTPBearer`` scheme."""

    def __init__(self) -> None:
        self.model = HTTPBearerModel(description="A session token from /v1/auth/login")
        self.scheme_name = "HTTPBearer"

    async def __call__(self, request: Request) -> str | None:
        return credentials_for("bearer", request.headers.get("authorization"))


async def _request_mfa_code(request: Request) -> str | None:
    """The one-time code this request brings: ``X-MFA-Code``, else the JSON body's
    ``mfa_code`` (FastAPI has already read and cached the body of a route that takes one)."""
    header = request.headers.get("x-mfa-code")
    if header:
        return header[:32]
    if "json" not in request.headers.get("content-type", ""):
        return None
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        return None
    code = body.get("mfa_code") if isinstance(body, dict) else None
    return code[:32] if isinstance(code, str) else None


class SecondFactor:
    """Checks the request's code once, in the request's unit of work; later asks pass."""

    def __init__(
        self,
        runtime: Runtime,
        db: Session,
        ctx: RequestContext,
        principal: UserPrincipal,
        code: str | None,
    ) -> None:
        self._runtime, self._db, self._ctx = runtime, db, ctx
        self._principal, self._code = principal, code
        self._passed = False

    def __call__(self) -> None:
        if self._passed:
            return
        self._runtime.authenticator.require_mfa(self._db, self._principal, self._code, self._ctx)
        self._passed = True


def account_ready(runtime: Runtime, request: Request, user: UserPrincipal, ctx: Ctx) -> None:
    """The account policies (module docstring); an audited 403 saying what to do next."""
    route = request.scope.get("route")
    path = getattr(route, "path", None) or request.url.path
    settings = runtime.settings
    try:
        check_account_ready(
            user,
            path,
            require_mfa=settings.require_mfa,
            require_password_change=settings.require_password_change,
        )
    except Forbidden as exc:
        changed = isinstance(exc, PasswordChangeRequired)
        reason = "password change required" if changed else "mfa enrollment required"
        runtime.audit.emit(
            AuditEvent.by(
                Actor("user", user.user_id),
                "auth.session",
                "denied",
                resource_type="session",
                resource_id=user.session_id,
                reason=f"account not ready: {reason}",
                context=ctx,
            )
        )
        raise exc from None


def current_user(
    runtime: Rt,
    ctx: Ctx,
    db: Db,
    *,
    request: Request,
    token: Annotated[str | None, Depends(_SessionToken())],
    code: Annotated[str | None, Depends(_request_mfa_code)],
) -> UserPrincipal:
    user = runtime.authenticator.authenticate(token, ctx=ctx)
    account_ready(runtime, request, user, ctx)
    return replace(user, second_factor=SecondFactor(runtime, db, ctx, user, code))


CurrentUser = Annotated[UserPrincipal, Depends(current_user)]


# -- the services of one request --------------------------------------------------------


def _lines(runtime: Rt, db: Db) -> LineService:
    return line_service_for(runtime, db)


def _states(runtime: Rt, db: Db) -> LineStates:
    return line_states_for(runtime, db)


def grant_service_for(
    runtime: Runtime, db: Session, ctx: RequestContext, principal: UserPrincipal
) -> GrantService:
    """The grants service acting for ``principal``: one builder for the API (bearer
    session) and the console (cookie session), so both authorize and audit alike."""
    return GrantService(
        db,
        audit=runtime.audit,
        clock=runtime.clock,
        principal=principal,
        context=ctx,
        macs=row_macs(runtime.system_keys),
    )


def runner_registry_for(
    runtime: Runtime, db: Session, ctx: RequestContext, principal: UserPrincipal
) -> RunnerRegistry:
    """The runner registry acting for ``principal`` (API and console alike)."""
    return RunnerRegistry(
        db,
        system_keys=runtime.system_keys,
        audit=runtime.audit,
        clock=runtime.clock,
        actor_id=principal.user_id,
        context=ctx,
    )


def _grants(runtime: Rt, db: Db, ctx: Ctx, user: CurrentUser) -> GrantService:
    return grant_service_for(runtime, db, ctx, user)


def _runners(runtime: Rt, db: Db, ctx: Ctx, user: CurrentUser) -> RunnerRegistry:
    return runner_registry_for(runtime, db, ctx, user)


def _runner_tokens(runtime: Rt, db: Db) -> TokenIssuer:
    return TokenIssuer(
        db,
        system_keys=runtime.system_keys,
        audit=runtime.audit,
        clock=runtime.clock,
        ttl_seconds=runtime.settings.runner_token_ttl_seconds,
        flood=runtime.flood,
    )


def _tenants(runtime: Rt, db: Db, ctx: Ctx) -> TenantService:
    return TenantService(
        db, keyring=runtime.keyring, audit=runtime.audit, clock=runtime.clock, ctx=ctx
    )


def _users(runtime: Rt, db: Db) -> UserService:
    return user_service_for(runtime, db)


def _tenant_keys(runtime: Rt, db: Db) -> TenantKeyService:
    return tenant_key_service_for(runtime, db)


def _tenant_erasure(runtime: Rt, db: Db) -> TenantEraser:
    return TenantEraser(
        db, kek_cache=runtime.keyring.cache, audit=runtime.audit, clock=runtime.clock
    )


def _tenant_export(runtime: Rt, db: Db) -> TenantExporter:
    return TenantExporter(db, audit=runtime.audit, clock=runtime.clock)


def _webhooks(runtime: Rt, db: Db, ctx: Ctx, user: CurrentUser) -> WebhookService:
    settings = runtime.settings
    return WebhookService(
        db,
        keyring=runtime.keyring,
        system_keys=runtime.system_keys,
        audit=runtime.audit,
        clock=runtime.clock,
        principal=user,
        context=ctx,
        policy=WebhookPolicy(
            max_per_tenant=settings.webhook_max_per_tenant,
            allow_private=settings.webhook_allow_private,
        ),
    )


def _user_erasure(runtime: Rt, db: Db) -> UserEraser:
    return UserEraser(db, audit=runtime.audit, clock=runtime.clock)


def _user_export(runtime: Rt, db: Db) -> UserExporter:
    return UserExporter(db, audit=runtime.audit, clock=runtime.clock)


Lines = Annotated[LineService, Depends(_lines)]
States = Annotated[LineStates, Depends(_states)]
Grants = Annotated[GrantService, Depends(_grants)]
Runners = Annotated[RunnerRegistry, Depends(_runners)]
RunnerTokens = Annotated[TokenIssuer, Depends(_runner_tokens)]
Tenants = Annotated[TenantService, Depends(_tenants)]
Users = Annotated[UserService, Depends(_users)]
TenantKeys = Annotated[TenantKeyService, Depends(_tenant_keys)]
TenantErasure = Annotated[TenantEraser, Depends(_tenant_erasure)]
TenantExport = Annotated[TenantExporter, Depends(_tenant_export)]
Webhooks = Annotated[WebhookService, Depends(_webhooks)]


UserErasure = Annotated[UserEraser, Depends(_user_erasure)]
UserExport = Annotated[UserExporter, Depends(_user_export)]
