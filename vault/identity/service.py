"""Wiring: builds the identity services of a runtime once and caches them on it.

Kept apart from ``vault.runtime`` (which imports ``vault.identity.passwords``) so the
package has no import cycle; the API and CLI call :func:`authenticator_for`.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from vault.audit.events import RequestContext
from vault.identity.auth import Authenticator
from vault.identity.factors import FactorChanges
from vault.identity.recovery import RecoveryCodes
from vault.identity.sessions import SessionStore
from vault.identity.tenants import TenantService
from vault.identity.throttle import Throttler
from vault.identity.users import UserService
from vault.runtime import Runtime

__all__ = ["authenticator_for", "factor_changes_for", "tenant_service", "user_service"]

_KEY = "identity.authenticator"
_FACTORS = "identity.factors"


def authenticator_for(runtime: Runtime) -> Authenticator:
    found = runtime.extras.get(_KEY)
    if isinstance(found, Authenticator):
        return found
    settings = runtime.settings
    authenticator = Authenticator(
        sessions=runtime.sessions,
        readonly_sessions=runtime.readonly_sessions,
        clock=runtime.clock,
        audit=runtime.audit,
        passwords=runtime.passwords,
        system_keys=runtime.system_keys,
        store=SessionStore(
            system_keys=runtime.system_keys,
            idle=timedelta(minutes=settings.session_idle_minutes),
            absolute=timedelta(hours=settings.session_absolute_hours),
            mfa_fresh=timedelta(minutes=settings.mfa_fresh_minutes),
        ),
        throttler=Throttler(
            free_failures=settings.throttle_free_failures,
            max_delay_seconds=settings.throttle_max_delay_seconds,
        ),
        recovery=RecoveryCodes(system_keys=runtime.system_keys),
        mfa_token_ttl_seconds=settings.mfa_token_ttl_seconds,
    )
    runtime.extras[_KEY] = authenticator
    return authenticator


def factor_changes_for(runtime: Runtime) -> FactorChanges:
    found = runtime.extras.get(_FACTORS)
    if isinstance(found, FactorChanges):
        return found
    factors = FactorChanges(
        authenticator=authenticator_for(runtime),
        sessions=runtime.sessions,
        passwords=runtime.passwords,
        system_keys=runtime.system_keys,
    )
    runtime.extras[_FACTORS] = factors
    return factors


def user_service(runtime: Runtime, session: Session) -> UserService:
    auth = authenticator_for(runtime)
    return UserService(
        session,
        passwords=runtime.passwords,
        system_keys=runtime.system_keys,
        audit=runtime.audit,
        clock=runtime.clock,
        store=auth.store,
        recovery=auth.recovery,
    )


def tenant_service(runtime: Runtime, session: Session, ctx: RequestContext) -> TenantService:
    return TenantService(
        session, keyring=runtime.keyring, audit=runtime.audit, clock=runtime.clock, ctx=ctx
    )
