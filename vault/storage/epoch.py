"""Reading (and, where no trigger does, moving) the authorization epoch (see
:class:`vault.storage.models.AuthzEpoch`)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

__all__ = ["EPOCH_SQL", "bump_epoch", "read_epoch"]

EPOCH_SQL = "SELECT n FROM authz_epoch WHERE id = 1"
_EPOCH = text(EPOCH_SQL)
_BUMP = text("UPDATE authz_epoch SET n = n + 1 WHERE id = 1")


def read_epoch(session: Session) -> int:
    return int(session.connection().execute(_EPOCH).scalar_one())


def bump_epoch(session: Session) -> None:
    """Move the epoch in ``session``'s transaction. The triggers of migration 0002 move it
    on UPDATE and DELETE only (a new row cannot make a cached allowing decision wrong);
    a new ``full`` grant beside a cached ``use`` one changes what the fetch serves, so
    creating a grant moves it explicitly."""
    session.connection().execute(_BUMP)
