"""linevault-client: the runner client of linevault (httpx; sync and async).

Usage::

    from linevault_client import RunnerClient

    with RunnerClient("https://vault.internal", client_id, client_secret) as vault:
        cred = vault.fetch(tenant_id, line_id, workflow_id="wf-1", run_id="run-9")
        bot_token = cred.credential["bot_token"]

What it does for the caller:

- OAuth 2.0 client credentials: gets a token on first use, renews it shortly before it
  expires and once more when the server says it is no longer valid (rotated secret,
  revoked token), then gives up with :class:`AuthenticationError`.
- An in-memory cache per (tenant, line), bounded in size and by the server's
  ``lease_ttl`` (and by the credential's own ``expires_at``); ``lease_ttl`` 0 disables it.
  A cached answer may be used for up to ``lease_ttl`` seconds after a revocation, which
  is what the lease means.
- Use without reveal: ``sign()`` (widget lines) and ``appsecret_proof()`` (Instagram,
  Messenger) have the vault compute with a secret that a ``use`` grant's fetch leaves
  out; never cached, each call audited by the vault.
- Retries (through ``stamina``) with exponential backoff and jitter on 429 (honouring
  ``Retry-After``), 502, 503, 504 and connection errors; typed errors for the rest.

Modules: ``_core`` (sans-I/O: every request built and every response read there),
``_sync``/``_async`` (the drivers), ``errors``. Helpers that do not fetch live in modules
of their own beside these and are exported below (the webhook signature helper:
``linevault_client.webhooks``).
"""

from linevault_client._async import AsyncRunnerClient
from linevault_client._core import AppSecretProof, Credential, Signature
from linevault_client._sync import RunnerClient
from linevault_client.errors import (
    AuditUnavailable,
    AuthenticationError,
    LinevaultError,
    NotGranted,
    RateLimited,
    Revoked,
    ServiceUnavailable,
    Suspended,
)

__all__ = [
    "AppSecretProof",
    "AsyncRunnerClient",
    "AuditUnavailable",
    "AuthenticationError",
    "Credential",
    "LinevaultError",
    "NotGranted",
    "RateLimited",
    "Revoked",
    "RunnerClient",
    "ServiceUnavailable",
    "Signature",
    "Suspended",
]

# Helper modules beside the fetch client, one module each:
# - linevault_client.webhooks: verify Standard Webhooks deliveries and drop cached
#   credentials on revocation (WebhookReceiver, InvalidDelivery).
