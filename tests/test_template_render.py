"""
Template mode's pure parts: ``core/template.py`` (the jinja2 rendering) and the two
``NextFileMaker``s of ``core/next_config.py``, in particular the computed decision between "only
the servers changed" (no reload) and "something else changed" (reload), made from one read and at
most two renders per cycle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.core import config_edit, config_parse, next_config, template
from reconciler.core.errors import ConfigError
from reconciler.core.model import ServerLine
from reconciler.core.next_config import NextFile, StoredConfig, Template
from reconciler.core.settings import AwsSettings, Binding, HAProxySettings, Settings
from tests.support.configs import proxy_names


SHIPPED = Path(__file__).resolve().parent.parent / "haproxy.cfg.j2"
API = Binding("api", "api-asg", 8080, "api-", ("check", "inter", "2s"))
WEB = Binding("web", "web-asg", 80, "web-")
SOCKET = Path("/var/run/haproxy/admin.sock")
#: The smallest template that shows every variable.
SMALL = """\
# socket {{ admin_socket }} bind {{ env.get("FRONTEND_BIND", ":80") }}
{% for backend in backends %}
backend {{ backend.name }}
    # {{ backend.asg }} {{ backend.port }} {{ backend.prefix }} {{ backend.options }}
{% for server in backend.servers %}
    {{ server }}
{% endfor %}
{% endfor %}
"""


def settings_for(template_path: Path | None = SHIPPED, socket: Path | None = SOCKET) -> Settings:
    """Two backends, ``api`` and ``web``, rendered from *template_path*."""
    return Settings(
        aws=AwsSettings(),
        haproxy=HAProxySettings(socket=socket, template=template_path),
        backends=(API, WEB),
    )


def api_line(n: int, address: str = "10.0.1.7") -> ServerLine:
    """Managed server number *n* of ``api``."""
    return ServerLine(f"api-i-{n:017x}", address, API.port, n, API.server_options)


def rendered(
    lines: Mapping[str, Sequence[ServerLine]],
    text: str = SMALL,
    environ: Mapping[str, str] | None = None,
) -> bytes:
    """*text* rendered with the default settings and *lines*."""
    return template.render(text, settings_for(), lines, environ or {})


class TestTemplate:
    """``template.render``: variables, exact server text, errors."""

    def test_servers_are_the_in_place_editors_text(self) -> None:
        """Each managed server is the whole line ``config_edit.line_text`` writes."""
        lines = [api_line(1), replace(api_line(2), server_id=None)]
        text = rendered({"api": lines}).decode()
        for line in lines:
            assert f"\n    {config_edit.line_text(line)}\n" in text

    def test_variables(self) -> None:
        """Backends with their settings, the admin socket and the environment, unescaped."""
        text = rendered({}, environ={"FRONTEND_BIND": "127.0.0.1:8443 <&>"}).decode()
        assert text.startswith(f"# socket {SOCKET} bind 127.0.0.1:8443 <&>\n")
        assert "backend api\n    # api-asg 8080 api- check inter 2s\n" in text
        assert "backend web\n    # web-asg 80 web- \n" in text

    def test_a_final_newline_is_added(self) -> None:
        """HAProxy 2.6 refuses a last line without LF, so the render always ends with one."""
        assert rendered({}, text="global") == b"global\n"

    def test_an_undefined_variable_is_an_error_with_its_line(self) -> None:
        """StrictUndefined: a typo fails with the template and the line, not as empty text."""
        settings = settings_for(Path("/etc/reconciler/haproxy.cfg.j2"))
        with pytest.raises(ConfigError) as caught:
            template.render("global\n    {{ admin_sokcet }}\n", settings, {}, {})
        assert caught.value.source == "/etc/reconciler/haproxy.cfg.j2"
        assert caught.value.problems == ("line 2: 'admin_sokcet' is undefined",)

    def test_a_syntax_error_is_an_error_with_its_line(self) -> None:
        """A template that does not parse names the line."""
        with pytest.raises(ConfigError, match="line 3: "):
            rendered({}, text="global\n\n{% for x in %}\n")

    def test_without_a_socket_the_shipped_template_has_no_stats_socket(self) -> None:
        """``admin_socket`` is none without ``[haproxy] socket``; the shipped template omits it."""
        text = template.render(SHIPPED.read_text(), settings_for(socket=None), {}, {}).decode()
        assert "stats socket" not in text
        assert "stats socket" in rendered({}, text=SHIPPED.read_text()).decode()

    @given(
        st.lists(
            st.builds(
                ServerLine,
                name=st.integers(0, 2**68 - 1).map(lambda n: f"api-i-{n:017x}"),
                address=st.sampled_from(["10.0.1.7", "10.0.2.9", "[::1]"]),
                port=st.integers(1, 65535),
                server_id=st.none() | st.integers(1, 5000),
                options=st.lists(st.sampled_from(["check", "inter", "2s", "backup"])).map(tuple),
            ),
            unique_by=lambda line: line.name,
            max_size=6,
        )
    )
    def test_the_shipped_template_reads_back_as_the_same_servers(
        self, lines: list[ServerLine]
    ) -> None:
        """Parsing a render gives back the very servers it was made from, in order."""
        data = rendered({"api": lines}, text=SHIPPED.read_text())
        assert next_config.current_lines(settings_for(), data) == {"api": tuple(lines), "web": ()}


def maker(
    path: Path, current: bytes, environ: Mapping[str, str] | None = None
) -> next_config.NextFileMaker:
    """The maker of a cycle that read *current* and the template at *path* (as it is now)."""
    stored = StoredConfig(current, Template(path.read_text(), environ or {}))
    return next_config.for_cycle(settings_for(path), stored)


class TestFromTemplate:
    """The template's next file: the reload decision, the first file and the planner's sections."""

    @pytest.fixture
    def path(self, tmp_path: Path) -> Path:
        """A copy of the shipped template that a test may edit."""
        copy = tmp_path / "haproxy.cfg.j2"
        copy.write_text(SHIPPED.read_text())
        return copy

    def test_only_new_servers_need_no_reload(self, path: Path) -> None:
        """Same template, settings and environment: the runtime API applies the change."""
        current = maker(path, b"").next_file({"api": [api_line(1)]}).content
        result = maker(path, current).next_file({"api": [api_line(1), api_line(2)]})
        assert not result.needs_reload
        assert next_config.current_lines(settings_for(path), result.content)["api"] == (
            api_line(1),
            api_line(2),
        )

    def test_an_unchanged_file_renders_to_itself(self, path: Path) -> None:
        """With nothing to change the next file is byte for byte the file: nothing is written."""
        current = maker(path, b"").next_file({"api": [api_line(1)]}).content
        assert maker(path, current).next_file({}) == NextFile(current)
        assert maker(path, current).next_file({"api": [api_line(1)]}) == NextFile(current)

    def test_a_template_change_needs_a_reload(self, path: Path) -> None:
        """Any edit of the template outside the servers is applied by a reload."""
        current = maker(path, b"").next_file({"api": [api_line(1)]}).content
        path.write_text(path.read_text().replace("timeout client 30s", "timeout client 60s"))
        result = maker(path, current).next_file({})
        assert result.needs_reload
        assert b"timeout client 60s" in result.content
        assert next_config.current_lines(settings_for(path), result.content)["api"] == (
            api_line(1),
        )

    def test_an_environment_change_needs_a_reload(self, path: Path) -> None:
        """A variable the template uses is part of the file, like the template itself."""
        current = maker(path, b"").next_file({}).content
        moved = maker(path, current, {"FRONTEND_BIND": ":8080"}).next_file({})
        assert moved.needs_reload
        assert b"bind :8080\n" in moved.content

    def test_a_hand_edited_file_is_replaced_with_a_reload(self, path: Path) -> None:
        """The file is the template's: a hand edit makes it differ from every next file."""
        current = maker(path, b"").next_file({"api": [api_line(1)]}).content
        edited = current.replace(b"timeout server 30s", b"timeout server 1s")
        assert maker(path, edited).next_file({}) == NextFile(current, True)

    def test_the_first_file_needs_no_reload(self, path: Path) -> None:
        """A missing (empty) file: no HAProxy runs from it, it starts from the first next file."""
        first = maker(path, b"")
        assert first.bootstrapping
        result = first.next_file({"api": [api_line(1)]})
        assert not result.needs_reload
        assert f"    {config_edit.line_text(api_line(1))}\n".encode() in result.content

    def test_backends_not_given_keep_their_servers(self, path: Path) -> None:
        """A refused or held backend is absent from *lines* and keeps the file's servers."""
        current = maker(path, b"").next_file({"api": [api_line(1)]}).content
        result = maker(path, current).next_file({"web": []})
        assert result == NextFile(current)

    def test_the_sections_are_the_templates_with_the_files_servers(self, path: Path) -> None:
        """A file from an older template lacking ``web`` still plans ``web``, and keeps ids."""
        older = path.read_text().replace("in backends %}", "in backends[:1] %}")
        path.write_text(older)
        current = maker(path, b"").next_file({"api": [api_line(7)]}).content
        assert b"backend web" not in current
        path.write_text(SHIPPED.read_text())
        document = config_parse.parse(maker(path, current).sections)
        assert proxy_names(document) == ("api", "web")
        api = config_parse.backend(document, "api")
        assert api is not None
        assert [(s.name, s.server_id) for s in api.servers] == [(api_line(7).name, 7)]

    def test_the_first_sections_are_the_template_without_servers(self, path: Path) -> None:
        """Before the first file, the planner reads the sections the template will write."""
        document = config_parse.parse(maker(path, b"").sections)
        sections = [config_parse.backend(document, name) for name in ("api", "web")]
        assert all(s is not None and not s.servers and not s.problems for s in sections)

    def test_a_broken_template_falls_back_to_the_file_for_planning(self, path: Path) -> None:
        """Membership keeps reaching the runtime; making the next file reports the error."""
        current = maker(path, b"").next_file({"api": [api_line(1)]}).content
        path.write_text("{{ nope }}\n")
        broken = maker(path, current)
        assert broken.sections == current
        with pytest.raises(ConfigError, match="'nope' is undefined"):
            broken.next_file({"api": [api_line(2)]})
        with pytest.raises(ConfigError, match="'nope' is undefined"):
            maker(path, b"")

    def test_an_unreadable_template_is_reported_like_a_broken_one(self) -> None:
        """The store's error stops the next file, or the cycle when it has no file to plan from."""
        unreadable = ConfigError(["cannot read the template: gone"], "/etc/haproxy.cfg.j2")
        settings = settings_for(Path("/etc/haproxy.cfg.j2"))
        current = b"global\n"
        kept = next_config.for_cycle(settings, StoredConfig(current, unreadable))
        assert (kept.sections, kept.bootstrapping) == (current, False)
        with pytest.raises(ConfigError) as caught:
            kept.next_file({"api": [api_line(1)]})
        assert caught.value is unreadable
        with pytest.raises(ConfigError) as caught:
            next_config.for_cycle(settings, StoredConfig(b"", unreadable))
        assert caught.value is unreadable


class TestInPlace:
    """Without a template the file is edited in place, as before template mode existed."""

    FILE = b"backend api\n    balance roundrobin\n    server manual 10.0.0.1:80 backup\n"

    def test_the_next_file_is_the_in_place_edit(self) -> None:
        """Managed lines change through ``config_edit``; the file itself asks for no reload."""
        stored = StoredConfig(self.FILE)
        result = next_config.for_cycle(settings_for(None), stored).next_file({"api": [api_line(1)]})
        expected = config_edit.edit(self.FILE, "api", lambda n: n.startswith("api-"), [api_line(1)])
        assert result == NextFile(expected)

    def test_the_sections_are_the_file(self) -> None:
        """The planner reads the user's own file."""
        assert next_config.for_cycle(settings_for(None), StoredConfig(self.FILE)).sections == (
            self.FILE
        )


@pytest.mark.parametrize(
    ("template", "current", "expected"),
    [
        (Template(SMALL, {}), b"", True),
        (Template(SMALL, {}), b"global\n", False),
        (None, b"", False),
    ],
)
def test_bootstrapping(template: Template | None, current: bytes, expected: bool) -> None:
    """Only template mode before its first file has no HAProxy to read or reload."""
    stored = StoredConfig(current, template)
    assert next_config.for_cycle(settings_for(), stored).bootstrapping is expected
