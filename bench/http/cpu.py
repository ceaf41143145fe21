"""CPU accounting, to tell whether other work on the machine disturbed a run.

The benchmark machine is small (2 cores) and may be shared. For every run the harness
measures how much CPU went to processes that are neither the target server, nor the load
generator, nor this harness, nor PostgreSQL; a run with much of it is flagged "noisy".
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


def _system_busy_ticks() -> int:
    """Busy jiffies of all CPUs since boot (everything but idle and iowait)."""
    fields = (PROC / "stat").read_text().split("\n", 1)[0].split()[1:]
    values = [int(v) for v in fields]
    # user nice system idle iowait irq softirq steal (guest time is inside user/nice).
    return sum(values[:8]) - values[3] - values[4]


def _process_ticks(pgids: set[int], names: set[str]) -> int:
    """utime + stime of live processes in one of ``pgids`` or named one of ``names``."""
    total = 0
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue  # the process is gone
        comm = raw[raw.find("(") + 1 : raw.rfind(")")]
        rest = raw[raw.rfind(")") + 2 :].split()
        # rest[0] is field 3 (state): pgrp is field 5, utime 14, stime 15.
        if int(rest[2]) in pgids or comm in names:
            total += int(rest[11]) + int(rest[12])
    return total


def _children_ticks() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) * CLK_TCK


@dataclass
class CpuWindow:
    """CPU used during a window, in percent of one core."""

    wall_s: float
    total_pct: float
    ours_pct: float

    @property
    def others_pct(self) -> float:
        return max(0.0, self.total_pct - self.ours_pct)


class CpuMeter:
    """Measures one window: ``start()`` before the run, ``stop()`` after it."""

    def __init__(self, server_pgids: Iterable[int], names: Iterable[str] = ("postgres",)) -> None:
        self.pgids = {*server_pgids, os.getpgrp()}
        self.names = set(names)
        self._t0 = 0.0
        self._busy0 = 0
        self._ours0 = 0.0

    def _ours(self) -> float:
        return _process_ticks(self.pgids, self.names) + _children_ticks()

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._busy0 = _system_busy_ticks()
        self._ours0 = self._ours()

    def stop(self) -> CpuWindow:
        wall = max(time.monotonic() - self._t0, 1e-6)
        busy = _system_busy_ticks() - self._busy0
        ours = self._ours() - self._ours0
        scale = 100.0 / (wall * CLK_TCK)
        return CpuWindow(wall_s=wall, total_pct=busy * scale, ours_pct=ours * scale)


def wait_for_quiet(
    server_pgids: Iterable[int], *, threshold_pct: float, max_wait_s: float
) -> float:
    """Wait (bounded) until other processes use less than ``threshold_pct`` of one core.

    Returns the last measured foreign load, in percent of one core.
    """
    meter = CpuMeter(server_pgids)
    deadline = time.monotonic() + max_wait_s
    while True:
        meter.start()
        time.sleep(1.0)
        others = meter.stop().others_pct
        if others < threshold_pct or time.monotonic() >= deadline:
            return others
