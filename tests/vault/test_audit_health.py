"""The audit writer's health, as ``/v1/sys/health`` reports it under ``audit``.

Found by tests/e2e/test_faults.py: with the SQLite volume full every audited request got
503 ``audit_unavailable`` while health still answered 200 (``SELECT 1`` reads fine), so a
load balancer kept sending traffic to a server that could serve none of it. The writer
now reports a failed write until one succeeds (an idle probe brings it back without
traffic) and a write blocked for over ``stall_seconds``.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from tests.support.audit import sample_event
from tests.vault.test_audit_failclosed import audit_inserts_rejected
from vault.audit.writer import AuditWriter
from vault.errors import AuditUnavailable
from vault.runtime import Runtime


def _wait(predicate: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_a_failed_write_is_unhealthy_until_a_probe_succeeds(runtime: Runtime) -> None:
    writer = runtime.audit_writer
    assert writer.healthy
    with audit_inserts_rejected(runtime.engine):
        with pytest.raises(AuditUnavailable):
            runtime.audit.emit(sample_event(1))
        assert not writer.healthy
    assert _wait(lambda: writer.healthy)  # idle: the no-op head write succeeds again
    runtime.audit.emit(sample_event(2))
    assert writer.healthy


def test_a_blocked_write_is_a_stall(runtime: Runtime, backend: str) -> None:
    writer = AuditWriter(
        runtime.sessions, clock=runtime.clock, seal=runtime.audit.seal, stall_seconds=0.3
    )
    writer.start()
    try:
        lock = " FOR UPDATE" if backend == "postgresql" else ""
        with runtime.engine.begin() as conn:  # another writer holds the chain's lock
            conn.execute(text("SELECT seq FROM audit_head WHERE id = 1" + lock))
            pending = writer.submit(sample_event(1))
            assert _wait(lambda: not writer.healthy, timeout=5)
            assert not pending.done()
        assert pending.result(timeout=30) >= 1  # released: the batch commits
        assert writer.healthy
    finally:
        writer.stop()
