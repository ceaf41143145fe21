"""Wiring: key services built from a :class:`~vault.runtime.Runtime` (API and CLI share it).

One naming rule for every service built from a runtime: ``<service>_for(runtime, ...)``.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from vault.keys.rewrap import Rewrapper
from vault.keys.root_rotation import RootRotation
from vault.keys.rotation import TenantKeyService
from vault.keys.schedule import RotationScheduler
from vault.keys.worker import RewrapWorker
from vault.runtime import Runtime

__all__ = [
    "rewrap_worker_for",
    "rewrapper_for",
    "root_rotation_for",
    "rotation_scheduler_for",
    "tenant_key_service_for",
]


def tenant_key_service_for(runtime: Runtime, session: Session) -> TenantKeyService:
    return TenantKeyService(
        session, keyring=runtime.keyring, audit=runtime.audit, clock=runtime.clock
    )


def rewrapper_for(runtime: Runtime, *, batch_size: int | None = None) -> Rewrapper:
    return Rewrapper(
        runtime.sessions,
        keyring=runtime.keyring,
        audit=runtime.audit,
        clock=runtime.clock,
        batch_size=batch_size or runtime.settings.rewrap_batch_size,
    )


def root_rotation_for(runtime: Runtime, *, batch_size: int | None = None) -> RootRotation:
    return RootRotation(
        runtime.sessions,
        provider=runtime.provider,
        audit=runtime.audit,
        clock=runtime.clock,
        batch_size=batch_size or runtime.settings.rewrap_batch_size,
    )


def rewrap_worker_for(runtime: Runtime) -> RewrapWorker:
    return RewrapWorker(rewrapper_for(runtime), sessions=runtime.sessions)


def rotation_scheduler_for(runtime: Runtime, worker: RewrapWorker) -> RotationScheduler:
    """The revocation-driven rotations of this process, run by ``worker``."""
    return RotationScheduler(
        runtime.sessions,
        keyring=runtime.keyring,
        audit=runtime.audit,
        clock=runtime.clock,
        submit=worker.submit,
    )
