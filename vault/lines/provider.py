"""A line's standing with its platform: the check's outcome as the line row keeps it.

The columns (migration 0004g) hold ``provider_status``, ``account`` (JSON text of what
the platform says the credential belongs to), ``checked_at``; ``last_refreshed_at`` is
for the Instagram refresher and ``last_fetched_at`` is not written by the fetch (see
docs/connectors.md: the hot path stays one read and one audit event).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from vault.connectors import CheckOutcome
from vault.errors import CredentialRejected
from vault.keys.keyring import KeyRing
from vault.lines.schemas import ParsedCredential
from vault.storage.models import Line

__all__ = ["account_of", "apply_outcome", "credential_fields", "open_line", "refuse_rejected"]


def credential_fields(parsed: ParsedCredential) -> dict[str, Any]:
    """The validated credential as the connectors read it (from its canonical JSON)."""
    fields: dict[str, Any] = json.loads(parsed.plaintext)
    return fields


def refuse_rejected(outcome: CheckOutcome) -> None:
    """On create and replace, a definite refusal stores nothing: 422."""
    if outcome.rejected is not None:
        raise CredentialRejected(outcome.rejected.field, outcome.rejected.reason)


def apply_outcome(line: Line, outcome: CheckOutcome, *, now: datetime) -> None:
    """Keep the outcome on the row. The account is replaced only by a definite ``ok``
    (a refused or unreachable check keeps what the platform said before)."""
    line.provider_status = outcome.status
    if outcome.account is not None:
        line.account = json.dumps(dict(outcome.account), sort_keys=True, separators=(",", ":"))
    if outcome.checked:
        line.checked_at = now


def account_of(line: Line) -> Mapping[str, str] | None:
    if not line.account:
        return None
    value = json.loads(line.account)
    return value if isinstance(value, dict) else None


def open_line(session: Session, keyring: KeyRing, line: Line) -> dict[str, Any]:
    """The current credential of an active line, opened for a check (never returned)."""
    if line.wrapped_dek is None or line.ciphertext is None or line.kek_version is None:
        raise ValueError("the line holds no credential")
    kek = keyring.load_kek(session, tenant_id=line.tenant_id, version=line.kek_version, lock=False)
    plaintext = keyring.open_credential(
        kek=kek,
        kek_version=line.kek_version,
        tenant_id=line.tenant_id,
        line_id=line.id,
        line_type=line.type,
        credential_version=line.version,
        wrapped_dek=line.wrapped_dek,
        ciphertext=line.ciphertext,
    )
    fields: dict[str, Any] = json.loads(plaintext)
    return fields
