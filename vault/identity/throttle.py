"""Failure throttling for passwords and second-factor codes (RFC 4226 §7, ASVS V6.3).

Counters live in the ``throttles`` table so every server process sees the same state.
From the ``free_failures``-th failure on, each one doubles a delay (1 s, 2 s, 4 s, ...) capped at
``max_delay_seconds``: guessing gets slow fast, yet an attacker can never lock an
account out for longer than the cap. A counter forgets its failures once it has been
quiet for ``decay_seconds``.

An attempt is *reserved* before any password or code is checked: one
``INSERT ... ON CONFLICT DO UPDATE ... WHERE not blocked ... RETURNING`` per key counts
it as a failure and sets the block that failure earns, in the same statement. A key that
is blocked is neither updated nor returned, so the attempt is refused. The database
serialises the statement per key (a row lock on PostgreSQL, the write lock on SQLite), so
N concurrent guesses cost N reservations and at most the free ones are evaluated, on
every process. A success then :meth:`releases <Throttler.release>` its reservation
(or :meth:`resets <Throttler.reset>` the account key), so an honest login costs nothing.

Callers pass a session and commit it themselves: a reservation must be committed before
the check it guards, so that other processes see it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, delete, literal, null, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from vault.errors import RateLimited
from vault.storage.models import Throttle
from vault.storage.types import UTCDateTime

__all__ = ["Reservation", "Throttler"]


@dataclass(frozen=True, slots=True)
class Reservation:
    """One attempt's counted failures: per key, the count and block it set."""

    keys: tuple[str, ...]
    counts: tuple[int, ...]
    blocks: tuple[datetime | None, ...]


class Throttler:
    def __init__(
        self,
        *,
        free_failures: int = 5,
        max_delay_seconds: int = 900,
        decay_seconds: int = 3600,
        first_delay_seconds: int = 1,
    ) -> None:
        self._free = free_failures
        self._max = max_delay_seconds
        self._first = first_delay_seconds
        self._decay = timedelta(seconds=decay_seconds)

    def delay_for(self, failures: int) -> int:
        """Seconds a key is blocked after its ``failures``-th failure (0 while still free)."""
        over = failures - self._free
        if over < 0:
            return 0
        return int(min(self._max, self._first * 2 ** min(over, 30)))

    def check(self, session: Session, keys: Sequence[str], *, now: datetime) -> None:
        """Raise ``RateLimited`` when any key is still blocked (a read: no reservation)."""
        rows = session.execute(
            select(Throttle.blocked_until).where(
                Throttle.key.in_(list(keys)), Throttle.blocked_until > now
            )
        ).scalars()
        until = max((r for r in rows if r is not None), default=None)
        if until is not None:
            wait = math.ceil((until - now).total_seconds())
            raise RateLimited(retry_after=max(1, wait))

    def reserve(self, session: Session, keys: Sequence[str], *, now: datetime) -> Reservation:
        """Count one attempt against every key, atomically, unless a key is blocked.

        Raises ``RateLimited`` (after rolling ``session`` back, so no key keeps a count
        for an attempt that is refused) when any key is blocked.
        """
        ordered = tuple(sorted(set(keys)))  # sorted: a stable lock order across processes
        counts: list[int] = []
        blocks: list[datetime | None] = []
        for key in ordered:
            row = session.execute(self._upsert(session, key, now, only_if_free=True)).first()
            if row is None:
                session.rollback()
                try:
                    self.check(session, ordered, now=now)
                finally:
                    session.rollback()  # no lock held while the refusal is audited
                raise RateLimited(retry_after=1)  # the block ended meanwhile
            counts.append(int(row.failures))
            blocks.append(row.blocked_until)
        return Reservation(keys=ordered, counts=tuple(counts), blocks=tuple(blocks))

    def fail(self, session: Session, keys: Sequence[str], *, now: datetime) -> int:
        """Count one failure against every key (no reservation was made); returns the
        longest resulting delay."""
        longest = 0
        for key in sorted(set(keys)):
            row = session.execute(self._upsert(session, key, now, only_if_free=False)).one()
            longest = max(longest, self.delay_for(int(row.failures)))
        return longest

    def release(self, session: Session, reservation: Reservation, keys: Sequence[str]) -> None:
        """Give back ``keys``' reservations (a success): one count less, and the block the
        reservation set is lifted unless another attempt was counted since."""
        for key, count, block in zip(
            reservation.keys, reservation.counts, reservation.blocks, strict=True
        ):
            if key not in keys:
                continue
            ours = and_(Throttle.failures == count, Throttle.blocked_until == self._at(block))
            session.execute(
                update(Throttle)
                .where(Throttle.key == key, Throttle.failures > 0)
                .values(
                    failures=Throttle.failures - 1,
                    blocked_until=case((ours, null()), else_=Throttle.blocked_until),
                )
                .execution_options(synchronize_session=False)
            )

    def reset(self, session: Session, keys: Sequence[str]) -> None:
        """Forget the failures of ``keys`` (an account key after a success)."""
        session.execute(delete(Throttle).where(Throttle.key.in_(list(keys))))

    # -- the one statement ----------------------------------------------------------------

    @staticmethod
    def _at(value: datetime | None) -> ColumnElement[Any]:
        return literal(value, UTCDateTime()) if value is not None else null()

    def _block_after(self, failures: ColumnElement[Any], now: datetime) -> ColumnElement[Any]:
        """``blocked_until`` after the ``failures``-th failure at ``now``, as SQL: a CASE
        over the few counts whose delay is below the cap (no date arithmetic in SQL)."""
        whens: list[tuple[ColumnElement[bool], ColumnElement[Any]]] = [
            (failures < self._free, null())
        ]
        n = self._free
        while self.delay_for(n) < self._max:
            whens.append((failures == n, self._at(now + timedelta(seconds=self.delay_for(n)))))
            n += 1
        return case(*whens, else_=self._at(now + timedelta(seconds=self._max)))

    def _upsert(self, session: Session, key: str, now: datetime, *, only_if_free: bool) -> Any:
        dialect = session.get_bind().dialect.name
        ins = (pg_insert if dialect == "postgresql" else sqlite_insert)(Throttle).values(
            key=key,
            failures=1,
            last_failure_at=now,
            blocked_until=self._block_after(literal(1), now),
        )
        quiet = Throttle.last_failure_at < self._at(now - self._decay)
        counted = case((quiet, 1), else_=Throttle.failures + 1)
        free = or_(Throttle.blocked_until.is_(None), Throttle.blocked_until <= self._at(now))
        return ins.on_conflict_do_update(
            index_elements=["key"],
            set_={
                "failures": counted,
                "last_failure_at": self._at(now),
                "blocked_until": self._block_after(counted, now),
            },
            where=free if only_if_free else None,
        ).returning(Throttle.failures, Throttle.blocked_until)
