"""Backup and restore drills (tests/e2e/test_backup_drill.py): fetch load on a real server
while the backup is taken, then the checks every restore must pass.

What a restore must show (issue 18):
- every credential active at backup time opens with the root key;
- the audit chain verifies (``linevault audit verify``), and every fetch answered 200
  before the backup started has its event in the backup;
- revoked lines and a deleted tenant stay destroyed (no envelope, KEKs destroyed);
- the same backup with another root key opens nothing.
"""

from __future__ import annotations

import base64
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from kms import open_provider
from tests.support.faults import Served, events_by_request, runner_token, seed_tenant
from tests.support.keys import open_line, uncached
from tests.support.server import LINEVAULT, _env
from vault.runtime import Runtime, engine_for, kms_config, open_runtime
from vault.settings import Settings
from vault.storage.engine import unit_of_work
from vault.storage.models import Kek, Line

__all__ = [
    "Drill",
    "FetchLoad",
    "check_restored",
    "linevault",
    "prepare",
    "wrong_root_opens_nothing",
]


@dataclass
class Drill:
    """What the live vault held when the backup was taken."""

    tenant_id: str
    active: dict[str, bytes]  # line id -> credential JSON
    revoked: list[str]
    deleted_tenant: str
    deleted_lines: list[str]
    token: str


@dataclass
class FetchLoad:
    """Threads fetching every active line over HTTP until stopped; each answer is kept
    with its request id and its start and end (monotonic)."""

    served: Served
    drill: Drill
    threads: int = 4
    answers: list[tuple[str, int, float, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _run(self, worker: int) -> None:
        lines = sorted(self.drill.active)
        headers = {"Authorization": f"Bearer {self.drill.token}"}
        n = 0
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                line = lines[(n * self.threads + worker) % len(lines)]
                rid = f"req_drill_{worker}_{n}"
                n += 1
                url = f"{self.served.url}/v1/tenants/{self.drill.tenant_id}/lines/{line}/credential"
                started = time.monotonic()
                resp = client.get(url, headers={**headers, "X-Request-Id": rid})
                self.answers.append((rid, resp.status_code, started, time.monotonic()))

    @contextmanager
    def running(self) -> Iterator[FetchLoad]:
        workers = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(self.threads)
        ]
        for w in workers:
            w.start()
        try:
            yield self
        finally:
            self._stop.set()
            for w in workers:
                w.join(60)

    def overlapping(self, start: float, end: float) -> int:
        return sum(1 for _, _, s, e in self.answers if s < end and e > start)

    def ok_before(self, moment: float) -> list[str]:
        return [rid for rid, status, _, e in self.answers if status == 200 and e < moment]


def linevault(
    args: list[str], *, data_dir: Path, database_url: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LINEVAULT, *args],
        env=_env(data_dir, database_url, None),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def prepare(served: Served, *, lines: int = 40) -> Drill:
    """A tenant with ``lines`` lines (three revoked over HTTP), a second tenant deleted over
    HTTP, and a runner token for the first tenant's lines."""
    tenant_id, secrets = seed_tenant(served.runtime, lines)
    doomed, doomed_secrets = seed_tenant(served.runtime, 3)
    token = runner_token(served, tenant_id)
    revoked = sorted(secrets)[:3]
    with httpx.Client(base_url=served.url, headers=served.auth(), timeout=30) as client:
        for line_id in revoked:
            resp = client.post(f"/v1/tenants/{tenant_id}/lines/{line_id}/revoke", json={})
            assert resp.status_code == 200, resp.text
        resp = client.delete(f"/v1/tenants/{doomed}")
        assert resp.status_code == 200, resp.text
    active = {k: v for k, v in secrets.items() if k not in revoked}
    return Drill(tenant_id, active, revoked, doomed, sorted(doomed_secrets), token)


def check_restored(runtime: Runtime, drill: Drill, *, fetched_before: list[str]) -> None:
    """The restore checks that need the root key (see the module docstring)."""
    keyring = uncached(runtime.provider)
    for line_id, secret in drill.active.items():
        assert open_line(runtime.engine, keyring, line_id) == secret
    for line_id in drill.revoked:
        with pytest.raises(LookupError):
            open_line(runtime.engine, keyring, line_id)
    with unit_of_work(runtime.readonly_sessions) as session:
        revoked = session.execute(
            select(Line.status, Line.wrapped_dek, Line.ciphertext).where(Line.id.in_(drill.revoked))
        ).all()
        assert [tuple(r) for r in revoked] == [("revoked", None, None)] * len(drill.revoked)
        keks = session.execute(
            select(Kek.state, Kek.wrapped).where(Kek.tenant_id == drill.deleted_tenant)
        ).all()
        assert keks, "the deleted tenant's KEK rows are kept as destroyed tombstones"
        assert all(state == "destroyed" and wrapped is None for state, wrapped in keks), keks
    for line_id in drill.deleted_lines:
        with pytest.raises(Exception):  # noqa: B017 - the row or its key is gone
            open_line(runtime.engine, keyring, line_id)
    found = events_by_request(runtime, action="credential.fetch", request_ids=fetched_before)
    missing = [rid for rid in fetched_before if ("success", None) not in _outcomes(found, rid)]
    assert not missing, f"{len(missing)} fetches answered 200 have no event in the backup"


def _outcomes(found: dict[str, list[tuple[str, str | None]]], rid: str) -> list[tuple[str, None]]:
    return [(outcome, None) for outcome, _ in found.get(rid, [])]


def wrong_root_opens_nothing(data_dir: Path, database_url: str | None, drill: Drill) -> None:
    """The backup with a root key other than the vault's: the process refuses to start
    (the system secrets do not unwrap), and no line opens through a key ring on it."""
    settings = Settings(  # type: ignore[call-arg]
        data_dir=data_dir,
        database_url=database_url,
        root_key=base64.b64encode(os.urandom(32)).decode(),
        log_level="warning",
    )
    with pytest.raises(Exception):  # noqa: B017 - whichever unwrap fails first
        open_runtime(settings, start_writer=False).close()
    provider = open_provider(kms_config(settings))
    keyring = uncached(provider)
    engine = engine_for(settings)
    try:
        opened = 0
        for line_id in drill.active:
            try:
                open_line(engine, keyring, line_id)
                opened += 1
            except Exception:
                continue
        assert opened == 0, f"{opened} lines opened without the vault's root key"
    finally:
        engine.dispose()
