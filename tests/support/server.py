"""A real ``linevault serve`` process for end-to-end tests.

Each server gets a fresh data dir (``linevault init --json``) and either a fresh SQLite
file or the given PostgreSQL database, listens on a free loopback port, and is stopped
(SIGTERM, then SIGKILL) when the test ends.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pyotp

__all__ = ["Admin", "ServerProcess", "free_port", "init_data_dir", "running_server"]

LINEVAULT = str(Path(sys.executable).with_name("linevault"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Admin:
    email: str
    password: str
    totp_secret: str
    recovery_codes: tuple[str, ...] = ()

    def code(self) -> str:
        return pyotp.TOTP(self.totp_secret).now()


def _env(
    data_dir: Path, database_url: str | None, extra: Mapping[str, str] | None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEVAULT_")}
    env["LINEVAULT_DATA_DIR"] = str(data_dir)
    env["LINEVAULT_LOG_LEVEL"] = "warning"
    # No server a test starts asks a platform, unless the test points it at the stand-in.
    env["LINEVAULT_PROVIDER_CHECKS"] = "off"
    if database_url:
        env["LINEVAULT_DATABASE_URL"] = database_url
    env.update(extra or {})
    return env


def init_data_dir(
    data_dir: Path, *, database_url: str | None = None, env: Mapping[str, str] | None = None
) -> Admin:
    result = subprocess.run(
        [LINEVAULT, "init", "--admin-email", "admin@e2e.test", "--json"],
        env=_env(data_dir, database_url, env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"linevault init failed: {result.stderr[-2000:]}")
    doc = json.loads(result.stdout)
    return Admin(
        doc["admin_email"],
        doc["admin_password"],
        doc["admin_totp_secret"],
        tuple(doc.get("admin_recovery_codes", ())),
    )


@dataclass
class ServerProcess:
    data_dir: Path
    database_url: str | None
    port: int
    env: dict[str, str]
    workers: int = 1
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, timeout: float = 60.0, wait: bool = True) -> None:
        """Start serving; with ``wait`` (the default) return once health answers 200."""
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [LINEVAULT, "serve", "--port", str(self.port), "--workers", str(self.workers)],
            env=_env(self.data_dir, self.database_url, self.env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if not wait:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.logs()}")
            try:
                if httpx.get(f"{self.url}/v1/sys/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not become healthy:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the whole process group: a crash, not a shutdown."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()


@contextmanager
def running_server(
    tmp_path: Path,
    *,
    database_url: str | None = None,
    env: Mapping[str, str] | None = None,
    workers: int = 1,
    admin: Admin | None = None,
) -> Iterator[tuple[ServerProcess, Admin]]:
    """Initialise a data dir (unless ``admin`` says it exists) and serve it."""
    data_dir = tmp_path / "var"
    if admin is None:
        admin = init_data_dir(data_dir, database_url=database_url, env=env)
    server = ServerProcess(data_dir, database_url, free_port(), dict(env or {}), workers)
    server.start()
    try:
        yield server, admin
    finally:
        server.stop()
