"""The audit service every capability writes through.

Two ways in, one chain: :meth:`AuditTrail.record` puts the event in the caller's unit of
work, so a state change and its event commit or vanish together; :meth:`AuditTrail.emit`
hands an event with no state change (a fetch, a denial) to the group-commit writer and
returns only once it is durable. Either way, no event means no answer: both raise
``AuditUnavailable`` when the event cannot be written, and the caller must not answer.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from vault.audit.chain import HeadSeal, append_events
from vault.audit.checkpoints import Checkpointer
from vault.audit.events import AuditEvent
from vault.audit.writer import AuditWriter
from vault.clock import Clock
from vault.errors import AuditUnavailable

__all__ = ["AuditTrail"]


class AuditTrail:
    def __init__(
        self, writer: AuditWriter, *, clock: Clock, checkpointer: Checkpointer | None = None
    ) -> None:
        self._writer = writer
        self._clock = clock
        self._checkpointer = checkpointer

    @property
    def checkpointer(self) -> Checkpointer | None:
        return self._checkpointer

    @property
    def seal(self) -> HeadSeal:
        return self._writer.seal

    @property
    def clock(self) -> Clock:
        return self._clock

    def record(self, session: Session, event: AuditEvent) -> None:
        """Append ``event`` in ``session``'s transaction; call it last, just before commit.

        A failure to chain the event is ``AuditUnavailable``: the caller's unit of work
        rolls back, so the state change is undone with it.
        """
        try:
            rows = append_events(session, [event], now=self._clock.now(), seal=self.seal)
            if self._checkpointer is not None:
                self._checkpointer.after_append(session, rows)
        except AuditUnavailable:
            raise
        except Exception as exc:
            raise AuditUnavailable() from exc

    def emit(self, event: AuditEvent) -> int:
        """Durably write an event that has no state change of its own; fail closed."""
        return self._writer.record(event)
