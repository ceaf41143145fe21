"""From the audit writer's thread to the event loop, one wake-up per batch.

The writer reports each event's outcome through a callback from its thread. Awaiting a
``concurrent.futures.Future`` per event through ``asyncio.wrap_future`` would cost every
request a Future (with its condition variable), a ``call_soon_threadsafe`` (a self-pipe
write and a loop wake-up) and a timeout handle; under load a batch of N events would wake
the loop N times. The bridge collects completions in a deque and schedules ONE drain per
burst, which resolves every waiting request of the batch in a single loop iteration.

Deadlines work the same way: instead of a timer handle per request (``asyncio.timeout``
schedules and cancels one each time), waiters are queued with their deadline and one
sweep every ``tick`` seconds fails those whose time has passed with ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from typing import cast

from vault.audit.writer import Done

__all__ = ["AuditBridge"]


class AuditBridge:
    """Per event loop; create it on the loop it serves."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, tick: float = 0.1) -> None:
        self.loop = loop
        self._done: deque[tuple[asyncio.Future[int], int | None, BaseException | None]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False
        self._tick = tick
        self._deadlines: deque[tuple[float, asyncio.Future[int]]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None

    def watch(self, *, timeout: float | None = None) -> tuple[asyncio.Future[int], Done]:
        """An awaitable and the writer callback that completes it; with ``timeout``, the
        awaitable fails with ``TimeoutError`` at most ``tick`` seconds after the deadline
        (use one timeout per bridge: the deadlines are swept in arrival order)."""
        waiter: asyncio.Future[int] = self.loop.create_future()
        if timeout is not None:
            self._deadlines.append((self.loop.time() + timeout, waiter))
            if self._sweeper is None:
                self._sweeper = self.loop.call_later(self._tick, self._sweep)

        def done(seq: int | None, exc: BaseException | None) -> None:
            self._completed(waiter, seq, exc)

        return waiter, done

    def _sweep(self) -> None:
        self._sweeper = None
        now = self.loop.time()
        deadlines = self._deadlines
        while deadlines and (deadlines[0][1].done() or deadlines[0][0] <= now):
            _, waiter = deadlines.popleft()
            if not waiter.done():
                waiter.set_exception(TimeoutError())
        if deadlines:
            self._sweeper = self.loop.call_later(self._tick, self._sweep)

    def _completed(
        self, waiter: asyncio.Future[int], seq: int | None, exc: BaseException | None
    ) -> None:
        # Runs in the writer thread (or inline when the writer is not running).
        self._done.append((waiter, seq, exc))
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting
            self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            self._scheduled = False
        while self._done:
            waiter, seq, exc = self._done.popleft()
            if waiter.done():  # the request gave up (timeout, disconnect)
                continue
            if exc is not None:
                waiter.set_exception(exc)
            else:
                waiter.set_result(cast(int, seq))
