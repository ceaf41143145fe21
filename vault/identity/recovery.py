"""Single-use recovery codes, the way back in when the authenticator is lost.

Ten codes of 10 characters from a 32-letter alphabet (50 bits each) are shown once at
enrollment; only an HMAC of each (purpose-bound key) is stored, which is enough for
codes with this much entropy and keeps the lookup to one indexed query. Using a code is
an atomic ``UPDATE ... WHERE used_at IS NULL`` so it works once, even under races.
"""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from vault.ids import new_id
from vault.keys.system import SystemKeys
from vault.storage.models import RecoveryCode

__all__ = ["RECOVERY_CODE_COUNT", "RecoveryCodes", "looks_like_recovery_code"]

RECOVERY_CODE_COUNT = 10
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no look-alikes (0/o, 1/l/i)
_GROUP = 5


def _normalize(code: str) -> str:
    return code.strip().lower().replace("-", "").replace(" ", "")


def looks_like_recovery_code(code: str) -> bool:
    plain = _normalize(code)
    return len(plain) == 2 * _GROUP and all(c in _ALPHABET for c in plain)


class RecoveryCodes:
    def __init__(self, *, system_keys: SystemKeys) -> None:
        self._keys = system_keys

    def _hash(self, user_id: str, code: str) -> str:
        message = f"{user_id}\n{_normalize(code)}".encode()
        return self._keys.mac("recovery-code", message).hex()

    def issue(self, session: Session, *, user_id: str) -> list[str]:
        """Replace the user's codes with ten new ones; returns them for one display."""
        session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
        codes: list[str] = []
        for _ in range(RECOVERY_CODE_COUNT):
            raw = "".join(secrets.choice(_ALPHABET) for _ in range(2 * _GROUP))
            code = f"{raw[:_GROUP]}-{raw[_GROUP:]}"
            codes.append(code)
            session.add(
                RecoveryCode(id=new_id("rcv"), user_id=user_id, code_hash=self._hash(user_id, code))
            )
        session.flush()
        return codes

    def consume(self, session: Session, *, user_id: str, code: str, now: datetime) -> bool:
        if not looks_like_recovery_code(code):
            return False
        result = session.execute(
            update(RecoveryCode)
            .where(
                RecoveryCode.user_id == user_id,
                RecoveryCode.code_hash == self._hash(user_id, code),
                RecoveryCode.used_at.is_(None),
            )
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    def clear(self, session: Session, *, user_id: str) -> None:
        session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
