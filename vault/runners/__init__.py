"""Workflow runners: machine identities, their grants and the audited credential fetch.

The process's one :class:`CredentialFetcher` is built by the composition root
(:func:`vault.runtime.open_runtime`) and reached as ``runtime.fetcher``.
"""

from __future__ import annotations

from vault.runners.fetch import CredentialFetcher, FetchedCredential
from vault.runners.grants import GrantService, GrantView
from vault.runners.registry import IssuedToken, NewRunner, RunnerRegistry, TokenIssuer
from vault.runners.usage import UsageCounter

__all__ = [
    "CredentialFetcher",
    "FetchedCredential",
    "GrantService",
    "GrantView",
    "IssuedToken",
    "NewRunner",
    "RunnerRegistry",
    "TokenIssuer",
    "UsageCounter",
]
