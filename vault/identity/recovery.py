"""Single-use recovery codes, the way back in when the authenticator is lost.

Ten codes of 24 characters from a 31-letter alphabet (about 119 bits each) are shown
once at enrollment. ASVS 5.0 6.5.2 lets a lookup secret of 112 bits or more be stored
with a standard hash instead of a password hash; only an HMAC of each (purpose-bound
key, bound to the user id) is stored, so the lookup stays one indexed query. Using a code is
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
_GROUP = 6
_GROUPS = 4


def _normalize(code: str) -> str:
    return code.strip().lower().replace("-", "").replace(" ", "")


def looks_like_recovery_code(code: str) -> bool:
    plain = _normalize(code)
    return len(plain) == _GROUPS * _GROUP and all(c in _ALPHABET for c in plain)


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
            raw = "".join(secrets.choice(_ALPHABET) for _ in range(_GROUPS * _GROUP))
            code = "-".join(raw[i : i + _GROUP] for i in range(0, len(raw), _GROUP))
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
