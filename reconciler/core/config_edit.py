"""
Rewrite the managed ``server`` lines of one backend and leave every other byte alone.

``edit`` makes the managed servers of one ``backend`` or ``listen`` section exactly the given
``ServerLine`` values while touching nothing else: a line that already says the right thing keeps
its bytes, a changed one is rewritten in place (own indentation, end of line and trailing comment
kept), a server that is no longer wanted loses its whole line, and new servers follow the last
managed one with the indentation and end of line of their neighbour. Ownership is decided by the
caller's *is_managed* on server names (a true answer: managed), so unmanaged servers are never
touched.

A cycle has parsed the file already to plan: ``replacements`` edits that parse (a ``Document`` and
the backend's ``ConfigBackend``) instead of the bytes, and ``spliced`` makes the file of the
replacements of every backend at once.

Pure: bytes in, bytes out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence, Set

from reconciler.core import config_parse
from reconciler.core.model import ConfigBackend, ConfigServer, ServerLine


DEFAULT_INDENT = b"    "
# A word HAProxy reads back unchanged without quoting: no blank, control character, comment,
# quote, escape or variable.
_SPECIAL = r"\s\x00-\x1f\x7f#$\\'\""
_PLAIN_WORD = re.compile(f"[^{_SPECIAL}]+")
_NOT_PLAIN = re.compile(f"[{_SPECIAL}]")


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
    is_managed: Callable[[str], object],
    lines: Sequence[ServerLine],
) -> bytes:
    """
    *data* with the managed servers of *backend* made exactly *lines*; *data* itself if no change.

    Raises ``ValueError`` when the backend is missing or cannot be managed, or *lines* is unfit
    (a name twice, a name *is_managed* rejects, a word that would need quoting).
    """
    doc = config_parse.parse(data)
    found = config_parse.backend(doc, backend)
    replaced = replacements(doc, backend, found, is_managed, lines)
    return spliced(doc, replaced) if replaced else data


def replacements(
    doc: config_parse.Document,
    backend: str,
    found: ConfigBackend | None,
    is_managed: Callable[[str], object],
    lines: Sequence[ServerLine],
) -> dict[int, bytes]:
    """
    ``edit`` on a parsed file: the new bytes of each line of *doc* that changes, by index (empty:
    the line goes), for ``spliced``. *found* is ``config_parse.backend(doc, backend)``, which the
    cycle has read already to plan; the replacements of several backends go together.
    """
    if found is None:
        msg = f"backend {backend!r}: no backend or listen section of that name"
        raise ValueError(msg)
    if found.problems:
        raise ValueError("; ".join(found.problems))
    managed = [server for server in found.servers if is_managed(server.name)]
    present = {server.name for server in managed}
    wanted = _wanted(backend, is_managed, lines, present)
    replaced = _rewrites(doc, managed, wanted)
    new = [_text(line) for name, line in wanted.items() if name not in present]
    if new:
        section = config_parse.proxy_section(doc, backend)
        assert section is not None  # noqa: S101 - found is that section's
        anchor = _anchor(doc, section, found, managed)
        kept = replaced.get(anchor, doc.line(anchor).content + doc.line(anchor).eol)
        replaced[anchor] = _followed_by(doc, section, anchor, kept, new)
    return replaced


def spliced(doc: config_parse.Document, replaced: Mapping[int, bytes]) -> bytes:
    """The bytes of *doc* with the lines of *replaced* (from ``replacements``) replaced."""
    out = doc.spliced(replaced)
    # HAProxy 2.6 refuses a file whose last line has no LF; any file we write must have one.
    return out if out.endswith(b"\n") else out + _usual_eol(doc)


def _wanted(
    backend: str,
    is_managed: Callable[[str], object],
    lines: Sequence[ServerLine],
    present: Set[str],
) -> dict[str, ServerLine]:
    """
    Each desired line by name; checks that *lines* can be written. The names in *present* are
    managed servers of the file already.

    The checks run on all the lines at once: a backend of 10,000 servers usually passes them all.
    When one fails, the lines are checked one by one, and the first unfit one is named.
    """
    wanted = {line.name: line for line in lines}
    words = [*wanted, *(line.address for line in lines)]
    options = {line.file_options for line in lines}
    if (
        len(wanted) == len(lines)
        # A word is plain when it is not empty and has no character a plain word may not have.
        and all(words)
        and _NOT_PLAIN.search("/".join(words)) is None
        and all(_PLAIN_WORD.fullmatch(word) for option in options for word in option)
        and all(is_managed(name) for name in wanted.keys() - present)
    ):
        return wanted
    return _checked_one_by_one(backend, is_managed, lines, present)


def _checked_one_by_one(
    backend: str,
    is_managed: Callable[[str], object],
    lines: Sequence[ServerLine],
    present: Set[str],
) -> dict[str, ServerLine]:
    """``_wanted``, line by line: raises ``ValueError`` for the first line that is unfit."""
    wanted: dict[str, ServerLine] = {}
    for line in lines:
        if line.name in wanted:
            msg = f"backend {backend!r}: server {line.name!r} is wanted twice"
            raise ValueError(msg)
        if line.name not in present and not is_managed(line.name):
            msg = f"backend {backend!r}: server {line.name!r} is not a managed name"
            raise ValueError(msg)
        # Names the word it refuses (an empty address is plain once its port follows).
        line_text(line)
        wanted[line.name] = line
    return wanted


def _rewrites(
    doc: config_parse.Document,
    managed: Sequence[ConfigServer],
    wanted: Mapping[str, ServerLine],
) -> dict[int, bytes]:
    """The new bytes of each managed server line that changes, by index (empty: the line goes)."""
    replaced: dict[int, bytes] = {}
    for server in managed:
        line = wanted.get(server.name)
        if line is None:
            replaced[server.line_index] = b""
        elif not (
            # The file's line already means *line*: same address, port, id and options in order.
            server.address == line.address
            and server.port == line.port
            and server.server_id == line.server_id
            and server.options == line.file_options
        ):
            replaced[server.line_index] = _rewritten(doc.line(server.line_index), _text(line))
    return replaced


def _text(line: ServerLine) -> bytes:
    """The bytes of *line* in the file, made only for the lines written."""
    return line_text(line).encode("utf-8")


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
        line = doc.line(index)
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
    eol = doc.line(anchor).eol or _usual_eol(doc)
    indent = _indent(doc, section, anchor)
    if kept and not kept.endswith(b"\n"):
        kept += eol
    return kept + b"".join(indent + text + eol for text in new)


def _indent(doc: config_parse.Document, section: config_parse.Section, anchor: int) -> bytes:
    """The indentation of a neighbour server line, else of a statement in the section."""
    if doc.line(anchor).keyword == "server":
        return doc.line(anchor).indent
    body = (doc.line(i) for i in range(section.start + 1, section.end))
    statements = [line for line in body if line.words and not line.keyword.startswith(".")]
    return statements[-1].indent if statements else DEFAULT_INDENT


def _usual_eol(doc: config_parse.Document) -> bytes:
    """The end of line of the file's first line that has one (LF for a file without any)."""
    eols = (doc.line(index).eol for index in range(len(doc.raw)))
    return next((eol for eol in eols if eol), b"\n")
