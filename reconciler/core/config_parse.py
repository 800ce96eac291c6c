"""
Read haproxy.cfg without losing a byte.

``parse`` turns the file's bytes into a ``Document``: every physical line with its own end of line,
its words as HAProxy 2.6 would split them, where its statement ends (so a trailing comment can be
kept), and whether it sits inside an ``.if`` block; plus the sections the lines fall into.
``Document.lines`` gives back the very same bytes. ``backend`` answers what the
controller needs to know about one ``backend`` or ``listen`` section as a ``ConfigBackend``,
including every reason the section cannot be managed safely.

Conditional blocks are never evaluated: HAProxy drops the lines of a false branch before it looks
for section headers, so the section a line belongs to can depend on the condition. A section whose
header, servers or balance algorithm depend on one is reported, not guessed.

Pure: bytes in, values out.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise

from reconciler.core.model import ConfigBackend, ConfigServer


#: Words that start a section in HAProxy 2.6, plus later ones (``crt-store``, ``healthcheck``,
#: ``traces``, ``acme``) so that a newer file never has their lines counted as a backend's.
SECTION_KEYWORDS = frozenset(
    {
        "global",
        "defaults",
        "frontend",
        "backend",
        "listen",
        "userlist",
        "peers",
        "mailers",
        "resolvers",
        "program",
        "http-errors",
        "ring",
        "cache",
        "fcgi-app",
        "log-forward",
        "namespace_list",
        "crt-store",
        "healthcheck",
        "traces",
        "acme",
    }
)
#: The sections that hold load-balanced servers.
PROXY_KEYWORDS = frozenset({"backend", "listen"})
DEFAULT_BALANCE = "roundrobin"
DEFAULT_HASH_TYPE = "map-based"

# Without quotes or backslashes, a line is its part before any ``#`` split on C ``isspace``
# separators, which is what ``bytes.split()`` does.
_QUOTING = re.compile(rb"[\"'\\]")
_TEXT_QUOTING = re.compile(r"[\"'\\]")
# The characters besides C's ``isspace`` ones that ``str.split()`` splits on, and the ASCII ones.
_ASCII_TEXT_ONLY_BLANKS = (b"\x1c", b"\x1d", b"\x1e", b"\x1f")
_TEXT_ONLY_BLANKS = re.compile(
    "[\x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
)
# The first byte of a line whose first word may be a section keyword or a directive (``.if``...):
# a keyword's first letter, a dot, or a quote or backslash (the word is only known once unquoted).
# Any other first byte stays the first character of the first word.
_SHAPING_STARTS = frozenset(
    {*(keyword.encode()[:1] for keyword in SECTION_KEYWORDS), b".", b'"', b"'", b"\\"}
)
_BLANKS = frozenset(b" \t\n\r\v\f")
_ESCAPED_AS_IS = frozenset(b" \\\"'#$")
_ESCAPED_CONTROL = {ord("r"): ord("\r"), ord("n"): ord("\n"), ord("t"): ord("\t")}
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
_BACKSLASH, _SINGLE, _DOUBLE, _SHARP = b"\\'\"#"

# Addresses after these prefixes (and absolute paths) are socket names: a colon is no port.
_PORTLESS_PREFIXES = ("/", "unix@", "uxst@", "uxdg@", "abns@", "abnsz@", "sockpair@", "fd@")
# ``server`` keywords of HAProxy 2.6 that take one argument. Skipping their value while looking
# for ``id`` keeps ``cookie id`` or ``agent-send id`` from being read as the server's id.
_ONE_ARGUMENT_KEYWORDS = frozenset(
    {
        "addr",
        "agent-addr",
        "agent-inter",
        "agent-port",
        "agent-send",
        "alpn",
        "ca-file",
        "check-alpn",
        "check-proto",
        "check-sni",
        "ciphers",
        "ciphersuites",
        "client-sigalgs",
        "cookie",
        "crl-file",
        "crt",
        "curves",
        "downinter",
        "error-limit",
        "fall",
        "fastinter",
        "init-addr",
        "inter",
        "interface",
        "log-proto",
        "maxconn",
        "maxqueue",
        "minconn",
        "namespace",
        "npn",
        "observe",
        "on-error",
        "on-marked-down",
        "on-marked-up",
        "pool-low-conn",
        "pool-max-conn",
        "pool-purge-delay",
        "port",
        "proto",
        "proxy-v2-options",
        "redir",
        "resolve-net",
        "resolve-opts",
        "resolve-prefer",
        "resolvers",
        "rise",
        "sigalgs",
        "slowstart",
        "sni",
        "socks4",
        "source",
        "ssl-max-ver",
        "ssl-min-ver",
        "tcp-ut",
        "track",
        "usesrc",
        "verify",
        "verifyhost",
        "weight",
        "ws",
    }
)


#: The index and words of one line.
Statement = tuple[int, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class Line:
    """One physical line of the file."""

    #: The bytes of the line without its end of line.
    content: bytes
    #: ``b"\n"``, ``b"\r\n"``, or ``b""`` for a last line without a final LF.
    eol: bytes
    #: The words HAProxy sees (quotes and escapes resolved, ``$VAR`` left as written).
    words: tuple[str, ...]
    #: Offset in *content* just past the last word; what follows is blanks and/or a comment.
    body_end: int
    #: How many ``.if`` blocks enclose the line; a block's ``.if`` and ``.endif`` lines are
    #: outside it, its ``.elif`` and ``.else`` lines inside.
    depth: int

    @property
    def indent(self) -> bytes:
        """The leading blanks, exactly as written."""
        return self.content[: len(self.content) - len(self.content.lstrip())]

    @property
    def conditional(self) -> bool:
        """The line is inside an ``.if`` block, so HAProxy may drop it."""
        return self.depth > 0

    @property
    def keyword(self) -> str:
        """The first word, or ``""`` for a blank or comment-only line."""
        return self.words[0] if self.words else ""


@dataclass(frozen=True, slots=True)
class Section:
    """A section: its header line and the lines up to the next header."""

    keyword: str
    #: The name on the header; ``""`` when it has none (``defaults``, ``defaults from X``).
    name: str
    #: The defaults section named by ``from <name>`` on the header, if any.
    parent: str | None
    #: Index of the header line.
    start: int
    #: Index one past the section's last line.
    end: int
    #: Index of a later line that belongs to this section or to one whose header is inside an
    #: ``.if`` block, depending on the condition.
    contested_by: int | None


@dataclass(frozen=True, slots=True)
class Document:
    """
    A parsed config file; ``lines`` gives back its exact bytes.

    Parsing splits the file into lines once and tokenizes only the lines that may shape sections
    (those whose first byte may start a header or an ``.if`` directive); any other line is
    tokenized when asked for (``line``, ``words``, ``statements``). A backend of 10,000 servers
    is read in one pass over its own lines, and no ``Line`` is made for lines nobody asks about.
    """

    #: The physical lines as split on LF: a CRLF line keeps its CR.
    raw: tuple[bytes, ...]
    #: The last line ends with LF (or there is no line).
    terminated: bool
    #: Every section in file order (lines before the first header belong to none).
    sections: tuple[Section, ...]
    #: The lines that open or close an ``.if`` block, in order, with the depth of each and the
    #: depth of the lines after it; every other line has the depth of the last of these above it.
    depth_marks: tuple[int, ...] = ()
    depths: tuple[tuple[int, int], ...] = ()

    @property
    def lines(self) -> tuple[Line, ...]:
        """Every physical line."""
        return tuple(self.line(index) for index in range(len(self.raw)))

    def line(self, index: int) -> Line:
        """The physical line at *index* (0-based)."""
        content, eol = self._content(index)
        words, body_end = _tokenize(content)
        return Line(content, eol, words, body_end, self.depth(index))

    def words(self, index: int) -> tuple[str, ...]:
        """The words of the line at *index*."""
        return _tokenize(self._content(index)[0])[0]

    def spliced(self, replacements: Mapping[int, bytes]) -> bytes:
        """
        The file's bytes, each line at an index of *replacements* replaced by the bytes given
        for it (its end of line included); the other lines joined as they are.
        """
        pieces: list[bytes] = []
        start = 0
        for index in sorted(replacements):
            pieces += (self._span(start, index), replacements[index])
            start = index + 1
        pieces.append(self._span(start, len(self.raw)))
        return b"".join(pieces)

    def statements(self, section: Section) -> list[Statement]:
        """
        The index and words of every line of *section* after its header that has words.

        Read in one go, as a backend may have thousands of lines: the lines are decoded together
        (see ``_tokenize``), and a line without quotes or backslashes is split as text, which
        gives HAProxy's words when no line holds a character that only ``str.split`` takes for
        a blank. Other lines are tokenized one by one.
        """
        start, stop = section.start + 1, section.end
        block = b"\n".join(self.raw[start:stop])
        text = block.decode("utf-8", "surrogateescape")
        if not _splits_alike(block, text):
            pieces = (self.words(index) for index in range(start, stop))
            return [(index, words) for index, words in enumerate(pieces, start) if words]
        quoting = any(quote in block for quote in (b'"', b"'", b"\\"))
        comments = b"#" in block
        found = []
        for index, line in enumerate(text.split("\n"), start):
            if quoting and _TEXT_QUOTING.search(line) is not None:
                words = self.words(index)
            else:
                words = tuple((line.split("#", 1)[0] if comments else line).split())
            if words:
                found.append((index, words))
        return found

    def depth(self, index: int) -> int:
        """How many ``.if`` blocks enclose the line at *index* (see ``Line.depth``)."""
        if not self.depth_marks:
            return 0
        above = bisect.bisect_right(self.depth_marks, index) - 1
        if above < 0:
            return 0
        own, after = self.depths[above]
        return own if self.depth_marks[above] == index else after

    def _span(self, start: int, stop: int) -> bytes:
        """The bytes of the lines from *start* up to *stop*, ends of line included."""
        if start >= stop:
            return b""
        text = b"\n".join(self.raw[start:stop])
        return text if stop == len(self.raw) and not self.terminated else text + b"\n"

    def _content(self, index: int) -> tuple[bytes, bytes]:
        """The content and end of line of the line at *index*."""
        piece = self.raw[index]
        if not self.terminated and index == len(self.raw) - 1:
            return piece, b""
        if piece.endswith(b"\r"):
            return piece[:-1], b"\r\n"
        return piece, b"\n"


def parse(data: bytes) -> Document:
    """Split *data* into lines and sections; never fails, whatever the bytes."""
    raw = data.split(b"\n")
    terminated = not raw[-1]
    if terminated:
        raw.pop()
    lines = Document(tuple(raw), terminated, ())
    # Only these lines can open a section or an ``.if`` block; every other one is read on demand.
    shaping = [
        (index, lines.words(index))
        for index, piece in enumerate(raw)
        if piece.lstrip()[:1] in _SHAPING_STARTS
    ]
    marks, depths = _depth_marks(shaping)
    doc = replace(lines, depth_marks=marks, depths=depths)
    return replace(doc, sections=_sections(doc, shaping))


def proxy_section(doc: Document, name: str) -> Section | None:
    """The first ``backend`` or ``listen`` section called *name*."""
    matches = _proxies(doc, name)
    return matches[0] if matches else None


def backend(doc: Document, name: str) -> ConfigBackend | None:
    """
    What the controller needs to know about backend (or listen section) *name*, if any.

    Problems name lines 1-based, as editors show them.
    """
    matches = _proxies(doc, name)
    if not matches:
        return None
    section = matches[0]
    where = f"{section.keyword} {name}"
    problems: list[str] = []
    if len(matches) > 1:
        problems.append(_declared(f"backend '{name}'", [s.start for s in matches]))
    if "$" in name:
        problems.append(
            f"{where}: the name uses '$' (an environment variable); write the name literally"
        )
    problems.extend(_uncertainty(doc, section, where))
    statements = doc.statements(section)
    servers = _servers(doc, statements, where, problems)
    balance, hash_type, allbackups = _algorithm(doc, section, statements, where, problems)
    return ConfigBackend(name, servers, balance, hash_type, tuple(problems), allbackups)


# -- lines -----------------------------------------------------------------------------------------


def _depth_marks(
    shaping: Sequence[Statement],
) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
    """``Document.depth_marks`` and ``Document.depths``, from the lines that may shape sections."""
    marks: list[int] = []
    depths: list[tuple[int, int]] = []
    depth = 0
    for index, words in shaping:
        directive = words[0] if words else ""
        if directive == ".endif":
            depth = max(depth - 1, 0)
            marks.append(index)
            depths.append((depth, depth))
        elif directive == ".if":
            marks.append(index)
            depths.append((depth, depth + 1))
            depth += 1
    return tuple(marks), tuple(depths)


def _splits_alike(data: bytes, text: str) -> bool:
    """``str.split`` splits *text*, the decoded *data*, only where ``bytes.split`` splits *data*."""
    if text.isascii():
        return not any(blank in data for blank in _ASCII_TEXT_ONLY_BLANKS)
    return _TEXT_ONLY_BLANKS.search(text) is None


def _tokenize(content: bytes) -> tuple[tuple[str, ...], int]:
    """The words of *content* and the offset just past the last one."""
    if _QUOTING.search(content) is None:
        body = content.split(b"#", 1)[0]
        plain = body.split()
        if not plain:
            return (), 0
        # One decode for the whole line: a blank is ASCII, never part of a multi-byte sequence,
        # so splitting the decoded text on the joining blanks gives each word's own decoding.
        text = b" ".join(plain).decode("utf-8", "surrogateescape")
        return tuple(text.split(" ")), len(body.rstrip())
    return _tokenize_quoted(content)


def _tokenize_quoted(content: bytes) -> tuple[tuple[str, ...], int]:
    """``_tokenize`` for a line with quotes or backslashes, following HAProxy's parse_line()."""
    words: list[bytes] = []
    word = bytearray()
    in_word = False
    body_end = 0
    i, size = 0, len(content)
    while i < size:
        char = content[i]
        if char in _BLANKS:
            if in_word:
                words.append(bytes(word))
                word.clear()
                in_word = False
            i += 1
        elif char == _SHARP:
            break
        else:
            in_word = True
            i = body_end = _word_piece(content, i, word)
    if in_word:
        words.append(bytes(word))
    return _decode(words), body_end


def _word_piece(content: bytes, at: int, word: bytearray) -> int:
    """Append the piece of a word at *at* (a byte, an escape or a quoted run); return its end."""
    char = content[at]
    if char == _BACKSLASH:
        return at + _unescape(content, at, word)
    if char == _SINGLE:
        # Up to the closing quote (or the end of the line) every byte is itself, backslash included.
        close = content.find(_SINGLE, at + 1)
        end = len(content) if close < 0 else close
        word += content[at + 1 : end]
        return end if close < 0 else end + 1
    if char == _DOUBLE:
        return _double_quoted(content, at + 1, word)
    word.append(char)
    return at + 1


def _double_quoted(content: bytes, at: int, word: bytearray) -> int:
    """Append the double-quoted run from *at* to *word*, escapes resolved; return its end."""
    i = at
    while i < len(content):
        char = content[i]
        if char == _DOUBLE:
            return i + 1
        if char == _BACKSLASH:
            i += _unescape(content, i, word)
        else:
            word.append(char)
            i += 1
    return i


def _unescape(content: bytes, at: int, word: bytearray) -> int:
    """Append what the backslash at *at* stands for to *word*; return how many bytes it used."""
    following = content[at + 1 : at + 2]
    if following and following[0] in _ESCAPED_AS_IS:
        word.append(following[0])
        return 2
    if following and following[0] in _ESCAPED_CONTROL:
        word.append(_ESCAPED_CONTROL[following[0]])
        return 2
    digits = content[at + 2 : at + 4]
    if following == b"x" and len(digits) == 2 and all(d in _HEX_DIGITS for d in digits):
        word.append(int(digits, 16))
        return 4
    # HAProxy keeps a backslash that starts no known sequence (a trailing one included).
    word.append(_BACKSLASH)
    return 1


def _decode(words: Sequence[bytes]) -> tuple[str, ...]:
    """Words as text; bytes that are not UTF-8 survive as surrogates."""
    return tuple(w.decode("utf-8", "surrogateescape") for w in words)


# -- sections --------------------------------------------------------------------------------------


def _sections(doc: Document, shaping: Sequence[Statement]) -> tuple[Section, ...]:
    """The sections the header lines among the *shaping* lines of *doc* start."""
    headers: list[Statement] = []
    contested: dict[int, int] = {}
    # A header in a false branch is dropped, so the statements after its branch (until the next
    # header outside any block) belong to the last section whose header is outside any block.
    owner: int | None = None
    # That section, once a conditional header has followed it.
    contestable: int | None = None
    # Depths of the still open branches that hold a conditional header: their lines go with it.
    branches: list[int] = []
    previous = -1
    for index, words in [*shaping, (len(doc.raw), ())]:
        # The lines in between shape nothing: the first statement among them may be contested.
        if contestable is not None and not branches and contestable not in contested:
            statement = next((i for i in range(previous + 1, index) if doc.words(i)), None)
            if statement is not None:
                contested[contestable] = statement
        if index == len(doc.raw):
            break
        previous = index
        keyword = words[0] if words else ""
        if keyword in SECTION_KEYWORDS:
            depth = doc.depth(index)
            if depth > 0:
                branches.append(depth)
                contestable = owner
            else:
                owner, contestable = len(headers), None
            headers.append((index, words))
        elif keyword in (".elif", ".else", ".endif"):
            closed = doc.depth(index) + 1 if keyword == ".endif" else doc.depth(index)
            branches = [depth for depth in branches if depth < closed]
        elif contestable is not None and not branches and words and keyword[0] != ".":
            contested.setdefault(contestable, index)
    bounds = pairwise([*(start for start, _ in headers), len(doc.raw)])
    return tuple(
        _section(words, start, end, contested.get(number))
        for number, ((_, words), (start, end)) in enumerate(zip(headers, bounds, strict=True))
    )


def _section(words: Sequence[str], start: int, end: int, contested_by: int | None) -> Section:
    """The section whose header has *words*."""
    keyword, rest = words[0], list(words[1:])
    if keyword == "defaults" and len(rest) == 2 and rest[0] == "from":
        rest.insert(0, "")
    name = rest[0] if rest else ""
    parent = rest[2] if len(rest) >= 3 and rest[1] == "from" else None
    return Section(keyword, name, parent, start, end, contested_by)


def _proxies(doc: Document, name: str) -> list[Section]:
    """Every ``backend`` and ``listen`` section called *name*."""
    return [s for s in doc.sections if s.keyword in PROXY_KEYWORDS and s.name == name]


def _uncertainty(doc: Document, section: Section, where: str) -> list[str]:
    """Why the lines of *section* depend on an ``.if`` condition, if they do."""
    problems: list[str] = []
    if doc.depth(section.start) > 0:
        problems.append(
            f"{where}: header line {section.start + 1} is inside an .if block; "
            "move it out or manage this backend by hand"
        )
    if section.contested_by is not None:
        problems.append(
            f"{where}: line {section.contested_by + 1} may belong to this section or to one "
            "whose header is inside an .if block; move that header out or manage this backend "
            "by hand"
        )
    return problems


# -- servers ---------------------------------------------------------------------------------------


def _servers(
    doc: Document, statements: Sequence[Statement], where: str, problems: list[str]
) -> tuple[ConfigServer, ...]:
    """The server lines among a section's *statements*; their problems go to *problems*."""
    servers: list[ConfigServer] = []
    conditional = bool(doc.depth_marks)
    for index, words in statements:
        if words[0] != "server":
            continue
        if conditional and doc.depth(index) > 0:
            problems.append(
                f"{where}: server line {index + 1} is inside an .if block; "
                "move it out or manage this backend by hand"
            )
        if len(words) < 2:
            problems.append(f"{where}: server line {index + 1} has no name")
        else:
            servers.append(server(words, index))
    if len({s.name for s in servers}) == len(servers):
        return tuple(servers)
    places: dict[str, list[int]] = {}
    for found in servers:
        places.setdefault(found.name, []).append(found.line_index)
    problems.extend(
        _declared(f"{where}: server '{name}'", indexes)
        for name, indexes in places.items()
        if len(indexes) > 1
    )
    return tuple(servers)


def server(words: tuple[str, ...], index: int) -> ConfigServer:
    """The server line at *index*, whose words are *words* (``server``, a name, ...)."""
    address, port = split_address(words[2] if len(words) > 2 else "")
    # The controller writes ``id <n>`` first: ``split_id``'s first step, without the call.
    if len(words) > 4 and words[3] == "id" and words[4].isdigit() and words[4].isascii():
        return ConfigServer(words[1], address, port, int(words[4]), words[5:], index)
    server_id, options = split_id(words[3:])
    return ConfigServer(words[1], address, port, server_id, options, index)


def split_address(word: str) -> tuple[str, int | None]:
    """The address as written without ``:port``, and the port when it is a plain number."""
    if word.startswith(_PORTLESS_PREFIXES):
        return word, None
    # Like str2sa_range(): the last colon is the port separator unless a ``]`` follows it.
    host, colon, port = word.rpartition(":")
    if not colon or "]" in port:
        return word, None
    return host, int(port) if port.isascii() and port.isdigit() else None


def split_id(options: tuple[str, ...]) -> tuple[int | None, tuple[str, ...]]:
    """The value of the ``id`` keyword, and every other option word in order."""
    if "id" not in options:
        return None, options
    i = 0
    while i < len(options):
        word = options[i]
        value = options[i + 1] if i + 1 < len(options) else ""
        if word == "id" and value.isascii() and value.isdigit():
            return int(value), options[:i] + options[i + 2 :]
        i += 2 if word in _ONE_ARGUMENT_KEYWORDS else 1
    return None, options


# -- balance algorithm -----------------------------------------------------------------------------


def _algorithm(
    doc: Document,
    section: Section,
    statements: Sequence[Statement],
    where: str,
    problems: list[str],
) -> tuple[str, str, bool]:
    """
    The effective ``balance`` algorithm, ``hash-type`` method and ``option allbackups`` of
    *section*, whose *statements* are read already, following defaults.
    """
    balance: str | None = None
    hash_type: str | None = None
    allbackups: bool | None = None
    current: Section | None = section
    while current is not None and None in (balance, hash_type, allbackups):
        own = statements if current is section else doc.statements(current)
        own_balance, own_hash, own_allbackups = _own_algorithm(doc, own, where, problems)
        balance = balance or own_balance
        hash_type = hash_type or own_hash
        allbackups = own_allbackups if allbackups is None else allbackups
        current = _inherited(doc, current, where, problems)
    return balance or DEFAULT_BALANCE, hash_type or DEFAULT_HASH_TYPE, bool(allbackups)


def _own_algorithm(
    doc: Document,
    statements: Sequence[Statement],
    where: str,
    problems: list[str],
) -> tuple[str | None, str | None, bool | None]:
    """
    The last ``balance``, ``hash-type`` and ``[no] option allbackups`` among a section's own
    *statements*, if any (``None``: the section leaves it to its defaults).
    """
    found: dict[str, str] = {}
    allbackups: bool | None = None
    for index, words in statements:
        keyword = words[0]
        if keyword in ("balance", "hash-type") and len(words) > 1:
            found[keyword] = words[1]
            if doc.depth(index) > 0:
                problems.append(
                    f"{where}: '{keyword}' at line {index + 1} is inside an .if block; "
                    "move it out or manage this backend by hand"
                )
        elif words[-1] == "allbackups":
            allbackups = _allbackups(words, doc.depth(index) > 0, allbackups)
    return found.get("balance"), found.get("hash-type"), allbackups


def _allbackups(words: tuple[str, ...], conditional: bool, before: bool | None) -> bool | None:
    """
    What ``option allbackups``, ``no option allbackups`` or ``default option allbackups``
    (*words*) makes of the setting *before* it in the same section.
    """
    if words == ("option", "allbackups"):
        # HAProxy may drop a line inside an .if block: never count on one to turn it on.
        return not conditional
    if words == ("no", "option", "allbackups"):
        return False
    if words == ("default", "option", "allbackups"):
        return None
    return before


def _inherited(doc: Document, section: Section, where: str, problems: list[str]) -> Section | None:
    """The defaults section *section* takes its settings from, if any."""
    # A defaults section without ``from`` starts afresh; a proxy uses the last one above it.
    if section.keyword == "defaults" and section.parent is None:
        return None
    above = [s for s in doc.sections if s.keyword == "defaults" and s.start < section.start]
    if section.parent is not None:
        above = [s for s in above if s.name == section.parent]
        if not above:
            problems.append(
                f"{where}: no defaults section '{section.parent}' above line "
                f"{section.start + 1} (named by 'from')"
            )
            return None
    if not above:
        return None
    parent = above[-1]
    problems.extend(_uncertainty(doc, parent, f"{where}: its defaults at line {parent.start + 1}"))
    return parent


def _declared(subject: str, indexes: Sequence[int]) -> str:
    """Say that *subject* appears on each of the lines *indexes* (0-based)."""
    times = "twice" if len(indexes) == 2 else f"{len(indexes)} times"
    numbers = [str(i + 1) for i in indexes]
    return f"{subject} is declared {times} (lines {', '.join(numbers[:-1])} and {numbers[-1]})"
