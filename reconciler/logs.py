"""
Log setup: human-readable lines (rich on a terminal), or one JSON object per line for containers.

Everything logs through the ``reconciler`` logger; fields passed as ``extra={"fields": {...}}``
become keys of the JSON object (and ``key=value`` pairs in the human format).

Log text carries what outsiders wrote (message bodies, group names, AWS and HAProxy errors), so
the human format keeps each record on its line: characters that are not printable (line breaks,
escape sequences, bidi controls) are written as Python-style escapes (``\\n``, ``\\x1b``), a
field value that is not a plain word is double-quoted with ``"`` and ``\\`` escaped, and the lines
of a traceback are indented. JSON lines need nothing more: ``json.dumps`` escapes every control
character.
"""

from __future__ import annotations

import copy
import json
import logging
import sys
import textwrap
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
    """The message followed by its extra fields as ``key=value``, escaped to stay on one line."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        """The format applied to an escaped copy of the message, then the fields."""
        shown = copy.copy(record)
        shown.message = escaped(record.message)
        fields = getattr(record, "fields", {})
        suffix = "".join(f" {escaped(str(k))}={_value(v)}" for k, v in fields.items())
        return super().formatMessage(shown) + suffix

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        """Indented: no line of it (not even the exception's message) looks like a record."""
        return textwrap.indent(super().formatException(ei), _CONTINUATION, lambda _: True)

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 - logging's name
        """Indented like a traceback."""
        return textwrap.indent(super().formatStack(stack_info), _CONTINUATION, lambda _: True)


_CONTINUATION = "  "
#: Characters a field value may hold unquoted: printable, and none that delimits a field.
_DELIMITERS = frozenset(' "=\\')


def escaped(text: str) -> str:
    """*text* with every character that is not printable as a Python escape (``\\n``)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _value(value: object) -> str:
    """A field value: bare when it is a plain word, else quoted with ``"`` and ``\\`` escaped."""
    text = str(value)
    if text and text.isprintable() and _DELIMITERS.isdisjoint(text):
        return text
    return '"' + escaped(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'


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
