"""Helpers for the fault tests (tests/e2e/test_faults.py): a served data dir, seeding,
runner tokens, the audit trail of requests, the offline verifier, problem bodies.

The test process opens its own :class:`Runtime` on the server's database (as a second
server process would), seeds tenants and lines through the key ring, and asks questions
of the database directly; everything under test goes over HTTP to a real server.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from tests.support.identity import new_session
from tests.support.keys import make_tenant, seed_lines
from tests.support.runners import grant, make_runner
from tests.support.server import LINEVAULT, Admin, ServerProcess, _env
from tests.support.settings import make_settings
from vault.runtime import Runtime, open_runtime
from vault.storage.engine import unit_of_work
from vault.storage.models import AuditEventRow, User

__all__ = [
    "Served",
    "assert_problem",
    "audit_verify",
    "events_by_request",
    "fill_disk",
    "runner_token",
    "seed_tenant",
    "serve",
    "small_tmpfs",
    "telegram_payload",
    "wait_for",
]


@dataclass
class Served:
    server: ServerProcess
    admin: Admin
    runtime: Runtime
    session_token: str  # the platform admin's MFA-fresh session

    @property
    def url(self) -> str:
        return self.server.url

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.session_token}"}

    def restart(self) -> None:
        self.server.start()


@contextmanager
def serve(
    data_dir: Path,
    admin: Admin,
    *,
    database_url: str | None,
    env: dict[str, str] | None = None,
    runtime_url: str | None = None,
) -> Iterator[Served]:
    """Serve an initialised data dir; the test's runtime uses ``runtime_url`` if given
    (e.g. the real database while the server goes through a proxy)."""
    from tests.support.server import free_port

    server = ServerProcess(data_dir, database_url, free_port(), dict(env or {}))
    server.start()
    settings = make_settings(
        data_dir=data_dir, database_url=runtime_url or database_url, log_level="warning"
    )
    runtime = open_runtime(settings, start_writer=False)
    try:
        with unit_of_work(runtime.sessions) as session:
            admin_id = session.execute(
                select(User.id).where(User.email == admin.email)
            ).scalar_one()
        token = new_session(runtime, admin_id, mfa_fresh=True)
        yield Served(server, admin, runtime, token)
    finally:
        runtime.close()
        server.stop()


def telegram_payload(n: int) -> bytes:
    token = f"{100000 + n}:FAULT{n:06d}" + "x" * 30
    return json.dumps({"bot_token": token}, sort_keys=True, separators=(",", ":")).encode()


def seed_tenant(runtime: Runtime, count: int) -> tuple[str, dict[str, bytes]]:
    """A tenant with ``count`` telegram lines sealed under KEK version 1."""
    now = runtime.clock.now()
    with unit_of_work(runtime.sessions) as session:
        tenant_id = make_tenant(session, runtime.keyring, now=now)
    secrets = seed_lines(
        runtime.sessions,
        runtime.keyring,
        tenant_id=tenant_id,
        count=count,
        now=now,
        payloads=(telegram_payload(n) for n in range(count)),
        system_keys=runtime.system_keys,
    )
    return tenant_id, secrets


def runner_token(served: Served, tenant_id: str) -> str:
    """A runner granted every line of the tenant, and an access token over HTTP."""
    runner_id, client_id, secret = make_runner(served.runtime)
    grant(served.runtime, tenant_id, runner_id, ["*"])
    resp = httpx.post(
        f"{served.url}/v1/runner/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


def events_by_request(
    runtime: Runtime, *, action: str | None = None, request_ids: Iterable[str] | None = None
) -> dict[str, list[tuple[str, str | None]]]:
    """``{request_id: [(outcome, resource_id), ...]}`` from the stored trail."""
    query = select(AuditEventRow.request_id, AuditEventRow.outcome, AuditEventRow.resource_id)
    if action is not None:
        query = query.where(AuditEventRow.action == action)
    wanted = set(request_ids) if request_ids is not None else None
    out: dict[str, list[tuple[str, str | None]]] = {}
    with unit_of_work(runtime.readonly_sessions) as session:
        for request_id, outcome, resource_id in session.execute(query):
            if request_id is None or (wanted is not None and request_id not in wanted):
                continue
            out.setdefault(request_id, []).append((outcome, resource_id))
    return out


def audit_verify(server: ServerProcess) -> subprocess.CompletedProcess[str]:
    """``linevault audit verify`` straight from the database (no server involved)."""
    return subprocess.run(
        [LINEVAULT, "audit", "verify", "--json"],
        env=_env(server.data_dir, server.database_url, server.env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_problem(resp: httpx.Response, codes: set[str], *, secrets: Iterable[str] = ()) -> None:
    """A clean RFC 9457 body with one of ``codes``: no trace, no secret, no driver text."""
    assert resp.headers.get("content-type", "").startswith("application/problem+json"), (
        resp.status_code,
        resp.text,
    )
    body: dict[str, Any] = resp.json()
    assert body["code"] in codes, body
    assert body["status"] == resp.status_code, body
    text = resp.text
    for marker in ("Traceback", 'File "', "sqlalchemy", "psycopg", "sqlite3", "OperationalError"):
        assert marker not in text, text
    for secret in secrets:
        assert secret not in text, "a secret leaked into an error body"


def wait_for(
    check: Callable[[], bool], *, timeout: float, interval: float = 0.05, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@contextmanager
def small_tmpfs(path: Path, *, size_mb: int) -> Iterator[Path]:
    """Mount a ``size_mb`` tmpfs at ``path`` (needs root or CAP_SYS_ADMIN), unmount after."""
    import pytest

    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()[:200]}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def fill_disk(path: Path) -> int:
    """Write ``path`` until the volume is full (ENOSPC); returns the bytes written."""
    import errno

    chunk = b"\0" * 65536
    written = 0
    with path.open("wb", buffering=0) as out:
        while True:
            try:
                written += out.write(chunk) or 0
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
        # the last partial chunk: fill byte by byte in 4 KiB steps
        for size in (4096, 512, 1):
            while True:
                try:
                    written += out.write(b"\0" * size) or 0
                except OSError:
                    break
    return written
