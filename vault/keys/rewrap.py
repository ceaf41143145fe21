"""The online rewrap of a tenant's DEKs, batch by batch, resumable after a crash.

Each batch is one short transaction: lock the ``key_rotations`` row (so two processes
resuming the same rotation take turns instead of racing), read up to ``batch_size``
lines still wrapped by an old KEK version, rewrap their DEKs in memory (the DEK never
leaves this process; the credential ciphertext is not touched), write them back with
a compare-and-set on (line, credential version, old KEK version), and add the count to
the rotation row. A fetch reading a line sees it entirely before or entirely after its
batch: it always finds a wrapped DEK and a KEK version that can open it.

A line replaced or revoked while its batch runs fails the compare-and-set and is left
alone (a replacement is sealed under the active version already; a stale one is picked
up by a later batch). The old versions are destroyed only in the finishing transaction,
after a fresh count under lock shows no line references them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, bindparam, select, text, update
from sqlalchemy.orm import Session

from kms.errors import KmsError
from vault.audit.events import Actor, AuditEvent
from vault.audit.trail import AuditTrail
from vault.clock import Clock
from vault.errors import NotFound
from vault.keys.keyring import KeyRing
from vault.keys.rotation import RUNNING, RotationView, key_resource, rotation_view
from vault.keys.webhook_secrets import rewrap_webhook_secrets
from vault.storage.engine import SessionFactory, unit_of_work
from vault.storage.models import Kek, KeyRotation, Line

__all__ = ["BatchResult", "RewrapError", "Rewrapper", "running_rotations"]

SYSTEM_ACTOR = Actor("system", "linevault-rewrap")

Progress = Callable[[int], None]


class RewrapError(RuntimeError):
    """A DEK could not be rewrapped (its old KEK is gone or the envelope is damaged).

    The rotation stays ``running`` with the old version retired but intact, so nothing
    becomes unopenable; an operator must look at the named line before resuming.
    """


@dataclass(frozen=True, slots=True)
class BatchResult:
    rewrapped: int
    more: bool


def running_rotations(sessions: SessionFactory) -> list[str]:
    with unit_of_work(sessions) as session:
        return list(
            session.execute(
                select(KeyRotation.id)
                .where(KeyRotation.state == RUNNING)
                .order_by(KeyRotation.started_at)
            ).scalars()
        )


class Rewrapper:
    """Drives the rewrap and finish steps of rotations; every batch commits on its own."""

    def __init__(
        self,
        sessions: SessionFactory,
        *,
        keyring: KeyRing,
        audit: AuditTrail,
        clock: Clock,
        batch_size: int,
    ) -> None:
        self._sessions = sessions
        self._keyring = keyring
        self._audit = audit
        self._clock = clock
        self._batch = max(1, batch_size)

    def run(
        self,
        rotation_id: str,
        *,
        progress: Progress | None = None,
        stop: threading.Event | None = None,
    ) -> RotationView | None:
        """Rewrap until nothing is left, then destroy the old versions; ``None`` if gone.

        ``progress`` is called with the number of DEKs each batch rewrapped. Setting
        ``stop`` ends the loop between batches (the rotation stays resumable).
        """
        while stop is None or not stop.is_set():
            batch = self.step(rotation_id)
            if batch.rewrapped and progress is not None:
                progress(batch.rewrapped)
            if batch.more:
                continue
            if self.finish(rotation_id):
                break
        return self.view(rotation_id)

    def view(self, rotation_id: str) -> RotationView | None:
        with unit_of_work(self._sessions) as session:
            row = session.get(KeyRotation, rotation_id)
            return rotation_view(session, row) if row is not None else None

    # -- one batch --------------------------------------------------------------------

    def step(self, rotation_id: str) -> BatchResult:
        with unit_of_work(self._sessions) as session:
            rotation = self._lock_rotation(session, rotation_id)
            if rotation is None:
                return BatchResult(0, more=False)
            rows: list[tuple[str, int, int | None, bytes | None]] = [
                (r[0], r[1], r[2], r[3])
                for r in session.execute(
                    select(Line.id, Line.version, Line.kek_version, Line.wrapped_dek)
                    .where(
                        Line.tenant_id == rotation.tenant_id,
                        Line.kek_version < rotation.to_version,
                        Line.wrapped_dek.is_not(None),
                    )
                    .limit(self._batch)
                )
            ]
            if not rows:
                return BatchResult(0, more=False)
            updates = self._rewrap_rows(session, rotation, rows)
            done = _apply(session, updates, to_version=rotation.to_version)
            rotation.rewrapped += done
            session.flush()
            return BatchResult(done, more=len(rows) == self._batch or done < len(rows))

    def _rewrap_rows(
        self,
        session: Session,
        rotation: KeyRotation,
        rows: Sequence[tuple[str, int, int | None, bytes | None]],
    ) -> list[tuple[str, int, int, bytes]]:
        tenant_id, to_version = rotation.tenant_id, rotation.to_version
        try:
            new_kek = self._keyring.load_kek(session, tenant_id=tenant_id, version=to_version)
        except NotFound:
            raise RewrapError(f"KEK version {to_version} of {tenant_id} is missing") from None
        old_keks: dict[int, bytes] = {}
        out: list[tuple[str, int, int, bytes]] = []
        for line_id, credential_version, old_version, wrapped_dek in rows:
            if old_version is None or wrapped_dek is None:
                continue
            if old_version not in old_keks:
                try:
                    old_keks[old_version] = self._keyring.load_kek(
                        session, tenant_id=tenant_id, version=old_version
                    )
                except NotFound:
                    raise RewrapError(
                        f"line {line_id} references destroyed KEK version {old_version}"
                    ) from None
            try:
                blob = self._keyring.rewrap_dek(
                    old_kek=old_keks[old_version],
                    new_kek=new_kek,
                    old_version=old_version,
                    new_version=to_version,
                    tenant_id=tenant_id,
                    line_id=line_id,
                    credential_version=credential_version,
                    wrapped_dek=wrapped_dek,
                )
            except KmsError:
                raise RewrapError(f"the wrapped DEK of line {line_id} does not open") from None
            out.append((line_id, credential_version, old_version, blob))
        return out

    # -- the end ----------------------------------------------------------------------

    def finish(self, rotation_id: str) -> bool:
        """Destroy the old versions if nothing references them; True when not running."""
        with unit_of_work(self._sessions) as session:
            rotation = self._lock_rotation(session, rotation_id)
            if rotation is None:
                return True
            old = self._unreferenced_old_keks(session, rotation)
            if old is None:
                return False
            # Webhook secrets are sealed under the tenant's KEK too: move them first.
            rewrap_webhook_secrets(
                session,
                keyring=self._keyring,
                tenant_id=rotation.tenant_id,
                to_version=rotation.to_version,
            )
            self._destroy(session, rotation, old)
        self._keyring.cache.forget_tenant(rotation.tenant_id)
        return True

    @staticmethod
    def _unreferenced_old_keks(session: Session, rotation: KeyRotation) -> list[Kek] | None:
        """The rotation's old versions, locked; None while a line still references one."""
        tenant_id, to_version = rotation.tenant_id, rotation.to_version
        old = list(
            session.execute(
                select(Kek)
                .where(
                    Kek.tenant_id == tenant_id,
                    Kek.version < to_version,
                    Kek.state != "destroyed",
                )
                .with_for_update()
            ).scalars()
        )
        # A fresh statement after the locks: sees every seal that committed before.
        left = session.execute(
            select(Line.id)
            .where(
                Line.tenant_id == tenant_id,
                Line.kek_version < to_version,
                Line.wrapped_dek.is_not(None),
            )
            .limit(1)
        ).first()
        return None if left is not None else old

    def _destroy(self, session: Session, rotation: KeyRotation, old: list[Kek]) -> None:
        """Destroy ``old``, mark the rotation done, and record both."""
        now = self._clock.now()
        for kek in old:
            kek.state = "destroyed"
            kek.wrapped = None
            kek.root_key_id = None
            kek.destroyed_at = now
        rotation.state = "done"
        rotation.finished_at = now
        session.flush()
        tenant_id = rotation.tenant_id
        self._audit.record(
            session,
            _event(
                "key.rewrap_done",
                tenant_id,
                rotation.to_version,
                details={"rotation_id": rotation.id, "rewrapped": rotation.rewrapped},
            ),
        )
        for kek in old:
            self._audit.record(
                session,
                _event(
                    "key.destroy",
                    tenant_id,
                    kek.version,
                    details={"rotation_id": rotation.id, "version": kek.version},
                    reason="superseded by rotation",
                ),
            )

    @staticmethod
    def _lock_rotation(session: Session, rotation_id: str) -> KeyRotation | None:
        rotation = session.execute(
            select(KeyRotation)
            .where(KeyRotation.id == rotation_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).scalar_one_or_none()
        if rotation is None or rotation.state != RUNNING:
            return None
        return rotation


def _event(
    action: str,
    tenant_id: str,
    version: int,
    *,
    details: dict[str, str | int],
    reason: str | None = None,
) -> AuditEvent:
    return AuditEvent.by(
        SYSTEM_ACTOR,
        action,
        tenant_id=tenant_id,
        resource_type="key",
        resource_id=key_resource(tenant_id, version),
        reason=reason,
        details=details,
    )


def _apply(session: Session, updates: list[tuple[str, int, int, bytes]], *, to_version: int) -> int:
    """Write rewrapped DEKs with a compare-and-set; return how many lines changed."""
    if not updates:
        return 0
    if session.get_bind().dialect.name == "postgresql":
        return _apply_pg(session, updates, to_version)
    table = cast(Table, Line.__table__)
    lines = table.c
    # Core (not ORM) executemany: one prepared statement, many parameter sets.
    result = session.connection().execute(
        update(table)
        .where(
            lines.id == bindparam("b_id"),
            lines.version == bindparam("b_cv"),
            lines.kek_version == bindparam("b_kv"),
            lines.wrapped_dek.is_not(None),
        )
        .values(wrapped_dek=bindparam("b_w"), kek_version=to_version),
        [{"b_id": i, "b_cv": cv, "b_kv": kv, "b_w": w} for i, cv, kv, w in updates],
    )
    return int(getattr(result, "rowcount", 0) or 0)


def _apply_pg(session: Session, updates: list[tuple[str, int, int, bytes]], to_version: int) -> int:
    # One statement, four array parameters: no per-row round trip, bind or compile cost.
    statement = text(
        "UPDATE lines SET wrapped_dek = v.w, kek_version = :to_version "
        "FROM unnest(CAST(:ids AS varchar[]), CAST(:cvs AS integer[]), "
        "CAST(:kvs AS integer[]), CAST(:ws AS bytea[])) AS v(id, cv, kv, w) "
        "WHERE lines.id = v.id AND lines.version = v.cv AND lines.kek_version = v.kv "
        "AND lines.wrapped_dek IS NOT NULL"
    )
    ids, cvs, kvs, ws = (list(col) for col in zip(*updates, strict=True))
    result = session.execute(
        statement, {"to_version": to_version, "ids": ids, "cvs": cvs, "kvs": kvs, "ws": ws}
    )
    return int(getattr(result, "rowcount", 0) or 0)
