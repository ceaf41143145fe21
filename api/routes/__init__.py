"""Every router of the HTTP API, in the order they are mounted."""

from __future__ import annotations

from fastapi import APIRouter

from api.routes import credentials, grants, runners, system

__all__ = ["ROUTERS"]

ROUTERS: list[APIRouter] = [
    system.router,
    runners.router,
    grants.router,
    credentials.router,
]
