"""Making shredded bytes unrecoverable from the database files themselves.

Nulling a column or deleting a row does not erase the old bytes from disk: SQLite leaves
them in free space and in the write-ahead log until overwritten. The engine runs SQLite
with ``secure_delete`` on (freed space is zeroed, see ``vault.storage.engine``), and
after a shredding transaction commits :func:`scrub_after_shred` checkpoints the WAL and
truncates it, so neither the database file nor the WAL keeps a destroyed envelope.

PostgreSQL keeps dead tuple versions until VACUUM and its WAL until recycled; there the
guarantee rests on the destroyed KEK (nothing left can unwrap the old DEKs), and
docs/lines.md says what an operator does to finish the job (VACUUM, WAL/backups aging
out, or a root key rotation that destroys the old root).
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine

from vault.storage.engine import is_sqlite

__all__ = ["scrub_after_shred"]

log = logging.getLogger("linevault.privacy")


def scrub_after_shred(engine: Engine) -> bool:
    """Best effort, after commit: True when SQLite's WAL was checkpointed and truncated.

    A reader holding an old snapshot makes the checkpoint partial (``busy``); the next
    scrub, or SQLite's own automatic checkpoints, finish it. Never raises.
    """
    if not is_sqlite(engine):
        return False
    try:
        # A raw connection: no BEGIN around it (a checkpoint inside a transaction stalls).
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            busy = cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            cursor.close()
        finally:
            raw.close()
        return int(busy) == 0
    except Exception as exc:
        log.warning("wal checkpoint after shredding failed: %s", type(exc).__name__)
        return False
