"""``/v1/sys/health`` under database faults (found by tests/e2e/test_faults.py).

- Its ``SELECT 1`` runs in a read-only transaction: on SQLite a plain transaction begins
  ``IMMEDIATE`` and hung for the 30 s busy timeout whenever another process held the
  write lock, so the load balancer's check timed out instead of getting an answer.
- ``audit`` is reported unavailable after a failed audit write.
"""

from __future__ import annotations

import sqlite3
import time

import pytest
from fastapi.testclient import TestClient

from tests.support.audit import sample_event
from tests.vault.test_audit_failclosed import audit_inserts_rejected
from vault.errors import AuditUnavailable
from vault.runtime import Runtime
from vault.settings import Settings


@pytest.mark.parametrize("backend", ["sqlite"])
def test_health_answers_while_another_process_holds_the_write_lock(
    client: TestClient, settings: Settings
) -> None:
    path = settings.sqlalchemy_url.removeprefix("sqlite:///")
    holder = sqlite3.connect(path, isolation_level=None, timeout=1)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        resp = client.get("/v1/sys/health")
        assert time.monotonic() - started < 5
        assert resp.status_code == 200, resp.text  # nothing failed yet: reads still work
    finally:
        holder.rollback()
        holder.close()


def test_health_names_audit_after_a_failed_audit_write(
    client: TestClient, runtime: Runtime
) -> None:
    with audit_inserts_rejected(runtime.engine):
        with pytest.raises(AuditUnavailable):
            runtime.audit.emit(sample_event(1))
        resp = client.get("/v1/sys/health")
    assert resp.status_code == 503
    assert resp.json()["failing"] == ["audit"]
    assert resp.json()["database"] == "ok"
