"""
Rewrite the managed ``server`` lines of one backend and leave every other byte alone.

``edit`` makes the managed servers of one ``backend`` or ``listen`` section exactly the given
``ServerLine`` values while touching nothing else: a line that already says the right thing keeps
its bytes, a changed one is rewritten in place (own indentation, end of line and trailing comment
kept), a server that is no longer wanted loses its whole line, and new servers follow the last
managed one with the indentation and end of line of their neighbour. Ownership is decided by the
caller's *is_managed* on server names, so unmanaged servers are never touched.

Pure: bytes in, bytes out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from reconciler.core import config_parse
from reconciler.core.model import ConfigBackend, ConfigServer, ServerLine


DEFAULT_INDENT = b"    "
# A word HAProxy reads back unchanged without quoting: no blank, control character, comment,
# quote, escape or variable.
_PLAIN_WORD = re.compile(r"[^\s\x00-\x1f\x7f#$\\'\"]+")


def line_text(line: ServerLine) -> str:
    """The text of *line* in the file, without indentation or end of line."""
    for word in line.words():
        if not _PLAIN_WORD.fullmatch(word):
            msg = f"server {line.name!r}: {word!r} cannot be written as a plain word"
            raise ValueError(msg)
    return " ".join(("server", *line.words()))


def edit(
    data: bytes,
    backend: str,
    is_managed: Callable[[str], bool],
    lines: Sequence[ServerLine],
) -> bytes:
    """
    *data* with the managed servers of *backend* made exactly *lines*; *data* itself if no change.

    Raises ``ValueError`` when the backend is missing or cannot be managed, or *lines* is unfit
    (a name twice, a name *is_managed* rejects, a word that would need quoting).
    """
    doc = config_parse.parse(data)
    found = config_parse.backend(doc, backend)
    section = config_parse.proxy_section(doc, backend)
    if found is None or section is None:
        msg = f"backend {backend!r}: no backend or listen section of that name"
        raise ValueError(msg)
    if found.problems:
        raise ValueError("; ".join(found.problems))
    rendered = _rendered(backend, is_managed, lines)
    managed = [s for s in found.servers if is_managed(s.name)]
    replaced = _rewrites(doc, managed, rendered)
    present = {s.name for s in managed}
    new = [text for name, (_, text) in rendered.items() if name not in present]
    if new:
        anchor = _anchor(doc, section, found, managed)
        kept = replaced.get(anchor, doc.lines[anchor].content + doc.lines[anchor].eol)
        replaced[anchor] = _followed_by(doc, section, anchor, kept, new)
    if not replaced:
        return data
    out = b"".join(replaced.get(i, line.content + line.eol) for i, line in enumerate(doc.lines))
    # HAProxy 2.6 refuses a file whose last line has no LF; any file we write must have one.
    return out if out.endswith(b"\n") else out + _usual_eol(doc)


def _rendered(
    backend: str, is_managed: Callable[[str], bool], lines: Sequence[ServerLine]
) -> dict[str, tuple[ServerLine, bytes]]:
    """Each desired line by name, with its encoded text; checks that *lines* can be written."""
    rendered: dict[str, tuple[ServerLine, bytes]] = {}
    for line in lines:
        if line.name in rendered:
            msg = f"backend {backend!r}: server {line.name!r} is wanted twice"
            raise ValueError(msg)
        if not is_managed(line.name):
            msg = f"backend {backend!r}: server {line.name!r} is not a managed name"
            raise ValueError(msg)
        rendered[line.name] = (line, line_text(line).encode("utf-8"))
    return rendered


def _rewrites(
    doc: config_parse.Document,
    managed: Sequence[ConfigServer],
    rendered: dict[str, tuple[ServerLine, bytes]],
) -> dict[int, bytes]:
    """The new bytes of each managed server line that changes, by index (empty: the line goes)."""
    replaced: dict[int, bytes] = {}
    for server in managed:
        if server.name not in rendered:
            replaced[server.line_index] = b""
        elif not _same(server, rendered[server.name][0]):
            old = doc.lines[server.line_index]
            replaced[server.line_index] = _rewritten(old, rendered[server.name][1])
    return replaced


def _same(server: ConfigServer, line: ServerLine) -> bool:
    """The file line already means *line* (same address, port, id and options in order)."""
    return (server.address, server.port, server.server_id, server.options) == (
        line.address,
        line.port,
        line.server_id,
        line.options,
    )


def _rewritten(old: config_parse.Line, text: bytes) -> bytes:
    """*old* saying *text* instead, with its own indentation, tail and end of line."""
    tail = old.content[old.body_end :]
    # A comment glued to the last word would still be a comment, but keep the file readable.
    gap = b" " if tail.startswith(b"#") else b""
    return old.indent + text + gap + tail + old.eol


def _anchor(
    doc: config_parse.Document,
    section: config_parse.Section,
    found: ConfigBackend,
    managed: Sequence[ConfigServer],
) -> int:
    """The line new servers follow: last managed server, else last server, else last statement."""
    if managed:
        return managed[-1].line_index
    if found.servers:
        return found.servers[-1].line_index
    # Trailing blank and comment lines usually introduce the next section, so stop before them;
    # and never end up inside an ``.if`` block.
    for index in range(section.end - 1, section.start, -1):
        line = doc.lines[index]
        if line.words and not line.conditional and line.keyword != ".if":
            return index
    return section.start


def _followed_by(
    doc: config_parse.Document,
    section: config_parse.Section,
    anchor: int,
    kept: bytes,
    new: Sequence[bytes],
) -> bytes:
    """*kept* (the *anchor* line's bytes) followed by the *new* server lines, styled like it."""
    eol = doc.lines[anchor].eol or _usual_eol(doc)
    indent = _indent(doc, section, anchor)
    if kept and not kept.endswith(b"\n"):
        kept += eol
    return kept + b"".join(indent + text + eol for text in new)


def _indent(doc: config_parse.Document, section: config_parse.Section, anchor: int) -> bytes:
    """The indentation of a neighbour server line, else of a statement in the section."""
    if doc.lines[anchor].keyword == "server":
        return doc.lines[anchor].indent
    body = (doc.lines[i] for i in range(section.start + 1, section.end))
    statements = [line for line in body if line.words and not line.keyword.startswith(".")]
    return statements[-1].indent if statements else DEFAULT_INDENT


def _usual_eol(doc: config_parse.Document) -> bytes:
    """The end of line of the file's first line that has one (LF for a file without any)."""
    return next((line.eol for line in doc.lines if line.eol), b"\n")
