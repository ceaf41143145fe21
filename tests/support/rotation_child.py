"""Zygote for the rotation crash test: imports once, forks one child per trial.

Usage: ``python -m tests.support.rotation_child DATA_DIR DB_URL TENANT_ID``, then one
``KILL_AT`` integer per line on stdin; for each, one JSON line comes back on stdout:
``{"status": <raw wait status>, "signal": <n or null>, "report": {...} or null}``.

Each forked child opens its own runtime (no connection or thread crosses the fork),
rotates (or resumes) and rewraps. With ``KILL_AT`` > 0 it sends itself SIGKILL just
before its KILL_AT-th SQL statement or commit: anywhere in the start, a batch, or the
finish step. Forking from a warm interpreter keeps each trial to a fraction of a second.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import event

from tests.support.settings import make_settings
from vault.keys.service import rewrapper_for, tenant_key_service_for
from vault.runtime import open_runtime
from vault.settings import Settings
from vault.storage.engine import unit_of_work


def _trial(settings: Settings, tenant_id: str, kill_at: int, report_path: str) -> None:
    runtime = open_runtime(settings, start_writer=False)
    seen = 0

    def tick(*_: Any) -> None:
        nonlocal seen
        seen += 1
        if kill_at and seen >= kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    event.listen(runtime.engine, "before_cursor_execute", tick)
    event.listen(runtime.engine, "commit", tick)
    with unit_of_work(runtime.sessions) as session:
        view = tenant_key_service_for(runtime, session).rotate(
            tenant_id, actor_type="system", actor_id="crash-test"
        )
    done = rewrapper_for(runtime).run(view.id)
    assert done is not None
    Path(report_path).write_text(
        json.dumps({"state": done.state, "to_version": done.to_version, "statements": seen})
    )
    runtime.close()


def main() -> None:
    data_dir, db_url, tenant_id = sys.argv[1:4]
    settings = make_settings(
        data_dir=Path(data_dir),
        database_url=db_url,
        rewrap_batch_size=7,
        log_level="warning",
    )
    for line in sys.stdin:
        kill_at = int(line)
        fd, report_path = tempfile.mkstemp(suffix=".json")
        os.close(fd)
        pid = os.fork()
        if pid == 0:  # the child
            code = 0
            try:
                _trial(settings, tenant_id, kill_at, report_path)
            except BaseException as exc:
                sys.stderr.write(f"trial failed: {type(exc).__name__}: {exc}\n")
                code = 1
            finally:
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        text = Path(report_path).read_text()
        os.unlink(report_path)
        out = {
            "status": status,
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            "report": json.loads(text) if text else None,
        }
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
