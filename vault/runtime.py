"""The composition root: builds every long-lived collaborator of a process once.

The API and the CLI each call :func:`open_runtime` with the one ``Settings`` object and
hand the pieces to services; nothing below reads settings or the environment itself.
Every collaborator is a typed field, built here once and complete: the audit writer gets
its hooks and its one-statement batch at construction, the fetcher its usage counter.

One database pool per process: the engine's. The audit writer's sessions, its
one-statement batch and the fetch's read all take their connections from it, under the
one reconnect policy of :mod:`vault.storage.engine`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine

from kms import KeyProvider, LocalKmsConfig, Pkcs11KmsConfig, initialize_provider, open_provider
from vault.audit.anchors import AnchorLog
from vault.audit.chain import HEAD_MAC_PURPOSE, HeadSeal
from vault.audit.checkpoints import Checkpointer
from vault.audit.fastbatch import PgFastBatch
from vault.audit.flood import FailureFlood
from vault.audit.headboard import HEAD_BOARD_FILE, HeadBoard
from vault.audit.service import AuditReader
from vault.audit.trail import AuditTrail
from vault.audit.verify import TailPolicy
from vault.audit.writer import AuditWriter
from vault.clock import Clock, SystemClock
from vault.connectors import ConnectorConfig, ProviderChecks
from vault.identity.auth import Authenticator
from vault.identity.factors import FactorChanges
from vault.identity.passwords import Passwords
from vault.identity.recovery import RecoveryCodes
from vault.identity.sessions import SessionStore
from vault.identity.throttle import Throttler
from vault.keys.cache import KekCache
from vault.keys.integrity import backfill_macs, row_macs, seal_audit_head
from vault.keys.keyring import KeyRing
from vault.keys.system import SystemKeys
from vault.lines.refresh import Refresher, refresher_for
from vault.runners.fetch import CredentialFetcher
from vault.runners.usage import UsageCounter
from vault.settings import Settings
from vault.storage.engine import (
    DbTimeouts,
    SessionFactory,
    SqlitePaging,
    is_sqlite,
    make_engine,
    readonly,
    unit_of_work,
)
from vault.storage.migrate import current_revision, head_revision
from vault.storage.sessions import session_factory

log = logging.getLogger("linevault.audit")

__all__ = [
    "NotInitialised",
    "Runtime",
    "audit_tail",
    "checkpointer_for",
    "connector_config",
    "db_timeouts",
    "engine_for",
    "kms_config",
    "open_runtime",
    "provider_for_init",
]


class NotInitialised(RuntimeError):
    """The data dir or database has not been set up with ``linevault init``."""


def kms_config(settings: Settings) -> LocalKmsConfig | Pkcs11KmsConfig:
    if settings.kms_provider == "pkcs11":
        pin = settings.pkcs11_pin.get_secret_value() if settings.pkcs11_pin else None
        if pin is None and settings.pkcs11_pin_file is not None:
            pin = settings.pkcs11_pin_file.read_text().strip()
        if not (settings.pkcs11_module and settings.pkcs11_token_label and pin):
            raise NotInitialised(
                "the pkcs11 provider needs LINEVAULT_PKCS11_MODULE, LINEVAULT_PKCS11_TOKEN_LABEL "
                "and LINEVAULT_PKCS11_PIN or LINEVAULT_PKCS11_PIN_FILE"
            )
        return Pkcs11KmsConfig(
            module_path=settings.pkcs11_module,
            token_label=settings.pkcs11_token_label,
            pin=pin,
            key_label=settings.pkcs11_key_label,
        )
    root = settings.root_key.get_secret_value() if settings.root_key else None
    return LocalKmsConfig(key_file=settings.key_file, root_key_b64=root)


def provider_for_init(settings: Settings) -> KeyProvider:
    return initialize_provider(kms_config(settings))


def audit_tail(settings: Settings) -> TailPolicy:
    """How far a verified head may run past its newest signed checkpoint."""
    return TailPolicy(
        max_events=settings.audit_max_unsigned_events,
        max_seconds=settings.audit_max_unsigned_seconds,
    )


def checkpointer_for(settings: Settings, system_keys: SystemKeys, clock: Clock) -> Checkpointer:
    """The one way a process signs checkpoints (server, CLI, bootstrap): same cadence,
    same anchor log."""
    anchors = (
        AnchorLog(settings.audit_anchor_dir, signing_key=system_keys.signing_key)
        if settings.audit_anchor_dir is not None
        else None
    )
    return Checkpointer(
        signing_key=system_keys.signing_key,
        key_id=system_keys.audit_key_id,
        clock=clock,
        every=settings.audit_checkpoint_every,
        seconds=settings.audit_checkpoint_seconds,
        head_seal=HeadSeal(system_keys.mac_key(HEAD_MAC_PURPOSE)),
        anchors=anchors,
    )


def connector_config(settings: Settings) -> ConnectorConfig:
    """The platform connectors' switch, base URLs, timeouts and concurrency."""
    return ConnectorConfig(
        enabled=settings.provider_checks,
        telegram_api_url=settings.telegram_api_url,
        graph_api_url=settings.graph_api_url,
        instagram_api_url=settings.instagram_api_url,
        connect_timeout=settings.connector_connect_timeout_seconds,
        read_timeout=settings.connector_read_timeout_seconds,
        max_concurrent=settings.connector_max_concurrent,
    )


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: SessionFactory
    readonly_sessions: SessionFactory
    clock: Clock
    provider: KeyProvider
    keyring: KeyRing
    system_keys: SystemKeys
    passwords: Passwords
    audit_writer: AuditWriter
    audit: AuditTrail
    usage: UsageCounter
    fetcher: CredentialFetcher
    flood: FailureFlood
    # The long-lived services, made from the parts above with the runtime itself.
    authenticator: Authenticator = field(init=False)
    factor_changes: FactorChanges = field(init=False)
    audit_reader: AuditReader = field(init=False)
    checks: ProviderChecks = field(init=False)
    refresher: Refresher = field(init=False)

    def __post_init__(self) -> None:
        self.authenticator = _authenticator(self)
        self.factor_changes = FactorChanges(
            authenticator=self.authenticator,
            sessions=self.sessions,
            passwords=self.passwords,
            system_keys=self.system_keys,
        )
        self.audit_reader = AuditReader(
            engine=self.engine,
            audit=self.audit,
            public_key=self.system_keys.audit_public_key,
            tail=audit_tail(self.settings),
            anchor_dir=self.settings.audit_anchor_dir,
            sessions=self.sessions,
        )
        self.checks = ProviderChecks(connector_config(self.settings))
        self.refresher = refresher_for(self)  # one lease owner id per process

    def close(self) -> None:
        self.checks.close()
        self.flood.stop()
        self.audit_writer.stop()
        self.audit_writer.dispose()
        self.provider.close()
        self.engine.dispose()


def _authenticator(runtime: Runtime) -> Authenticator:
    settings = runtime.settings
    return Authenticator(
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
            first_delay_seconds=settings.throttle_first_delay_seconds,
        ),
        recovery=RecoveryCodes(system_keys=runtime.system_keys),
        mfa_token_ttl_seconds=settings.mfa_token_ttl_seconds,
        flood=runtime.flood,
    )


def open_runtime(
    settings: Settings, *, clock: Clock | None = None, start_writer: bool = True
) -> Runtime:
    clock = clock or SystemClock()
    engine = _open_engine(settings)
    provider = open_provider(kms_config(settings))
    sessions = session_factory(engine)
    system_keys = _load_system_keys(sessions, provider)
    keyring = KeyRing(
        provider,
        cache=KekCache(
            max_entries=settings.kek_cache_size, ttl_seconds=settings.kek_cache_ttl_seconds
        ),
    )
    usage = UsageCounter(clock)
    writer, audit = _audit(
        settings,
        engine=engine,
        sessions=sessions,
        clock=clock,
        system_keys=system_keys,
        usage=usage,
    )
    flood = FailureFlood(sessions=sessions, audit=audit, clock=clock, **_flood_limits(settings))
    fetcher = CredentialFetcher(
        engine=engine,
        keyring=keyring,
        system_keys=system_keys,
        audit=audit,
        writer=writer,
        clock=clock,
        usage=usage,
        flood=flood,
        **_fetch_limits(settings),
    )
    runtime = Runtime(
        settings=settings,
        engine=engine,
        sessions=sessions,
        readonly_sessions=session_factory(readonly(engine)),
        clock=clock,
        provider=provider,
        keyring=keyring,
        system_keys=system_keys,
        passwords=_passwords(settings),
        audit_writer=writer,
        audit=audit,
        usage=usage,
        fetcher=fetcher,
        flood=flood,
    )
    # Rows older than their MAC columns (migration 0003d) are stamped once, here: the
    # migration cannot reach the root key (docs/keys.md, "Row MACs").
    backfill_macs(sessions, row_macs(system_keys), audit=audit, now=clock.now())
    seal_audit_head(sessions, audit=audit, now=clock.now())
    if start_writer:
        writer.start()
        flood.start()
    return runtime


def _load_system_keys(sessions: SessionFactory, provider: KeyProvider) -> SystemKeys:
    with unit_of_work(sessions) as session:
        return SystemKeys.load(session, provider)


def _passwords(settings: Settings) -> Passwords:
    return Passwords(
        memory_budget_mib=settings.argon2_memory_budget_mib,
        wait_seconds=settings.argon2_wait_seconds,
    )


def _fetch_limits(settings: Settings) -> dict[str, Any]:
    return {
        "rate_limit_per_minute": settings.runner_rate_limit_per_minute,
        "lease_ttl_seconds": settings.lease_ttl_seconds,
        # How long a fetch waits for its read and for its audit event to be durable.
        "audit_timeout": settings.db_statement_timeout_seconds or 60.0,
        "cache_size": settings.fetch_cache_size,
    }


def _flood_limits(settings: Settings) -> dict[str, int]:
    return {
        "window_seconds": settings.unauth_window_seconds,
        "limit": settings.unauth_failures_per_window,
        "audited": settings.unauth_audited_per_window,
    }


def db_timeouts(settings: Settings) -> DbTimeouts:
    return DbTimeouts(
        connect=settings.db_connect_timeout_seconds,
        statement=settings.db_statement_timeout_seconds,
        pool=settings.db_pool_timeout_seconds,
    )


def engine_for(settings: Settings, *, pool_size: int = 1) -> Engine:
    """An engine on the configured database, with the configured timeouts and paging:
    the one way a process (server or CLI command) opens its database."""
    return make_engine(
        settings.sqlalchemy_url,
        pool_size=pool_size,
        paging=SqlitePaging(cache_mib=settings.sqlite_cache_mib, mmap_mib=settings.sqlite_mmap_mib),
        timeouts=db_timeouts(settings),
    )


def _open_engine(settings: Settings) -> Engine:
    """The process's one pool, on a database whose schema is current."""
    # The API's share (half the thread pool) and two for the audit writer (its
    # transactions and the connection its one-statement batch keeps).
    engine = engine_for(settings, pool_size=max(8, settings.threadpool_size // 2) + 2)
    if current_revision(engine) is None:
        engine.dispose()
        raise NotInitialised("the database has no schema: run `linevault init` first")
    if current_revision(engine) != head_revision():
        engine.dispose()
        raise NotInitialised("the database schema is not current: run `linevault migrate`")
    return engine


def _head_board(settings: Settings) -> HeadBoard | None:
    """The host's shared audit head, in the data directory (None without one: each
    process then starts from the head it wrote last)."""
    try:
        return HeadBoard(settings.data_dir / HEAD_BOARD_FILE)
    except OSError as exc:
        log.warning("audit head file unavailable: %s", type(exc).__name__)
        return None


def _audit(
    settings: Settings,
    *,
    engine: Engine,
    sessions: SessionFactory,
    clock: Clock,
    system_keys: SystemKeys,
    usage: UsageCounter,
) -> tuple[AuditWriter, AuditTrail]:
    """The group-commit writer, complete (hooks, one-statement batch), and the trail."""
    checkpointer = checkpointer_for(settings, system_keys, clock)
    seal = checkpointer.head_seal
    fast = (
        None
        if is_sqlite(engine)
        else PgFastBatch(
            engine,
            checkpointer=checkpointer,
            seal=seal,
            usage=usage,
            board=_head_board(settings),
        )
    )
    writer = AuditWriter(
        sessions,
        clock=clock,
        seal=seal,
        batch_max=settings.audit_batch_max,
        linger_seconds=settings.audit_batch_linger_ms / 1000,
        hooks=[checkpointer.batch_hook, usage.hook],
        fast=fast,
        idle_hook=lambda: checkpointer.idle(sessions),
    )
    return writer, AuditTrail(writer, clock=clock, checkpointer=checkpointer)
