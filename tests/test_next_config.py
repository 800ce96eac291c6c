"""
Template mode reads its inputs once per cycle and renders as few times as the decision needs.

``reference`` is the algorithm template mode used before the next file was decided from one read:
the template read and rendered anew for the planner's sections, then for the next file, then once
more for the reload decision. ``next_config.for_cycle`` must give the very same sections, next
file, reload decision and errors for any template, environment, file and servers; it renders at
most twice. Whole cycles over fakes read the store once each, and an edited template reaches the
next cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from reconciler.core import next_config, template
from reconciler.core.errors import ConfigError
from reconciler.core.model import ServerLine
from reconciler.core.next_config import NextFile, StoredConfig, Template
from reconciler.core.settings import AwsSettings, Binding, HAProxySettings, Settings
from reconciler.cycle import run_cycle
from tests.support.worlds import World, group, instance


SETTINGS = Settings(
    aws=AwsSettings(),
    haproxy=HAProxySettings(socket=Path("admin.sock"), template=Path("/etc/haproxy.cfg.j2")),
    backends=(
        Binding("api", "api-asg", 8080, "api-", ("check",)),
        Binding("web", "web-asg", 80, "web-"),
    ),
)
TEXT = """\
global
    maxconn {{ env.get("MAXCONN", "100") }}
{% for backend in backends %}

backend {{ backend.name }}
    balance roundrobin
{% for server in backend.servers %}
    {{ server }}
{% endfor %}
{% endfor %}
"""
#: Templates a cycle may read: the usual one, an edited one, and ones that fail to render always,
#: only while ``api`` has servers, only while some backend has none, or always but differently
#: with and without servers in ``api``.
TEMPLATES = (
    TEXT,
    TEXT.replace("roundrobin", "leastconn"),
    "{{ nope }}\n",
    TEXT + "{% if backends[0].servers %}{{ nope }}{% endif %}\n",
    TEXT + "{% for backend in backends %}# {{ backend.servers[0] }}\n{% endfor %}",
    "{% if backends[0].servers %}{{ nope }}{% else %}{{ other }}{% endif %}\n",
)
UNREADABLE = ConfigError(["cannot read the template: gone"], "/etc/haproxy.cfg.j2")
ENVIRONS: tuple[Mapping[str, str], ...] = ({}, {"MAXCONN": "200"})


def api_line(n: int) -> ServerLine:
    """Managed server number *n* of ``api``."""
    return ServerLine(f"api-i-{n:017x}", f"127.0.1.{n}", 8080, n, ("check",))


def web_line(n: int) -> ServerLine:
    """Managed server number *n* of ``web``."""
    return ServerLine(f"web-i-{n:017x}", f"127.0.2.{n}", 80, n, ())


Outcome = bytes | NextFile | str


def attempt(make: Callable[[], bytes | NextFile]) -> Outcome:
    """What *make* returns, or its ``ConfigError``'s text."""
    try:
        return make()
    except ConfigError as exc:
        return f"error: {exc}"


def reference(
    source: Template | ConfigError, current: bytes, lines: Mapping[str, Sequence[ServerLine]]
) -> tuple[Outcome, Outcome]:
    """The sections and the next file as template mode computed them, reading and rendering anew."""

    def render(servers: Mapping[str, Sequence[ServerLine]]) -> bytes:
        if isinstance(source, ConfigError):
            raise source
        return template.render(source.text, SETTINGS, servers, source.environ)

    def sections() -> bytes:
        try:
            return render(next_config.current_lines(SETTINGS, current))
        except ConfigError:
            if not current:
                raise
            return current

    def next_file() -> NextFile:
        now = next_config.current_lines(SETTINGS, current)
        content = render({**now, **lines})
        if not current:
            return NextFile(content)
        return NextFile(content, needs_reload=render(now) != current)

    baseline = attempt(sections)
    if isinstance(baseline, str):
        return baseline, baseline
    return baseline, attempt(next_file)


def decided(
    stored: StoredConfig, lines: Mapping[str, Sequence[ServerLine]]
) -> tuple[Outcome, Outcome]:
    """The sections and the next file from one ``for_cycle``."""
    try:
        maker = next_config.for_cycle(SETTINGS, stored)
    except ConfigError as exc:
        return f"error: {exc}", f"error: {exc}"
    return maker.sections, attempt(lambda: maker.next_file(lines))


sources = st.one_of(
    st.builds(Template, st.sampled_from(TEMPLATES), st.sampled_from(ENVIRONS)),
    st.just(UNREADABLE),
)
api_lines = st.lists(st.integers(1, 6), unique=True, max_size=3).map(
    lambda numbers: [api_line(n) for n in numbers]
)
web_lines = st.lists(st.integers(1, 6), unique=True, max_size=2).map(
    lambda numbers: [web_line(n) for n in numbers]
)


@st.composite
def files(draw: st.DrawFn) -> bytes:
    """No file yet, a file some template made (maybe edited by hand), or any user's file."""
    kind = draw(st.sampled_from(["missing", "made", "edited", "foreign"]))
    if kind == "missing":
        return b""
    if kind == "foreign":
        return b"global\n    maxconn 5\n\nbackend api\n    server api-x 127.0.0.1:80\n"
    made = template.render(
        draw(st.sampled_from(TEMPLATES[:2])),
        SETTINGS,
        {"api": draw(api_lines), "web": draw(web_lines)},
        draw(st.sampled_from(ENVIRONS)),
    )
    return made.replace(b"maxconn", b"maxconn 1 #") if kind == "edited" else made


#: A file with one ``api`` server, as ``TEXT`` makes it.
ONE_SERVER = template.render(TEXT, SETTINGS, {"api": [api_line(1)]}, {})


@example(source=Template(TEMPLATES[-1], {}), current=ONE_SERVER, lines={"api": []})
@given(
    source=sources,
    current=files(),
    lines=st.fixed_dictionaries({}, optional={"api": api_lines, "web": web_lines}),
)
def test_the_decision_is_the_one_three_reads_and_renders_made(
    source: Template | ConfigError, current: bytes, lines: dict[str, list[ServerLine]]
) -> None:
    """Same sections, next file, reload decision and error as reading and rendering anew."""
    assert decided(StoredConfig(current, source), lines) == reference(source, current, lines)


@pytest.fixture
def renders(monkeypatch: pytest.MonkeyPatch) -> list[None]:
    """One entry per ``template.render`` call."""
    calls: list[None] = []
    real = template.render

    def counted(*args: object, **kwargs: object) -> bytes:
        calls.append(None)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(template, "render", counted)
    return calls


@pytest.mark.parametrize(
    ("lines", "expected"),
    [({}, 1), ({"api": [api_line(1)]}, 1), ({"web": []}, 1), ({"api": [api_line(2)]}, 2)],
)
def test_a_cycle_renders_once_unless_the_servers_change(
    renders: list[None], lines: dict[str, list[ServerLine]], expected: int
) -> None:
    """The render for the sections is the reload decision's, and the next file when it is equal."""
    maker = next_config.for_cycle(SETTINGS, StoredConfig(ONE_SERVER, Template(TEXT, {})))
    maker.next_file(lines)
    assert len(renders) == expected


def template_world() -> World:
    """Two serving instances, no managed server anywhere yet, and a file ``TEXT`` made."""
    world = World(group(instance(4), instance(5)))
    world.settings = replace(
        world.settings, haproxy=replace(world.settings.haproxy, template=Path("haproxy.cfg.j2"))
    )
    world.store.template = TEXT
    world.store.content = template.render(TEXT, world.settings, {}, {})
    return world


def test_each_cycle_reads_the_store_once() -> None:
    """Observing and applying share one read of the file and the template."""
    world = template_world()
    cycles = world.converge()
    assert world.store.reads == cycles
    assert (world.store.writes, world.store.reloads) == (1, 0)
    assert set(world.file_servers()) == {f"api-i-{n:017x}" for n in (4, 5)}


def test_an_edited_template_or_environment_is_reloaded_at_the_next_cycle() -> None:
    """What the store reads next is what the next cycle makes the file from, with a reload."""
    world = template_world()
    world.converge()
    world.store.template = TEXT.replace("roundrobin", "leastconn")
    result = run_cycle(world.settings, world.ports)
    assert result.ok, result.errors
    assert result.outcome is not None
    assert (result.outcome.file_written, result.outcome.reloaded) == (True, True)
    assert b"balance leastconn" in world.store.content
    world.store.environ["MAXCONN"] = "200"
    result = run_cycle(world.settings, world.ports)
    assert result.outcome is not None
    assert (result.outcome.file_written, result.outcome.reloaded) == (True, True)
    assert b"maxconn 200\n" in world.store.content
    again = run_cycle(world.settings, world.ports)
    assert again.outcome is not None
    assert (again.outcome.file_written, again.outcome.reloaded) == (False, False)
