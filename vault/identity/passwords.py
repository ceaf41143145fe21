"""Password hashing with argon2id at or above OWASP's minimum (m=19 MiB, t=2, p=1).

Each argon2 computation holds ``memory_kib`` of memory while it runs, so a burst of
logins is a burst of memory: 64 at once is over 1 GiB. A semaphore sized to a memory
budget (``memory_budget_mib`` / the cost of one computation) bounds how many run at
once; a caller that cannot get a slot within ``wait_seconds`` is refused with
``RateLimited`` (429) instead of queueing without end. Every verification is counted
(``verifications``), so the work done can be observed from outside (``/metrics``).

Freed argon2 memory must also go back to the OS. glibc serves a request of 19 MiB with
``mmap`` at first, but its *dynamic* mmap threshold then rises past that size, and later
requests come from per-thread heaps that keep the memory after ``free``: the process
stayed at its peak (1.1 GB after 64 logins). A fixed threshold (:func:`_unmap_large_blocks`)
keeps every large block mmapped, so it is unmapped when argon2 frees it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import secrets
import threading
from collections.abc import Callable
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from vault.errors import RateLimited
from vault.metrics import ARGON2_VERIFICATIONS

__all__ = ["Passwords", "generate_password"]

_T = TypeVar("_T")
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
_MMAP_FROM_BYTES = 1024 * 1024


def _unmap_large_blocks() -> None:
    """Fix glibc's mmap threshold at 1 MiB (see the module docstring); elsewhere a no-op."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
    except OSError:
        return
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, _MMAP_FROM_BYTES)


_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"


def generate_password(length: int = 24) -> str:
    """A generated password (~137 bits) without look-alike characters."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


class Passwords:
    """argon2id hashing; a dummy hash keeps unknown accounts on the same work as known ones."""

    def __init__(
        self,
        *,
        memory_kib: int = 19_456,
        time_cost: int = 2,
        parallelism: int = 1,
        memory_budget_mib: int = 256,
        wait_seconds: float = 2.0,
    ) -> None:
        if memory_kib < 19_456 or time_cost < 2 or parallelism < 1:
            raise ValueError("argon2id parameters below OWASP's minimum")
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism
        )
        _unmap_large_blocks()
        self.concurrency = max(1, (memory_budget_mib * 1024) // memory_kib)
        self._slots = threading.BoundedSemaphore(self.concurrency)
        self._wait = wait_seconds
        self._count_lock = threading.Lock()
        self.verifications = 0
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))

    def _bounded(self, work: Callable[[], _T]) -> _T:
        """Run one argon2 computation within the memory budget; 429 when none is free."""
        if not self._slots.acquire(timeout=self._wait):
            raise RateLimited(retry_after=1)
        try:
            return work()
        finally:
            self._slots.release()

    def hash(self, password: str) -> str:
        return self._bounded(lambda: self._hasher.hash(password))

    def verify(self, stored_hash: str | None, password: str) -> bool:
        """Constant work whether or not the account exists (``stored_hash`` None)."""
        return self._bounded(lambda: self._verify(stored_hash, password))

    def _verify(self, stored_hash: str | None, password: str) -> bool:
        with self._count_lock:
            self.verifications += 1
        ARGON2_VERIFICATIONS.inc()
        try:
            return (
                self._hasher.verify(stored_hash or self._dummy, password)
                and stored_hash is not None
            )
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        return self._hasher.check_needs_rehash(stored_hash)
