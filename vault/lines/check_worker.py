"""The periodic platform check: keeps every active line's ``provider_status`` current.

Off by default (``LINEVAULT_PROVIDER_CHECK_INTERVAL_SECONDS=0``) and whenever checks are
off. Each server process runs one thread; every ``interval`` it takes the active lines
of the platform types whose last check is older than the interval, at most ``batch`` at
a time. A line is claimed by moving its ``checked_at`` forward in a short transaction
(a conditional UPDATE, so of several processes one wins and the others skip it); the
credential is opened in that same transaction, the platform is asked with no
transaction open, and the answer is kept only if the line still holds the version that
was checked. A change of status is audited (``credential.check``, system actor).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select, update

from vault.audit.events import Actor, AuditEvent
from vault.audit.trail import AuditTrail
from vault.clock import Clock
from vault.connectors import CheckOutcome, ProviderChecks
from vault.keys.keyring import KeyRing
from vault.lines.provider import apply_outcome, open_line
from vault.storage.engine import SessionFactory, unit_of_work
from vault.storage.models import Line

if TYPE_CHECKING:
    from vault.runtime import Runtime

__all__ = ["CHECK_ACTOR_ID", "ProviderCheckWorker", "provider_check_worker_for"]

log = logging.getLogger("linevault.connectors")
CHECK_ACTOR_ID = "linevault-provider-check"
_PLATFORM_TYPES = ("telegram", "instagram", "messenger")


class ProviderCheckWorker:
    def __init__(
        self,
        sessions: SessionFactory,
        *,
        keyring: KeyRing,
        checks: ProviderChecks,
        audit: AuditTrail,
        clock: Clock,
        interval: float,
        batch: int = 50,
    ) -> None:
        self._sessions, self._keyring, self._checks = sessions, keyring, checks
        self._audit, self._clock = audit, clock
        self._interval, self._batch = interval, batch
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> int:
        """Check every due line once (up to the batch); the number checked."""
        if not self._checks.enabled:
            return 0
        cutoff = self._clock.now() - timedelta(seconds=self._interval)
        with unit_of_work(self._sessions) as session:
            due = list(
                session.execute(
                    select(Line.id)
                    .where(Line.status == "active", Line.type.in_(_PLATFORM_TYPES))
                    .where(or_(Line.checked_at.is_(None), Line.checked_at < cutoff))
                    .order_by(Line.checked_at, Line.id)
                    .limit(self._batch)
                ).scalars()
            )
        return sum(1 for line_id in due if self.check_line(line_id, cutoff=cutoff))

    def check_line(self, line_id: str, *, cutoff: datetime) -> bool:
        claimed = self._claim(line_id, cutoff)
        if claimed is None:
            return False
        line_type, version, fields = claimed
        outcome = self._checks.check(line_type, fields)  # no transaction is open here
        del fields
        self._keep(line_id, version, outcome)
        return True

    def _claim(self, line_id: str, cutoff: datetime) -> tuple[str, int, dict[str, Any]] | None:
        with unit_of_work(self._sessions) as session:
            claimed = session.execute(
                update(Line)
                .where(Line.id == line_id, Line.status == "active")
                .where(or_(Line.checked_at.is_(None), Line.checked_at < cutoff))
                .values(checked_at=self._clock.now())
            )
            if not getattr(claimed, "rowcount", 0):
                return None  # another process took it, or it changed
            line = session.execute(select(Line).where(Line.id == line_id)).scalar_one()
            return line.type, line.version, open_line(session, self._keyring, line)

    def _keep(self, line_id: str, version: int, outcome: CheckOutcome) -> None:
        with unit_of_work(self._sessions) as session:
            line = session.execute(
                select(Line).where(Line.id == line_id).with_for_update()
            ).scalar_one_or_none()
            if line is None or line.status != "active" or line.version != version:
                return
            before = line.provider_status
            apply_outcome(line, outcome, now=self._clock.now())
            if outcome.status != before:
                self._audit.record(
                    session,
                    AuditEvent.by(
                        Actor("system", CHECK_ACTOR_ID),
                        "credential.check",
                        tenant_id=line.tenant_id,
                        resource_type="line",
                        resource_id=line.id,
                        reason=outcome.status,
                        details={"type": line.type, "version": line.version},
                    ),
                )

    # -- the background thread --------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._loop, name="linevault-provider-check", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.tick()
            except Exception as exc:  # a database hiccup must not end the thread
                log.warning("provider checks: %s", type(exc).__name__)


def provider_check_worker_for(runtime: Runtime) -> ProviderCheckWorker | None:
    """The process's periodic check, or None when it is off (the default)."""
    interval = runtime.settings.provider_check_interval_seconds
    if interval <= 0 or not runtime.checks.enabled:
        return None
    return ProviderCheckWorker(
        runtime.sessions,
        keyring=runtime.keyring,
        checks=runtime.checks,
        audit=runtime.audit,
        clock=runtime.clock,
        interval=interval,
    )
