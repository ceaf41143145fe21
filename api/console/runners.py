"""Runners (``/ui/runners``) and a tenant's grants (``/ui/tenants/{id}/grants``).

The same services and calls as ``api/routes/runners.py`` and ``api/routes/grants.py``,
built by the same builders (``api.deps.runner_registry_for``, ``grant_service_for``)
with the console's principal, so every action is authorized by the one permission
table and audited exactly like its API twin; sudo-mode rows read the form's
"Authenticator code" (``mfa_code``). A new or rotated client secret is shown once, in
the answer to the POST that made it (``no-store``), never in a URL or a later page.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from api.console.tenants import abilities, tenant_of
from api.console.web import CONSOLE_PREFIX, ConsoleRoute, ConsoleUser, page, see_other
from api.deps import Ctx, Db, Lines, Rt, Tenants, grant_service_for, runner_registry_for
from vault.authz import PlatformPermission, UserPrincipal, platform_allows, runner_directory_allowed
from vault.runners import GrantService, NewRunner, RunnerRegistry
from vault.runners.grants import ALL_LINES

__all__ = ["ConsoleGrants", "ConsoleRunners", "router"]

router = APIRouter(prefix=CONSOLE_PREFIX, route_class=ConsoleRoute, include_in_schema=False)

Name = Annotated[str, Form(min_length=1, max_length=200)]
RunnerId = Annotated[str, Form(min_length=1, max_length=40)]
Choice = Annotated[str, Form(max_length=16)]
LineIds = Annotated[list[str], Form(default_factory=list, max_length=1000)]


def _console_runners(runtime: Rt, db: Db, ctx: Ctx, user: ConsoleUser) -> RunnerRegistry:
    return runner_registry_for(runtime, db, ctx, user)


def _console_grants(runtime: Rt, db: Db, ctx: Ctx, user: ConsoleUser) -> GrantService:
    return grant_service_for(runtime, db, ctx, user)


ConsoleRunners = Annotated[RunnerRegistry, Depends(_console_runners)]
ConsoleGrants = Annotated[GrantService, Depends(_console_grants)]


# -- runners -------------------------------------------------------------------------------


@router.get("/runners")
def runner_list(request: Request, user: ConsoleUser, runners: ConsoleRunners) -> Response:
    """Every field for platform readers, the directory for tenant managers (the API's
    rule, ``RunnerRegistry.visible_to``); never a secret."""
    rows, full = runners.visible_to(user)
    context = {
        "title": "Runners",
        "runners": rows,
        "full": full,
        "can_manage": platform_allows(user, PlatformPermission.RUNNER_CREATE),
    }
    return page(request, "runners.html", context)


def _secret_page(request: Request, made: NewRunner, *, rotated: bool) -> Response:
    """The one page that ever shows this client secret (the answer to its POST)."""
    title = "New client secret" if rotated else "Runner registered"
    context = {"title": title, "runner": made.runner, "secret": made.client_secret}
    return page(request, "runner_secret.html", {**context, "rotated": rotated})


@router.post("/runners")
def register_runner(
    request: Request, name: Name, user: ConsoleUser, runners: ConsoleRunners
) -> Response:
    runners.authorize(user, PlatformPermission.RUNNER_CREATE, "runner.create")
    return _secret_page(request, runners.register(name=name), rotated=False)


@router.post("/runners/{runner_id}/rotate")
def rotate_runner_secret(
    runner_id: str, request: Request, user: ConsoleUser, runners: ConsoleRunners
) -> Response:
    runners.authorize(user, PlatformPermission.RUNNER_ROTATE, "runner.rotate_secret", runner_id)
    return _secret_page(request, runners.rotate_secret(runner_id), rotated=True)


@router.post("/runners/{runner_id}/disable")
def disable_runner(runner_id: str, user: ConsoleUser, runners: ConsoleRunners) -> Response:
    runners.authorize(user, PlatformPermission.RUNNER_DISABLE, "runner.disable", runner_id)
    runners.disable(runner_id)
    return see_other(f"{CONSOLE_PREFIX}/runners")


# -- grants --------------------------------------------------------------------------------


def _runner_names(user: UserPrincipal, runners: RunnerRegistry) -> dict[str, tuple[str, bool]]:
    """Runner id -> (name, active) for someone who may list runners; else nothing (an
    auditor reads grants by runner id, as the API shows them)."""
    if not runner_directory_allowed(user):
        return {}
    rows, _ = runners.visible_to(user)
    return {r.id: (r.name, r.disabled_at is None) for r in rows}


@router.get("/tenants/{tenant_id}/grants")
def grant_list(
    tenant_id: str,
    request: Request,
    *,
    ctx: Ctx,
    user: ConsoleUser,
    tenants: Tenants,
    grants: ConsoleGrants,
    runners: ConsoleRunners,
    lines: Lines,
) -> Response:
    views = grants.list(tenant_id)
    tenant = tenant_of(tenants, user, tenant_id)
    can = abilities(user, tenant_id)
    tenant_lines = lines.list(user, tenant_id, context=ctx)
    names = _runner_names(user, runners)
    context = {
        "title": f"Grants · {tenant.name}",
        "tenant": tenant,
        "grants": views,
        "runners": names,
        "active_runners": [(rid, name) for rid, (name, active) in names.items() if active],
        "line_names": {line.id: line.name for line in tenant_lines},
        "grantable": [line for line in tenant_lines if line.status != "revoked"],
        "all_lines": ALL_LINES,
        "can": can,
    }
    return page(request, "grants.html", context)


@router.post("/tenants/{tenant_id}/grants")
def create_grant(
    tenant_id: str,
    runner_id: RunnerId,
    grants: ConsoleGrants,
    *,
    scope: Choice = "chosen",
    access: Choice = "full",
    lines: LineIds,
) -> Response:
    """All lines (``["*"]``, present and future) or the ticked ones; the service checks
    the rest (the runner, the lines, the access kind) exactly as for the API."""
    wanted = [ALL_LINES] if scope == "all" else lines
    grants.create(tenant_id, runner_id=runner_id, lines=wanted, access=access)
    return see_other(f"{CONSOLE_PREFIX}/tenants/{tenant_id}/grants")


@router.post("/tenants/{tenant_id}/grants/{grant_id}/delete")
def delete_grant(tenant_id: str, grant_id: str, grants: ConsoleGrants) -> Response:
    grants.delete(tenant_id, grant_id)
    return see_other(f"{CONSOLE_PREFIX}/tenants/{tenant_id}/grants")
