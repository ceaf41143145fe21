"""Resident memory of a server under 64 concurrent password logins (argon2id, 19 MiB each).

Starts ``linevault init`` / ``serve`` (SQLite, one process) with the argon2 memory budget
given (``--budget-mib``; the default setting is 256), sends ``--logins`` right-password
logins at once (the throttle is opened wide for the run so every login is evaluated),
and reports the server's RSS before, at its peak (sampled every 10 ms) and a few seconds
after, plus the statuses and the argon2 verifications the server counted (/metrics).

    python bench/http/login_rss.py --budget-mib 256 --logins 64
    python bench/http/login_rss.py --budget-mib 2048 --logins 64   # in effect unbounded
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.http.common import free_port, start_process, stop_process, wait_until
from bench.http.soak import _rss_kib
from bench.http.vault_target import find_linevault


def _serve(data_dir: Path, budget_mib: int) -> tuple[subprocess.Popen[bytes], str, dict[str, str]]:
    env = {
        "LINEVAULT_DATA_DIR": str(data_dir),
        "LINEVAULT_LOG_LEVEL": "warning",
        "LINEVAULT_ARGON2_MEMORY_BUDGET_MIB": str(budget_mib),
        "LINEVAULT_ARGON2_WAIT_SECONDS": "60",
        "LINEVAULT_THROTTLE_FREE_FAILURES": "100000",
        "LINEVAULT_UNAUTH_FAILURES_PER_WINDOW": "100000",
        "PATH": "/usr/bin:/bin",
    }
    init = subprocess.run(
        [find_linevault(), "init", "--admin-email", "admin@bench.local", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    creds = json.loads(init.stdout)
    port = free_port()
    log = data_dir / "server.log"
    proc = start_process([find_linevault(), "serve", "--port", str(port)], log_path=log, env=env)
    url = f"http://127.0.0.1:{port}"
    wait_until(
        lambda: httpx.get(f"{url}/v1/sys/health", timeout=2).status_code == 200,
        timeout=60,
        what="server",
        proc=proc,
        log_path=log,
    )
    return proc, url, {"email": creds["admin_email"], "password": creds["admin_password"]}


def run(budget_mib: int, logins: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        proc, url, login = _serve(Path(tmp) / "var", budget_mib)
        try:
            with httpx.Client(
                base_url=url, timeout=120, limits=httpx.Limits(max_connections=logins)
            ) as http:
                http.post("/v1/auth/login", json=login)  # warm: one argon2 run, imports done
                time.sleep(1)
                before = _rss_kib(proc.pid)
                peak = [before]
                done = threading.Event()

                def sample() -> None:
                    while not done.is_set():
                        peak[0] = max(peak[0], _rss_kib(proc.pid))
                        time.sleep(0.01)

                sampler = threading.Thread(target=sample)
                sampler.start()
                gate = threading.Barrier(logins)

                def one(_: int) -> int:
                    gate.wait()
                    return http.post("/v1/auth/login", json=login).status_code

                started = time.monotonic()
                with ThreadPoolExecutor(logins) as pool:
                    statuses = Counter(pool.map(one, range(logins)))
                elapsed = time.monotonic() - started
                done.set()
                sampler.join()
                time.sleep(3)
                after = _rss_kib(proc.pid)
                metrics = http.get("/metrics").text
                found = re.search(
                    r"^linevault_argon2_verifications_total ([0-9.e+]+)$", metrics, re.M
                )
        finally:
            stop_process(proc)
    return {
        "budget_mib": budget_mib,
        "logins": logins,
        "statuses": dict(statuses),
        "seconds": round(elapsed, 2),
        "argon2_verifications": int(float(found.group(1))) if found else None,
        "rss_mib_before": round(before / 1024),
        "rss_mib_peak": round(peak[0] / 1024),
        "rss_mib_after": round(after / 1024),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-mib", type=int, default=256)
    parser.add_argument("--logins", type=int, default=64)
    args = parser.parse_args()
    print(json.dumps(run(args.budget_mib, args.logins)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
