"""
Editing the managed server lines of one backend: what changes, where new lines go, and that
every other byte of the file stays as it was.

Hand-built cases pin each placement and formatting rule; hypothesis then checks the editor's
properties on generated files (exact result, untouched unmanaged lines, idempotence), and that
a cycle's editor, which edits every backend in the one parse of the file it planned from, writes
the bytes of editing them one after the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core import config_edit, next_config
from reconciler.core.model import ServerLine
from reconciler.core.settings import AwsSettings, Binding, HAProxySettings, Settings
from tests.support.configs import (
    DESIRED_LINES,
    NAMES,
    as_line,
    check_edit,
    desired_for,
    managed,
    managed_servers,
)


def server(
    suffix: str,
    address: str = "127.0.0.1",
    port: int = 80,
    server_id: int | None = None,
    options: tuple[str, ...] = ("check",),
) -> ServerLine:
    """A desired managed server named ``app-i-<suffix padded to 17 hex digits>``."""
    return ServerLine(f"app-i-{suffix:0>17}", address, port, server_id, options)


A, B, C = server("a"), server("b", "127.0.0.2"), server("c", "127.0.0.3", 81, server_id=3)


def edit(data: bytes, lines: Sequence[ServerLine], backend: str = "b1") -> bytes:
    """Apply *lines* to *backend* with the test ownership rule."""
    return config_edit.edit(data, backend, managed, lines)


# -- rendering -------------------------------------------------------------------------------------


def test_line_text_uses_single_spaces() -> None:
    """A managed line is ``server``, name, address:port, id, then the options."""
    line = ServerLine("app-i-0", "127.0.0.1", 8080, 7, ("check", "inter", "2s"))
    assert config_edit.line_text(line) == "server app-i-0 127.0.0.1:8080 id 7 check inter 2s"
    assert config_edit.line_text(A) == f"server {A.name} 127.0.0.1:80 check"


@pytest.mark.parametrize("word", ["a b", "a#b", "${X}", "'x'", '"x"', "a\\b", "", "a\tb"])
def test_line_text_refuses_words_that_need_quoting(word: str) -> None:
    """A word HAProxy would not read back as written is refused, not written."""
    with pytest.raises(ValueError, match="plain word"):
        config_edit.line_text(ServerLine("app-i-0", "127.0.0.1", 80, None, (word,)))


# -- keeping, rewriting, removing ------------------------------------------------------------------


def test_unchanged_lines_keep_their_bytes() -> None:
    """A managed line that already means the desired server is left exactly as written."""
    text = (
        f"backend b1\n\tserver  {A.name}\t127.0.0.1:0080 check   # keep\n"
        f"    server {C.name} 127.0.0.3:81 check id 3\n"
    ).encode()
    assert edit(text, [A, C]) == text


def test_changed_line_is_rewritten_in_place() -> None:
    """Indentation, end of line and trailing comment of a changed line are kept."""
    text = f"backend b1\r\n\t server {A.name} 127.0.0.9:80 check  # note\r\n    server x y:1\r\n"
    expected = (
        f"backend b1\r\n\t server {A.name} 127.0.0.1:80 check  # note\r\n    server x y:1\r\n"
    )
    assert edit(text.encode(), [A]) == expected.encode()


def test_rewrite_separates_a_glued_comment() -> None:
    """A comment that touched the last word gets one space before it."""
    text = f"backend b1\n    server {A.name} 127.0.0.9:80#note\n".encode()
    assert edit(text, [A]) == f"backend b1\n    server {A.name} 127.0.0.1:80 check #note\n".encode()


def test_unwanted_managed_lines_are_removed_with_their_eol() -> None:
    """Removing a managed server deletes its whole line and nothing else."""
    text = f"backend b1\n    server {A.name} 127.0.0.1:80 check\n    server keep 10.0.0.1:80\n\n"
    assert edit(text.encode(), []) == b"backend b1\n    server keep 10.0.0.1:80\n\n"


def test_unmanaged_servers_are_never_touched() -> None:
    """Servers whose names are not managed keep their lines whatever the desired set."""
    text = b"backend b1\n    server web1 10.0.0.1:80 check\n    server app-x 10.0.0.2:80\n"
    assert edit(text, []) == text
    assert edit(text, [A]).startswith(text)


def test_no_change_returns_the_input() -> None:
    """When nothing changes the very same bytes come back, missing final LF included."""
    text = f"backend b1\n    server {A.name} 127.0.0.1:80 check".encode()
    assert edit(text, [A]) is text


# -- where new lines go ----------------------------------------------------------------------------


def test_new_lines_follow_the_last_managed_line() -> None:
    """New servers go right after the last managed one, in the order given."""
    text = f"backend b1\n  server {A.name} 127.0.0.1:80 check\n  server web 10.0.0.1:80\n"
    assert (
        edit(text.encode(), [C, A, B])
        == (
            f"backend b1\n  server {A.name} 127.0.0.1:80 check\n"
            f"  {config_edit.line_text(C)}\n  {config_edit.line_text(B)}\n"
            "  server web 10.0.0.1:80\n"
        ).encode()
    )


def test_new_lines_replace_a_removed_last_managed_line() -> None:
    """When the last managed line goes, the new ones take its place."""
    text = f"backend b1\n\tserver {A.name} 127.0.0.1:80 check\n\tserver web 10.0.0.1:80\n"
    expected = f"backend b1\n\t{config_edit.line_text(B)}\n\tserver web 10.0.0.1:80\n"
    assert edit(text.encode(), [B]) == expected.encode()


def test_new_lines_follow_the_last_server_line() -> None:
    """Without managed servers, new ones follow the last server and copy its indentation."""
    head = "backend b1\n  balance roundrobin\n\tserver web 10.0.0.1:80\n"
    text = f"{head}  option httpchk\n".encode()
    assert edit(text, [A]) == f"{head}\t{config_edit.line_text(A)}\n  option httpchk\n".encode()


def test_new_lines_follow_the_last_statement_not_trailing_comments() -> None:
    """Without servers, new ones follow the last statement, before comments that lead onward."""
    head, tail = "backend b1\n   balance first\n", "\n# the next backend\nbackend b2\n"
    text = f"{head}{tail}".encode()
    assert edit(text, [A]) == f"{head}   {config_edit.line_text(A)}\n{tail}".encode()


def test_comment_only_section_gets_default_indentation() -> None:
    """A section with only comments gets its servers right after the header, four spaces in."""
    text = b"backend b1 # empty\n# nothing here\n\nbackend b2\n"
    expected = f"backend b1 # empty\n    {config_edit.line_text(A)}\n# nothing here\n\nbackend b2\n"
    assert edit(text, [A]) == expected.encode()


def test_new_lines_do_not_land_inside_an_if_block() -> None:
    """A trailing conditional block is skipped when looking for the last statement."""
    text = b"backend b1\n    balance first\n.if defined(X)\n    option httpchk\n.endif\n"
    assert edit(text, [A]) == text + f"    {config_edit.line_text(A)}\n".encode()


def test_crlf_files_stay_crlf() -> None:
    """New lines copy the end of line of their neighbour."""
    text = b"backend b1\r\n    server web 10.0.0.1:80\r\n"
    assert edit(text, [A]) == text + f"    {config_edit.line_text(A)}\r\n".encode()


def test_missing_final_lf_is_added_when_the_file_changes() -> None:
    """HAProxy 2.6 needs a final LF, so an edited file always ends with one."""
    assert edit(b"backend b1", [A]) == f"backend b1\n    {config_edit.line_text(A)}\n".encode()
    removed = edit(f"backend b1\n    server {A.name} 127.0.0.1:80".encode(), [])
    assert removed == b"backend b1\n"
    rewritten = edit(f"backend b1\r\n  server {A.name} 127.0.0.2:80".encode(), [A])
    assert rewritten == f"backend b1\r\n  {config_edit.line_text(A)}\r\n".encode()
    elsewhere = edit(b"backend b1\nbackend b2\n    balance first", [A])
    assert (
        elsewhere
        == f"backend b1\n    {config_edit.line_text(A)}\nbackend b2\n    balance first\n".encode()
    )


# -- only the target section -----------------------------------------------------------------------


def test_only_the_target_section_changes() -> None:
    """Same-named servers in other backends, peers and rings, and a same-named frontend stay."""
    others = (
        f"frontend b1\n    bind 127.0.0.1:80\n"
        f"peers p1\n    server {A.name} 127.0.0.9:1024\n"
        f"ring r1\n    server {A.name} 127.0.0.9:514\n"
    )
    b2 = f"backend b2\n    server {A.name} 127.0.0.9:80\n"
    b1 = f"backend b1\n    server {A.name} 127.0.0.9:80\n"
    text = f"{others}{b2}{b1}".encode()
    assert edit(text, [A]) == f"{others}{b2}backend b1\n    {config_edit.line_text(A)}\n".encode()
    assert edit(text, [], "b2") == f"{others}backend b2\n{b1}".encode()


def test_indented_headers_and_env_addresses() -> None:
    """Indented sections and unmanaged servers addressed by variables are handled."""
    head = '    backend "b1"\n        server web "${WEB_IP}:80"\n'
    text = f"{head}    backend b2\n".encode()
    new = f"        {config_edit.line_text(A)}\n"
    assert edit(text, [A]) == f"{head}{new}    backend b2\n".encode()


# -- refusals --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "lines", "message"),
    [
        pytest.param(b"frontend b1\n", [A], "no backend or listen section", id="missing"),
        pytest.param(b"backend b1\nbackend b1\n", [A], "declared twice", id="duplicate-backend"),
        pytest.param(
            b"backend b1\n.if defined(X)\n    server web a:1\n.endif\n",
            [A],
            "inside an .if block",
            id="if",
        ),
        pytest.param(b"backend b1\n", [A, A], "wanted twice", id="desired-twice"),
        pytest.param(
            b"backend b1\n",
            [ServerLine("web", "127.0.0.1", 80, None, ())],
            "not a managed name",
            id="unmanaged-desired",
        ),
        pytest.param(
            b"backend b1\n",
            [ServerLine(A.name, "127.0.0.1", 80, None, ("a b",))],
            "plain word",
            id="unsafe-word",
        ),
    ],
)
def test_edit_refuses(text: bytes, lines: list[ServerLine], message: str) -> None:
    """A backend that cannot be edited safely, or an unfit desired list, raises ValueError."""
    with pytest.raises(ValueError, match=message):
        edit(text, lines)


# -- properties ------------------------------------------------------------------------------------

BLANKS = st.sampled_from([" ", "  ", "\t", " \t"])


@st.composite
def written_server(draw: st.DrawFn, name: str) -> str:
    """A server line for *name* as a human might write it (odd blanks, comment, id anywhere)."""
    line = draw(DESIRED_LINES)
    ident = ["id", str(line.server_id)] if line.server_id is not None else []
    options = list(line.options)
    at = draw(st.sampled_from([0, len(options)]))
    words = [name, f"{line.address}:{line.port}", *options[:at], *ident, *options[at:]]
    comment = draw(st.sampled_from(["", "  # hand note", "\t#x", "   "]))
    return draw(BLANKS).join(["server", *words]) + comment


@st.composite
def config_files(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    """A config with a target backend b1 mixing managed, unmanaged and other lines."""
    managed_names = draw(st.lists(NAMES, max_size=6, unique=True))
    unmanaged_names = draw(st.lists(st.sampled_from(["web1", "web2", "app-x"]), unique=True))
    others = ["balance roundrobin", "# a comment", "", "option httpchk", "  "]
    body = [*managed_names, *unmanaged_names, *draw(st.lists(st.sampled_from(others), max_size=4))]
    order = draw(st.permutations(body))
    indent = draw(st.sampled_from(["    ", "\t", "  "]))
    lines = ["global", "    maxconn 10", "backend b1"]
    for item in order:
        is_server = item in managed_names or item in unmanaged_names
        lines.append(indent + (draw(written_server(item)) if is_server else item))
    lines += [
        "",
        "peers p1",
        f"    server {managed_names[0] if managed_names else 'p'} 127.0.0.1:1",
    ]
    lines += ["backend b2", *[f"    server {n} 127.0.0.1:1" for n in managed_names]]
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    final = eol if draw(st.booleans()) else ""
    return (eol.join(lines) + final).encode(), managed_names


@settings(max_examples=150, deadline=None)
@given(config_files(), st.data())
def test_edit_properties_on_generated_files(
    config: tuple[bytes, list[str]], data: st.DataObject
) -> None:
    """Exact managed set, untouched other lines, kept bytes, idempotence, empty-and-refill."""
    text, existing = config
    _, servers = managed_servers(text, "b1", managed)
    current = [as_line(server) for server in servers]
    check_edit(text, "b1", managed, data.draw(desired_for(existing, current)))


#: Two backends whose managed servers follow the ownership rule of these tests (``managed``).
TWO_BACKENDS = Settings(
    AwsSettings("eu-west-1"),
    HAProxySettings(config=Path("haproxy.cfg"), socket=None),
    (Binding("b1", "b1-asg", 80, "app-"), Binding("b2", "b2-asg", 80, "app-")),
)


@settings(max_examples=100, deadline=None)
@given(config_files(), st.data())
def test_one_parse_edits_every_backend_as_one_edit_after_another(
    config: tuple[bytes, list[str]], data: st.DataObject
) -> None:
    """
    A cycle edits every backend in the one parse of the file it planned from: the same bytes
    as editing the backends one after the other, in either order.
    """
    text, existing = config
    backends = data.draw(st.permutations(["b1", "b2"]))
    wanted = {backend: data.draw(desired_for(existing, [])) for backend in backends}
    one_after_another = text
    for backend, lines in wanted.items():
        one_after_another = config_edit.edit(one_after_another, backend, managed, lines)
    edited = next_config.EditInPlace(TWO_BACKENDS, text).next_file(wanted)
    assert edited.content == one_after_another
