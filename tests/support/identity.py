"""Users, sessions and memberships made straight in the database, for tests.

Logging in costs an argon2 hash (~40 ms); most tests only need a session, so they make
one through the same SessionStore the API uses, without the password step.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import timedelta

import pyotp

from vault.identity.passwords import Passwords
from vault.identity.totp import new_secret
from vault.identity.users import create_user_row
from vault.ids import new_id
from vault.runtime import Runtime
from vault.storage.engine import unit_of_work
from vault.storage.models import Membership, Tenant

__all__ = [
    "TEST_PASSWORD",
    "SeededUser",
    "add_membership",
    "bearer",
    "make_tenant",
    "make_user",
    "new_session",
    "totp_code",
]

TEST_PASSWORD = "correct horse battery staple"


@functools.cache
def _password_hash() -> str:
    return Passwords().hash(TEST_PASSWORD)


@dataclass(frozen=True)
class SeededUser:
    id: str
    email: str
    totp_secret: str | None


def make_user(
    runtime: Runtime, email: str, *, platform_role: str | None = None, totp: bool = False
) -> SeededUser:
    secret = new_secret() if totp else None
    with unit_of_work(runtime.sessions) as session:
        user_id = new_id("usr")
        create_user_row(
            session,
            user_id=user_id,
            email=email,
            password_hash=_password_hash(),
            platform_role=platform_role,
            now=runtime.clock.now(),
            totp_secret_enc=(
                runtime.system_keys.seal_totp(user_id=user_id, secret=secret) if secret else None
            ),
        )
    return SeededUser(user_id, email, secret)


def new_session(runtime: Runtime, user_id: str, *, mfa_fresh: bool = False) -> str:
    store = runtime.authenticator.store
    with unit_of_work(runtime.sessions) as session:
        return store.create(
            session, user_id=user_id, now=runtime.clock.now(), mfa_fresh=mfa_fresh
        ).token


def make_tenant(runtime: Runtime, name: str = "Acme") -> str:
    now = runtime.clock.now()
    with unit_of_work(runtime.sessions) as session:
        tenant = Tenant(id=new_id("tnt"), name=name, active_kek_version=1, created_at=now)
        session.add(tenant)
        session.flush()
        runtime.keyring.create_kek(session, tenant_id=tenant.id, version=1, now=now)
        return tenant.id


def add_membership(runtime: Runtime, tenant_id: str, user_id: str, role: str) -> None:
    with unit_of_work(runtime.sessions) as session:
        session.add(
            Membership(
                tenant_id=tenant_id, user_id=user_id, role=role, created_at=runtime.clock.now()
            )
        )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def totp_code(secret: str, runtime: Runtime, *, steps: int = 0) -> str:
    moment = runtime.clock.now() + timedelta(seconds=30 * steps)
    return pyotp.TOTP(secret).at(moment)
