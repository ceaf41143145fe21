"""Workflow runners: machine identities, their grants and the audited credential fetch."""

from __future__ import annotations

import threading

from vault.runners.fetch import CredentialFetcher, FetchedCredential
from vault.runners.grants import GrantService, GrantView
from vault.runners.pgbatch import PgFastBatch
from vault.runners.reader import pg_conninfo
from vault.runners.registry import IssuedToken, NewRunner, RunnerRegistry, TokenIssuer
from vault.runners.usage import UsageCounter
from vault.runtime import Runtime
from vault.storage.engine import is_sqlite

__all__ = [
    "CredentialFetcher",
    "FetchedCredential",
    "GrantService",
    "GrantView",
    "IssuedToken",
    "NewRunner",
    "RunnerRegistry",
    "TokenIssuer",
    "fetcher_for",
]

_LOCK = threading.Lock()
_KEY = "runners.fetcher"


def fetcher_for(runtime: Runtime) -> CredentialFetcher:
    """The process's fetcher, built once per runtime with its usage hook on the writer
    (and, on PostgreSQL, the writer's one-statement fast path for fetch batches).

    Built lazily so the composition root needs no knowledge of runners; the hook is
    registered exactly once per runtime (and so once per audit writer).
    """
    fetcher = runtime.extras.get(_KEY)
    if isinstance(fetcher, CredentialFetcher):
        return fetcher
    with _LOCK:
        fetcher = runtime.extras.get(_KEY)
        if isinstance(fetcher, CredentialFetcher):
            return fetcher
        settings = runtime.settings
        usage = UsageCounter(runtime.clock)
        runtime.audit_writer.add_hook(usage.hook)
        if not is_sqlite(runtime.engine):
            fast = PgFastBatch(
                pg_conninfo(runtime.engine),
                checkpointer=runtime.audit.checkpointer,
                usage=usage,
            )
            runtime.audit_writer.set_fast(fast)
        fetcher = CredentialFetcher(
            engine=runtime.engine,
            keyring=runtime.keyring,
            system_keys=runtime.system_keys,
            audit=runtime.audit,
            writer=runtime.audit_writer,
            clock=runtime.clock,
            usage=usage,
            rate_limit_per_minute=settings.runner_rate_limit_per_minute,
            lease_ttl_seconds=settings.lease_ttl_seconds,
            cache_size=settings.fetch_cache_size,
        )
        runtime.extras[_KEY] = fetcher
        return fetcher
