"""Audit-safe references to secret identifiers (session ids, token ids, challenge ids).

A bearer token, a session id or an MFA challenge id is itself a credential: whoever reads
it from the audit trail could replay it. Events therefore carry a keyed HMAC of such an
identifier instead (like HashiCorp Vault's audit devices): stable, so a reviewer can
correlate every event of one session, but useless to anyone without the service's HMAC
key, and not reversible by guessing because the key is secret.
"""

from __future__ import annotations

import re

from vault.keys.system import SystemKeys

__all__ = ["secret_ref"]

_KIND = re.compile(r"^[a-z][a-z0-9_-]{0,15}$")


def secret_ref(keys: SystemKeys, *, kind: str, value: str | bytes) -> str:
    """``<kind>:hmac:<24 hex>``, e.g. ``session:hmac:3f1c...``; 96 bits, enough to correlate."""
    if not _KIND.match(kind):
        raise ValueError("invalid reference kind")
    raw = value.encode() if isinstance(value, str) else value
    digest = keys.mac("audit-ref/" + kind, raw)
    return f"{kind}:hmac:{digest[:12].hex()}"
