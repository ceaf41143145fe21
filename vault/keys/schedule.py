"""KEK rotations scheduled by revocations, so a saved envelope written back stops opening.

Revoking a credential nulls its envelope in the live database, but a copy of the row
(a snapshot, a backup, a dump made by an insider) still holds a DEK wrapped by the
tenant's KEK. Once that KEK version is destroyed, such a copy opens nothing. So revoking
or replacing a credential requests a rotation of the tenant's KEK
(:func:`request_rotation`, in the revoking transaction); the existing rotation
(:mod:`vault.keys.rotation`) and rewrap (:mod:`vault.keys.rewrap`) do the work, and the
finish step destroys every older version once no line references it.

Debounced: the first request sets ``due_at = now + delay``, later requests for the same
tenant keep it, so a burst of revocations costs one rotation, started at most ``delay``
after the first of them.

Exactly once across processes: every server process runs a :class:`RotationScheduler`
thread. Claiming a request locks the tenant row (``FOR UPDATE``; SQLite's
``BEGIN IMMEDIATE`` serializes writers anyway), deletes the due request and starts the
rotation in the same transaction, so two processes cannot both claim it, and a crash
either leaves the request (claimed later) or a ``running`` rotation (resumed by the
rewrap worker). While a rotation of the tenant is still running a request waits: that
rotation would not destroy the version the revoked envelope may have been rewrapped to.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from vault.audit.trail import AuditTrail
from vault.clock import Clock
from vault.keys.keyring import KeyRing
from vault.keys.rotation import RUNNING, TenantKeyService
from vault.storage.engine import SessionFactory, unit_of_work
from vault.storage.models import KeyRotation, KeyRotationRequest, Tenant

__all__ = ["SCHEDULER_ACTOR_ID", "RotationScheduler", "request_rotation"]

log = logging.getLogger("linevault.keys")

SCHEDULER_ACTOR_ID = "linevault-revocation"


def request_rotation(session: Session, *, tenant_id: str, now: datetime, delay: timedelta) -> None:
    """Ask for a KEK rotation of ``tenant_id`` due at ``now + delay``, in ``session``.

    An existing request keeps its earlier due time (debounce). One statement that never
    fails on a concurrent request: ``INSERT ... ON CONFLICT DO NOTHING``.
    """
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(
        insert(KeyRotationRequest)
        .values(tenant_id=tenant_id, due_at=now + delay, requested_at=now)
        .on_conflict_do_nothing(index_elements=["tenant_id"])
    )


class RotationScheduler:
    """Claims due rotation requests and hands the rotations to the rewrap worker."""

    def __init__(
        self,
        sessions: SessionFactory,
        *,
        keyring: KeyRing,
        audit: AuditTrail,
        clock: Clock,
        submit: Callable[[str], None],
    ) -> None:
        self._sessions = sessions
        self._keyring = keyring
        self._audit = audit
        self._clock = clock
        self._submit = submit
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> list[str]:
        """Claim every due request; submit and return the rotations started or resumed."""
        now = self._clock.now()
        with unit_of_work(self._sessions) as session:
            due = list(
                session.execute(
                    select(KeyRotationRequest.tenant_id)
                    .where(KeyRotationRequest.due_at <= now)
                    .order_by(KeyRotationRequest.due_at)
                ).scalars()
            )
        out: list[str] = []
        for tenant_id in due:
            rotation_id = self.claim(tenant_id, now=now)
            if rotation_id is not None:
                self._submit(rotation_id)
                out.append(rotation_id)
        return out

    def claim(self, tenant_id: str, *, now: datetime) -> str | None:
        """Start the rotation a due request asks for; the id of the one to run, or None.

        Returns a still-running rotation of the tenant without claiming the request, so
        one a crashed process left behind is resumed here rather than at the next start.
        """
        with unit_of_work(self._sessions) as session:
            tenant = session.execute(
                select(Tenant).where(Tenant.id == tenant_id).with_for_update()
            ).scalar_one_or_none()
            if tenant is None or tenant.deleted_at is not None:
                # A deleted tenant's keys are all destroyed already.
                session.execute(
                    delete(KeyRotationRequest).where(KeyRotationRequest.tenant_id == tenant_id)
                )
                return None
            running = session.execute(
                select(KeyRotation.id)
                .where(KeyRotation.tenant_id == tenant_id, KeyRotation.state == RUNNING)
                .limit(1)
            ).scalar_one_or_none()
            if running is not None:
                return str(running)
            claimed = session.execute(
                delete(KeyRotationRequest).where(
                    KeyRotationRequest.tenant_id == tenant_id, KeyRotationRequest.due_at <= now
                )
            )
            if not getattr(claimed, "rowcount", 0):
                return None  # another process claimed it first
            service = TenantKeyService(
                session, keyring=self._keyring, audit=self._audit, clock=self._clock
            )
            view = service.rotate(tenant_id, actor_type="system", actor_id=SCHEDULER_ACTOR_ID)
            return view.id

    # -- the background thread --------------------------------------------------------

    def start(self, interval: float) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._loop, args=(interval,), name="linevault-rotation-schedule", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.tick()
            except Exception as exc:  # a database hiccup must not end the thread
                log.warning("scheduled key rotations: %s", type(exc).__name__)
