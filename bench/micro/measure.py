"""What the in-process benchmarks record besides pytest-benchmark's own timings."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from bench.http.cpu import CpuMeter, wait_for_quiet

QUIET_PCT = 15.0  # % of one core that other processes may use before a run

# The ``other_cpu`` fixture: ``with other_cpu():`` around what a benchmark times.
OtherCpu = Callable[[], AbstractContextManager[None]]


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile of already sorted values."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextmanager
def other_cpu(benchmark: Any, *, max_wait_s: float) -> Iterator[None]:
    """Record how much CPU other processes used during the block, after a quiet wait.

    The machine is small and may be shared: a figure taken while something else ran is
    flagged by this number (``other_cpu_pct``, % of one core) rather than trusted. The
    wait (at most ``max_wait_s``; 0 skips it) is for the machine to go quiet first.
    """
    if max_wait_s > 0:
        before = wait_for_quiet([], threshold_pct=QUIET_PCT, max_wait_s=max_wait_s)
        benchmark.extra_info["other_cpu_before_pct"] = round(before)
    meter = CpuMeter([])
    meter.start()
    yield
    benchmark.extra_info["other_cpu_pct"] = round(meter.stop().others_pct)


def per_call_us(benchmark: Any) -> float:
    """Median and p99 of single calls (rounds of one iteration) into ``extra_info``, in µs.

    Returns the median.
    """
    data = sorted(benchmark.stats.stats.data)
    median = round(statistics.median(data) * 1e6, 2)
    benchmark.extra_info["median_us"] = median
    benchmark.extra_info["p99_us"] = round(percentile(data, 0.99) * 1e6, 2)
    return median


def latency_ms(latencies: Sequence[float], seconds: float) -> dict[str, float]:
    """Count, rate and p50/p99/max of operations timed in seconds, over ``seconds``."""
    if not latencies:
        return {"count": 0}
    ordered = sorted(latencies)
    return {
        "count": len(ordered),
        "per_s": round(len(ordered) / seconds),
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(percentile(ordered, 0.99) * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3),
    }
