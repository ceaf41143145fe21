"""`linevault serve` as a person meets it (issue 19): it says where to go, logs JSON to a
pipe and text when asked (or on a terminal), warns about the local key provider once,
and Ctrl-C or SIGTERM stop it cleanly with exit 0 (so `make run` ends quietly)."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
from pathlib import Path

import pytest

from api.logs import JsonFormatter, TextFormatter, use_text
from tests.support.server import running_server


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_serve_prints_urls_and_stops_cleanly(tmp_path: Path, stop: signal.Signals) -> None:
    with running_server(tmp_path) as (server, _admin):
        assert server.process is not None
        os.killpg(server.process.pid, stop)
        assert server.process.wait(20) == 0
        logs = server.logs()
    base = server.url
    assert f"  API:                     {base}/v1/" in logs
    assert f"  API docs (Swagger UI):   {base}/docs" in logs
    assert f"  API docs (ReDoc):        {base}/redoc" in logs
    assert f"  console:                 {base}/ui/" in logs
    assert "Press Ctrl-C to stop." in logs and logs.rstrip().endswith("linevault stopped")
    assert logs.count("local root-of-trust provider in use") == 1
    records = [line for line in logs.splitlines() if line.startswith("{")]
    assert records and all(json.loads(line)["level"] for line in records)  # a pipe: JSON


def test_text_logs_when_asked(tmp_path: Path) -> None:
    with running_server(tmp_path, env={"LINEVAULT_LOG_FORMAT": "text"}) as (server, _admin):
        logs = server.logs()
    warned = [line for line in logs.splitlines() if "root-of-trust provider in use" in line]
    assert len(warned) == 1 and not warned[0].startswith("{"), logs
    assert re.match(r"^\d\d:\d\d:\d\d WARNING linevault\.kms  local root-of-trust", warned[0])


def test_formats_carry_the_same_safe_fields() -> None:
    record = logging.LogRecord("linevault.api", logging.INFO, __file__, 1, "request", (), None)
    record.request_id = "req-1"
    record.status = 200
    text = TextFormatter().format(record)
    assert text.endswith("linevault.api  request  request_id=req-1  status=200")
    assert json.loads(JsonFormatter().format(record))["request_id"] == "req-1"
    assert use_text("text") and not use_text("json")

    class Tty:
        def isatty(self) -> bool:
            return True

    assert use_text("auto", Tty()) and not use_text("auto", object())
