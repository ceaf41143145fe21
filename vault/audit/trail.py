"""The audit service every capability writes through.

Two ways in, one chain: :meth:`AuditTrail.record` puts the event in the caller's unit of
work, so a state change and its event commit or vanish together; :meth:`AuditTrail.emit`
hands an event with no state change (a fetch, a denial) to the group-commit writer and
returns only once it is durable. Either way, no event means no answer.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from vault.audit.chain import append_events
from vault.audit.events import AuditEvent
from vault.audit.writer import AuditWriter
from vault.clock import Clock

__all__ = ["AuditTrail"]


class AuditTrail:
    def __init__(self, writer: AuditWriter, *, clock: Clock) -> None:
        self._writer = writer
        self._clock = clock

    def record(self, session: Session, event: AuditEvent) -> None:
        """Append ``event`` in ``session``'s transaction; call it last, just before commit."""
        append_events(session, [event], now=self._clock.now())

    def emit(self, event: AuditEvent) -> int:
        """Durably write an event that has no state change of its own; fail closed."""
        return self._writer.record(event)
