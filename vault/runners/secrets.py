"""Formats and keyed hashes of runner client secrets and access tokens.

Both are 256-bit random values, so a fast keyed hash (HMAC-SHA256 under a key derived
from the system HMAC root) is the right way to store them: guessing is hopeless, and a
stolen database without the root key cannot even test a guess. Argon2 would only add
latency to every token request. The readable prefixes let secret scanners recognise a
leaked value and let the fetch path tell a runner token from a human session at a glance.
"""

from __future__ import annotations

import re

from kms.crypto import hkdf_sha256
from vault.ids import new_id, new_token
from vault.keys.system import SystemKeys

__all__ = [
    "CLIENT_ID_PREFIX",
    "CLIENT_SECRET_PREFIX",
    "RUNNER_TOKEN_PREFIX",
    "TOKEN_PURPOSE",
    "client_id_for_audit",
    "looks_like_runner_token",
    "new_client_secret",
    "new_runner_token",
    "secret_hash",
    "token_hash",
    "token_mac_key",
]

CLIENT_ID_PREFIX = "rnc"
_CLIENT_ID = re.compile(r"rnc_[0-9a-f]{32}")
CLIENT_SECRET_PREFIX = "lvcs_"  # noqa: S105 (a prefix, not a secret)
RUNNER_TOKEN_PREFIX = "lvrt_"  # noqa: S105
_MAX_TOKEN_LENGTH = 256
TOKEN_PURPOSE = "runner-token"  # noqa: S105 - a key label


def new_client_id() -> str:
    return new_id(CLIENT_ID_PREFIX)


def client_id_for_audit(keys: SystemKeys, client_id: str) -> dict[str, str | int | bool | None]:
    """How a presented ``client_id`` is recorded: as given when it has the client id
    format, else only as a keyed reference (it may be the secret, swapped)."""
    if _CLIENT_ID.fullmatch(client_id):
        return {"client_id": client_id}
    return {"client_ref": keys.reference("audit-client-id", client_id)}


def new_client_secret() -> str:
    return new_token(CLIENT_SECRET_PREFIX)


def new_runner_token() -> str:
    return new_token(RUNNER_TOKEN_PREFIX)


def looks_like_runner_token(token: str) -> bool:
    return token.startswith(RUNNER_TOKEN_PREFIX) and len(token) <= _MAX_TOKEN_LENGTH


def secret_hash(keys: SystemKeys, *, runner_id: str, secret: str) -> bytes:
    """Bound to the runner id, so a hash copied onto another runner's row never matches."""
    return keys.mac("runner-secret", runner_id.encode() + b"\n" + secret.encode())


def token_hash(keys: SystemKeys, token: str) -> bytes:
    return keys.mac(TOKEN_PURPOSE, token.encode())


def token_mac_key(keys: SystemKeys) -> bytes:
    """The derived key behind :func:`token_hash`, for the fetch path to derive once.

    Must match ``SystemKeys.mac``'s derivation (a test pins the two together).
    """
    return hkdf_sha256(
        keys.hmac_root, salt=None, info=b"linevault/mac/" + TOKEN_PURPOSE.encode(), length=32
    )
