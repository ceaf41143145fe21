"""Workflow runners: machine identities, their grants and the audited credential fetch."""

from __future__ import annotations

import threading

from vault.runners.fetch import CredentialFetcher, FetchedCredential, usage_hook
from vault.runners.grants import GrantService, GrantView
from vault.runners.registry import IssuedToken, NewRunner, RunnerRegistry, TokenIssuer
from vault.runtime import Runtime

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
    """The process's fetcher, built once per runtime with its usage hook on the writer.

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
        runtime.audit_writer.add_hook(usage_hook(runtime.clock))
        fetcher = CredentialFetcher(
            engine=runtime.engine,
            keyring=runtime.keyring,
            system_keys=runtime.system_keys,
            audit=runtime.audit,
            writer=runtime.audit_writer,
            clock=runtime.clock,
            rate_limit_per_minute=settings.runner_rate_limit_per_minute,
            lease_ttl_seconds=settings.lease_ttl_seconds,
        )
        runtime.extras[_KEY] = fetcher
        return fetcher
