"""Process and network helpers shared by the benchmark harness.

Every server the harness starts runs in its own session (process group) so that it can be
stopped together with all of its children (uvicorn workers, for instance).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

import httpx

LOCALHOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[2]


class BenchError(RuntimeError):
    """A benchmark step failed (a target did not start, a setup call was refused...)."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def start_process(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session with stdout and stderr appended to ``log_path``."""
    log: IO[bytes] = log_path.open("ab")
    try:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=str(cwd) if cwd is not None else None,
            start_new_session=True,
        )
    finally:
        log.close()  # the child holds its own descriptor


def stop_process(proc: subprocess.Popen[bytes] | None, *, grace: float = 10.0) -> None:
    """Stop the process group led by ``proc``: SIGTERM, then SIGKILL after ``grace`` seconds."""
    if proc is None:
        return
    for sig, wait_for in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        # The group may outlive its leader (orphaned workers), so signal it regardless.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait_for)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; make sure nothing else of the group survives.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        return


def log_tail(path: Path, limit: int = 4000) -> str:
    """The last ``limit`` characters of a log file, for error messages."""
    try:
        data = path.read_bytes()
    except OSError:
        return "(no log)"
    return data[-limit:].decode("utf-8", "replace")


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
    interval: float = 0.1,
) -> None:
    """Poll ``check`` until it returns True; fail when ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log_tail(log_path) if log_path else ""
            raise BenchError(f"{what}: process exited with {proc.returncode}\n{tail}")
        with contextlib.suppress(httpx.TransportError):
            if check():
                return
        time.sleep(interval)
    tail = log_tail(log_path) if log_path else ""
    raise BenchError(f"{what}: not ready after {timeout:.0f}s\n{tail}")


def http_status(url: str, *, headers: Mapping[str, str] | None = None) -> int:
    """Status code of one GET (transport errors propagate)."""
    return httpx.get(url, headers=dict(headers or {}), timeout=5.0).status_code


def assert_local_url(url: str) -> None:
    """Refuse any URL that does not point at the loopback interface."""
    host = httpx.URL(url).host
    if host not in {LOCALHOST, "localhost"}:
        raise BenchError(f"refusing non-local address {url!r}: the bench talks to 127.0.0.1 only")
