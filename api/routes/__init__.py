"""Every router of the HTTP API, in the order they are mounted."""

from __future__ import annotations

from fastapi import APIRouter

from api.routes import auth, credentials, grants, me, runners, system, tenants

__all__ = ["ROUTERS"]

ROUTERS: list[APIRouter] = [
    system.router,
    auth.router,
    me.router,
    tenants.router,
    runners.router,
    grants.router,
    credentials.router,
]
