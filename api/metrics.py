"""A small Prometheus text-format registry (per process; scrape each process)."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable

__all__ = ["Metrics"]

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self._hist: dict[str, list[int]] = defaultdict(lambda: [0] * (len(_BUCKETS) + 1))
        self._sum: dict[str, float] = defaultdict(float)
        self._counters: dict[str, int] = defaultdict(int)
        # Counters kept elsewhere (the domain's), read when scraped: name -> (help, read).
        self._sources: dict[str, tuple[str, Callable[[], int]]] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(method, route, status)] += 1
            buckets = self._hist[route]
            for i, bound in enumerate(_BUCKETS):
                if seconds <= bound:
                    buckets[i] += 1
                    break
            else:
                buckets[-1] += 1
            self._sum[route] += seconds

    def inc(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counters[name] += amount

    def count_from(self, name: str, help_text: str, read: Callable[[], int]) -> None:
        """Expose a counter the domain keeps (e.g. argon2 verifications) as ``linevault_<name>``."""
        with self._lock:
            self._sources[name] = (help_text, read)

    def render(self) -> str:
        lines = [
            "# HELP linevault_http_requests_total HTTP requests by route and status.",
            "# TYPE linevault_http_requests_total counter",
        ]
        with self._lock:
            for (method, route, status), count in sorted(self._requests.items()):
                lines.append(
                    f'linevault_http_requests_total{{method="{method}",route="{route}",'
                    f'status="{status}"}} {count}'
                )
            lines += [
                "# HELP linevault_http_request_duration_seconds Request latency by route.",
                "# TYPE linevault_http_request_duration_seconds histogram",
            ]
            for route, buckets in sorted(self._hist.items()):
                running = 0
                for bound, count in zip(_BUCKETS, buckets, strict=False):
                    running += count
                    lines.append(
                        f'linevault_http_request_duration_seconds_bucket{{route="{route}",'
                        f'le="{bound}"}} {running}'
                    )
                running += buckets[-1]
                lines.append(
                    f'linevault_http_request_duration_seconds_bucket{{route="{route}",le="+Inf"}} '
                    f"{running}"
                )
                lines.append(
                    f'linevault_http_request_duration_seconds_count{{route="{route}"}} {running}'
                )
                lines.append(
                    f'linevault_http_request_duration_seconds_sum{{route="{route}"}} '
                    f"{self._sum[route]:.6f}"
                )
            for name, value in sorted(self._counters.items()):
                lines.append(f"# TYPE linevault_{name} counter")
                lines.append(f"linevault_{name} {value}")
            sources = sorted(self._sources.items())
        for name, (help_text, read) in sources:
            lines.append(f"# HELP linevault_{name} {help_text}")
            lines.append(f"# TYPE linevault_{name} counter")
            lines.append(f"linevault_{name} {read()}")
        return "\n".join(lines) + "\n"
