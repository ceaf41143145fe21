"""The fetch harness end to end, so that it cannot rot: ``bench/http/fetch.py --smoke``.

The harness starts the bare app and a linevault server on SQLite as real processes, loads
them for a few seconds with its Python load generator (no wrk, no OpenBao) and checks the
audit trail. This test asserts the harness's own checks and that every request was
answered 2xx; it never asserts speed (a two-second run on a shared machine measures
nothing).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
NO_SOCKET_ERRORS = {"connect": 0, "read": 0, "write": 0, "timeout": 0}


def _run_smoke(out: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, str(REPO / "bench/http/fetch.py"), "--smoke", "--json-out", str(out)]
    proc = subprocess.Popen(
        argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.terminate()  # the harness stops its servers on SIGTERM
        stdout, stderr = proc.communicate(timeout=60)
        pytest.fail(f"the smoke run did not finish:\n{stdout}\n{stderr}")
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def test_fetch_harness_smoke_passes_its_checks(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    done = _run_smoke(out)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    targets = {t["name"]: t for t in report["targets"]}
    assert set(targets) == {"bare FastAPI", "linevault (sqlite)"}
    for target in targets.values():
        (run,) = target["runs"]
        assert run["requests"] > 0, target["name"]
        assert run["non2xx"] == 0, (target["name"], run["non2xx_by_status"])
        assert run["socket_errors"] == NO_SOCKET_ERRORS, target["name"]
    audit = report["audit"]["linevault (sqlite)"]
    assert audit["verdict"].startswith("exact"), audit
    # One event per 200 answer: as the server counted them, as the database holds them,
    # and as the client received them (the Python generator waits for every answer).
    served = audit["server_200_answers"]
    assert audit["events_counted"] == audit["events_in_database"] == served
    assert audit["ok_fetches_served"] == served
