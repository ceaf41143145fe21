"""Refresh leases: who may refresh a line's platform token now, fenced.

One ``refresh_leases`` row per line (migration 0005a). A process claims it with ONE
conditional statement, the same on SQLite and PostgreSQL::

    INSERT INTO refresh_leases (line_id, owner, fencing, expires_at, failures)
    VALUES (:line, :me, 1, :now + ttl, 0)
    ON CONFLICT (line_id) DO UPDATE
        SET owner = excluded.owner, fencing = refresh_leases.fencing + 1,
            expires_at = excluded.expires_at
        WHERE refresh_leases.expires_at < :now [AND the back-off has passed]
    RETURNING fencing

It returns the new fencing version when the claim won and nothing when a live lease is
there. On PostgreSQL a concurrent claimer waits for the row lock of the winner and then
re-evaluates the WHERE on the winner's row (so it loses); SQLite serializes writers
(``BEGIN IMMEDIATE``). Every claim increases ``fencing``.

The commit of a refreshed token runs :func:`release_lease` in its own transaction
(``UPDATE ... WHERE line_id = ? AND owner = ? AND fencing = ?``): a holder whose lease
ran out and was claimed by another process (fencing + 1) updates nothing and must not
commit. That UPDATE also locks the lease row until the commit, so a claim racing with
the commit sees the committed token. A process killed while holding a lease leaves it
behind; it lapses after its TTL and another process claims it.

This is the opposite of a lock with a TTL and an unconditional release (Nango's Redis
lock, docs/connectors.md): there, a holder that outlived its TTL deletes somebody
else's lock and both write.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Table, and_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from vault.storage.models import RefreshLease

__all__ = ["RELEASED", "Lease", "claim_lease", "failures_of", "lease_failed", "release_lease"]

#: ``expires_at`` of a released lease: long past, so the next claim wins at once.
RELEASED = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Lease:
    line_id: str
    owner: str
    fencing: int


def claim_lease(
    session: Session,
    line_id: str,
    *,
    owner: str,
    now: datetime,
    ttl: timedelta,
    respect_backoff: bool,
) -> Lease | None:
    """Claim the line's lease if nobody holds a live one (and, with ``respect_backoff``,
    the back-off of earlier failures has passed); the lease, or None."""
    table = RefreshLease.__table__
    assert isinstance(table, Table)
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(table).values(
        line_id=line_id, owner=owner, fencing=1, expires_at=now + ttl, failures=0
    )
    free = table.c.expires_at < now
    if respect_backoff:
        free = and_(free, or_(table.c.next_attempt_at.is_(None), table.c.next_attempt_at <= now))
    upsert = stmt.on_conflict_do_update(
        index_elements=[table.c.line_id],
        set_={
            "owner": stmt.excluded.owner,
            "fencing": table.c.fencing + 1,
            "expires_at": stmt.excluded.expires_at,
        },
        where=free,
    ).returning(table.c.fencing)
    fencing = session.execute(upsert).scalar_one_or_none()
    return Lease(line_id, owner, int(fencing)) if fencing is not None else None


def release_lease(session: Session, lease: Lease, *, end_streak: bool = True) -> bool:
    """In the transaction that commits the refresh: still ours? Then release it (and, with
    ``end_streak``, end any failure streak). False: taken over, commit nothing."""
    values: dict[str, object] = {"expires_at": RELEASED}
    if end_streak:
        values.update(failures=0, next_attempt_at=None)
    result = session.execute(
        update(RefreshLease)
        .where(
            RefreshLease.line_id == lease.line_id,
            RefreshLease.owner == lease.owner,
            RefreshLease.fencing == lease.fencing,
        )
        .values(**values)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


def lease_failed(
    session: Session, lease: Lease, *, now: datetime, delay_for: Callable[[int], float]
) -> int | None:
    """A failed attempt by the holder: count it, set the next attempt ``delay_for(n)``
    seconds out (n: failures in a row), release. The count, or None if not ours."""
    row = session.execute(
        select(RefreshLease)
        .where(
            RefreshLease.line_id == lease.line_id,
            RefreshLease.owner == lease.owner,
            RefreshLease.fencing == lease.fencing,
        )
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if row is None:
        return None
    row.failures += 1
    row.next_attempt_at = now + timedelta(seconds=delay_for(row.failures))
    row.expires_at = RELEASED
    session.flush()
    return row.failures


def failures_of(session: Session, line_id: str) -> int:
    """Failed attempts in a row so far (0: none, or never tried)."""
    count = session.execute(
        select(RefreshLease.failures).where(RefreshLease.line_id == line_id)
    ).scalar_one_or_none()
    return int(count or 0)
