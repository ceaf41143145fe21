"""HTTP metrics and the ``/metrics`` exposition, through ``prometheus_client``.

One process: the default registry. Several worker processes (``linevault serve
--workers N`` sets ``PROMETHEUS_MULTIPROC_DIR`` to a fresh directory before the workers
start): every process writes its counters and histograms to its own file there, and a
scrape of any worker reads them all (``MultiProcessCollector``), so ``/metrics`` sums the
whole server whichever worker answers. The domain's metrics are in :mod:`vault.metrics`.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

from vault.metrics import Labelled

__all__ = ["FETCHES", "FETCH_DURATION", "MULTIPROC_ENV", "Metrics", "render"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own variable
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

HTTP_REQUESTS = Counter(
    "linevault_http_requests",
    "HTTP requests by route and status.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "linevault_http_request_duration_seconds",
    "Request latency by route.",
    ["route"],
    buckets=_BUCKETS,
)
FETCH_DURATION = Histogram(
    "linevault_fetch_duration_seconds",
    "Credential fetch latency (decision, secret and durable audit event) by API "
    "(native, vault_kv) and outcome (success, or the refusal's error class).",
    ["api", "outcome"],
    buckets=_BUCKETS,
)


FETCHES = Labelled(FETCH_DURATION)
_REQUESTS = Labelled(HTTP_REQUESTS)
_DURATIONS = Labelled(HTTP_DURATION)


class Metrics:
    """What the request middleware records for every request."""

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        _REQUESTS(method, route, str(status)).inc()
        _DURATIONS(route).observe(seconds)


def render() -> tuple[bytes, str]:
    """The exposition and its content type: every worker's values in multiprocess mode."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
