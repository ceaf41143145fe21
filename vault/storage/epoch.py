"""Reading the authorization epoch (see :class:`vault.storage.models.AuthzEpoch`)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

__all__ = ["EPOCH_SQL", "read_epoch"]

EPOCH_SQL = "SELECT n FROM authz_epoch WHERE id = 1"
_EPOCH = text(EPOCH_SQL)


def read_epoch(session: Session) -> int:
    return int(session.connection().execute(_EPOCH).scalar_one())
