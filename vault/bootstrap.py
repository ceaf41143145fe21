"""First start of a data dir: schema, root key, system keys and the platform admin.

Refuses to touch an initialised data dir or database, so running ``init`` twice can
never replace a root key or an admin.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from sqlalchemy import func, select

from vault.audit.chain import append_events
from vault.audit.events import Actor, AuditEvent
from vault.clock import Clock, SystemClock
from vault.identity.passwords import Passwords, generate_password
from vault.identity.recovery import RecoveryCodes
from vault.identity.totp import new_secret
from vault.identity.users import create_user_row
from vault.ids import new_id
from vault.keys.system import SystemKeys
from vault.runtime import checkpointer_for, engine_for, kms_config, provider_for_init
from vault.settings import Settings
from vault.storage.engine import unit_of_work
from vault.storage.migrate import current_revision, upgrade
from vault.storage.models import SystemSecret
from vault.storage.sessions import session_factory

__all__ = [
    "AlreadyInitialised",
    "BootstrapResult",
    "create_user_row",
    "initialise",
    "is_initialised",
]


class AlreadyInitialised(RuntimeError):
    """The data dir or database already holds a linevault installation."""


@dataclass(frozen=True)
class BootstrapResult:
    admin_email: str
    admin_password: str = ""
    admin_totp_secret: str = ""
    # Single-use codes for when the authenticator is lost, like every enrolled user's.
    admin_recovery_codes: tuple[str, ...] = ()

    def __repr__(self) -> str:  # never print the secrets by accident
        return f"BootstrapResult(admin_email={self.admin_email!r})"


def is_initialised(settings: Settings) -> bool:
    config = kms_config(settings)
    key_file = getattr(config, "key_file", None)
    if key_file is not None and getattr(config, "root_key_b64", None) is None and key_file.exists():
        return True
    if settings.database_url is None and not (settings.data_dir / "linevault.db").exists():
        return False
    engine = engine_for(settings)
    try:
        if current_revision(engine) is None:
            return False
        with engine.connect() as conn:
            return bool(conn.execute(select(func.count()).select_from(SystemSecret)).scalar_one())
    finally:
        engine.dispose()


def initialise(
    settings: Settings,
    *,
    admin_email: str,
    clock: Clock | None = None,
    passwords: Passwords | None = None,
) -> BootstrapResult:
    clock = clock or SystemClock()
    if is_initialised(settings):
        raise AlreadyInitialised(f"{settings.data_dir} is already initialised")
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(settings.data_dir, 0o700)
    engine = engine_for(settings)
    try:
        upgrade(engine)
        provider = provider_for_init(settings)
        try:
            password = generate_password()
            totp_secret = new_secret()  # 160 bits, RFC 4226's recommended size
            passwords = passwords or Passwords()
            now = clock.now()
            with unit_of_work(session_factory(engine)) as session:
                system = SystemKeys.create(session, provider, now=now)
                user_id = new_id("usr")
                create_user_row(
                    session,
                    user_id=user_id,
                    email=admin_email,
                    password_hash=passwords.hash(password),
                    platform_role="admin",
                    now=now,
                    totp_secret_enc=system.seal_totp(user_id=user_id, secret=totp_secret),
                )
                checkpointer = checkpointer_for(settings, system, clock)
                codes = RecoveryCodes(system_keys=system).issue(session, user_id=user_id)
                rows = append_events(
                    session,
                    [
                        AuditEvent.by(
                            Actor("system", "linevault-init"),
                            "system.init",
                            resource_type="user",
                            resource_id=user_id,
                            reason="bootstrap platform admin created",
                        )
                    ],
                    now=now,
                    seal=checkpointer.head_seal,
                )
                # Signed from the first event on: a chain with events and no checkpoint
                # does not verify (it could have been rewritten whole).
                checkpointer.after_append(session, rows)
        finally:
            provider.close()
    finally:
        engine.dispose()
    return BootstrapResult(admin_email.strip().lower(), password, totp_secret, tuple(codes))
