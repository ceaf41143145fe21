"""Test helpers for runners: tenants and lines written straight through the key ring.

They build real rows (a tenant KEK wrapped by the root key, a sealed credential) exactly
as the lines service does, so fetch tests do not depend on the lines API.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from vault.audit.events import RequestContext
from vault.authz import UserPrincipal
from vault.ids import new_id
from vault.keys.integrity import row_macs
from vault.runners import FetchedCredential, GrantService, RunnerRegistry, TokenIssuer
from vault.runtime import Runtime
from vault.storage.engine import unit_of_work
from vault.storage.models import Line, Tenant, User

__all__ = [
    "TELEGRAM",
    "admin_principal",
    "fetch_credential",
    "grant",
    "issue_token",
    "make_line",
    "make_runner",
    "make_tenant",
    "revoke_line",
]

TELEGRAM = {"bot_token": "123456:" + "A" * 35}
CTX = RequestContext(request_id="req_test", ip="127.0.0.1")


def fetch_credential(
    runtime: Runtime,
    token: str | None,
    tenant_id: str,
    line_id: str,
    context: RequestContext = CTX,
) -> FetchedCredential:
    """One fetch through the code the route runs (``runtime.fetcher.fetch``), on an event
    loop of its own."""
    return asyncio.run(
        runtime.fetcher.fetch(token=token, tenant_id=tenant_id, line_id=line_id, context=context)
    )


def admin_principal(runtime: Runtime) -> UserPrincipal:
    with unit_of_work(runtime.sessions) as session:
        user_id = session.execute(
            select(User.id).where(User.platform_role == "admin").order_by(User.created_at).limit(1)
        ).scalar_one()
    return UserPrincipal(
        user_id=user_id,
        email="admin@example.test",
        platform_role="admin",
        session_id="ses_test",
        mfa_fresh=True,
    )


def make_tenant(runtime: Runtime, name: str = "Acme") -> str:
    now = runtime.clock.now()
    tenant_id = new_id("tnt")
    with unit_of_work(runtime.sessions) as session:
        session.add(Tenant(id=tenant_id, name=name, active_kek_version=1, created_at=now))
        session.flush()
        runtime.keyring.create_kek(session, tenant_id=tenant_id, version=1, now=now)
    return tenant_id


def make_line(
    runtime: Runtime,
    tenant_id: str,
    *,
    line_type: str = "telegram",
    credential: dict[str, Any] | None = None,
) -> str:
    now = runtime.clock.now()
    line_id = new_id("ln")
    plaintext = json.dumps(credential or TELEGRAM, sort_keys=True, separators=(",", ":")).encode()
    with unit_of_work(runtime.sessions) as session:
        # The tenant's active KEK (an earlier key rotation may have destroyed version 1).
        active = session.get(Tenant, tenant_id)
        kek_version = active.active_kek_version if active is not None else 1
        kek = runtime.keyring.load_kek(session, tenant_id=tenant_id, version=kek_version)
        sealed = runtime.keyring.seal_credential(
            kek=kek,
            kek_version=kek_version,
            tenant_id=tenant_id,
            line_id=line_id,
            line_type=line_type,
            credential_version=1,
            plaintext=plaintext,
        )
        session.add(
            Line(
                id=line_id,
                tenant_id=tenant_id,
                type=line_type,
                name="line",
                status="active",
                version=1,
                fingerprint="fp",
                kek_version=sealed.kek_version,
                wrapped_dek=sealed.wrapped_dek,
                ciphertext=sealed.ciphertext,
                created_at=now,
                updated_at=now,
                status_mac=row_macs(runtime.system_keys).line_status(
                    line_id=line_id, tenant_id=tenant_id, status="active", version=1
                ),
            )
        )
    return line_id


def revoke_line(runtime: Runtime, line_id: str) -> None:
    with unit_of_work(runtime.sessions) as session:
        line = session.get(Line, line_id)
        assert line is not None
        session.execute(
            update(Line)
            .where(Line.id == line_id)
            .values(
                status="revoked",
                wrapped_dek=None,
                ciphertext=None,
                revoked_at=runtime.clock.now(),
                status_mac=row_macs(runtime.system_keys).line_status(
                    line_id=line_id,
                    tenant_id=line.tenant_id,
                    status="revoked",
                    version=line.version,
                ),
            )
        )


def make_runner(runtime: Runtime, name: str = "wf-runtime") -> tuple[str, str, str]:
    """(runner_id, client_id, client_secret)"""
    principal = admin_principal(runtime)
    with unit_of_work(runtime.sessions) as session:
        created = RunnerRegistry(
            session,
            system_keys=runtime.system_keys,
            audit=runtime.audit,
            clock=runtime.clock,
            actor_id=principal.user_id,
            context=CTX,
        ).register(name=name)
        return created.runner.id, created.runner.client_id, created.client_secret


def issue_token(runtime: Runtime, client_id: str, client_secret: str) -> str:
    with unit_of_work(runtime.sessions) as session:
        return (
            TokenIssuer(
                session,
                system_keys=runtime.system_keys,
                audit=runtime.audit,
                clock=runtime.clock,
                ttl_seconds=runtime.settings.runner_token_ttl_seconds,
            )
            .issue(client_id=client_id, client_secret=client_secret, context=CTX)
            .access_token
        )


def grant_service(runtime: Runtime, session: Session) -> GrantService:
    """The grants service as a platform admin uses it, in ``session``."""
    return GrantService(
        session,
        audit=runtime.audit,
        clock=runtime.clock,
        principal=admin_principal(runtime),
        context=CTX,
        macs=row_macs(runtime.system_keys),
    )


def grant(runtime: Runtime, tenant_id: str, runner_id: str, lines: list[str]) -> str:
    with unit_of_work(runtime.sessions) as session:
        created = grant_service(runtime, session).create(
            tenant_id, runner_id=runner_id, lines=lines
        )
        return created.id


def granted_lines(runtime: Runtime, tenant_id: str) -> dict[str, list[str]]:
    """What the grants listing shows: grant id -> its lines."""
    with unit_of_work(runtime.sessions) as session:
        return {g.id: g.lines for g in grant_service(runtime, session).list(tenant_id)}
