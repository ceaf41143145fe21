"""The fetch path's cache of allowing decisions.

An entry is the row that allowed a fetch for (token hash, tenant, line), the
authorization epoch it was read under and the usage window it counted in. Envelopes stay
sealed in it. An entry is only a shortcut past the SQL read: the fetch's audit event
carries the entry's epoch as a guard, and the writer refuses it if the epoch moved
(:mod:`vault.runners.fetch`), so a stale entry costs a second decision, never a secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["CachedDecision", "DecisionCache"]

Key = tuple[bytes, str, str]


@dataclass(frozen=True, slots=True)
class CachedDecision:
    row: Any
    epoch: int
    window: int


class DecisionCache:
    """Bounded (oldest entry out first); ``size`` 0 keeps nothing."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: dict[Key, CachedDecision] = {}

    def get(self, key: Key, *, newest_epoch: int | None) -> CachedDecision | None:
        """The entry, unless it is older than the newest epoch the writer has seen."""
        entry = self._entries.get(key)
        if entry is None or (newest_epoch is not None and entry.epoch < newest_epoch):
            return None
        return entry

    def put(self, key: Key, row: Any, *, epoch: int, window: int) -> None:
        if self._size <= 0:
            return
        if len(self._entries) >= self._size:
            self._entries.pop(next(iter(self._entries)), None)
        self._entries[key] = CachedDecision(row, epoch, window)

    def forget(self, key: Key) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)
