"""Helpers for tests of the config parser and editor (pure: no process, no file)."""

from __future__ import annotations

from reconciler.core import config_parse


def proxy_names(doc: config_parse.Document) -> tuple[str, ...]:
    """The names of every ``backend`` and ``listen`` section of *doc*, in file order, each once."""
    return tuple(
        dict.fromkeys(s.name for s in doc.sections if s.keyword in config_parse.PROXY_KEYWORDS)
    )


def serialized(doc: config_parse.Document) -> bytes:
    """The bytes *doc* holds, line by line: equal to its source when parsing lost nothing."""
    return b"".join(line.content + line.eol for line in doc.lines)
