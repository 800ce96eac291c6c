"""
Read haproxy.cfg without losing a byte.

``parse`` turns the file's bytes into a ``Document``: every physical line with its own end of line,
its words as HAProxy 2.6 would split them, where its statement ends (so a trailing comment can be
kept), and whether it sits inside an ``.if`` block; plus the sections the lines fall into.
``render`` turns a ``Document`` back into the very same bytes. ``backend`` answers what the
controller needs to know about one ``backend`` or ``listen`` section as a ``ConfigBackend``,
including every reason the section cannot be managed safely.

Conditional blocks are never evaluated: HAProxy drops the lines of a false branch before it looks
for section headers, so the section a line belongs to can depend on the condition. A section whose
header, servers or balance algorithm depend on one is reported, not guessed.

Pure: bytes in, values out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
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
    """A parsed config file; ``render`` gives back its exact bytes."""

    lines: tuple[Line, ...]
    #: Every section in file order (lines before the first header belong to none).
    sections: tuple[Section, ...]


def parse(data: bytes) -> Document:
    """Split *data* into lines and sections; never fails, whatever the bytes."""
    lines: list[Line] = []
    depth = 0
    for content, eol in _physical_lines(data):
        words, body_end = _tokenize(content)
        directive = words[0] if words else ""
        if directive == ".endif":
            depth = max(depth - 1, 0)
        lines.append(Line(content, eol, words, body_end, depth))
        if directive == ".if":
            depth += 1
    return Document(tuple(lines), _sections(lines))


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
    servers = _servers(doc, section, where, problems)
    balance, hash_type = _algorithm(doc, section, where, problems)
    return ConfigBackend(
        name=name,
        servers=servers,
        balance=balance,
        hash_type=hash_type,
        problems=tuple(problems),
    )


# -- lines -----------------------------------------------------------------------------------------


def _physical_lines(data: bytes) -> list[tuple[bytes, bytes]]:
    """Each line's content and end of line."""
    pieces = data.split(b"\n")
    last = pieces.pop()
    split = [(p[:-1], b"\r\n") if p.endswith(b"\r") else (p, b"\n") for p in pieces]
    if last:
        split.append((last, b""))
    return split


def _tokenize(content: bytes) -> tuple[tuple[str, ...], int]:
    """The words of *content* and the offset just past the last one."""
    if _QUOTING.search(content) is None:
        body = content.split(b"#", 1)[0]
        plain = body.split()
        return _decode(plain), (len(body.rstrip()) if plain else 0)
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


def _sections(lines: Sequence[Line]) -> tuple[Section, ...]:
    """The sections the header lines among *lines* start."""
    headers: list[int] = []
    contested: dict[int, int] = {}
    # A header in a false branch is dropped, so the statements after its branch (until the next
    # header outside any block) belong to the last section whose header is outside any block.
    owner: int | None = None
    # That section, once a conditional header has followed it.
    contestable: int | None = None
    # Depths of the still open branches that hold a conditional header: their lines go with it.
    branches: list[int] = []
    for index, line in enumerate(lines):
        keyword = line.keyword
        if keyword in SECTION_KEYWORDS:
            if line.conditional:
                branches.append(line.depth)
                contestable = owner
            else:
                owner, contestable = len(headers), None
            headers.append(index)
        elif keyword in (".elif", ".else", ".endif"):
            closed = line.depth + 1 if keyword == ".endif" else line.depth
            branches = [depth for depth in branches if depth < closed]
        elif contestable is not None and not branches and line.words and keyword[0] != ".":
            contested.setdefault(contestable, index)
    return tuple(
        _section(lines[start].words, start, end, contested.get(number))
        for number, (start, end) in enumerate(pairwise([*headers, len(lines)]))
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
    if doc.lines[section.start].conditional:
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
    doc: Document, section: Section, where: str, problems: list[str]
) -> tuple[ConfigServer, ...]:
    """The server lines of *section*; their problems are added to *problems*."""
    servers: list[ConfigServer] = []
    for index in range(section.start + 1, section.end):
        line = doc.lines[index]
        if line.keyword != "server":
            continue
        if line.conditional:
            problems.append(
                f"{where}: server line {index + 1} is inside an .if block; "
                "move it out or manage this backend by hand"
            )
        if len(line.words) < 2:
            problems.append(f"{where}: server line {index + 1} has no name")
        else:
            servers.append(_server(line.words, index))
    places: dict[str, list[int]] = {}
    for server in servers:
        places.setdefault(server.name, []).append(server.line_index)
    problems.extend(
        _declared(f"{where}: server '{name}'", indexes)
        for name, indexes in places.items()
        if len(indexes) > 1
    )
    return tuple(servers)


def _server(words: Sequence[str], index: int) -> ConfigServer:
    """The server line at *index*, whose words are *words*."""
    address, port = _split_address(words[2] if len(words) > 2 else "")
    server_id, options = _split_id(words[3:])
    return ConfigServer(
        name=words[1],
        address=address,
        port=port,
        server_id=server_id,
        options=options,
        line_index=index,
    )


def _split_address(word: str) -> tuple[str, int | None]:
    """The address as written without ``:port``, and the port when it is a plain number."""
    if word.startswith(_PORTLESS_PREFIXES):
        return word, None
    # Like str2sa_range(): the last colon is the port separator unless a ``]`` follows it.
    colon = word.rfind(":")
    if colon < 0 or word.rfind("]") > colon:
        return word, None
    port = word[colon + 1 :]
    return word[:colon], int(port) if port.isascii() and port.isdigit() else None


def _split_id(options: Sequence[str]) -> tuple[int | None, tuple[str, ...]]:
    """The value of the ``id`` keyword, and every other option word in order."""
    i = 0
    while i < len(options):
        word = options[i]
        value = options[i + 1] if i + 1 < len(options) else ""
        if word == "id" and value.isascii() and value.isdigit():
            return int(value), (*options[:i], *options[i + 2 :])
        i += 2 if word in _ONE_ARGUMENT_KEYWORDS else 1
    return None, tuple(options)


# -- balance algorithm -----------------------------------------------------------------------------


def _algorithm(doc: Document, section: Section, where: str, problems: list[str]) -> tuple[str, str]:
    """The effective ``balance`` algorithm and ``hash-type`` method, following defaults."""
    balance: str | None = None
    hash_type: str | None = None
    current: Section | None = section
    while current is not None and (balance is None or hash_type is None):
        own_balance, own_hash = _own_algorithm(doc, current, where, problems)
        balance = balance or own_balance
        hash_type = hash_type or own_hash
        current = _inherited(doc, current, where, problems)
    return balance or DEFAULT_BALANCE, hash_type or DEFAULT_HASH_TYPE


def _own_algorithm(
    doc: Document, section: Section, where: str, problems: list[str]
) -> tuple[str | None, str | None]:
    """The last ``balance`` and ``hash-type`` of *section* itself, if any."""
    found: dict[str, str] = {}
    for index in range(section.start + 1, section.end):
        line = doc.lines[index]
        if line.keyword in ("balance", "hash-type") and len(line.words) > 1:
            found[line.keyword] = line.words[1]
            if line.conditional:
                problems.append(
                    f"{where}: '{line.keyword}' at line {index + 1} is inside an .if block; "
                    "move it out or manage this backend by hand"
                )
    return found.get("balance"), found.get("hash-type")


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
