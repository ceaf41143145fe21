"""Helpers for line tests: tenants made directly in the database, principals, services."""

from __future__ import annotations

import secrets
import string
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session

from vault.audit.events import RequestContext
from vault.authz import UserPrincipal
from vault.ids import new_id
from vault.lines.service import LineService, line_service_for
from vault.runtime import Runtime
from vault.storage.engine import unit_of_work
from vault.storage.models import Tenant

__all__ = [
    "CTX",
    "make_tenant",
    "owner",
    "planted",
    "planted_line",
    "service",
    "uow",
    "user",
]

CTX = RequestContext(request_id="req_test", ip="127.0.0.1", user_agent="pytest")
_ALNUM = string.ascii_letters + string.digits


def planted(kind: str) -> dict[str, str]:
    """A fresh valid credential for ``kind`` with random, greppable secret values."""

    def rnd(n: int) -> str:
        return "".join(secrets.choice(_ALNUM) for _ in range(n))

    if kind == "telegram":
        return {"bot_token": f"{secrets.randbelow(10**9) + 10**8}:PLANTtg{rnd(36)}"}
    if kind == "instagram":
        return {
            "access_token": "PLANTig" + rnd(60),
            "user_id": "17841400000000000",
            "app_secret": "PLANTas" + rnd(32),
        }
    if kind == "messenger":
        return {
            "page_id": "104857600000000",
            "page_access_token": "PLANTms" + rnd(80),
            "app_secret": "PLANTmas" + rnd(32),
        }
    if kind == "widget":
        return {"signing_secret": "PLANTwg" + rnd(48)}
    raise ValueError(kind)


@contextmanager
def uow(runtime: Runtime) -> Iterator[Session]:
    with unit_of_work(runtime.sessions) as session:
        yield session


def make_tenant(runtime: Runtime, name: str = "Acme") -> str:
    """A tenant with KEK version 1, as tenant creation will make it."""
    tenant_id = new_id("tnt")
    now = runtime.clock.now()
    with uow(runtime) as session:
        session.add(Tenant(id=tenant_id, name=name, active_kek_version=1, created_at=now))
        session.flush()
        runtime.keyring.create_kek(session, tenant_id=tenant_id, version=1, now=now)
    return tenant_id


def user(tenant_roles: dict[str, str], *, platform_role: str | None = None) -> UserPrincipal:
    return UserPrincipal(
        user_id=new_id("usr"),
        email="someone@example.test",
        platform_role=platform_role,  # type: ignore[arg-type]
        session_id=new_id("ses"),
        mfa_fresh=True,
        tenant_roles=tenant_roles,
    )


def owner(tenant_id: str) -> UserPrincipal:
    return user({tenant_id: "owner"})


def service(runtime: Runtime, session: Session) -> LineService:
    return line_service_for(runtime, session)


def planted_line(
    runtime: Runtime, tenant_id: str, *, name: str = "bot"
) -> tuple[str, dict[str, str]]:
    """A telegram line created by the tenant's owner with a planted credential:
    (line id, credential)."""
    cred = planted("telegram")
    with uow(runtime) as session:
        line = service(runtime, session).create(
            owner(tenant_id),
            tenant_id,
            line_type="telegram",
            name=name,
            credential=cred,
            context=CTX,
        )
    return line.id, cred
