"""Two server processes appending to one database at once still build one valid chain:
no fork, no lost or duplicated event, contiguous seqs, checkpoints that verify."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.support.audit import verify_chain
from vault.runtime import Runtime
from vault.storage.models import AuditEventRow

N_PER_PROCESS = 1200
THREADS = 16


@pytest.mark.slow
def test_two_processes_build_one_chain(runtime: Runtime, settings, db_url: str) -> None:  # type: ignore[no-untyped-def]
    runtime.audit_writer.stop()  # only the two worker processes write
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.audit_worker",
                str(settings.data_dir),
                db_url,
                tag,
                str(N_PER_PROCESS),
                str(THREADS),
            ],
            cwd=root,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("p1", "p2")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err

    with runtime.readonly_sessions() as s:
        rows = s.execute(
            select(AuditEventRow.seq, AuditEventRow.resource_id).order_by(AuditEventRow.seq)
        ).all()
    seqs = [r.seq for r in rows]
    assert seqs == list(range(1, len(seqs) + 1))  # contiguous, no duplicates
    ids = Counter(
        r.resource_id for r in rows if r.resource_id and r.resource_id[:3] in ("p1-", "p2-")
    )
    expected = {f"{tag}-{i}" for tag in ("p1", "p2") for i in range(N_PER_PROCESS)}
    assert set(ids) == expected  # none lost
    assert all(count == 1 for count in ids.values())  # none duplicated
    assert len(rows) == 2 * N_PER_PROCESS + 1  # + system.init

    result = verify_chain(runtime)
    assert result.ok, result
    assert result.events_checked == 2 * N_PER_PROCESS + 1
    assert result.checkpoints_checked >= (2 * N_PER_PROCESS) // 100 // 2
