"""Wiring: the user service of a request or a command, from a runtime (API and CLI).

The long-lived identity services (the authenticator, factor changes) are fields of
:class:`~vault.runtime.Runtime`, made once with it.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from vault.identity.users import UserService
from vault.runtime import Runtime

__all__ = ["user_service_for"]


def user_service_for(runtime: Runtime, session: Session) -> UserService:
    auth = runtime.authenticator
    return UserService(
        session,
        passwords=runtime.passwords,
        system_keys=runtime.system_keys,
        audit=runtime.audit,
        clock=runtime.clock,
        store=auth.store,
        recovery=auth.recovery,
    )
