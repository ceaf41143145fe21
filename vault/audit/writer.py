"""Group commit for audit events that carry no other state change.

Credential fetches and denied attempts write nothing but their event, so they are handed
to one writer thread per process. It takes every event waiting, appends them to the
chain in one transaction and commits once; each request blocks until the batch holding
its event is durable (fail-closed: a failed batch fails every request in it). Under load
a batch grows while the previous commit is in flight, so throughput rises with
concurrency instead of being bounded by one fsync per request.

Guards: an event may carry the authorization epoch its decision was made under (a
cached decision, see :mod:`vault.runners.fetch`). The batch then writes only if the
database's epoch still equals it, checked in the same transaction (or statement) that
appends the events; otherwise the guarded events are not written and their requests get
:class:`StaleDecision`, so they decide again from the database. The writer remembers the
newest epoch it read (:attr:`AuditWriter.epoch`) so callers can drop stale decisions
before submitting them.

A :class:`FastBatch` may take a batch in one statement (PostgreSQL); whenever it cannot
(a checkpoint is due, the head moved, an error), the transactional path below runs. The
hooks and the fast batch are given at construction (:func:`vault.runtime.open_runtime`)
and never change while the writer runs.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import cast

from sqlalchemy import text

from vault.audit.batching import (
    BatchHook,
    Done,
    FastBatch,
    StaleDecision,
    UnknownOutcome,
    WriteResult,
)
from vault.audit.chain import HeadSeal, append_events, read_head
from vault.audit.events import AuditEvent
from vault.clock import Clock
from vault.errors import AuditUnavailable
from vault.metrics import AUDIT_BATCH_EVENTS
from vault.storage.engine import SessionFactory, retry_on_disconnect, unit_of_work
from vault.storage.epoch import read_epoch

__all__ = [
    "AuditWriter",
    "BatchHook",
    "Done",
    "FastBatch",
    "StaleDecision",
    "UnknownOutcome",
    "WriteResult",
]

log = logging.getLogger("linevault.audit")

_Item = tuple[AuditEvent, Done, int | None]


_BUSY_WINDOW = 0.005  # seconds since the last commit that count as "under load"
_PROBE = text("UPDATE audit_head SET seq = seq WHERE id = 1")


class AuditWriter:
    def __init__(
        self,
        sessions: SessionFactory,
        *,
        clock: Clock,
        seal: HeadSeal,
        batch_max: int = 512,
        hooks: Sequence[BatchHook] = (),
        fast: FastBatch | None = None,
        idle_hook: Callable[[], object] | None = None,
        idle_seconds: float = 1.0,
        stall_seconds: float = 5.0,
        linger_seconds: float = 0.0005,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._seal = seal
        self._batch_max = batch_max
        self._hooks = tuple(hooks)
        self._idle_hook = idle_hook
        self._idle_seconds = idle_seconds
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopping = False
        self._stall_seconds = stall_seconds
        # Health, read by /v1/sys/health (plain attributes: one writer, readers tolerate a
        # stale value). ``_failing``: the last write failed and none has succeeded since;
        # ``_busy_since``: when the write in progress started (monotonic), else None.
        self._failing = False
        self._busy_since: float | None = None
        self._fast = fast
        self._epoch: int | None = None
        self._committing = False
        self._linger = linger_seconds
        self._last_commit = 0.0

    @property
    def seal(self) -> HeadSeal:
        """The head MAC this writer sets; others appending to the chain set the same."""
        return self._seal

    @property
    def epoch(self) -> int | None:
        """The newest authorization epoch a batch read (None before the first)."""
        return self._epoch

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    @property
    def healthy(self) -> bool:
        """Can this writer commit events now, as far as it knows?

        False while it is not running, after a failed write until one succeeds (while
        idle it probes with a no-op write of the head row every ``idle_seconds``), and
        while one write has been blocked for over ``stall_seconds`` (a lock held by
        another process, a hung database, a full disk that blocks): a load balancer
        should stop sending requests that would all end in ``audit_unavailable``.
        """
        if not self.running or self._failing:
            return False
        since = self._busy_since
        return since is None or time.monotonic() - since < self._stall_seconds

    def dispose(self) -> None:
        """Give the fast path's connection back to the pool (once the writer stopped)."""
        if self._fast is not None:
            self._fast.close()

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

    def submit(self, event: AuditEvent, *, guard: int | None = None) -> Future[int]:
        """Queue ``event``; with ``guard``, only if the epoch still equals it (else the
        future raises :class:`StaleDecision`)."""
        future: Future[int] = Future()

        def done(seq: int | None, exc: BaseException | None) -> None:
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(cast(int, seq))

        self.submit_callback(event, done, guard=guard)
        return future

    def submit_callback(self, event: AuditEvent, done: Done, *, guard: int | None = None) -> None:
        """:meth:`submit` without a Future: ``done`` is called from the writer thread (or
        at once, when the writer is not running). The fetch path's form: a Future with
        its condition variable per event was a measurable share of a fetch's CPU."""
        if self._thread is None:
            done(None, AuditUnavailable("the audit writer is not running"))
            return
        self._queue.put((event, done, guard))

    def record(self, event: AuditEvent, *, timeout: float = 10.0, guard: int | None = None) -> int:
        """Write ``event`` durably and return its sequence number, or raise AuditUnavailable
        (or StaleDecision for a guarded event)."""
        future = self.submit(event, guard=guard)
        try:
            return future.result(timeout)
        except (AuditUnavailable, StaleDecision):
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
            stop = self._take(batch)
            # Under load (the last batch ended moments ago), wait a moment for the batch
            # to fill: fewer, larger commits cost less CPU per event, which is what
            # bounds throughput once a commit is fast.
            if (
                not stop
                and self._linger > 0
                and len(batch) < self._batch_max // 4
                and time.monotonic() - self._last_commit < _BUSY_WINDOW
            ):
                time.sleep(self._linger)
                stop = self._take(batch)
            self._commit(batch)
            self._last_commit = time.monotonic()
            if stop:
                self._drain_and_fail()
                return

    def _take(self, batch: list[_Item]) -> bool:
        """Move waiting items into ``batch`` (up to the maximum); True on the stop mark."""
        while len(batch) < self._batch_max:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return False
            if item is None:
                return True
            batch.append(item)
        return False

    def _write(
        self,
        events: list[AuditEvent],
        guard: int | None,
        unknown: list[dict[str, object]] | None = None,
    ) -> WriteResult:
        """One transaction appending ``events`` (if ``guard`` holds).

        A connection found dead before COMMIT was sent is retried once on a fresh one
        (:func:`vault.storage.engine.retry_on_disconnect`): nothing of that transaction
        can have been committed, and the chain head is read again under the lock. A
        failure during COMMIT itself is never retried: it may have been applied.
        ``unknown``: rows a one-step write may have applied; if the head is their last
        row, they were, and are not written twice.
        """
        return retry_on_disconnect(
            lambda: self._write_once(events, guard, unknown),
            what="audit writer",
            applied=lambda: self._committing,
        )

    def _write_once(
        self,
        events: list[AuditEvent],
        guard: int | None,
        unknown: list[dict[str, object]] | None,
    ) -> WriteResult:
        self._committing = False
        with unit_of_work(self._sessions) as session:
            head = read_head(session, lock=True)
            epoch = read_epoch(session)
            # The two early answers write nothing: leaving the block ends the transaction.
            if unknown and (head.seq, head.hash) == (unknown[-1]["seq"], unknown[-1]["hash"]):
                return WriteResult(unknown, epoch)
            if guard is not None and epoch != guard:
                return WriteResult(None, epoch)
            rows = append_events(session, events, now=self._clock.now(), seal=self._seal, head=head)
            for hook in self._hooks:
                hook(session, events, rows)
            self._committing = True  # leaving the block sends COMMIT
        if self._fast is not None and rows:
            self._fast.observe_head(self._seal.successor(head, rows))
        return WriteResult(rows, epoch)

    def _write_batch(self, events: list[AuditEvent], guard: int | None) -> WriteResult:
        unknown = None
        if self._fast is not None:
            try:
                result = self._fast.write(events, now=self._clock.now(), guard=guard)
            except UnknownOutcome as exc:
                unknown = exc.rows
            else:
                if result is not None:
                    return result
        return self._write(events, guard, unknown)

    def _commit(self, batch: list[_Item]) -> None:
        self._busy_since = time.monotonic()
        try:
            while batch:
                batch, guard = self._drop_stale(batch)
                if not batch:
                    return
                try:
                    result = self._write_batch([event for event, _, _ in batch], guard)
                except Exception as exc:  # fail every waiter: no record, no answer
                    self._failing = True
                    log.error("audit batch of %d events failed: %s", len(batch), type(exc).__name__)
                    for _, done, _ in batch:
                        done(None, AuditUnavailable())
                    return
                self._failing = False
                self._epoch = result.epoch
                if result.rows is None:  # the guard failed: nothing was written
                    for _, done, guard_of in batch:
                        if guard_of is not None:
                            done(None, StaleDecision())
                    batch = [item for item in batch if item[2] is None]
                    continue
                AUDIT_BATCH_EVENTS.observe(len(batch))
                for (_, done, _), row in zip(batch, result.rows, strict=True):
                    done(cast(int, row["seq"]), None)
                return
        finally:
            self._busy_since = None

    def _drop_stale(self, batch: list[_Item]) -> tuple[list[_Item], int | None]:
        """Fail guarded items older than the newest epoch known; return the rest and the
        guard they share (None when no item is guarded)."""
        guards = [g for _, _, g in batch if g is not None]
        if not guards:
            return batch, None
        newest = max(guards)
        guard = None if self._epoch is not None and newest < self._epoch else newest
        keep: list[_Item] = []
        for item in batch:
            if item[2] is None or item[2] == guard:
                keep.append(item)
            else:
                item[1](None, StaleDecision())
        return keep, guard

    def _idle(self) -> None:
        if self._failing:
            self._probe()
        if self._idle_hook is None:
            return
        try:
            self._idle_hook()
        except Exception as exc:
            log.warning("audit idle task failed: %s", type(exc).__name__)

    def _probe(self) -> None:
        """After a failure, with no events waiting: commit a no-op write of the head row
        (it takes the chain's lock and needs a writable database, like a batch does)."""
        self._busy_since = time.monotonic()
        try:
            with unit_of_work(self._sessions) as session:
                session.execute(_PROBE)
        except Exception as exc:
            log.warning("audit writer still failing: %s", type(exc).__name__)
            return
        finally:
            self._busy_since = None
        self._failing = False
        log.warning("audit writer recovered")

    def _drain_and_fail(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item[1](None, AuditUnavailable("the audit writer stopped"))
