"""Group commit for audit events that carry no other state change.

Credential fetches and denied attempts write nothing but their event, so they are handed
to one writer thread per process. It takes every event waiting, appends them to the
chain in one transaction and commits once; each request blocks until the batch holding
its event is durable (fail-closed: a failed batch fails every request in it). Under load
a batch grows while the previous commit is in flight, so throughput rises with
concurrency instead of being bounded by one fsync per request.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from sqlalchemy.orm import Session

from vault.audit.chain import append_events
from vault.audit.events import AuditEvent
from vault.clock import Clock
from vault.errors import AuditUnavailable
from vault.storage.engine import SessionFactory

__all__ = ["AuditWriter", "BatchHook"]

log = logging.getLogger("linevault.audit")

# Called inside the batch transaction after the events are chained (rows include seq and
# hash); used for runner usage counters and signed checkpoints.
BatchHook = Callable[[Session, Sequence[AuditEvent], Sequence[dict[str, object]]], None]

_Item = tuple[AuditEvent, "Future[int]"]


class AuditWriter:
    def __init__(
        self,
        sessions: SessionFactory,
        *,
        clock: Clock,
        batch_max: int = 512,
        hooks: Sequence[BatchHook] = (),
        idle_hook: Callable[[], object] | None = None,
        idle_seconds: float = 1.0,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._batch_max = batch_max
        self._hooks = list(hooks)
        self._idle_hook = idle_hook
        self._idle_seconds = idle_seconds
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopping = False

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def dispose(self) -> None:
        """Close the writer's connections (its session factory's engine)."""
        bind = self._sessions.kw.get("bind")
        if bind is not None and hasattr(bind, "dispose"):
            bind.dispose()

    def add_hook(self, hook: BatchHook) -> None:
        self._hooks.append(hook)

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._stopping = False
                self._thread = threading.Thread(
                    target=self._run, name="linevault-audit-writer", daemon=True
                )
                self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            self._stopping = True
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)

    def submit(self, event: AuditEvent) -> Future[int]:
        future: Future[int] = Future()
        if self._thread is None:
            future.set_exception(AuditUnavailable("the audit writer is not running"))
            return future
        self._queue.put((event, future))
        return future

    def record(self, event: AuditEvent, *, timeout: float = 10.0) -> int:
        """Write ``event`` durably and return its sequence number, or raise AuditUnavailable."""
        future = self.submit(event)
        try:
            return future.result(timeout)
        except AuditUnavailable:
            raise
        except FutureTimeout:
            raise AuditUnavailable() from None
        except Exception:
            raise AuditUnavailable() from None

    # -- the writer thread ------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self._idle_seconds)
            except queue.Empty:
                self._idle()
                continue
            if first is None:
                self._drain_and_fail()
                return
            batch = [first]
            stop = False
            while len(batch) < self._batch_max:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._commit(batch)
            if stop:
                self._drain_and_fail()
                return

    def _commit(self, batch: list[_Item]) -> None:
        events = [event for event, _ in batch]
        try:
            session = self._sessions()
            try:
                rows = append_events(session, events, now=self._clock.now())
                for hook in self._hooks:
                    hook(session, events, rows)
                session.commit()
            except BaseException:
                session.rollback()
                raise
            finally:
                session.close()
        except Exception as exc:  # fail every waiter: no record, no answer
            log.error("audit batch of %d events failed: %s", len(batch), type(exc).__name__)
            for _, future in batch:
                future.set_exception(AuditUnavailable())
            return
        for (_, future), row in zip(batch, rows, strict=True):
            seq = row["seq"]
            assert isinstance(seq, int)
            future.set_result(seq)

    def _idle(self) -> None:
        if self._idle_hook is None:
            return
        try:
            self._idle_hook()
        except Exception as exc:
            log.warning("audit idle task failed: %s", type(exc).__name__)

    def _drain_and_fail(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item[1].set_exception(AuditUnavailable("the audit writer stopped"))
