"""The domain's Prometheus metrics, each defined once (``prometheus_client``).

Counters and histograms only: in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, which
``linevault serve --workers N`` sets up) every worker writes its values to its own file
and one scrape of any worker sums them all, which is right for counters and histograms
and would not be for a per-process gauge. The HTTP metrics and the exposition live in
:mod:`api.metrics`.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from prometheus_client import Counter, Histogram

__all__ = [
    "ARGON2_VERIFICATIONS",
    "AUDIT_BATCH_EVENTS",
    "DECISIONS",
    "DECISION_CACHE",
    "PLATFORMS",
    "PLATFORM_REQUESTS",
    "TOTP_CHECKS",
    "Labelled",
    "count_platform_request",
]

_M = TypeVar("_M", Counter, Histogram)


class Labelled(Generic[_M]):
    """A metric's children by label values, each looked up once.

    ``metric.labels(...)`` takes a lock and builds a key on every call; on the fetch path
    (four labelled metrics a request) that was measurable. Label values here come from
    small fixed sets (routes, statuses, outcomes), so the map stays small.
    """

    def __init__(self, metric: _M) -> None:
        self._metric: _M = metric
        self._children: dict[tuple[str, ...], _M] = {}

    def __call__(self, *values: str) -> _M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


# The line types whose platforms the connectors call (docs/lines.md).
PLATFORMS = ("telegram", "instagram", "messenger")

AUDIT_BATCH_EVENTS = Histogram(
    "linevault_audit_batch_events",
    "Audit events per group commit (one transaction each).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
DECISION_CACHE = Counter(
    "linevault_fetch_decisions",
    "Credential fetch decisions by source: hit (cached row, no SQL read), stale (a cached "
    "decision refused by a newer authorization epoch), miss (read from the database).",
    ["result"],
)
PLATFORM_REQUESTS = Counter(
    "linevault_platform_requests",
    "Outbound calls to the platforms (Telegram Bot API, Graph, Instagram) by outcome.",
    ["platform", "outcome"],
)
ARGON2_VERIFICATIONS = Counter(
    "linevault_argon2_verifications",
    "Password verifications (argon2id) evaluated.",
)
TOTP_CHECKS = Counter("linevault_totp_checks", "TOTP and recovery codes evaluated.")

# Every series exists from the start (at 0), so dashboards and alerts see them before
# the first event, in multiprocess mode too (a series is only written once created).
DECISIONS = Labelled(DECISION_CACHE)
for _result in ("hit", "stale", "miss"):
    DECISIONS(_result)
for _platform in PLATFORMS:
    for _outcome in ("ok", "refused", "error"):
        PLATFORM_REQUESTS.labels(platform=_platform, outcome=_outcome)


def count_platform_request(platform: str, outcome: str) -> None:
    """One outbound platform call: ``ok``, ``refused`` (the platform said no: a 4xx,
    Graph error 190) or ``error`` (unreachable, 5xx, timeout). For the connectors."""
    PLATFORM_REQUESTS.labels(platform=platform, outcome=outcome).inc()
