"""A linevault server set up for the benchmark, through the CLI and the HTTP contract only.

Nothing here imports linevault: the harness drives ``linevault init`` / ``linevault serve``
and the public HTTP API (docs/api.md) like any client, so it works against whatever build is
installed in the environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import string
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import pyotp

from bench.http.common import (
    LOCALHOST,
    BenchError,
    assert_local_url,
    free_port,
    log_tail,
    start_process,
    stop_process,
    wait_until,
)

DbKind = Literal["sqlite", "postgres"]

DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ADMIN_EMAIL = "admin@bench.local"
TOKEN_ALPHABET = string.ascii_letters + string.digits + "_-"
AUDIT_PAGE_LIMIT = 1000
FETCH_ROUTE = "/v1/tenants/{tenant_id}/lines/{line_id}/credential"
MAX_AUDIT_PAGES = 100_000  # bound on the cursor walk (1e8 events)

# Settings the harness needs from the server (see docs/benchmarks.md).
SERVER_ENV = {
    "LINEVAULT_RUNNER_TOKEN_TTL_SECONDS": "3600",
    "LINEVAULT_RUNNER_RATE_LIMIT_PER_MINUTE": "100000000",
    "LINEVAULT_LOG_LEVEL": "warning",
    # The benchmark's lines hold made-up tokens: never ask the real platforms about them.
    "LINEVAULT_PROVIDER_CHECKS": "off",
}


def find_linevault() -> str:
    """The ``linevault`` command of this environment (the venv first, then PATH)."""
    beside = Path(sys.executable).parent / "linevault"
    if beside.is_file():
        return str(beside)
    found = shutil.which("linevault")
    if found:
        return found
    raise BenchError("the linevault command is not installed (pip install -e .)")


def bench_bot_token() -> str:
    """A telegram-shaped bot token: digits, ':', 35 characters of A-Za-z0-9_-."""
    return "123456:" + "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(35))


class PostgresDatabase:
    """A throwaway database on the local PostgreSQL, dropped by ``drop()``."""

    def __init__(self, admin_url: str = DEFAULT_PG_ADMIN_URL) -> None:
        assert_local_url(admin_url.replace("postgresql://", "http://", 1))
        self.admin_url = admin_url
        self.name = f"linevault_bench_{secrets.token_hex(6)}"
        self.created = False

    def _connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10)

    def create(self) -> str:
        """Create the database; returns the SQLAlchemy URL for LINEVAULT_DATABASE_URL."""
        with self._connect() as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        self.created = True
        rest = self.admin_url.split("://", 1)[1].rsplit("/", 1)[0]
        return f"postgresql+psycopg://{rest}/{self.name}"

    def settings(self) -> dict[str, str]:
        """Durability settings of the server: fsync and synchronous_commit must be on."""
        with self._connect() as conn:
            out: dict[str, str] = {}
            for name in ("fsync", "synchronous_commit", "wal_sync_method", "server_version"):
                row = conn.execute(f"SHOW {name}").fetchone()
                out[name] = str(row[0]) if row else "?"
            return out

    def drop(self) -> None:
        if not self.created:
            return
        with self._connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self.created = False


def postgres_settings(admin_url: str = DEFAULT_PG_ADMIN_URL) -> dict[str, str]:
    return PostgresDatabase(admin_url).settings()


@dataclass
class VaultTarget:
    """A running linevault with one tenant, one telegram line and one granted runner."""

    db: DbKind
    workers: int
    base_url: str = ""
    data_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="lvbench-")))
    pg_admin_url: str = DEFAULT_PG_ADMIN_URL
    admin_email: str = ADMIN_EMAIL
    admin_password: str = field(default="", repr=False)
    totp_secret: str = field(default="", repr=False)
    session_token: str = field(default="", repr=False)
    access_token: str = field(default="", repr=False)
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    tenant_id: str = ""
    line_id: str = ""
    workflow_id: str = "wf_bench"
    run_id: str = field(default_factory=lambda: f"run_{secrets.token_hex(4)}")
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    database: PostgresDatabase | None = None
    _database_url: str = field(default="", repr=False)
    _last_totp_step: int = field(default=-1, repr=False)

    # ----------------------------------------------------------------- lifecycle
    @property
    def log_path(self) -> Path:
        return self.data_dir / "bench-server.log"

    @property
    def fetch_path(self) -> str:
        return f"/v1/tenants/{self.tenant_id}/lines/{self.line_id}/credential"

    @property
    def fetch_url(self) -> str:
        return self.base_url + self.fetch_path

    @property
    def fetch_headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.access_token}",
            "X-Workflow-Id": self.workflow_id,
            "X-Run-Id": self.run_id,
        }

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LINEVAULT_")}
        env.update(SERVER_ENV)
        env["LINEVAULT_DATA_DIR"] = str(self.data_dir)
        if self.database is not None:
            env["LINEVAULT_DATABASE_URL"] = self._database_url
        return env

    def start(self, *, startup_timeout: float = 90.0) -> None:
        """Create the database, run ``linevault init`` and ``serve``, then provision."""
        linevault = find_linevault()
        if self.db == "postgres":
            self.database = PostgresDatabase(self.pg_admin_url)
            self._database_url = self.database.create()
        init = subprocess.run(
            [
                linevault,
                "init",
                "--admin-email",
                self.admin_email,
                "--data-dir",
                str(self.data_dir),
                "--json",
            ],
            capture_output=True,
            text=True,
            env=self._env(),
            timeout=300,
            check=False,
        )
        if init.returncode != 0:
            raise BenchError(f"linevault init exited {init.returncode}: {init.stderr[-2000:]}")
        creds = _parse_init_json(init.stdout)
        self.admin_password = str(creds["admin_password"])
        self.totp_secret = str(creds["admin_totp_secret"])
        port = free_port()
        self.base_url = f"http://{LOCALHOST}:{port}"
        self.process = start_process(
            [
                linevault,
                "serve",
                "--data-dir",
                str(self.data_dir),
                "--host",
                LOCALHOST,
                "--port",
                str(port),
                "--workers",
                str(self.workers),
            ],
            log_path=self.log_path,
            env=self._env(),
            cwd=self.data_dir,
        )
        with httpx.Client(base_url=self.base_url, timeout=10.0) as client:
            wait_until(
                lambda: client.get("/v1/sys/health").status_code == 200,
                timeout=startup_timeout,
                what=f"linevault ({self.db}) health",
                proc=self.process,
                log_path=self.log_path,
            )
            self._provision(client)

    def stop(self) -> None:
        """Stop the server's process group, drop the database, remove the data dir."""
        try:
            stop_process(self.process)
        finally:
            self.process = None
            try:
                if self.database is not None:
                    self.database.drop()
            finally:
                shutil.rmtree(self.data_dir, ignore_errors=True)

    # ------------------------------------------------------------- HTTP helpers
    def _call(
        self,
        client: httpx.Client,
        method: str,
        path: str,
        *,
        body: Any = None,
        form: dict[str, str] | None = None,
        auth: bool = True,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.session_token}"} if auth else {}
        resp = client.request(method, path, json=body, data=form, headers=headers, params=params)
        if resp.status_code >= 300:
            # Problem bodies never carry secrets (docs/api.md), so they are safe to show.
            raise BenchError(f"linevault {method} {path}: {resp.status_code} {resp.text[:500]}")
        if not resp.content:
            return {}
        data: dict[str, Any] = resp.json()
        return data

    def _next_totp_code(self) -> str:
        """A TOTP code from a time step not used before (codes are single-use per user)."""
        totp = pyotp.TOTP(self.totp_secret)
        for _ in range(40):  # at most ~one 30 s step of waiting
            step = int(time.time()) // totp.interval
            if step > self._last_totp_step:
                self._last_totp_step = step
                return totp.at(step * totp.interval)
            time.sleep(1.0)
        raise BenchError("no fresh TOTP step after 40 s")

    def login(self, client: httpx.Client) -> None:
        """Password + TOTP login of the platform admin; sets ``session_token``."""
        first = self._call(
            client,
            "POST",
            "/v1/auth/login",
            body={"email": self.admin_email, "password": self.admin_password},
            auth=False,
        )
        if not first.get("mfa_required"):
            self.session_token = str(first["session_token"])
            return
        second = self._call(
            client,
            "POST",
            "/v1/auth/mfa",
            body={"mfa_token": first["mfa_token"], "code": self._next_totp_code()},
            auth=False,
        )
        self.session_token = str(second["session_token"])

    def _provision(self, client: httpx.Client) -> None:
        self.login(client)
        self.tenant_id = str(
            self._call(client, "POST", "/v1/tenants", body={"name": "bench tenant"})["id"]
        )
        self.line_id = str(
            self._call(
                client,
                "POST",
                f"/v1/tenants/{self.tenant_id}/lines",
                body={
                    "type": "telegram",
                    "name": "bench",
                    "credential": {"bot_token": bench_bot_token()},
                },
            )["id"]
        )
        runner = self._call(client, "POST", "/v1/runners", body={"name": "bench runner"})
        self.client_id = str(runner["client_id"])
        self.client_secret = str(runner["client_secret"])
        self._call(
            client,
            "POST",
            f"/v1/tenants/{self.tenant_id}/grants",
            body={"runner_id": runner["id"], "lines": ["*"]},
        )
        self.refresh_runner_token(client)

    def refresh_runner_token(self, client: httpx.Client | None = None) -> None:
        """OAuth client-credentials grant for the bench runner; sets ``access_token``."""
        own = client is None
        client = client or httpx.Client(base_url=self.base_url, timeout=10.0)
        try:
            token = self._call(
                client,
                "POST",
                "/v1/runner/token",
                form={
                    "grant_type": "client_credentials",
                    "client_id": self.client_id,
                    "client_secret": self.client_secret,
                },
                auth=False,
            )
            self.access_token = str(token["access_token"])
        finally:
            if own:
                client.close()

    def probe(self) -> dict[str, Any]:
        """One fetch, checked against the contract; counts as one audited 2xx fetch."""
        resp = httpx.get(self.fetch_url, headers=self.fetch_headers, timeout=10.0)
        if resp.status_code != 200:
            raise BenchError(f"linevault fetch probe: {resp.status_code} {resp.text[:300]}")
        body: dict[str, Any] = resp.json()
        missing = {
            "line_id",
            "tenant_id",
            "type",
            "version",
            "credential",
            "expires_at",
            "lease_ttl",
        } - set(body)
        if missing or "no-store" not in resp.headers.get("cache-control", ""):
            raise BenchError(f"fetch response off contract: missing {sorted(missing)}")
        return body

    def served_fetches(self) -> int | None:
        """200 answers on the fetch route as the server counted them (``GET /metrics``).

        Exact where wrk's count is not (wrk drops the answers in flight when it stops),
        and for every worker: with several, one scrape sums them all (prometheus_client's
        multiprocess mode, set up by ``linevault serve --workers N``).
        """
        resp = httpx.get(self.base_url + "/metrics", timeout=10)
        resp.raise_for_status()
        marker = f'route="{FETCH_ROUTE}",status="200"}} '
        for line in resp.text.splitlines():
            if line.startswith("linevault_http_requests_total{") and marker in line:
                return int(float(line.rsplit(" ", 1)[1]))
        return 0

    def count_fetch_audit_events_in_db(self) -> int:
        """The same count read straight from the database (a cross-check of the API)."""
        query = (
            "SELECT count(*) FROM audit_events "
            "WHERE action = 'credential.fetch' AND outcome = 'success'"
        )
        if self.database is None:
            import sqlite3

            with contextlib.closing(sqlite3.connect(self.data_dir / "linevault.db")) as db:
                return int(db.execute(query).fetchone()[0])
        import psycopg

        url = "postgresql://" + self._database_url.split("://", 1)[1]
        with psycopg.connect(url, connect_timeout=10) as conn:
            row = conn.execute(query).fetchone()
            return int(row[0]) if row else 0

    def count_fetch_audit_events(self) -> int:
        """Successful credential.fetch events, walking the audit cursor to its end.

        The admin session was idle during the load: when it has lapsed (401), log in
        again (which may wait for a fresh TOTP step). A build without
        ``GET /v1/audit/events`` is counted in the database instead.
        """
        with httpx.Client(base_url=self.base_url, timeout=60.0) as client:

            def probe() -> httpx.Response:
                return client.get(
                    "/v1/audit/events",
                    params={"limit": 1},
                    headers={"Authorization": f"Bearer {self.session_token}"},
                )

            first = probe()
            if first.status_code == 401:
                self.login(client)
                first = probe()
            if first.status_code in (404, 405):
                return self.count_fetch_audit_events_in_db()
            total = 0
            cursor: str | None = None
            for _ in range(MAX_AUDIT_PAGES):
                params: dict[str, Any] = {
                    "action": "credential.fetch",
                    "outcome": "success",
                    "limit": AUDIT_PAGE_LIMIT,
                }
                if cursor:
                    params["cursor"] = cursor
                page = self._call(client, "GET", "/v1/audit/events", params=params)
                total += len(page.get("events", []))
                cursor = page.get("next_cursor")
                if not cursor:
                    return total
            raise BenchError(f"audit cursor walk exceeded {MAX_AUDIT_PAGES} pages")

    def server_log_tail(self) -> str:
        return log_tail(self.log_path)


def _parse_init_json(stdout: str) -> dict[str, Any]:
    """``linevault init --json`` prints exactly one JSON object on stdout."""
    text = stdout.strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BenchError(
            "linevault init --json did not print exactly one JSON object on stdout"
        ) from exc
    if not isinstance(data, dict) or not {"admin_password", "admin_totp_secret"} <= set(data):
        raise BenchError("linevault init --json: admin_password/admin_totp_secret missing")
    return data
