"""What the group-commit writer and its collaborators exchange.

Kept apart from :mod:`vault.audit.writer` so the one-statement batch writer
(:mod:`vault.audit.fastbatch`) and the fetch path depend on these types, not on the
writer thread's machinery.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.orm import Session

from vault.audit.chain import ChainHead
from vault.audit.events import AuditEvent

__all__ = [
    "BatchHook",
    "BatchUsage",
    "Done",
    "FastBatch",
    "StaleDecision",
    "UnknownOutcome",
    "WriteResult",
]

# Called inside the batch transaction after the events are chained (rows include seq and
# hash); used for runner usage counters and signed checkpoints.
BatchHook = Callable[[Session, Sequence[AuditEvent], Sequence[dict[str, object]]], None]

# Called once per event from the writer thread: (sequence number, None) when durable,
# (None, exception) otherwise. It must be quick and must not block.
Done = Callable[[int | None, BaseException | None], None]


class StaleDecision(Exception):
    """The authorization epoch moved since the decision was made: decide again."""


@dataclass(frozen=True, slots=True)
class WriteResult:
    """``rows`` as stored, or None when the guard did not hold (nothing written)."""

    rows: list[dict[str, object]] | None
    epoch: int


class FastBatch(Protocol):
    def write(
        self, events: Sequence[AuditEvent], *, now: datetime, guard: int | None
    ) -> WriteResult | None:
        """Write the batch in one step, or return None (nothing written) to leave it to
        the transactional path. Raises ``UnknownOutcome`` when the write may or may not
        have been applied."""
        ...

    def observe_head(self, head: ChainHead) -> None:
        """The transactional path committed: this is the head now."""
        ...

    def close(self) -> None:
        """Give its connection back to the pool (the writer has stopped)."""
        ...


class BatchUsage(Protocol):
    """The runners' usage counter as the one-statement batch uses it.

    The batch adds a batch's served fetches to ``runner_usage`` in its own statement,
    so it needs the counter (:class:`vault.runners.usage.UsageCounter`); a protocol
    keeps the audit layer from depending on the runners that build on it.
    """

    def counts(self, events: Sequence[AuditEvent]) -> dict[str, int]:
        """Served fetches per runner in ``events``."""
        ...

    def prune_due(self, window: int) -> bool:
        """Old windows must be deleted first (the transactional hook does that)."""
        ...

    def observe(self, window: int, totals: Iterable[tuple[str, int]]) -> None:
        """The database's new totals, read back by the statement."""
        ...


class UnknownOutcome(Exception):
    """A one-step write failed after it was sent: it may have been applied.

    ``rows`` are the rows it tried to write; the transactional path treats the batch as
    written if the head it finds under the lock is exactly their last hash.
    """

    def __init__(self, rows: list[dict[str, object]]) -> None:
        super().__init__("the outcome of the batch write is unknown")
        self.rows = rows
