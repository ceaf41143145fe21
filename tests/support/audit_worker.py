"""A stand-in server process for the multi-process audit test.

``python -m tests.support.audit_worker DATA_DIR DB_URL TAG N THREADS`` opens a runtime
(its own engine, writer and checkpointer, as a server process would) and writes N events
from THREADS threads: half through the group-commit writer (``emit``), half through
``record`` in their own units of work, all tagged ``TAG-<i>`` so the test can find
lost or duplicated events.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from tests.support.settings import make_settings
from vault.audit.events import AuditEvent
from vault.runtime import open_runtime
from vault.storage.engine import unit_of_work


def main(data_dir: str, db_url: str, tag: str, n: int, threads: int) -> int:
    settings = make_settings(
        data_dir=Path(data_dir),
        database_url=db_url,
        log_level="warning",
        audit_checkpoint_every=100,
    )
    runtime = open_runtime(settings)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(worker, n, threads):
                event = AuditEvent(
                    action="credential.fetch",
                    outcome="success",
                    actor_type="runner",
                    actor_id=f"rnr_{tag}",
                    resource_type="line",
                    resource_id=f"{tag}-{i}",
                )
                if worker % 2:
                    with unit_of_work(runtime.sessions) as session:
                        runtime.audit.record(session, event)
                else:
                    runtime.audit.emit(event)
        except BaseException as exc:  # reported through the exit code
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(w,)) for w in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    runtime.close()
    for exc in errors:
        print(f"{tag}: {type(exc).__name__}: {exc}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])))
