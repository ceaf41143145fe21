"""A bounded, time-limited in-memory cache of unwrapped tenant KEKs.

Unwrapping under an HSM costs a round trip, so hot tenants keep their KEK in memory,
but never more than ``max_entries`` keys nor for longer than ``ttl_seconds``. The fetch
path still decides from the KEK row's state: destroying a KEK moves the authorization
epoch, so every process reads the row again before serving (``vault/runners/fetch.py``),
and a KEK destroyed by another process is refused even while this cache holds it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["KekCache"]

_Key = tuple[str, int]


class KekCache:
    def __init__(
        self,
        *,
        max_entries: int,
        ttl_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max = max_entries
        self._ttl = ttl_seconds
        self._now = monotonic
        self._items: OrderedDict[_Key, tuple[bytes, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, tenant_id: str, version: int) -> bytes | None:
        # The hit path takes no lock: a single dict look-up is atomic in CPython, and this
        # sits on every credential fetch. Eviction is therefore by insertion order (oldest
        # first) rather than strict LRU; the TTL bounds every entry's life either way.
        key = (tenant_id, version)
        item = self._items.get(key)
        if item is None:
            return None
        value, stored = item
        if self._now() - stored > self._ttl:
            with self._lock:
                if self._items.get(key) is item:
                    del self._items[key]
            return None
        return value

    def put(self, tenant_id: str, version: int, value: bytes) -> None:
        if self._max <= 0 or self._ttl <= 0:
            return
        with self._lock:
            self._items[(tenant_id, version)] = (value, self._now())
            self._items.move_to_end((tenant_id, version))
            while len(self._items) > self._max:
                self._items.popitem(last=False)

    def forget_tenant(self, tenant_id: str) -> None:
        with self._lock:
            for key in [k for k in self._items if k[0] == tenant_id]:
                del self._items[key]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
