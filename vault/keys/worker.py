"""The background rewrap of a server process: one thread, one rotation at a time.

The HTTP route commits the new KEK version and hands the rotation id here; at start
the server resumes every rotation left ``running`` (by a crash or a restart). Several
server processes may work on the same rotation at once: the rewrapper's row lock makes
them take turns, and the compare-and-set makes a repeated batch harmless.

A failing rotation is logged and left ``running`` (the old version stays intact and
usable); it is retried at the next start, the next ``POST .../keys/rotate`` for that
tenant, or by ``linevault keys rotate --tenant``.
"""

from __future__ import annotations

import logging
import queue
import threading

from vault.keys.rewrap import Rewrapper, running_rotations
from vault.storage.engine import SessionFactory

__all__ = ["RewrapWorker"]

log = logging.getLogger("linevault.keys")

_STOP = ""


class RewrapWorker:
    def __init__(self, rewrapper: Rewrapper, *, sessions: SessionFactory) -> None:
        self._rewrapper = rewrapper
        self._sessions = sessions
        self._queue: queue.Queue[str] = queue.Queue()
        self._queued: set[str] = set()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._busy = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="linevault-rewrap", daemon=True)
            self._thread.start()

    def resume_pending(self) -> list[str]:
        """Queue every rotation left ``running`` in the database; returns their ids."""
        try:
            ids = running_rotations(self._sessions)
        except Exception as exc:  # the server must start even if this look-up fails
            log.warning("could not list pending key rotations: %s", type(exc).__name__)
            return []
        for rotation_id in ids:
            self.submit(rotation_id)
        return ids

    def submit(self, rotation_id: str) -> None:
        with self._lock:
            if rotation_id in self._queued or self._stop.is_set():
                return
            self._queued.add(rotation_id)
            self._busy += 1
        self._queue.put(rotation_id)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every submitted rotation has been processed (tests, shutdown)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout=timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop between batches; unfinished rotations resume at the next start."""
        self._stop.set()
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while True:
            rotation_id = self._queue.get()
            if rotation_id == _STOP or self._stop.is_set():
                return
            try:
                view = self._rewrapper.run(rotation_id, stop=self._stop)
                if view is not None:
                    log.info(
                        "key rotation %s of %s: %s, %d DEKs rewrapped",
                        view.id,
                        view.tenant_id,
                        view.state,
                        view.rewrapped,
                    )
            except Exception as exc:
                log.error("key rotation %s failed: %s: %s", rotation_id, type(exc).__name__, exc)
            finally:
                with self._idle:
                    self._queued.discard(rotation_id)
                    self._busy -= 1
                    self._idle.notify_all()
