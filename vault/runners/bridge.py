"""From the audit writer's thread to the event loop, one wake-up per batch.

The writer completes a ``concurrent.futures.Future`` per event. Awaiting each through
``asyncio.wrap_future`` costs every request a ``call_soon_threadsafe`` (a self-pipe write
and a loop wake-up) plus a timeout handle; under load a batch of N events then wakes the
loop N times. The bridge collects completions in a deque and schedules ONE drain per
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
from concurrent.futures import Future

__all__ = ["AuditBridge"]


class AuditBridge:
    """Per event loop; create it on the loop it serves."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, tick: float = 0.1) -> None:
        self.loop = loop
        self._done: deque[tuple[Future[int], asyncio.Future[int]]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False
        self._tick = tick
        self._deadlines: deque[tuple[float, asyncio.Future[int]]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None

    def watch(self, future: Future[int], *, timeout: float | None = None) -> asyncio.Future[int]:
        """An awaitable for ``future``; with ``timeout``, it fails with ``TimeoutError``
        at most ``tick`` seconds after the deadline (use one timeout per bridge: the
        deadlines are swept in arrival order)."""
        waiter: asyncio.Future[int] = self.loop.create_future()
        if timeout is not None:
            self._deadlines.append((self.loop.time() + timeout, waiter))
            if self._sweeper is None:
                self._sweeper = self.loop.call_later(self._tick, self._sweep)
        future.add_done_callback(lambda done: self._completed(done, waiter))
        return waiter

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

    def _completed(self, future: Future[int], waiter: asyncio.Future[int]) -> None:
        # Runs in the writer thread (or inline when the future was already done).
        self._done.append((future, waiter))
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
            future, waiter = self._done.popleft()
            if waiter.done():  # the request gave up (timeout, disconnect)
                continue
            exc = future.exception()
            if exc is not None:
                waiter.set_exception(exc)
            else:
                waiter.set_result(future.result())
