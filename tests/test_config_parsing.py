"""
Reading haproxy.cfg: byte-exact round trips, HAProxy's word splitting, sections, server lines,
the effective balance algorithm, and the reasons a backend cannot be managed.

Every case is a small hand-built file; the real-world files are in test_config_corpus.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core import config_parse
from reconciler.core.model import ConfigBackend, ConfigServer
from tests.support.configs import serialized


def only_backend(text: bytes, name: str = "b1") -> ConfigBackend:
    """The parsed backend *name* of *text*, which must exist."""
    found = config_parse.backend(config_parse.parse(text), name)
    assert found is not None
    return found


def only_server(line: str) -> ConfigServer:
    """The single server of a backend made of *line*."""
    (server,) = only_backend(f"backend b1\n    {line}\n".encode()).servers
    return server


# -- round trip ------------------------------------------------------------------------------------

# Bytes that exercise every branch of the tokenizer and the line splitter.
CONFIG_BYTES = st.lists(
    st.sampled_from(
        [
            *(b" ", b"\t", b"\n", b"\r", b"\r\n", b"#", b"\\", b"'", b'"', b"x", b"\\x4", b"$"),
            *(b"\0", b"\xff", b"\xc3\xa9", b"server", b"backend", b"listen", b".if", b".endif"),
        ]
    ),
    max_size=60,
).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | CONFIG_BYTES)
def test_any_bytes_render_back_identically(data: bytes) -> None:
    """Whatever the input, parsing keeps every byte, and finding backends never fails."""
    doc = config_parse.parse(data)
    assert serialized(doc) == data
    for section in doc.sections:
        if section.keyword in config_parse.PROXY_KEYWORDS:
            assert config_parse.backend(doc, section.name) is not None


def test_each_line_keeps_its_own_end_of_line() -> None:
    """LF, CRLF and a missing final LF are recorded per line."""
    doc = config_parse.parse(b"global\r\n    maxconn 1\n\nbackend b1")
    assert [(line.content, line.eol) for line in doc.lines] == [
        (b"global", b"\r\n"),
        (b"    maxconn 1", b"\n"),
        (b"", b"\n"),
        (b"backend b1", b""),
    ]


def test_empty_file_has_no_lines() -> None:
    """An empty file parses to nothing and renders to nothing."""
    doc = config_parse.parse(b"")
    assert doc.lines == ()
    assert serialized(doc) == b""


# -- words -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "words"),
    [
        pytest.param(b"  server\ts1   1.2.3.4:80  ", ("server", "s1", "1.2.3.4:80"), id="blanks"),
        pytest.param(b"a b # c d", ("a", "b"), id="comment"),
        pytest.param(b"a b#c", ("a", "b"), id="comment-glued"),
        pytest.param(b'set X "a#b c"  # real', ("set", "X", "a#b c"), id="double-quotes"),
        pytest.param(b"x 'a \"$b\\'", ("x", 'a "$b\\'), id="single-quotes"),
        pytest.param(b"x a\\#b a\\ b", ("x", "a#b", "a b"), id="escaped"),
        pytest.param(b"x \\x41\\t\\q", ("x", "A\t\\q"), id="escape-sequences"),
        pytest.param(b"x \\", ("x", "\\"), id="trailing-backslash"),
        pytest.param(b'x "" y', ("x", "", "y"), id="empty-quoted"),
        pytest.param(b'x ab"c d"e', ("x", "abc de"), id="quote-inside-word"),
        pytest.param(b'x "${A}:80"', ("x", "${A}:80"), id="variables-kept"),
        pytest.param(b'x "open', ("x", "open"), id="unterminated-quote"),
        pytest.param(b"# only a comment", (), id="comment-line"),
        pytest.param(b"x \xff\xc3\xa9", ("x", "\udcff\xe9"), id="not-utf8"),
    ],
)
def test_words_are_split_like_haproxy(content: bytes, words: tuple[str, ...]) -> None:
    """Lines split into words by HAProxy 2.6's shell-like rules."""
    (line,) = config_parse.parse(content + b"\n").lines
    assert line.words == words


@pytest.mark.parametrize(
    ("content", "tail"),
    [
        pytest.param(b"  server s1 a:1   # note", b"   # note", id="comment"),
        pytest.param(b"  server s1 'a b'  ", b"  ", id="trailing-blanks"),
        pytest.param(b"  server s1 a:1", b"", id="nothing"),
    ],
)
def test_statement_end_is_recorded(content: bytes, tail: bytes) -> None:
    """body_end separates the statement from trailing blanks and the comment."""
    (line,) = config_parse.parse(content).lines
    assert line.content[line.body_end :] == tail


# -- sections --------------------------------------------------------------------------------------


def test_indented_headers_start_sections() -> None:
    """A section keyword starts a section whatever its indentation."""
    doc = config_parse.parse(b"  defaults\n    mode http\n\tbackend b1\n      server s1 a:1\n")
    assert [(s.keyword, s.start, s.end) for s in doc.sections] == [
        ("defaults", 0, 2),
        ("backend", 2, 4),
    ]
    assert len(only_backend(serialized(doc)).servers) == 1


def test_quoted_name_and_from_with_comment() -> None:
    """Quoted names and ``from <defaults> # comment`` headers are understood."""
    text = b'defaults named_defaults\n    balance first\nbackend "b1" from named_defaults # x\n'
    section = config_parse.proxy_section(config_parse.parse(text), "b1")
    assert section is not None
    assert (section.name, section.parent) == ("b1", "named_defaults")
    assert only_backend(text).balance == "first"


def test_frontend_of_the_same_name_is_not_the_backend() -> None:
    """A frontend named like a backend is neither found nor a duplicate."""
    doc = config_parse.parse(b"frontend b1\n    bind :80\nbackend b1\n    server s1 a:1\n")
    assert config_parse.backend(doc, "f") is None
    found = config_parse.backend(doc, "b1")
    assert found is not None
    assert found.problems == ()
    assert config_parse.backend(config_parse.parse(b"frontend b1\n"), "b1") is None


def test_comment_only_section_has_no_servers() -> None:
    """A backend with nothing but comments is a valid, empty backend."""
    found = only_backend(b"backend b1\n    # nothing yet\n\n    # still nothing\n")
    assert found.servers == ()
    assert found.problems == ()


def test_server_lines_of_other_sections_do_not_belong_to_a_backend() -> None:
    """peers, ring and resolvers keep their server/nameserver lines; templates are not servers."""
    text = b"""backend b1
    default-server check
    server-template web 1-3 127.0.0.1:80
    server s1 127.0.0.1:80
peers mypeers
    server s1 127.0.0.1:1024
ring myring
    server s2 127.0.0.1:514
resolvers dns
    nameserver ns1 127.0.0.1:53
"""
    assert [s.name for s in only_backend(text).servers] == ["s1"]


# -- server lines ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "address", "port"),
    [
        ("1.2.3.4:80", "1.2.3.4", 80),
        ("[::1]:80", "[::1]", 80),
        ("[::1]", "[::1]", None),
        ("1::1:80", "1::1", 80),
        ("1::1:", "1::1", None),
        ("ipv4@1.2.3.4:80", "ipv4@1.2.3.4", 80),
        ("ipv6@[::1]:443", "ipv6@[::1]", 443),
        ("unix@/run/x.sock", "unix@/run/x.sock", None),
        ("abns@name:1", "abns@name:1", None),
        ("sockpair@3", "sockpair@3", None),
        ("/var/run/app.sock", "/var/run/app.sock", None),
        ("udp@127.0.0.1:514", "udp@127.0.0.1", 514),
        ("backend.local:8080", "backend.local", 8080),
        ("${BE_IP}:80", "${BE_IP}", 80),
        ("${BE_IP}:${PORT}", "${BE_IP}", None),
        ("1.2.3.4", "1.2.3.4", None),
        (":80", "", 80),
        ("1.2.3.4:+1", "1.2.3.4", None),
        ("1.2.3.4:-1", "1.2.3.4", None),
        ("1.2.3.4:80-90", "1.2.3.4", None),
        ("1.2.3.4:٣", "1.2.3.4", None),
    ],
)
def test_address_and_port_are_split_like_haproxy(word: str, address: str, port: int | None) -> None:
    """The port follows the last colon outside brackets and counts only as a plain number."""
    server = only_server(f"server s1 {word} check")
    assert (server.address, server.port, server.options) == (address, port, ("check",))


def test_server_without_address() -> None:
    """A server line without an address does not break parsing."""
    server = only_server("server s1")
    assert (server.address, server.port, server.options) == ("", None, ())


@pytest.mark.parametrize(
    ("rest", "server_id", "options"),
    [
        ("check id 12 weight 5", 12, ("check", "weight", "5")),
        ("id 7", 7, ()),
        ("cookie id check", None, ("cookie", "id", "check")),
        ("agent-send id id 3", 3, ("agent-send", "id")),
        ("id x check", None, ("id", "x", "check")),
        ("check id", None, ("check", "id")),
    ],
)
def test_explicit_id_is_separated_from_options(
    rest: str, server_id: int | None, options: tuple[str, ...]
) -> None:
    """``id <n>`` is read out of the options, but a value that happens to be "id" is not."""
    server = only_server(f"server s1 127.0.0.1:80 {rest}")
    assert (server.server_id, server.options) == (server_id, options)


def test_server_records_its_line_index() -> None:
    """Each server carries the 0-based index of its line."""
    found = only_backend(b"backend b1\n\n    server s1 a:1\n    # c\n    server s2 a:2\n")
    assert [(s.name, s.line_index) for s in found.servers] == [("s1", 2), ("s2", 4)]


def test_five_thousand_servers() -> None:
    """A large backend parses completely."""
    body = b"".join(b"    server s%d 127.0.0.1:%d check\n" % (i, i) for i in range(5000))
    assert len(only_backend(b"backend b1\n" + body).servers) == 5000


# -- balance ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "balance", "hash_type", "dynamic"),
    [
        pytest.param(b"backend b1\n", "roundrobin", "map-based", True, id="built-in"),
        pytest.param(
            b"backend b1\n balance static-rr\n", "static-rr", "map-based", False, id="srr"
        ),
        pytest.param(b"backend b1\n balance source\n", "source", "map-based", False, id="source"),
        pytest.param(
            b"backend b1\n balance source\n hash-type consistent sdbm\n",
            "source",
            "consistent",
            True,
            id="source-consistent",
        ),
        pytest.param(
            b"backend b1\n balance random(2)\n", "random(2)", "map-based", True, id="random-draws"
        ),
        pytest.param(
            b"defaults\n balance leastconn\nbackend b1\n", "leastconn", "map-based", True, id="inh"
        ),
        pytest.param(
            b"defaults\n balance uri\n hash-type consistent\nbackend b1\n balance source\n",
            "source",
            "consistent",
            True,
            id="hash-type-inherited-alone",
        ),
        pytest.param(
            b"defaults\n balance static-rr\ndefaults\n mode http\nbackend b1\n",
            "roundrobin",
            "map-based",
            True,
            id="last-defaults-above",
        ),
        pytest.param(
            b"defaults\n balance static-rr\nbackend b1\ndefaults\n balance first\n",
            "static-rr",
            "map-based",
            False,
            id="defaults-below-ignored",
        ),
        pytest.param(
            b"defaults d1\n balance source\ndefaults d2\n balance first\nbackend b1 from d1\n",
            "source",
            "map-based",
            False,
            id="named-defaults",
        ),
        pytest.param(
            b"defaults d1\n balance uri\ndefaults from d1\n hash-type consistent\nbackend b1\n",
            "uri",
            "consistent",
            True,
            id="defaults-chain",
        ),
        pytest.param(
            b"defaults\n balance static-rr\nbackend b1\n balance roundrobin\n",
            "roundrobin",
            "map-based",
            True,
            id="own-wins",
        ),
    ],
)
def test_effective_balance_algorithm(
    text: bytes, balance: str, hash_type: str, *, dynamic: bool
) -> None:
    """balance and hash-type come from the section, else its defaults, else the built-ins."""
    found = only_backend(text)
    assert (found.balance, found.hash_type) == (balance, hash_type)
    assert found.takes_dynamic_servers is dynamic
    assert found.problems == ()


# -- problems --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            b".if defined(X)\nbackend b1\n    server s1 a:1\n.endif\n",
            "header line 2 is inside an .if block; move it out or manage this backend by hand",
            id="if-around-header",
        ),
        pytest.param(
            b"backend b1\n  .if defined(X)\n    server s1 a:1\n  .else\n    server s2 a:2\n"
            b"  .endif\n    server s3 a:3\n",
            "server line 5 is inside an .if block",
            id="if-around-servers",
        ),
        pytest.param(
            b"backend b1\n    server s1 a:1\n.if defined(X)\nbackend b2\n.endif\n"
            b"    server s2 a:2\n",
            "line 6 may belong to this section or to one whose header is inside an .if block",
            id="if-around-next-header",
        ),
        pytest.param(
            b"backend b1\n.if defined(X)\nbackend b2\n    server s1 a:1\n.else\n"
            b"    server s2 a:2\n.endif\n",
            "line 6 may belong to this section",
            id="else-after-next-header",
        ),
        pytest.param(
            b"backend b1\n.if defined(X)\n  .if defined(Y)\nbackend b2\n  .endif\n"
            b"    server s2 a:2\n.endif\n",
            "line 6 may belong to this section",
            id="nested-if-around-next-header",
        ),
        pytest.param(
            b"backend b1\n.if defined(X)\n    balance source\n.endif\n",
            "'balance' at line 3 is inside an .if block",
            id="if-around-balance",
        ),
        pytest.param(
            b".if defined(X)\ndefaults\n    balance source\n.endif\nbackend b1\n",
            "its defaults at line 2: header line 2 is inside an .if block",
            id="if-around-defaults",
        ),
        pytest.param(
            b"backend b1\nlisten b1\nbackend b1\n",
            "backend 'b1' is declared 3 times (lines 1, 2 and 3)",
            id="declared-thrice",
        ),
        pytest.param(
            b"backend b1\n    server s1 a:1\n    server s2 a:2\n    server s1 a:3\n",
            "server 's1' is declared twice (lines 2 and 4)",
            id="duplicate-server",
        ),
        pytest.param(
            b"backend b1 from nowhere\n",
            "no defaults section 'nowhere' above line 1",
            id="from-unknown",
        ),
        pytest.param(b"backend b1\n    server\n", "server line 2 has no name", id="nameless"),
    ],
)
def test_unmanageable_backends_are_reported(text: bytes, expected: str) -> None:
    """Each reason a backend cannot be edited safely is named, with its line."""
    problems = only_backend(text).problems
    assert any(expected in problem for problem in problems), problems


def test_listen_declared_twice_message() -> None:
    """A name used by a backend and a listen section is a duplicate, with both lines."""
    problems = only_backend(b"listen b1\n    bind :80\nbackend b1\n").problems
    assert problems == ("backend 'b1' is declared twice (lines 1 and 3)",)


def test_dollar_in_name_is_reported() -> None:
    """A backend named through an environment variable cannot be matched reliably."""
    (problem,) = only_backend(b'backend "${NAME}"\n', "${NAME}").problems
    assert "'$'" in problem


def test_conditional_section_does_not_affect_the_one_before() -> None:
    """A whole section wrapped in .if/.endif leaves the previous section unambiguous."""
    text = b"""backend b1
    server s1 127.0.0.1:80
.if defined(X)
backend b2
    server s2 127.0.0.1:80
  .if defined(Y)
    server s3 127.0.0.1:80
  .endif
.endif

# trailing comment
"""
    assert only_backend(text).problems == ()
    assert only_backend(text, "b2").problems != ()


def test_if_elsewhere_does_not_affect_a_backend() -> None:
    """Conditional blocks in other sections or around other lines are harmless."""
    text = b"""global
.if feature(THREAD)
    nbthread 2
.endif
backend b1
    .if defined(X)
    http-request deny
    .endif
    server s1 127.0.0.1:80
"""
    found = only_backend(text)
    assert found.problems == ()
    assert [s.name for s in found.servers] == ["s1"]


# -- reading in bulk -------------------------------------------------------------------------------
# Parsing tokenizes only the lines that may shape sections, and reads a section's lines in one go
# (``Document.statements``); each shortcut must give what a line-by-line reading gives.

# Bytes of every kind the shortcuts treat apart: blanks that only ``str.split`` splits on (ASCII
# 0x1c-0x1f, NBSP and U+3000 in UTF-8), quotes, escapes, comments, CR, headers and directives.
SHORTCUT_BYTES = st.lists(
    st.sampled_from(
        [
            *(b" ", b"\t", b"\n", b"\r\n", b"\r", b"\x1c", b"\x1f", b"\xc2\xa0", b"\xe3\x80\x80"),
            *(b"#", b"'", b'"', b"\\", b"\xff", b"x", b"server", b"backend b", b"defaults"),
            *(b".if", b".elif", b".else", b".endif", b"balance", b"hash-type", b"\x0b"),
        ]
    ),
    max_size=80,
).map(b"".join)


# Whole lines, so that conditional headers and the statements after them meet often.
SHORTCUT_LINES = st.lists(
    st.sampled_from(
        [
            *(b"backend b", b"  defaults", b'"listen" l', b".if x", b"  .elif y", b".else"),
            *(b".endif", b"  server s 127.0.0.1:1", b"", b"# c", b"balance first", b"\t\x1c x"),
            b".if x\n  backend c\n.endif",
        ]
    ),
    max_size=14,
).map(b"\n".join)


def reference_depths(doc: config_parse.Document) -> list[int]:
    """The ``.if`` depth of every line, reading every line in turn."""
    depths, depth = [], 0
    for line in doc.lines:
        if line.keyword == ".endif":
            depth = max(depth - 1, 0)
        depths.append(depth)
        if line.keyword == ".if":
            depth += 1
    return depths


def reference_contested(lines: tuple[config_parse.Line, ...]) -> dict[int, int]:
    """``Section.contested_by`` of each section number, reading every line in turn."""
    contested: dict[int, int] = {}
    owner = contestable = None
    branches: list[int] = []
    headers = 0
    for index, line in enumerate(lines):
        if line.keyword in config_parse.SECTION_KEYWORDS:
            if line.conditional:
                branches.append(line.depth)
                contestable = owner
            else:
                owner, contestable = headers, None
            headers += 1
        elif line.keyword in (".elif", ".else", ".endif"):
            closed = line.depth + 1 if line.keyword == ".endif" else line.depth
            branches = [depth for depth in branches if depth < closed]
        elif contestable is not None and not branches and line.words and line.keyword[0] != ".":
            contested.setdefault(contestable, index)
    return contested


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | SHORTCUT_BYTES | SHORTCUT_LINES)
def test_bulk_reading_matches_line_by_line_reading(data: bytes) -> None:
    """Sections, depths and each section's statements are what tokenizing every line gives."""
    doc = config_parse.parse(data)
    lines = doc.lines
    headers = [i for i, line in enumerate(lines) if line.keyword in config_parse.SECTION_KEYWORDS]
    assert [s.start for s in doc.sections] == headers
    assert [line.depth for line in lines] == reference_depths(doc)
    contested = reference_contested(lines)
    assert [s.contested_by for s in doc.sections] == [
        contested.get(number) for number in range(len(doc.sections))
    ]
    for section in doc.sections:
        body = range(section.start + 1, section.end)
        assert doc.statements(section) == [(i, lines[i].words) for i in body if lines[i].words]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120) | SHORTCUT_BYTES)
def test_unquoted_shortcut_splits_like_haproxy(data: bytes) -> None:
    """Without quotes or backslashes, the quick split gives the full tokenizer's words and end."""
    content = data.replace(b"\n", b" ")
    if config_parse._QUOTING.search(content) is None:
        assert config_parse._tokenize(content) == config_parse._tokenize_quoted(content)


def test_text_only_blanks_are_every_one() -> None:
    """The blanks ``str.split`` splits on and ``bytes.split`` does not: the list is complete."""
    c_blanks = set(" \t\n\r\v\f")
    others = "".join(chr(c) for c in range(0x110000) if chr(c).isspace() and chr(c) not in c_blanks)
    assert config_parse._TEXT_ONLY_BLANKS.findall(others) == list(others)
    ascii_ones = {blank.decode() for blank in config_parse._ASCII_TEXT_ONLY_BLANKS}
    assert ascii_ones == {c for c in others if c.isascii()}


@settings(max_examples=200, deadline=None)
@given(SHORTCUT_BYTES, st.data())
def test_spliced_replaces_only_the_given_lines(data: bytes, draw: st.DataObject) -> None:
    """``spliced`` gives the file's bytes with the given lines, and only those, replaced."""
    doc = config_parse.parse(data)
    indexes = st.integers(0, max(len(doc.raw) - 1, 0))
    replacements = draw.draw(st.dictionaries(indexes, st.sampled_from([b"", b"x\n", b"y"])))
    replacements = {i: text for i, text in replacements.items() if i < len(doc.raw)}
    lines = [line.content + line.eol for line in doc.lines]
    expected = b"".join(replacements.get(i, line) for i, line in enumerate(lines))
    assert doc.spliced(replacements) == expected
