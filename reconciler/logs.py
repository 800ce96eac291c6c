"""
Log setup: human-readable lines (rich on a terminal), or one JSON object per line for containers.

Everything logs through the ``reconciler`` logger; fields passed as ``extra={"fields": {...}}``
become keys of the JSON object (and ``key=value`` pairs in the human format).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Literal

from rich.console import Console
from rich.logging import RichHandler


LogFormat = Literal["text", "json"]
LOGGER_NAME = "reconciler"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, message, then the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update(getattr(record, "fields", {}))
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class TextFormatter(logging.Formatter):
    """The message followed by its extra fields as ``key=value``."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        suffix = "".join(f" {k}={v}" for k, v in fields.items())
        return super().format(record) + suffix


def setup(log_format: LogFormat = "text", level: int = logging.INFO) -> None:
    """Send the ``reconciler`` logger to stderr in *log_format*."""
    handler: logging.Handler
    if log_format == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    elif sys.stderr.isatty():
        handler = RichHandler(console=Console(stderr=True), show_path=False)
        handler.setFormatter(TextFormatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
