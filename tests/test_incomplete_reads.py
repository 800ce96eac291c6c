"""
Runtime reads that are incomplete or out of date, over the pure planner and executor with fakes:
the file is written only from a plan built on complete reads, and never loses the line of a
server that the AWS read says is serving. The same faults through a real HAProxy are in
``test_runtime_faults.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.fakes import FakeRuntime
from reconciler.core import next_config
from reconciler.core.model import Group, RuntimeObservation, RuntimeServer, ServerLine
from reconciler.cycle import run_cycle
from reconciler.metrics import Metrics
from tests.support.worlds import (
    BACKEND,
    CONFIG,
    PREFIX,
    Case,
    World,
    group,
    instance,
    runtime_server,
    worlds,
)


CUT = "HAProxy's reply to `show servers state api` ended before its terminating empty line"


@dataclass
class FaultyReads:
    """A ``FakeRuntime`` whose reads are reported incomplete, or miss the *hidden* servers."""

    inner: FakeRuntime
    incomplete: bool = False
    #: Servers the read leaves out while HAProxy has them: a read older than the state.
    hidden: frozenset[str] = frozenset()

    def read_servers(self, backends: Sequence[str]) -> RuntimeObservation:
        """What the adapter would report for a cut, or an out-of-date but complete, read."""
        observed = self.inner.read_servers(backends)
        if self.incomplete:
            return replace(observed, backends={}, errors=dict.fromkeys(backends, CUT))
        seen = {
            backend: tuple(s for s in servers if s.name not in self.hidden)
            for backend, servers in observed.backends.items()
        }
        return replace(observed, backends=seen)

    def __getattr__(self, name: str) -> object:
        """Every change goes to the fake HAProxy."""
        return getattr(self.inner, name)


def file_lines(g: Group, numbers: Sequence[int]) -> bytes:
    """``CONFIG`` with a managed line for each instance of *g* numbered in *numbers*."""
    world = World(g)
    lines = [
        ServerLine(f"{PREFIX}i-{n:017x}", f"127.0.1.{n}", 8080, 100 + n, ("check", "inter", "1s"))
        for n in numbers
    ]
    return next_config.EditInPlace(world.settings, CONFIG).next_file({BACKEND: lines}).content


def faulty_world(case: Case, data: st.DataObject) -> tuple[World, FaultyReads, bytes]:
    """A world from *case* with some instances in the file, and a faulty read of its runtime."""
    g, runtime, _ = case
    numbers = [int(i.instance_id.removeprefix("i-"), 16) for i in g.instances]
    in_file = data.draw(st.lists(st.sampled_from(numbers), unique=True)) if numbers else []
    content = file_lines(g, in_file)
    world = World(g, runtime=runtime, content=content)
    names = sorted(world.runtime.servers[BACKEND])
    hidden = data.draw(st.sets(st.sampled_from(names))) if names else set()
    faulty = FaultyReads(world.runtime, data.draw(st.booleans()), frozenset(hidden))
    world.ports = replace(world.ports, runtime=faulty)
    return world, faulty, content


def managed_names(content: bytes, world: World) -> set[str]:
    """The managed servers the file *content* names."""
    saved, world.store.content = world.store.content, content
    try:
        return set(world.file_servers())
    finally:
        world.store.content = saved


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds(), st.data())
def test_faulty_reads_never_cost_a_serving_line(case: Case, data: st.DataObject) -> None:
    """
    Whatever the runtime read misses, every serving instance that had a line keeps it, and an
    incomplete read changes nothing at all.
    """
    world, faulty, before = faulty_world(case, data)
    g = case[0]
    serving = {f"{PREFIX}{i.instance_id}" for i in g.instances if i.serving}

    result = run_cycle(world.settings, world.ports)

    assert serving & managed_names(before, world) <= set(world.file_servers())
    if faulty.incomplete:
        assert world.store.content == before
        assert world.runtime.commands == []
        assert f"{BACKEND}: {CUT}" in result.errors


class TestOutOfDateRead:
    """``add server`` refused as a duplicate: the read was stale, nothing is counted refused."""

    def test_duplicate_add_keeps_the_file_and_fails_the_cycle(self) -> None:
        """The backend's file section stays, the error says to read again, the metric counts."""
        g, runtime = two_served()
        world = World(g, runtime=runtime, content=file_lines(g, [4, 5]))
        before = world.store.content
        stale = FaultyReads(world.runtime, hidden=frozenset({runtime[0].name}))
        world.ports = replace(world.ports, runtime=stale)

        result = run_cycle(world.settings, world.ports)

        assert world.store.content == before
        assert not result.ok
        assert any("Already exists" in error for error in result.errors), result.errors
        metrics = Metrics(stale_after=60)
        metrics.record_cycle(0.1, result, "; ".join(result.errors))
        assert read_errors(metrics) == 1.0


class TestReadErrorMetric:
    """``reconciler_runtime_read_errors_total`` counts backends refused for an incomplete read."""

    def test_incomplete_read_is_counted_per_backend(self) -> None:
        """One cycle refused for a cut read counts one for its backend."""
        g, runtime = two_served()
        world = World(g, runtime=runtime)
        world.ports = replace(world.ports, runtime=FaultyReads(world.runtime, incomplete=True))
        metrics = Metrics(stale_after=60)
        for _ in range(2):
            result = run_cycle(world.settings, world.ports)
            metrics.record_cycle(0.1, result, "; ".join(result.errors))
        assert read_errors(metrics) == 2.0


def two_served() -> tuple[Group, list[RuntimeServer]]:
    """Two serving instances, each with a ready server."""
    return group(instance(4), instance(5)), [runtime_server(4), runtime_server(5)]


def read_errors(metrics: Metrics) -> float:
    """The counter's value for the backend."""
    value = metrics.registry.get_sample_value(
        "reconciler_runtime_read_errors_total", {"backend": BACKEND}
    )
    return value or 0.0
