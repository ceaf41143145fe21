"""The audit chain's head as the processes of one host last built on it: a file.

With several server processes on one host (``linevault serve --workers N``), each
process's one-statement batch (:mod:`vault.audit.fastbatch`) would start from the head
it wrote last, which another process has usually moved since. The statement then finds
the head moved, reads it and tries again, and a second miss sends the batch down the
locked transactional path: with two processes, fewer fetches a second than with one.

Instead a process builds its batch during its *turn*, an exclusive ``flock`` of this
file held for microseconds (the hashing of the batch, not its round trip): it starts
from the head the file names, the newest any process of the host built on, and writes
its own new head there before its turn ends. The next batch of any process links after
it, and its statement waits in PostgreSQL only for the row lock, then applies.

The file is a hint and nothing more. The statement still checks the head it links
after, so a stale or wrong entry (a batch that failed, a torn write, a process of
another host) costs a fallback, never a fork of the chain. It holds no secret: a head's
seq, hash and MAC are in the database's ``audit_head`` row already.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from vault.audit.chain import ChainHead

__all__ = ["HEAD_BOARD_FILE", "HeadBoard"]

HEAD_BOARD_FILE = "audit-head"
_SIZE = 256  # one fixed-size record, rewritten in place: no truncation, no torn length
_NO_MAC = "-"


class HeadBoard:
    """One process's handle on the host's head file; used by its audit writer thread."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        """This process's turn to build a batch on the head (blocks while another has it)."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def read(self) -> ChainHead | None:
        """The head last posted (during a turn), or None if there is none or it is torn."""
        fields = os.pread(self._fd, _SIZE, 0).split()
        if len(fields) != 3 or not fields[0].isdigit() or len(fields[1]) != 64:
            return None
        mac = fields[2].decode("ascii", "replace")
        return ChainHead(int(fields[0]), fields[1].decode("ascii"), None if mac == _NO_MAC else mac)

    def post(self, head: ChainHead) -> None:
        """Name ``head`` as the one to build on next (during a turn)."""
        record = f"{head.seq} {head.hash} {head.mac or _NO_MAC}\n".encode("ascii")
        os.pwrite(self._fd, record.ljust(_SIZE, b" "), 0)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)
