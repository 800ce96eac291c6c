"""
Helpers for tests of the config parser and editor (pure: no process, no file).

``serialized`` and ``proxy_names`` read a parsed document back; ``managed`` is the editing tests'
ownership rule (``app-`` plus an instance id), ``DESIRED_LINES`` and ``desired_for`` generate
desired server lines, and ``check_edit`` asserts every property of one edit.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import replace

from hypothesis import strategies as st

from reconciler.core import config_edit, config_parse
from reconciler.core.model import ConfigServer, ServerLine


def proxy_names(doc: config_parse.Document) -> tuple[str, ...]:
    """The names of every ``backend`` and ``listen`` section of *doc*, in file order, each once."""
    return tuple(
        dict.fromkeys(s.name for s in doc.sections if s.keyword in config_parse.PROXY_KEYWORDS)
    )


def serialized(doc: config_parse.Document) -> bytes:
    """The bytes *doc* holds, line by line: equal to its source when parsing lost nothing."""
    return b"".join(line.content + line.eol for line in doc.lines)


def managed(name: str) -> bool:
    """The ownership rule of these tests: ``app-`` plus an instance id."""
    return re.fullmatch(r"app-i-[0-9a-f]{17}", name) is not None


#: Managed names, option lists and whole desired lines, for the property tests.
NAMES = st.text("0123456789abcdef", min_size=17, max_size=17).map(lambda s: f"app-i-{s}")
OPTIONS = st.sampled_from([(), ("check",), ("check", "inter", "2s"), ("weight", "10", "backup")])
DESIRED_LINES = st.builds(
    ServerLine,
    name=NAMES,
    address=st.builds("127.0.{}.{}".format, st.integers(0, 255), st.integers(1, 254)),
    port=st.integers(1, 65535),
    server_id=st.none() | st.integers(1, 99999),
    options=OPTIONS,
)


def managed_servers(
    data: bytes, backend: str, is_managed: Callable[[str], bool]
) -> tuple[config_parse.Document, list[ConfigServer]]:
    """The parsed *data* and the managed servers of *backend*, which must have no problems."""
    doc = config_parse.parse(data)
    found = config_parse.backend(doc, backend)
    assert found is not None
    assert found.problems == ()
    return doc, [s for s in found.servers if is_managed(s.name)]


def state(servers: Sequence[ConfigServer | ServerLine]) -> list[tuple[object, ...]]:
    """Servers as comparable (name, address, port, id, options) tuples."""
    return [(s.name, s.address, s.port, s.server_id, s.options) for s in servers]


def other_lines(data: bytes, backend: str, is_managed: Callable[[str], bool]) -> list[bytes]:
    """Every line but the managed servers of *backend*, without the last line's end of line."""
    doc, servers = managed_servers(data, backend, is_managed)
    skip = {s.line_index for s in servers}
    kept = [line.content + line.eol for i, line in enumerate(doc.lines) if i not in skip]
    # An edit may add the missing final LF; test_config_editing.py checks that by example.
    return [*kept[:-1], kept[-1].rstrip(b"\r\n")]


def check_edit(
    text: bytes, backend: str, is_managed: Callable[[str], bool], desired: Sequence[ServerLine]
) -> None:
    """Assert every property of applying *desired* to *backend* of *text*."""
    doc, before = managed_servers(text, backend, is_managed)
    out = config_edit.edit(text, backend, is_managed, desired)
    # Existing wanted servers stay in their place; new ones follow in the order given.
    wanted = {line.name: line for line in desired}
    present = {s.name for s in before}
    order = [wanted[s.name] for s in before if s.name in wanted]
    order += [line for line in desired if line.name not in present]
    out_doc, after = managed_servers(out, backend, is_managed)
    assert state(after) == state(order)
    assert other_lines(out, backend, is_managed) == other_lines(text, backend, is_managed)
    # A line that already said the right thing keeps its bytes.
    wanted_state = {line.name: state([line]) for line in desired}
    contents = {s.name: out_doc.lines[s.line_index].content for s in after}
    for server in before:
        if wanted_state.get(server.name) == state([server]):
            assert contents[server.name] == doc.lines[server.line_index].content
    assert config_edit.edit(out, backend, is_managed, desired) == out
    assert out == text or out.endswith(b"\n")
    # Emptying the managed set and filling it again keeps every other line.
    emptied = config_edit.edit(text, backend, is_managed, [])
    assert managed_servers(emptied, backend, is_managed)[1] == []
    refilled = config_edit.edit(emptied, backend, is_managed, desired)
    assert state(managed_servers(refilled, backend, is_managed)[1]) == state(desired)
    assert other_lines(refilled, backend, is_managed) == other_lines(text, backend, is_managed)


def as_line(server: ConfigServer) -> ServerLine:
    """The desired line that means exactly what *server* says (it must have a port)."""
    assert server.port is not None
    return ServerLine(server.name, server.address, server.port, server.server_id, server.options)


def unique_by_name(lines: list[ServerLine]) -> list[ServerLine]:
    """*lines* without repeated names (first one wins)."""
    return list({line.name: line for line in reversed(lines)}.values())[::-1]


def desired_for(
    names: Sequence[str], current: Sequence[ServerLine]
) -> st.SearchStrategy[list[ServerLine]]:
    """Desired lists mixing new servers, new settings for *names* and the *current* lines."""
    pool = DESIRED_LINES
    if names:
        pool |= st.sampled_from(names).flatmap(
            lambda n: DESIRED_LINES.map(lambda line: replace(line, name=n))
        )
    if current:
        pool |= st.sampled_from(current)
    return st.lists(pool, max_size=8).map(unique_by_name)
