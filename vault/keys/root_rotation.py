"""Root key rotation: rewrap every tenant KEK and system secret, then destroy the old root.

Steps, each durable, so a crash anywhere leaves everything openable and a re-run resumes:

1. ``provider.create_root_key()`` (skipped when an old root is still held: that means an
   earlier rotation did not finish, and this run completes it instead).
2. Rewrap, in batches of ``batch_size`` (one short transaction each), every KEK row and
   every system secret whose ``root_key_id`` is not the active root: unwrap with the old
   root, wrap with the new one, compare-and-set on the old (root id, blob).
3. After an optional grace period (a process that wrapped a new KEK with the old root
   just before step 1 has committed by then), one transaction locks both tables against
   writers (PostgreSQL ``SHARE ROW EXCLUSIVE``: reads and ``FOR SHARE`` go on; SQLite's
   write lock does the same), rewraps any straggler, checks that nothing references an
   old root id, and only then calls ``provider.destroy_root_key`` for each of them.

Plain KEKs never change, so every process's KEK cache and loaded system keys stay valid.
Destroying the old root is what makes erasure final for backups taken before it: their
wrapped KEKs of shredded tenants can no longer be unwrapped by anyone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from kms import KeyProvider, WrappedKey
from vault.audit.events import Actor, AuditEvent
from vault.audit.trail import AuditTrail
from vault.clock import Clock
from vault.keys.keyring import kek_ad
from vault.keys.system import system_secret_ad
from vault.storage.engine import SessionFactory, unit_of_work
from vault.storage.models import Kek, SystemSecret

__all__ = ["RootRotation", "RootRotationResult", "root_references"]

SYSTEM_ACTOR = Actor("system", "linevault-root-rotation")

Progress = Callable[[int], None]


@dataclass
class RootRotationResult:
    active_root_key_id: str
    created: bool
    rewrapped_keks: int = 0
    rewrapped_secrets: int = 0
    destroyed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def root_references(session: Session) -> dict[str, int]:
    """How many stored keys each root key id still wraps."""
    counts: dict[str, int] = {}
    for model in (Kek, SystemSecret):
        rows = session.execute(
            select(model.root_key_id, func.count())
            .where(model.root_key_id.is_not(None), model.wrapped.is_not(None))
            .group_by(model.root_key_id)
        ).all()
        for root_id, n in rows:
            if root_id is not None:
                counts[root_id] = counts.get(root_id, 0) + int(n)
    return counts


class RootRotation:
    def __init__(
        self,
        sessions: SessionFactory,
        *,
        provider: KeyProvider,
        audit: AuditTrail,
        clock: Clock,
        batch_size: int,
    ) -> None:
        self._sessions = sessions
        self._provider = provider
        self._audit = audit
        self._clock = clock
        self._batch = max(1, batch_size)

    def pending(self) -> int:
        """Stored keys still wrapped by a root other than the active one."""
        active = self._provider.active_root_key_id()
        with unit_of_work(self._sessions) as session:
            refs = root_references(session)
        return sum(n for root_id, n in refs.items() if root_id != active)

    def run(
        self,
        *,
        progress: Progress | None = None,
        grace_seconds: float = 0.0,
        on_start: Callable[[RootRotationResult, int], None] | None = None,
    ) -> RootRotationResult:
        held = self._provider.root_key_ids()
        created = False
        if len(held) <= 1:
            self._provider.create_root_key()
            created = True
        active = self._provider.active_root_key_id()
        result = RootRotationResult(active_root_key_id=active, created=created)
        self._record(
            "key.root_rotate",
            active,
            reason="new root key created" if created else "resuming an unfinished root rotation",
            details={"created": created, "previous_roots": len(held)},
        )
        if on_start is not None:
            on_start(result, self.pending())
        while True:
            with unit_of_work(self._sessions) as session:
                n = self._rewrap_keks(session, active)
            result.rewrapped_keks += n
            if progress is not None and n:
                progress(n)
            if n < self._batch:
                break
        with unit_of_work(self._sessions) as session:
            n = self._rewrap_secrets(session, active)
        result.rewrapped_secrets += n
        if progress is not None and n:
            progress(n)
        if grace_seconds > 0:
            time.sleep(grace_seconds)
        self._destroy_old(active, result)
        return result

    # -- steps ------------------------------------------------------------------------

    def _rewrap_keks(self, session: Session, active: str) -> int:
        rows = list(
            session.execute(
                select(Kek)
                .where(
                    Kek.wrapped.is_not(None),
                    Kek.root_key_id.is_not(None),
                    Kek.root_key_id != active,
                )
                .limit(self._batch)
                .with_for_update()
            ).scalars()
        )
        for row in rows:
            assert row.wrapped is not None and row.root_key_id is not None
            context = kek_ad(row.tenant_id, row.version)
            plain = self._provider.unwrap(
                WrappedKey(root_key_id=row.root_key_id, blob=row.wrapped), context=context
            )
            wrapped = self._provider.wrap(plain, context=context)
            row.root_key_id, row.wrapped = wrapped.root_key_id, wrapped.blob
        session.flush()
        return len(rows)

    def _rewrap_secrets(self, session: Session, active: str) -> int:
        rows = list(
            session.execute(
                select(SystemSecret).where(SystemSecret.root_key_id != active).with_for_update()
            ).scalars()
        )
        for row in rows:
            context = system_secret_ad(row.name)
            plain = self._provider.unwrap(
                WrappedKey(root_key_id=row.root_key_id, blob=row.wrapped), context=context
            )
            wrapped = self._provider.wrap(plain, context=context)
            row.root_key_id, row.wrapped = wrapped.root_key_id, wrapped.blob
        session.flush()
        return len(rows)

    def _destroy_old(self, active: str, result: RootRotationResult) -> None:
        with unit_of_work(self._sessions) as session:
            if session.get_bind().dialect.name == "postgresql":
                session.execute(text("LOCK TABLE keks, system_secrets IN SHARE ROW EXCLUSIVE MODE"))
            # Stragglers: a KEK wrapped by an old root by a writer that raced step 1.
            while self._rewrap_keks(session, active) == self._batch:
                pass
            self._rewrap_secrets(session, active)
            refs = root_references(session)
            for root_id in self._provider.root_key_ids():
                if root_id == active:
                    continue
                if refs.get(root_id, 0):
                    result.kept.append(root_id)
                    continue
                # The event goes into this transaction first; if the destroy fails, the
                # transaction rolls back and the root stays (and is reported as kept).
                self._audit.record(
                    session,
                    self._event(
                        "key.root_destroy",
                        root_id,
                        reason="no stored key references it",
                        details={"active_root_key_id": active},
                    ),
                )
                self._provider.destroy_root_key(root_id)
                result.destroyed.append(root_id)

    def _record(
        self, action: str, root_id: str, *, reason: str, details: dict[str, str | int | bool]
    ) -> None:
        with unit_of_work(self._sessions) as session:
            self._audit.record(
                session, self._event(action, root_id, reason=reason, details=details)
            )

    @staticmethod
    def _event(
        action: str, root_id: str, *, reason: str, details: dict[str, str | int | bool]
    ) -> AuditEvent:
        return AuditEvent.by(
            SYSTEM_ACTOR,
            action,
            resource_type="root_key",
            resource_id=root_id,
            reason=reason,
            details=details,
        )
