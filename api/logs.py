"""Logs to stderr: JSON lines, or readable text on a terminal (``LINEVAULT_LOG_FORMAT``).

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

__all__ = ["JsonFormatter", "TextFormatter", "configure_logging", "use_text"]

_FIELDS = ("request_id", "method", "path", "status", "duration_ms", "client")


def _fields(record: logging.LogRecord) -> dict[str, object]:
    """The whitelisted extra fields a record carries (never headers, bodies or queries)."""
    fields = {name: getattr(record, name, None) for name in _FIELDS}
    if record.exc_info and record.exc_info[0] is not None:
        # The exception type only: messages and tracebacks can quote secret values.
        fields["exc_type"] = record.exc_info[0].__name__
    return {k: v for k, v in fields.items() if v is not None}


class TextFormatter(logging.Formatter):
    """One readable line a record: ``10:00:00 INFO  linevault.api  message  key=value``."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S")
        extra = "  ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{ts} {record.levelname:<7} {record.name}  {record.getMessage()}"
        return f"{line}  {extra}" if extra else line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(_fields(record))
        return json.dumps(doc, ensure_ascii=True)


def use_text(log_format: str, stream: object = None) -> bool:
    """``text``/``json`` as asked; ``auto``: text when the stream is a terminal."""
    if log_format != "auto":
        return log_format == "text"
    isatty = getattr(stream if stream is not None else sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def configure_logging(level: str = "info", log_format: str = "auto") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TextFormatter() if use_text(log_format) else JsonFormatter())
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
