"""SIGKILL a process doing rotation + rewrap at random points; nothing may be lost.

After every kill: each credential still opens (under the old or the new KEK version),
exactly one KEK version is active and it is the tenant's, no line references a destroyed
version, and at most one rotation is running. A final uninterrupted run completes it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.support.keys import make_tenant, open_all, seed_lines, uncached
from vault.runtime import Runtime
from vault.settings import Settings
from vault.storage.engine import unit_of_work
from vault.storage.models import Kek, KeyRotation, Line, Tenant

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TRIALS = int(os.environ.get("LINEVAULT_CRASH_TRIALS", "20"))


class Zygote:
    """The warm parent of every trial process (see tests/support/rotation_child.py)."""

    def __init__(self, settings: Settings, tenant_id: str) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.rotation_child",
                str(settings.data_dir),
                settings.sqlalchemy_url,
                tenant_id,
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def trial(self, kill_at: int) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{kill_at}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the zygote died"
        result: dict[str, Any] = json.loads(line)
        return result

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _check_invariants(runtime: Runtime, tenant_id: str, secrets: dict[str, bytes]) -> None:
    assert open_all(runtime.engine, uncached(runtime.provider), tenant_id) == secrets
    with unit_of_work(runtime.sessions) as session:
        keks = {
            k.version: k
            for k in session.execute(select(Kek).where(Kek.tenant_id == tenant_id)).scalars()
        }
        tenant = session.get(Tenant, tenant_id)
        assert tenant is not None
        active = [v for v, k in keks.items() if k.state == "active"]
        assert active == [tenant.active_kek_version]
        for kek in keks.values():
            assert (kek.wrapped is None) == (kek.state == "destroyed")
        used = set(
            session.execute(select(Line.kek_version).where(Line.tenant_id == tenant_id)).scalars()
        )
        assert all(keks[v].state != "destroyed" for v in used if v is not None)
        running = (
            session.execute(
                select(KeyRotation).where(
                    KeyRotation.tenant_id == tenant_id, KeyRotation.state == "running"
                )
            )
            .scalars()
            .all()
        )
        assert len(running) <= 1
        if running:
            assert running[0].to_version == tenant.active_kek_version


def test_rotation_survives_sigkill_at_random_points(
    runtime: Runtime, settings: Settings, backend: str
) -> None:
    now = runtime.clock.now()
    with unit_of_work(runtime.sessions) as session:
        tenant_id = make_tenant(session, runtime.keyring, now=now)
    secrets = seed_lines(runtime.sessions, runtime.keyring, tenant_id=tenant_id, count=200, now=now)
    seed = int(os.environ.get("LINEVAULT_CRASH_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    kills = 0
    zygote = Zygote(settings, tenant_id)
    try:
        for trial in range(TRIALS):
            kill_at = rng.randint(1, 260)
            result = zygote.trial(kill_at)
            context = f"seed={seed} trial={trial} kill_at={kill_at} result={result}"
            assert result["signal"] == signal.SIGKILL or result["exit"] == 0, context
            kills += result["signal"] == signal.SIGKILL
            _check_invariants(runtime, tenant_id, secrets)
        # A restart without a kill finishes whatever was left and leaves one clean version.
        final = zygote.trial(0)
    finally:
        zygote.close()
    assert kills >= TRIALS // 2, f"too few kills landed (seed={seed})"
    assert final["exit"] == 0, final
    report = final["report"]
    assert report["state"] == "done", report
    _check_invariants(runtime, tenant_id, secrets)
    with unit_of_work(runtime.sessions) as session:
        states = {
            k.version: k.state
            for k in session.execute(select(Kek).where(Kek.tenant_id == tenant_id)).scalars()
        }
        versions = set(
            session.execute(select(Line.kek_version).where(Line.tenant_id == tenant_id)).scalars()
        )
    assert versions == {report["to_version"]}
    assert [v for v, s in states.items() if s != "destroyed"] == [report["to_version"]]
