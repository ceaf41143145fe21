"""Credential expiry: the ``expiring_within`` window and the warning on expired fetches.

Platforms such as Instagram hand out tokens that die on a known date. The vault keeps
that date as line metadata so owners can list what is about to expire, and the fetch
path (owned by the runners capability) asks :func:`fetch_expiry_reason` on each fetch:
an expired credential is still returned (the vault does not second-guess the platform),
but the fetch's audit event carries ``reason="credential_expired"`` so reviewers and
alerting see it, at no extra database write.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Final

from vault.errors import Unprocessable

__all__ = [
    "EXPIRED_FETCH_REASON",
    "MAX_WINDOW",
    "fetch_expiry_reason",
    "is_expired",
    "parse_window",
]

EXPIRED_FETCH_REASON: Final = "credential_expired"
MAX_WINDOW: Final = timedelta(days=3650)

_WINDOW = re.compile(r"([0-9]{1,7})([smhdw])")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_window(text: str, *, field: str = "expiring_within") -> timedelta:
    """``30m``, ``12h``, ``7d`` (also ``s`` and ``w``) -> a positive timedelta up to 10 years."""
    match = _WINDOW.fullmatch(text.strip()) if len(text) <= 16 else None
    if match is None:
        raise Unprocessable(
            f"invalid value for: {field} (a number and a unit: s, m, h, d or w; e.g. 7d)",
            field=field,
        )
    window = timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    if window <= timedelta(0) or window > MAX_WINDOW:
        raise Unprocessable(f"invalid value for: {field} (between 1s and 3650d)", field=field)
    return window


def is_expired(expires_at: datetime | None, *, now: datetime) -> bool:
    return expires_at is not None and expires_at <= now


def fetch_expiry_reason(expires_at: datetime | None, *, now: datetime) -> str | None:
    """The ``reason`` to put on a ``credential.fetch`` event: set once the credential expired."""
    return EXPIRED_FETCH_REASON if is_expired(expires_at, now=now) else None
