"""Webhooks from two real server processes on one PostgreSQL, one of them killed -9.

Both processes run a dispatcher. Process A is SIGKILLed while it holds claimed
deliveries in flight; its leases run out and process B delivers them again with the same
``webhook-id``. A receiver that deduplicates on ``webhook-id`` sees every event exactly
once, each line's events in order, each signature valid.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from tests.e2e.test_multiprocess import _login
from tests.support.lines import planted
from tests.support.server import ServerProcess, free_port, running_server
from tests.support.webhooks import receiver
from vault.storage.engine import make_engine
from vault.storage.models import WebhookDelivery

pytestmark = pytest.mark.slow

ENV = {
    "LINEVAULT_WEBHOOK_ALLOW_PRIVATE": "true",
    "LINEVAULT_WEBHOOK_POLL_SECONDS": "0.1",
    "LINEVAULT_WEBHOOK_TIMEOUT_SECONDS": "3",
    "LINEVAULT_WEBHOOK_LEASE_SECONDS": "4",
    "LINEVAULT_WEBHOOK_RETRY_FIRST_SECONDS": "0.5",
    "LINEVAULT_WEBHOOK_RETRY_MAX_SECONDS": "2",
    "LINEVAULT_WEBHOOK_CONCURRENCY": "2",
}


def _rows(url: str) -> list[WebhookDelivery]:
    from sqlalchemy.orm import Session

    engine = make_engine(url, pool_size=1)
    try:
        with Session(engine) as session:
            rows = list(session.execute(select(WebhookDelivery)).scalars())
            session.expunge_all()
            return rows
    finally:
        engine.dispose()


def _claimed_by(pg_url: str, pid: int, timeout: float = 30.0) -> set[int]:
    """Wait until process ``pid`` holds a claim on a delivery whose request has arrived."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mine = {
            r.seq
            for r in _rows(pg_url)
            if r.state == "pending" and r.claimed_by and f":{pid}:" in r.claimed_by
        }
        if mine:
            return mine
        time.sleep(0.02)
    raise AssertionError("process A never claimed a delivery")


def test_kill_9_mid_delivery_loses_nothing_and_dedup_sees_each_once(
    tmp_path: Path, postgres_db_url: str
) -> None:
    pg_url = postgres_db_url
    used: set[str] = set()
    with receiver() as hook, running_server(tmp_path, database_url=pg_url, env=ENV) as (a, admin):
        b = ServerProcess(a.data_dir, pg_url, free_port(), dict(ENV))
        b.start()
        try:
            http_a = httpx.Client(base_url=a.url, timeout=30)
            http_b = httpx.Client(base_url=b.url, timeout=30)
            auth = {"Authorization": f"Bearer {_login(http_a, admin, used)}"}
            tenant = http_a.post("/v1/tenants", json={"name": "wh"}, headers=auth).json()["id"]
            created = http_a.post(
                f"/v1/tenants/{tenant}/webhooks",
                json={"url": hook.url, "events": ["line.created", "line.replaced"]},
                headers=auth,
            )
            assert created.status_code == 201, created.text
            secret = created.json()["secret"]
            hook.delay = 1.0  # every delivery is in flight for a second
            lines = []
            for i, http in enumerate((http_a, http_b, http_a, http_b)):
                r = http.post(
                    f"/v1/tenants/{tenant}/lines",
                    json={"type": "telegram", "name": f"l{i}", "credential": planted("telegram")},
                    headers=auth,
                )
                assert r.status_code == 201, r.text
                lines.append(r.json()["id"])
            for line_id in lines:
                r = http_b.put(
                    f"/v1/tenants/{tenant}/lines/{line_id}/credential",
                    json={"credential": planted("telegram")},
                    headers=auth,
                )
                assert r.status_code == 200, r.text
            assert a.process is not None
            in_flight = _claimed_by(pg_url, a.process.pid)
            a.kill()  # SIGKILL while its claimed deliveries are being sent

            got = hook.wait_for(8, timeout=90)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                rows = _rows(pg_url)
                if all(r.state == "delivered" for r in rows):
                    break
                time.sleep(0.1)
        finally:
            b.stop()
    assert len(rows) == 8 and {r.state for r in rows} == {"delivered"}
    by_seq = {r.seq: r for r in rows}
    assert all(by_seq[s].attempts >= 2 for s in in_flight)  # A's claim, then B's
    assert len(got) == 8 and len({d.headers["webhook-id"] for d in got}) == 8
    order: dict[str, list[str]] = {}
    for d in got:
        event = d.verify(secret)
        order.setdefault(event["data"]["line_id"], []).append(event["type"])
    assert order == {line: ["line.created", "line.replaced"] for line in lines}
