"""Use without reveal: the vault signs with a line's secret so the runner need not hold it.

A grant with ``access: "use"`` gets the credential from the fetch without its signing
material (:data:`vault.lines.schemas.SIGNING_MATERIAL`: ``app_secret``,
``signing_secret``). What the runner needs those for, the vault computes on its behalf:

- ``sign`` (widget lines): HMAC-SHA256 of a message's UTF-8 bytes under the line's
  ``signing_secret``, hex;
- ``appsecret-proof`` (Instagram and Messenger lines with an ``app_secret``): Meta's
  ``appsecret_proof``, HMAC-SHA256 with the app secret as key over the line's access
  token, hex.

Both run through :meth:`vault.runners.CredentialFetcher.use`: the fetch's one read and
its one decision (token, runner, rate limit shared with the fetch, grant and its MAC,
line status and its MAC, :func:`vault.lines.status.state_refusal`), audited as
``credential.sign`` / ``credential.proof`` with the fetch's fields, before the answer is
sent. A ``full`` grant may use them too. A line of another type, or one without an app
secret, is refused with 409 ``conflict`` (audited ``denied``) after the access checks, so
an ungranted line is still 404 whatever its type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kms.crypto import hmac_sha256
from vault.errors import Conflict
from vault.lines.schemas import SIGNING_MATERIAL, canonical_credential
from vault.runners.statement import decode_credential
from vault.runners.usage import PROOF_ACTION, SIGN_ACTION

__all__ = [
    "PROOF",
    "LineUse",
    "UsedCredential",
    "sign_use",
    "without_signing_material",
]

# Refusal reasons, audited with outcome ``denied``.
WRONG_TYPE = "wrong_line_type"
NO_APP_SECRET = "no_app_secret"  # noqa: S105 (a reason, not a secret)

_MARKERS = tuple(f'"{name}"'.encode() for name in SIGNING_MATERIAL)
# The access token Meta's appsecret_proof is computed over, per line type.
_TOKEN_FIELD = {"instagram": "access_token", "messenger": "page_access_token"}


def without_signing_material(plaintext: bytes) -> bytes:
    """The sealed credential as a ``use`` grant's fetch returns it (canonical JSON)."""
    if not any(marker in plaintext for marker in _MARKERS):
        return plaintext
    doc = decode_credential(plaintext)
    return canonical_credential({k: v for k, v in doc.items() if k not in SIGNING_MATERIAL})


@dataclass(frozen=True, slots=True)
class LineUse:
    """One way of using a line's secret: its audit action, the line types it applies to
    and the computation (the opened credential in, the answer's fields out; it raises
    :class:`vault.errors.Conflict` when the line lacks what it needs)."""

    action: str
    types: frozenset[str]
    compute: Callable[[str, Mapping[str, Any]], dict[str, str]]
    refusal_detail: str


@dataclass(frozen=True, slots=True)
class UsedCredential:
    """The answer of a use: the line, the version whose secret was used, and the values."""

    line_id: str
    tenant_id: str
    version: int
    values: dict[str, str]

    def __repr__(self) -> str:
        return f"UsedCredential(line_id={self.line_id!r}, version={self.version})"


def sign_use(message: str) -> LineUse:
    """``credential.sign``: HMAC-SHA256 of ``message`` (UTF-8) under ``signing_secret``."""
    data = message.encode()

    def compute(_type: str, credential: Mapping[str, Any]) -> dict[str, str]:
        secret = credential.get("signing_secret")
        if not isinstance(secret, str) or not secret:
            raise Conflict("this line has no signing secret")
        return {"algorithm": "HMAC-SHA256", "signature": hmac_sha256(secret.encode(), data).hex()}

    return LineUse(
        action=SIGN_ACTION,
        types=frozenset({"widget"}),
        compute=compute,
        refusal_detail="only widget lines sign messages",
    )


def _appsecret_proof(line_type: str, credential: Mapping[str, Any]) -> dict[str, str]:
    secret = credential.get("app_secret")
    token = credential.get(_TOKEN_FIELD[line_type])
    if not isinstance(secret, str) or not secret:
        raise Conflict("this line has no app_secret")
    if not isinstance(token, str) or not token:
        raise Conflict("this line has no access token")
    return {"appsecret_proof": hmac_sha256(secret.encode(), token.encode()).hex()}


# ``credential.proof``: Meta's appsecret_proof for the line's access token.
PROOF = LineUse(
    action=PROOF_ACTION,
    types=frozenset(_TOKEN_FIELD),
    compute=_appsecret_proof,
    refusal_detail="only instagram and messenger lines have an appsecret_proof",
)
