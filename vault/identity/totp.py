"""TOTP (RFC 6238) matching and single-use consumption.

:func:`match_step` tells which time step a code belongs to (within ±``window`` steps of
the injected clock), comparing in constant time; :func:`consume_step` then records that
step with an atomic compare-and-set on ``users.totp_last_step``, so a code, or any
older code, is accepted at most once per user even when several server processes see it
at the same moment (RFC 6238 §5.2). The clock is always passed in, never read here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pyotp
from sqlalchemy import or_, update
from sqlalchemy.orm import Session

from vault.storage.models import User

__all__ = [
    "DIGITS",
    "INTERVAL",
    "ISSUER",
    "consume_step",
    "match_step",
    "new_secret",
    "provisioning_uri",
]

DIGITS = 6
INTERVAL = 30
ISSUER = "linevault"

_DIGESTS: dict[str, Callable[..., Any]] = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha512": hashlib.sha512,
}


def new_secret() -> str:
    """A 160-bit secret (RFC 4226 §4 recommends 160) from the OS CSPRNG, base32."""
    return base64.b32encode(secrets.token_bytes(20)).decode("ascii")


def provisioning_uri(secret: str, *, email: str) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=INTERVAL).provisioning_uri(
        name=email, issuer_name=ISSUER
    )


def match_step(
    secret: str,
    code: str,
    *,
    now: datetime,
    window: int = 1,
    digits: int = DIGITS,
    algorithm: str = "sha1",
    interval: int = INTERVAL,
) -> int | None:
    """The time step (T) whose code equals ``code``, or None. Constant-time per candidate."""
    if len(code) != digits or not code.isascii() or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret, digits=digits, digest=_DIGESTS[algorithm], interval=interval)
    current = totp.timecode(now)
    matched: int | None = None
    # Check every candidate (no early exit) so timing does not reveal which one matched.
    for step in range(current - window, current + window + 1):
        if step < 0:
            continue
        if hmac.compare_digest(totp.generate_otp(step).encode(), code.encode()) and (
            matched is None
        ):
            matched = step
    return matched


def consume_step(session: Session, *, user_id: str, step: int) -> bool:
    """Atomically mark ``step`` used for ``user_id``; False when it (or a later one) was."""
    result = session.execute(
        update(User)
        .where(
            User.id == user_id,
            or_(User.totp_last_step.is_(None), User.totp_last_step < step),
        )
        .values(totp_last_step=step)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)
