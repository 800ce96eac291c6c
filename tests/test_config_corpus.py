"""
The parser and editor against 47 real-world config files (../shared/corpus/haproxy-configs).

Every file must render back byte for byte and agree with the corpus index (sections, server lines,
line count); every manageable backend must take an edit that changes only the managed lines; and
files that HAProxy 2.6 accepted must still pass ``haproxy -c`` after the edit.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core import config_edit, config_parse
from reconciler.core.model import ConfigServer, ServerLine
from tests.support.configs import as_line, check_edit, desired_for, managed, proxy_names, serialized


CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "haproxy-configs"
if not (CORPUS / "index.json").is_file():
    pytest.skip(f"the config corpus is not at {CORPUS}", allow_module_level=True)

INDEX = json.loads((CORPUS / "index.json").read_text(encoding="utf-8"))
FILES = sorted(INDEX)
TEXTS = {name: (CORPUS / name).read_bytes() for name in FILES}
BACKENDS = [(file, name) for file in FILES for name in proxy_names(config_parse.parse(TEXTS[file]))]
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
#: Two new managed servers, loopback only so that the checked file could even be started.
NEW = [
    ServerLine(f"app-i-{n:017x}", f"127.0.0.{n}", 18080 + n, 9000 + n, ("check",)) for n in (1, 2)
]
#: The corpus sections HAProxy would run differently depending on an ``.if``, or that are invalid.
UNMANAGEABLE = {
    ("haproxy-regtest-ssl-ssl_errors.cfg", "clear_backend_errors_lst"): "server line 56 is inside",
    ("haproxy-regtest-ssl-ssl_errors.cfg", "wrong_ciphers_tls13_ssl_lst"): "header line 122 is",
    ("github-haproxytech-haproxy-pygments-lexer-ultimate-2.2.cfg", "be_main"): "declared 12 times",
    ("haproxy-tests-conf-ports.cfg", "b5"): "server 's1' is declared twice (lines 46 and 47)",
    ("haproxy-tests-conf-ports.cfg", "b6"): "server 's1' is declared twice",
    ("haproxy-tests-conf-ports.cfg", "b7"): "server 's2' is declared twice",
    ("haproxy-tests-conf-test-address-syntax.cfg", "l35"): "server 's5' is declared twice",
    ("haproxy-tests-conf-test-address-syntax.cfg", "l40"): "'s3' is declared 3 times",
}
MANAGEABLE = [pair for pair in BACKENDS if pair not in UNMANAGEABLE]
PLAIN_NAME = re.compile(r"[A-Za-z0-9_.:-]+")


def servers_of(data: bytes, name: str) -> tuple[ConfigServer, ...]:
    """The servers of backend *name* in *data*."""
    section = config_parse.backend(config_parse.parse(data), name)
    assert section is not None
    return section.servers


def first_server_and_new(file: str, name: str) -> Callable[[str], bool]:
    """An ownership rule claiming the first server of *name* (if any) and the new servers."""
    servers = servers_of(TEXTS[file], name)
    victim = servers[0].name if servers else None
    return lambda server: server == victim or managed(server)


@pytest.mark.parametrize("file", FILES)
def test_every_file_renders_back_identically(file: str) -> None:
    """parse then render gives the file's exact bytes."""
    assert serialized(config_parse.parse(TEXTS[file])) == TEXTS[file]


@pytest.mark.parametrize("file", FILES)
def test_parse_agrees_with_the_corpus_index(file: str) -> None:
    """Sections, server lines per section kind, line count and final LF match index.json."""
    meta = INDEX[file]
    doc = config_parse.parse(TEXTS[file])
    servers = Counter(
        section.keyword
        for section in doc.sections
        for line in doc.lines[section.start + 1 : section.end]
        if line.keyword == "server"
    )
    assert dict(Counter(s.keyword for s in doc.sections)) == meta["sections"]
    assert dict(servers) == meta["server_lines_by_section"]
    assert len(doc.lines) == meta["lines"]
    assert (doc.lines[-1].eol != b"") is meta["final_newline"]


def test_unmanageable_sections_are_exactly_the_known_ones() -> None:
    """Conditional and duplicate declarations in the corpus are found, and nothing else."""
    problems = {}
    for file, name in BACKENDS:
        section = config_parse.backend(config_parse.parse(TEXTS[file]), name)
        assert section is not None
        if section.problems:
            problems[file, name] = "; ".join(section.problems)
    assert problems.keys() == UNMANAGEABLE.keys()
    for key, fragment in UNMANAGEABLE.items():
        assert fragment in problems[key]


@pytest.mark.parametrize(("file", "name"), MANAGEABLE)
def test_edit_changes_only_the_managed_lines(file: str, name: str) -> None:
    """Adding two servers and removing one touches those lines only; the new ones are adjacent."""
    is_managed = first_server_and_new(file, name)
    check_edit(TEXTS[file], name, is_managed, NEW)
    out = config_edit.edit(TEXTS[file], name, is_managed, NEW)
    indexes = [s.line_index for s in servers_of(out, name) if managed(s.name)]
    assert indexes == list(range(indexes[0], indexes[0] + len(NEW)))


@pytest.mark.integration
@pytest.mark.parametrize(
    ("file", "name"),
    [pair for pair in MANAGEABLE if INDEX[pair[0]]["haproxy_2_6_check"]["rc"] == 0],
)
def test_edited_file_still_passes_haproxy_check(tmp_path: Path, file: str, name: str) -> None:
    """A file HAProxy 2.6 accepted is still accepted after the edit (check only, never started)."""
    candidate = tmp_path / file
    candidate.write_bytes(
        config_edit.edit(TEXTS[file], name, first_server_and_new(file, name), NEW)
    )
    # The corpus was checked from a scratch directory without environment variables; do the same.
    result = subprocess.run(
        [HAPROXY, "-c", "-q", "-f", str(candidate)],
        cwd=tmp_path,
        env={},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@st.composite
def corpus_edits(draw: st.DrawFn) -> tuple[bytes, str, frozenset[str], list[ServerLine]]:
    """A manageable corpus backend, some of its servers claimed as managed, and a desired list."""
    file, name = draw(st.sampled_from(MANAGEABLE))
    servers = servers_of(TEXTS[file], name)
    plain = sorted({s.name for s in servers if PLAIN_NAME.fullmatch(s.name)})
    claimed = draw(st.sets(st.sampled_from(plain))) if plain else set()
    current = [as_line(s) for s in servers if s.name in claimed and writable(s)]
    desired = draw(desired_for(sorted(claimed), current))
    return TEXTS[file], name, frozenset(claimed), desired


def writable(server: ConfigServer) -> bool:
    """The editor could write *server* back exactly as it means it."""
    if server.port is None:
        return False
    try:
        config_edit.line_text(as_line(server))
    except ValueError:
        return False
    return True


@settings(max_examples=150, deadline=None)
@given(corpus_edits())
def test_edit_properties_on_corpus_backends(
    case: tuple[bytes, str, frozenset[str], list[ServerLine]],
) -> None:
    """The editor's properties hold on real backends with real servers claimed as managed."""
    text, name, claimed, desired = case
    check_edit(text, name, lambda server: server in claimed or managed(server), desired)
