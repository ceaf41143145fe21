"""Every router of the HTTP API, in the order they are mounted."""

from __future__ import annotations

from fastapi import APIRouter

from api.routes import (
    audit,
    auth,
    credentials,
    grants,
    keys,
    lines,
    me,
    privacy,
    runners,
    states,
    system,
    tenants,
    users,
    vault_compat,
    webhooks,
)

__all__ = ["ROUTERS"]

# The credential fetch is the hot path: mounted first, so matching a fetch does not walk
# every other route (FastAPI tries routes in order; each try costs microseconds).
ROUTERS: list[APIRouter] = [
    credentials.router,
    system.router,
    auth.router,
    me.router,
    users.router,
    tenants.router,
    lines.router,
    states.router,
    privacy.router,
    audit.router,
    keys.router,
    runners.router,
    grants.router,
    vault_compat.router,
    webhooks.router,
]
