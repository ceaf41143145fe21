"""Failure throttling for passwords and second-factor codes (RFC 4226 §7, ASVS V6.3).

Counters live in the ``throttles`` table so every server process sees the same state.
From the ``free_failures``-th failure on, each one doubles a delay (1 s, 2 s, 4 s, ...) capped at
``max_delay_seconds``: guessing gets slow fast, yet an attacker can never lock an
account out for longer than the cap. A counter forgets its failures once it has been
quiet for ``decay_seconds``.

Failures are written in their own short transaction (the failed request rolls back);
callers pass a session they will commit themselves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from vault.errors import RateLimited
from vault.storage.models import Throttle

__all__ = ["Throttler"]


class Throttler:
    def __init__(
        self, *, free_failures: int = 5, max_delay_seconds: int = 900, decay_seconds: int = 3600
    ) -> None:
        self._free = free_failures
        self._max = max_delay_seconds
        self._decay = timedelta(seconds=decay_seconds)

    def delay_for(self, failures: int) -> int:
        """Seconds a key is blocked after its ``failures``-th failure (0 while still free)."""
        over = failures - self._free
        if over < 0:
            return 0
        return int(min(self._max, 2 ** min(over, 30)))

    def check(self, session: Session, keys: Sequence[str], *, now: datetime) -> None:
        """Raise ``RateLimited`` when any key is still blocked."""
        rows = session.execute(
            select(Throttle.blocked_until).where(
                Throttle.key.in_(list(keys)), Throttle.blocked_until > now
            )
        ).scalars()
        until = max((r for r in rows if r is not None), default=None)
        if until is not None:
            wait = math.ceil((until - now).total_seconds())
            raise RateLimited(retry_after=max(1, wait))

    def fail(self, session: Session, keys: Sequence[str], *, now: datetime) -> int:
        """Count one failure against every key; return the longest resulting delay."""
        longest = 0
        dialect = session.get_bind().dialect.name
        for key in sorted(set(keys)):  # sorted: a stable lock order across processes
            ins = (pg_insert if dialect == "postgresql" else sqlite_insert)(Throttle).values(
                key=key, failures=0, last_failure_at=None, blocked_until=None
            )
            session.execute(ins.on_conflict_do_nothing(index_elements=["key"]))
            row = session.execute(
                select(Throttle).where(Throttle.key == key).with_for_update()
            ).scalar_one()
            session.refresh(row)
            failures = row.failures
            if row.last_failure_at is not None and now - row.last_failure_at > self._decay:
                failures = 0
            failures += 1
            delay = self.delay_for(failures)
            row.failures = failures
            row.last_failure_at = now
            row.blocked_until = now + timedelta(seconds=delay) if delay else None
            longest = max(longest, delay)
        session.flush()
        return longest

    def reset(self, session: Session, keys: Sequence[str]) -> None:
        """Forget the failures of ``keys`` (an account key after a success)."""
        session.execute(delete(Throttle).where(Throttle.key.in_(list(keys))))
