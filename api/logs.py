"""JSON logs to stderr.

Log records carry a message and a few whitelisted fields (request id, method, path,
status, duration). Request bodies, query strings and headers are never logged, so a
bearer token or password cannot reach a log file through this module.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from vault.connectors.http import quiet_http_loggers

__all__ = ["JsonFormatter", "configure_logging"]

_FIELDS = ("request_id", "method", "path", "status", "duration_ms", "client")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in _FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                doc[name] = value
        if record.exc_info and record.exc_info[0] is not None:
            # The exception type only: messages and tracebacks can quote secret values.
            doc["exc_type"] = record.exc_info[0].__name__
        return json.dumps(doc, ensure_ascii=True)


def configure_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # uvicorn's access log prints query strings; ours (api.middleware) prints paths only.
    access = logging.getLogger("uvicorn.access")
    access.handlers[:] = []
    access.propagate = False
    access.disabled = True
    # httpx/httpcore log each outbound request line, and the platforms' URLs carry tokens.
    quiet_http_loggers()
