"""
The drift report over fakes: one example per verdict, the agreement with the planner as a
property, the JSON schema, the exit codes and the rendering without a terminal.

Worlds come from tests/support/worlds.py, as in tests/test_planning.py, so the report is checked
against exactly the states the planner's own properties explore; ``reconcile.observe`` reads
them, as in ``reconcile drift``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from reconciler import drift_table
from reconciler.core import config_edit, drift
from reconciler.core import plan as planner
from reconciler.core.drift import CheckResult, DriftReport, DriftRow, RuntimeState, Status, Verdict
from reconciler.core.errors import ConfigError
from reconciler.core.model import (
    ADMIN_FDRAIN,
    ADMIN_FMAINT,
    LAUNCHING,
    TERMINATING,
    AwsObservation,
    Change,
    ConfigBackend,
    ConfigServer,
    Group,
    HAProxyFeatures,
    Instance,
    LifecycleHook,
    Observation,
    RuntimeObservation,
    RuntimeServer,
    ServerLine,
)
from reconciler.core.settings import Binding
from reconciler.cycle import observe, run_cycle
from tests.support.schema import validate
from tests.support.worlds import (
    ASG,
    BACKEND,
    CONFIG,
    PREFIX,
    UNMANAGED_LINE,
    Case,
    World,
    group,
    instance,
    runtime_server,
    worlds,
)


OPTIONS = "check inter 1s"
HOOKS = (LifecycleHook("launch", LAUNCHING, 300), LifecycleHook("end", TERMINATING, 300))


def server_name(n: int) -> str:
    """The managed server name of instance *n*."""
    return f"{PREFIX}i-{n:017x}"


def file_line(
    n: int, *, address: str | None = None, server_id: int | None = -1, options: str = OPTIONS
) -> bytes:
    """A managed line for instance *n*; by default the one a converged cycle writes."""
    ident = 100 + n if server_id == -1 else server_id
    words = [
        "server",
        server_name(n),
        f"{address or f'127.0.1.{n}'}:8080",
        *(["id", str(ident)] if ident is not None else []),
        options,
    ]
    return ("    " + " ".join(words) + "\n").encode()


def config_with(*lines: bytes) -> bytes:
    """The planner tests' config with *lines* after the hand-written server."""
    return CONFIG.replace(UNMANAGED_LINE, UNMANAGED_LINE + b"".join(lines))


def assess(world: World, backends: Sequence[str] | None = None) -> DriftReport:
    """What ``reconcile drift`` reports for *world*."""
    return drift.assess(world.settings, observe(world.settings, world.ports)[0], backends)


def rows_of(world: World) -> dict[str, DriftRow]:
    """The rows of the only backend by instance id (by server name for unmanaged ones)."""
    backend = assess(world).backends[0]
    return {row.instance_id or row.server or "": row for row in backend.rows}


def iid(n: int) -> str:
    """Instance id number *n*."""
    return f"i-{n:017x}"


# -- verdicts --------------------------------------------------------------------------------------


class TestInSync:
    """A converged backend: nothing is drift, the hand-written server is listed once."""

    def test_converged_backend_is_in_sync(self) -> None:
        """After the cycles settle every instance is ok and the exit code is 0."""
        world = World(group(instance(4), instance(5)))
        world.converge()
        report = assess(world)
        backend = report.backends[0]
        assert backend.status is Status.IN_SYNC
        assert [r.verdict for r in backend.rows] == [Verdict.OK, Verdict.OK, Verdict.UNMANAGED]
        assert report.in_sync
        assert drift_table.exit_code(report) == drift_table.EXIT_IN_SYNC

    def test_ok_row_carries_every_fact(self) -> None:
        """An ok row names the instance's ASG, EC2 and IP facts and the server's two sides."""
        world = World(group(instance(4)))
        world.converge()
        row = rows_of(world)[iid(4)]
        assert row == DriftRow(
            verdict=Verdict.OK,
            detail="InService and serving",
            server=server_name(4),
            instance_id=iid(4),
            lifecycle_state="InService",
            health_status="Healthy",
            ec2_state="running",
            private_ip="127.0.1.4",
            in_file=True,
            file_address="127.0.1.4:8080",
            runtime_state=RuntimeState.UP,
            runtime_address="127.0.1.4:8080",
            check=CheckResult.PASSED,
            check_status=None,
        )

    def test_unmanaged_server_is_listed_once_and_never_drift(self) -> None:
        """The backup server is in the file and at runtime: one row, unmanaged, not drift."""
        world = World(group(instance(4)))
        world.converge()
        rows = [r for r in assess(world).backends[0].rows if r.verdict is Verdict.UNMANAGED]
        assert len(rows) == 1
        assert rows[0].server == "maintenance-page"
        assert rows[0].in_file
        assert rows[0].runtime_state is RuntimeState.UP
        assert rows[0].instance_id is None
        assert not rows[0].drift

    def test_server_failing_its_checks_is_down_but_not_drift(self) -> None:
        """In place everywhere, checks failing: shown as down, the backend still in sync."""
        world = World(
            group(instance(4)),
            runtime=[runtime_server(4, op_state=0, check_result=2, check_status="L4CON")],
            content=config_with(file_line(4)),
        )
        report = assess(world)
        row = rows_of(world)[iid(4)]
        assert row.verdict is Verdict.DOWN
        assert row.runtime_state is RuntimeState.DOWN
        assert row.check is CheckResult.FAILED
        assert "L4CON" in row.detail
        assert drift_table.exit_code(report) == drift_table.EXIT_IN_SYNC

    def test_instance_that_does_not_serve_and_is_absent_is_excluded(self) -> None:
        """A Pending instance with no server is as it should be: excluded, not drift."""
        world = World(group(instance(4), instance(5, "Pending:Wait")))
        world.converge()
        row = rows_of(world)[iid(5)]
        assert row.verdict is Verdict.EXCLUDED
        assert row.server is None
        assert "Pending:Wait" in row.detail
        assert assess(world).in_sync


class TestDrift:
    """Each way HAProxy can differ from the group has its own verdict."""

    @pytest.mark.parametrize(
        ("socket", "where"),
        [(True, "not in the file or the running HAProxy"), (False, "not in the file")],
        ids=["runtime", "file-only-mode"],
    )
    def test_serving_instance_without_server_is_missing(self, socket: bool, where: str) -> None:
        """An InService instance nowhere in HAProxy is missing; the detail says where it looked."""
        world = World(group(instance(4)), socket=socket)
        row = rows_of(world)[iid(4)]
        assert row.verdict is Verdict.MISSING
        assert row.server == server_name(4)
        assert where in row.detail
        assert drift_table.exit_code(assess(world)) == drift_table.EXIT_DRIFT

    @pytest.mark.parametrize(
        ("member", "reason"),
        [
            (instance(5, "Terminating:Wait"), "lifecycle Terminating:Wait"),
            (instance(5, "Standby"), "lifecycle Standby"),
            (instance(5, "Terminated", "terminated"), "lifecycle Terminated"),
            (None, "not in the group"),
        ],
        ids=["terminating", "standby", "terminated", "gone"],
    )
    def test_server_of_an_instance_that_does_not_serve_is_stale(
        self, member: Any, reason: str
    ) -> None:
        """A ready server whose instance left service is stale, with the reason."""
        members = [instance(4)] + ([member] if member is not None else [])
        world = World(
            group(*members),
            runtime=[runtime_server(4), runtime_server(5)],
            content=config_with(file_line(4), file_line(5)),
        )
        row = rows_of(world)[iid(5)]
        assert row.verdict is Verdict.STALE
        assert reason in row.detail
        assert "running and in the file" in row.detail

    def test_stale_line_in_the_file_only_says_a_reload_brings_it_back(self) -> None:
        """A leaving server only the file still has is stale; a reload would serve it again."""
        world = World(group(instance(4)), runtime=[runtime_server(4)])
        world.store.content = config_with(file_line(4), file_line(9))
        row = rows_of(world)[iid(9)]
        assert row.verdict is Verdict.STALE
        assert row.runtime_state is RuntimeState.ABSENT
        assert "a reload would bring it back" in row.detail

    def test_leaving_server_in_drain_is_draining(self) -> None:
        """A leaving server the controller drains is drift until deleted, shown as draining."""
        world = World(
            group(instance(4), instance(5, "Terminating:Wait")),
            runtime=[runtime_server(4), runtime_server(5, admin_state=ADMIN_FDRAIN, sessions=2)],
            content=config_with(file_line(4)),
        )
        row = rows_of(world)[iid(5)]
        assert row.verdict is Verdict.DRAINING
        assert row.drift
        assert "2 sessions" in row.detail

    def test_new_server_waiting_for_its_first_check_is_warming(self) -> None:
        """A desired server held in drain until its check passes is drift: not serving yet."""
        world = World(
            group(instance(4)),
            runtime=[runtime_server(4, admin_state=ADMIN_FDRAIN, check_result=0)],
            content=config_with(file_line(4)),
        )
        row = rows_of(world)[iid(4)]
        assert row.verdict is Verdict.WARMING
        assert row.runtime_state is RuntimeState.DRAIN
        assert row.check is CheckResult.UNKNOWN

    def test_desired_server_in_maintenance_is_maint(self) -> None:
        """A desired server someone put in maintenance is drift the next cycle undoes."""
        world = World(
            group(instance(4)),
            runtime=[runtime_server(4, admin_state=ADMIN_FMAINT)],
            content=config_with(file_line(4)),
        )
        assert rows_of(world)[iid(4)].verdict is Verdict.MAINT

    @pytest.mark.parametrize(
        ("runtime_address", "file_address", "says"),
        [
            ("127.0.9.9", None, "running at 127.0.9.9:8080"),
            (None, "127.0.9.9", "the file says 127.0.9.9:8080"),
        ],
        ids=["runtime", "file"],
    )
    def test_server_at_another_address_is_address(
        self, runtime_address: str | None, file_address: str | None, says: str
    ) -> None:
        """The server points elsewhere than the instance's IP, in the file or at runtime."""
        world = World(
            group(instance(4)),
            runtime=[runtime_server(4, address=runtime_address or "127.0.1.4")],
            content=config_with(file_line(4, address=file_address)),
        )
        row = rows_of(world)[iid(4)]
        assert row.verdict is Verdict.ADDRESS
        assert says in row.detail
        assert "the instance is 127.0.1.4:8080" in row.detail

    def test_running_server_missing_from_the_file_is_runtime_only(self) -> None:
        """Added at runtime (by hand, or before the file was written): a reload would drop it."""
        world = World(group(instance(4)), runtime=[runtime_server(4)])
        row = rows_of(world)[iid(4)]
        assert row.verdict is Verdict.RUNTIME_ONLY
        assert not row.in_file
        assert "a reload would drop it" in row.detail

    def test_file_server_missing_at_runtime_is_file_only(self) -> None:
        """Deleted at runtime only: a reload would add it back."""
        world = World(group(instance(4)), content=config_with(file_line(4)))
        row = rows_of(world)[iid(4)]
        assert row.verdict is Verdict.FILE_ONLY
        assert row.runtime_state is RuntimeState.ABSENT

    @pytest.mark.parametrize(
        ("line", "says"),
        [
            (file_line(4, server_id=None), "no id"),
            (file_line(4, options="check inter 2s"), "options 'check inter 2s'"),
        ],
        ids=["id", "options"],
    )
    def test_file_line_with_other_id_or_options_is_outdated(self, line: bytes, says: str) -> None:
        """The right server at the right address, but its line is not what the settings say."""
        world = World(group(instance(4)), runtime=[runtime_server(4)], content=config_with(line))
        row = rows_of(world)[iid(4)]
        assert row.verdict is Verdict.OUTDATED
        assert says in row.detail

    def test_zero_serving_with_desired_capacity_is_held(self) -> None:
        """The safety hold is shown with its reason; its servers are drift, marked held."""
        world = World(
            group(instance(4, "Pending"), desired=2),
            runtime=[runtime_server(1)],
            content=config_with(file_line(1)),
        )
        report = assess(world)
        backend = report.backends[0]
        assert backend.status is Status.HELD
        assert backend.held is not None
        assert "desired capacity is 2" in backend.held
        assert rows_of(world)[iid(1)].verdict is Verdict.HELD
        assert rows_of(world)[iid(4)].verdict is Verdict.EXCLUDED
        assert drift_table.exit_code(report) == drift_table.EXIT_DRIFT

    def test_instance_unknown_to_ec2_is_held_as_it_is(self) -> None:
        """
        InService and Healthy in the group, not returned by DescribeInstances: its server is
        held as it is, and without a server it is held out; both are drift.
        """
        unknown = [Instance(iid(n), "InService", "Healthy", None, None) for n in (5, 6)]
        world = World(
            group(instance(4), *unknown, desired=3),
            runtime=[runtime_server(4), runtime_server(5)],
            content=config_with(file_line(4), file_line(5)),
        )
        rows = rows_of(world)
        assert (rows[iid(5)].verdict, rows[iid(6)].verdict) == (Verdict.HELD, Verdict.HELD)
        assert rows[iid(5)].detail.endswith(
            "DescribeInstances did not return it; read again soon; kept as it is"
        )
        assert rows[iid(6)].detail.endswith("not added")
        assert rows[iid(4)].verdict is Verdict.OK

    def test_malformed_address_is_held_and_named_escaped(self) -> None:
        """A malformed address holds the instance; the detail shows the value escaped."""
        world = World(
            group(instance(4), replace(instance(5), private_ip="127.0.1.5\nx")),
            runtime=[runtime_server(4), runtime_server(5)],
            content=config_with(file_line(4), file_line(5)),
        )
        row = rows_of(world)[iid(5)]
        assert row.verdict is Verdict.HELD
        assert "malformed private IPv4 address '127.0.1.5\\nx'" in row.detail
        assert "\n" not in row.detail

    def test_instance_listed_twice_is_held_as_the_planner_holds_it(self) -> None:
        """No valid read lists an id twice: its server is held as it is, as the planner does."""
        world = World(
            group(instance(4), instance(5), instance(5)),
            runtime=[runtime_server(4), runtime_server(5)],
            content=config_with(file_line(4), file_line(5)),
        )
        row = rows_of(world)[iid(5)]
        assert row.verdict is Verdict.HELD
        assert f"instance id '{iid(5)}' listed more than once; kept as it is" in row.detail


class TestLifecycle:
    """Lifecycle hooks and Spot warnings, as the planner handles them."""

    def hooked(self, *members: Instance, runtime: Sequence[RuntimeServer] = ()) -> World:
        """A world whose group has hooks and whose backend completes lifecycle actions."""
        world = World(
            replace(group(*members), hooks=HOOKS),
            runtime=list(runtime),
            content=config_with(file_line(4)),
        )
        binding = replace(world.settings.backends[0], complete_lifecycle_actions=True)
        world.settings = replace(world.settings, backends=(binding,))
        return world

    @pytest.mark.parametrize(
        ("running", "state"),
        [
            (None, RuntimeState.ABSENT),
            (runtime_server(5, admin_state=ADMIN_FDRAIN, check_result=0), RuntimeState.DRAIN),
        ],
        ids=["not-added-yet", "warming-up"],
    )
    def test_launching_instance_is_warming_not_missing_from_the_file(
        self, running: RuntimeServer | None, state: RuntimeState
    ) -> None:
        """In ``Pending:Wait`` behind a launch hook: warmed up at runtime, never in the file."""
        world = self.hooked(
            instance(4),
            instance(5, "Pending:Wait"),
            runtime=[runtime_server(4), *([running] if running else [])],
        )
        row = rows_of(world)[iid(5)]
        assert row.verdict is Verdict.WARMING
        assert row.detail.startswith("launching")
        assert row.runtime_state is state
        assert not row.in_file

    def test_spot_warning_makes_a_serving_instance_stale(self) -> None:
        """With ``drain_on_spot_warning`` an interrupted instance's server must go: stale."""
        spot = [replace(instance(n), spot=True) for n in (5, 6)]
        world = World(
            group(instance(4), *spot),
            runtime=[runtime_server(4), runtime_server(5)],
            content=config_with(file_line(4), file_line(5)),
        )
        binding = replace(world.settings.backends[0], drain_on_spot_warning=True)
        world.settings = replace(world.settings, backends=(binding,))
        warned = frozenset({iid(5), iid(6)})
        observed = observe(world.settings, world.ports, warned)[0]
        rows = {r.instance_id: r for r in drift.assess(world.settings, observed).backends[0].rows}
        assert rows[iid(5)].verdict is Verdict.STALE
        assert rows[iid(5)].detail.startswith("Spot interruption warning")
        assert rows[iid(6)].verdict is Verdict.EXCLUDED
        assert rows[iid(6)].detail == "Spot interruption warning; not in HAProxy"


class TestRefused:
    """A backend the planner refuses is shown with its reason, without rows, and exits 1."""

    @pytest.mark.parametrize(
        ("breakage", "reason"),
        [
            ("aws", "throttled"),
            ("group", "not found"),
            ("runtime", "no backend 'api'"),
            ("section", "static-rr"),
        ],
        ids=["failed-read", "missing-group", "runtime-unreadable", "bad-section"],
    )
    def test_refused_backend_has_its_reason_and_exit_code_1(
        self, breakage: str, reason: str
    ) -> None:
        """Whatever the planner refuses, the report refuses too, with the planner's reason."""
        content = config_with(file_line(4))
        if breakage == "section":
            content = content.replace(b"balance roundrobin", b"balance static-rr")
        world = World(group(instance(4)), runtime=[runtime_server(4)], content=content)
        if breakage == "aws":
            world.membership.errors[ASG] = "throttled"
        elif breakage == "group":
            world.membership.groups.clear()
        elif breakage == "runtime":
            del world.runtime.servers[BACKEND]
        report = assess(world)
        backend = report.backends[0]
        assert backend.status is Status.REFUSED
        assert reason in (backend.refused or "")
        assert backend.rows == ()
        assert drift_table.exit_code(report) == drift_table.EXIT_UNREADABLE

    def test_refusal_wins_over_drift_in_the_exit_code(self) -> None:
        """One backend refused and one drifted: 1, since the report is incomplete."""
        report = DriftReport(
            (
                drift.BackendDrift("a", "a-asg", refused="throttled"),
                drift.BackendDrift("b", "b-asg", rows=(_row(Verdict.MISSING),)),
            ),
            runtime=True,
        )
        assert drift_table.exit_code(report) == drift_table.EXIT_UNREADABLE


class TestReportShape:
    """Order, selection and the runtime-less mode."""

    def test_rows_sort_by_severity_then_instance_id(self) -> None:
        """Most severe verdict first; within a verdict, by instance id."""
        world = World(
            group(instance(4), instance(5), instance(6), instance(7, "Standby")),
            runtime=[runtime_server(6), runtime_server(7)],
            content=config_with(file_line(6), file_line(7)),
        )
        rows = assess(world).backends[0].rows
        assert [(r.verdict, r.instance_id) for r in rows] == [
            (Verdict.MISSING, iid(4)),
            (Verdict.MISSING, iid(5)),
            (Verdict.STALE, iid(7)),
            (Verdict.OK, iid(6)),
            (Verdict.UNMANAGED, None),
        ]

    def test_every_instance_and_server_has_exactly_one_row(self) -> None:
        """Instances, managed servers from both sides and unmanaged servers: once each."""
        world = World(
            group(instance(4), instance(5, "Standby"), instance(6, "Pending")),
            runtime=[runtime_server(5), runtime_server(8)],
            content=config_with(file_line(4), file_line(9)),
        )
        rows = assess(world).backends[0].rows
        keys = [(r.instance_id, r.server) for r in rows]
        assert sorted(keys, key=str) == sorted(
            [
                (iid(4), server_name(4)),
                (iid(5), server_name(5)),
                (iid(6), None),
                (iid(8), server_name(8)),
                (iid(9), server_name(9)),
                (None, "maintenance-page"),
            ],
            key=str,
        )

    def test_without_a_socket_the_runtime_is_not_read(self) -> None:
        """File mode: no runtime state or check in any row, and the report says so."""
        world = World(group(instance(4)), socket=False, content=config_with(file_line(4)))
        report = assess(world)
        assert not report.runtime
        assert all(r.runtime_state is None and r.check is None for r in report.backends[0].rows)
        assert report.in_sync

    def test_backend_filter_keeps_configuration_order(self) -> None:
        """``--backend`` picks backends by name; the report keeps the settings' order."""
        settings, observed = two_backends()
        report = drift.assess(settings, observed, ["web", "api"])
        assert [b.backend for b in report.backends] == ["api", "web"]
        assert [b.backend for b in drift.assess(settings, observed, ["web"]).backends] == ["web"]

    def test_unknown_backend_is_a_usage_error_naming_every_one(self) -> None:
        """Unknown ``--backend`` names: one ``ConfigError`` listing each, and the known names."""
        settings, observed = two_backends()
        with pytest.raises(ConfigError) as caught:
            drift.assess(settings, observed, ["nope", "api", "nada"])
        assert len(caught.value.problems) == 2
        assert "configured: api, web" in caught.value.problems[0]


def two_backends() -> tuple[Any, Observation]:
    """Settings with backends ``api`` and ``web`` and an observation where both are in sync."""
    world = World(group())
    web = Binding(name="web", asg="web-asg", port=80)
    settings = replace(world.settings, backends=(*world.settings.backends, web))
    section = ConfigBackend("api", (), "roundrobin", "map-based")
    observed = Observation(
        AwsObservation({ASG: Group(ASG, 0, ()), "web-asg": Group("web-asg", 0, ())}),
        {"api": section, "web": replace(section, name="web")},
        RuntimeObservation({"api": (), "web": ()}),
    )
    return settings, observed


def _row(verdict: Verdict) -> DriftRow:
    """A row with *verdict* and no facts."""
    return DriftRow(
        verdict, "why", "s", None, None, None, None, None, False, None, None, None, None, None
    )


# -- agreement with the planner --------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """A planner world, managed file lines, and the lifecycle-hook and Spot-warning options."""

    case: Case
    lines: list[bytes]
    #: The group has launch and terminate hooks and the backend completes lifecycle actions.
    hooks: bool
    #: Instances with a Spot interruption warning (the backend drains them when non-empty).
    interrupted: frozenset[str]

    def world(self) -> World:
        """The fakes for this scenario."""
        g, runtime, socket = self.case
        if self.hooks:
            g = replace(g, hooks=HOOKS)
        world = World(g, socket=socket, runtime=runtime, content=config_with(*self.lines))
        binding = replace(
            world.settings.backends[0],
            complete_lifecycle_actions=self.hooks,
            drain_on_spot_warning=bool(self.interrupted),
        )
        world.settings = replace(world.settings, backends=(binding,))
        return world


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """
    A planner world plus managed file lines, mostly for its instances and runtime servers, each
    with the right or a wrong address, id and options; maybe hooks, maybe Spot warnings.
    """
    g, runtime, socket = draw(worlds())
    # Now and then AWS returns a malformed address: that instance's server is held as it is.
    odd = (
        draw(st.sets(st.sampled_from([i.instance_id for i in g.instances]))) if g.instances else ()
    )
    members = tuple(
        replace(i, private_ip=f"{i.private_ip}\n") if i.instance_id in odd else i
        for i in g.instances
    )
    case = (replace(g, instances=members), runtime, socket)
    ids = sorted(i.instance_id for i in g.instances)
    known = sorted({*ids, *(s.name[len(PREFIX) :] for s in runtime)})
    picked = draw(st.lists(st.sampled_from(known), unique=True)) if known else []
    others = draw(st.lists(st.integers(41, 60), unique=True, max_size=2))
    numbers = [int(i[2:], 16) for i in picked] + others
    lines = [
        file_line(
            n,
            address=draw(st.sampled_from([None, None, "127.0.9.9"])),
            server_id=draw(st.sampled_from([-1, -1, None, 7])),
            options=draw(st.sampled_from([OPTIONS, OPTIONS, "check inter 2s"])),
        )
        for n in numbers
    ]
    interrupted = draw(st.frozensets(st.sampled_from(ids))) if ids else frozenset()
    return Scenario(case, lines, draw(st.booleans()), interrupted)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.integers(0, 3))
def test_no_drift_row_exactly_when_the_cycle_has_nothing_to_do(
    scenario: Scenario, cycles: int
) -> None:
    """
    For any state, also part-way through convergence: a backend has no drift row iff the plan
    has no step, waits for nothing, holds nothing and leaves the file's bytes as they are; and
    server by server, a row is drift iff the plan steps it, waits for it, holds it or changes
    its line.
    """
    world = scenario.world()
    for _ in range(cycles):
        run_cycle(world.settings, world.ports, interrupted=scenario.interrupted)
        world.runtime.tick()
    observed, data = observe(world.settings, world.ports, scenario.interrupted)
    decided = planner.compute(world.settings, observed).backends[0]
    found = drift.assess(world.settings, observed).backends[0]
    assert found.refused == decided.refused
    if decided.refused is not None:  # a line drawn twice: the section cannot be managed
        assert found.rows == ()
        return
    binding = world.settings.backends[0]
    rewritten = data
    if decided.lines is not None:
        managed = lambda name: binding.instance_of(name) is not None  # noqa: E731
        rewritten = config_edit.edit(data, BACKEND, managed, decided.lines)
    holds = any(row.change is Change.HELD for row in decided.rows)
    work = bool(decided.steps) or decided.pending or decided.held is not None or rewritten != data
    work = work or holds
    assert bool(found.drifted) == work

    stepped = {step.server for step in decided.steps}
    waiting = {
        row.server
        for row in decided.rows
        if row.change in (Change.WARMING, Change.DRAINING, Change.HELD)
    }
    desired = {line.name: line for line in decided.lines or ()}
    in_file = {s.name: s for s in observed.config[BACKEND].servers}
    for row in found.rows:
        if row.instance_id is None:
            assert row.verdict is Verdict.UNMANAGED, row
            continue
        name = row.server or binding.server_name(row.instance_id)
        changes = _line_changes(in_file.get(name), desired.get(name))
        assert row.drift == (name in stepped | waiting or changes), row


def _line_changes(current: ConfigServer | None, line: ServerLine | None) -> bool:
    """The cycle would add, remove or rewrite this server's line in the file."""
    if current is None or line is None:
        return (current is None) != (line is None)
    have = (current.address, current.port, current.server_id, current.options)
    return have != (line.address, line.port, line.server_id, line.options)


# -- JSON ------------------------------------------------------------------------------------------


def varied_report() -> DriftReport:
    """A report with a drifted, a held, a refused and a runtime-less-looking backend."""
    drifted = World(
        group(instance(4), instance(5, "Standby"), instance(6, "Pending")),
        runtime=[runtime_server(5), runtime_server(7, admin_state=ADMIN_FDRAIN)],
        content=config_with(file_line(7)),
    )
    held = World(group(instance(4, "Pending"), desired=1), runtime=[runtime_server(1)])
    refused = World(group(instance(4)))
    refused.membership.errors[ASG] = "throttled"
    reports = [assess(w).backends[0] for w in (drifted, held, refused)]
    return DriftReport(tuple(reports), runtime=True)


class TestJson:
    """``--json``: one documented schema, every verdict and state as its documented string."""

    def test_report_follows_the_schema(self) -> None:
        """A varied report validates against ``JSON_SCHEMA`` and survives a JSON round trip."""
        document = drift_table.to_json(varied_report())
        validate(json.loads(json.dumps(document)), drift_table.JSON_SCHEMA)

    def test_in_sync_file_mode_report_follows_the_schema(self) -> None:
        """Nulls for runtime fields are part of the schema too."""
        world = World(group(instance(4)), socket=False, content=config_with(file_line(4)))
        document = drift_table.to_json(assess(world))
        validate(document, drift_table.JSON_SCHEMA)
        assert document["in_sync"] is True
        assert document["backends"][0]["rows"][0]["runtime_state"] is None

    def test_summary_counts_backends_and_rows(self) -> None:
        """The overall and per-backend summaries count statuses, drift rows and verdicts."""
        document = drift_table.to_json(varied_report())
        assert document["schema_version"] == drift_table.SCHEMA_VERSION
        assert document["in_sync"] is False
        summary = document["summary"]
        assert summary == {
            "backends": 3,
            "in-sync": 0,
            "drifted": 1,
            "held": 1,
            "refused": 1,
            "drift_rows": 4,
        }
        first = document["backends"][0]
        assert first["status"] == "drifted"
        assert first["summary"]["verdicts"]["missing"] == 1
        assert first["summary"]["verdicts"]["stale"] == 1
        assert first["summary"]["verdicts"]["draining"] == 1
        assert [r["verdict"] for r in first["rows"]][:3] == ["missing", "stale", "draining"]

    def test_validator_rejects_what_the_schema_forbids(self) -> None:
        """The schema check is not vacuous: an extra key, a bad enum and a missing key fail."""
        document = drift_table.to_json(varied_report())
        backends = drift_table.JSON_SCHEMA["properties"]["backends"]
        row_schema = backends["items"]["properties"]["rows"]["items"]
        row = document["backends"][0]["rows"][0]
        validate(row, row_schema)
        for broken in ({**row, "extra": 1}, {**row, "verdict": "fine"}, {"verdict": "ok"}):
            with pytest.raises(AssertionError):
                validate(broken, row_schema)


# -- rendering -------------------------------------------------------------------------------------


def render(report: DriftReport, *, width: int = 200, **console: Any) -> str:
    """The tables as printed on a console writing to a string."""
    out = Console(file=io.StringIO(), width=width, **console)
    out.print(drift_table.tables(report))
    assert isinstance(out.file, io.StringIO)
    return out.file.getvalue()


class TestTables:
    """People's view: readable without colour, colour only on a terminal, nothing cropped."""

    def test_no_escape_codes_when_not_a_terminal(self) -> None:
        """Piped or redirected: plain text."""
        assert "\x1b" not in render(varied_report(), force_terminal=False)

    def test_no_escape_codes_with_no_color(self) -> None:
        """``NO_COLOR`` on a terminal: no colour and no bold either."""
        system = drift_table.color_system({"NO_COLOR": "1"})
        assert "\x1b" not in render(varied_report(), force_terminal=True, color_system=system)

    def test_colour_on_a_terminal(self) -> None:
        """On a colour terminal the verdicts are coloured."""
        system = drift_table.color_system({"NO_COLOR": ""})
        assert system == "auto"
        assert "\x1b[" in render(varied_report(), force_terminal=True, color_system="standard")

    def test_summaries_say_the_status_in_words(self) -> None:
        """Per backend and overall, the status is readable without colour."""
        text = render(varied_report(), force_terminal=False)
        assert "backend api ← api-asg" in text
        assert "3 drifted: 1 missing, 1 stale, 1 draining" in text
        assert "HELD: 'api-asg' reports no serving instance" in text
        assert "REFUSED, not assessed: throttled" in text
        assert "overall: 2 drifted, 1 could not be assessed (of 3 backends)" in text

    def test_in_sync_summary(self) -> None:
        """A converged backend says so, per backend and overall."""
        world = World(group(instance(4)))
        world.converge()
        text = render(assess(world), force_terminal=False)
        assert "in sync: 1 ok, 1 unmanaged" in text
        assert "overall: in sync (1 backend)" in text

    @pytest.mark.parametrize("width", [200, 80, 40], ids=["wide", "piped", "narrow"])
    def test_every_fact_is_shown_whatever_the_width(self, width: int) -> None:
        """Wide consoles get columns, narrow ones stacked rows; nothing is cut off."""
        report = varied_report()
        text = render(report, width=width, force_terminal=False)
        for row in report.backends[0].rows:
            for fact in (row.verdict.value, row.instance_id, row.server, row.private_ip):
                assert fact is None or fact in text
            assert " ".join(row.detail.split()[:2]) in text
        assert max(len(line) for line in text.splitlines()) <= width


# -- the running HAProxy ---------------------------------------------------------------------------


#: What HAProxy 3.0.11 says of itself (``help`` lists far more commands; these are enough).
HAPROXY_30 = HAProxyFeatures(
    "3.0.11-9e587df",
    frozenset({*HAProxyFeatures.REQUIRED_COMMANDS, "wait", "help", "show version"}),
    level="admin",
)
HAPROXY_26 = HAProxyFeatures(
    "2.6.12-1+deb12u4", frozenset({*HAProxyFeatures.REQUIRED_COMMANDS, "help"}), level="admin"
)


def with_haproxy(world: World, features: HAProxyFeatures) -> DriftReport:
    """The report of *world* as read from a HAProxy that says *features* of itself."""
    observed = observe(world.settings, world.ports)[0]
    assert observed.runtime is not None
    running = replace(observed.runtime, features=features)
    return drift.assess(world.settings, replace(observed, runtime=running))


class TestHAProxy:
    """Which HAProxy the report compared with, and what its runtime API offers."""

    @pytest.mark.parametrize(
        ("features", "line"),
        [
            pytest.param(
                HAPROXY_30,
                "HAProxy 3.0.11-9e587df — runtime API: add/del server, wait; "
                "add server keywords: not listed by this version",
                id="3.0",
            ),
            pytest.param(
                HAPROXY_26,
                "HAProxy 2.6.12-1+deb12u4 — runtime API: add/del server; "
                "add server keywords: not listed by this version",
                id="2.6",
            ),
            pytest.param(
                replace(HAPROXY_30, server_keywords=frozenset({"check", "weight", "init-state"})),
                "HAProxy 3.0.11-9e587df — runtime API: add/del server, wait; "
                "add server keywords: 3 listed",
                id="keywords listed",
            ),
            pytest.param(
                HAProxyFeatures(
                    "2.4.22",
                    frozenset(HAProxyFeatures.REQUIRED_COMMANDS) - {"add server", "del server"},
                    level="operator",
                ),
                "HAProxy 2.4.22 — lacks add server, del server; socket level operator (changing "
                "servers needs admin); add server keywords: not listed by this version",
                id="unusable",
            ),
        ],
    )
    def test_version_and_capabilities_head_the_tables(
        self, features: HAProxyFeatures, line: str
    ) -> None:
        """The first line names the version, the commands that matter, and the keywords."""
        world = World(group(instance(4)))
        world.converge()
        text = render(with_haproxy(world, features), force_terminal=False)
        assert text.splitlines()[0] == line
        assert text.index("backend api ←") > len(line)

    def test_version_is_shown_as_text(self) -> None:
        """What HAProxy says of itself is escaped like any text from outside."""
        world = World(group(instance(4)))
        world.converge()
        hostile = replace(HAPROXY_30, version="3.0\x1b[2J[bold]x")
        first = render(with_haproxy(world, hostile), force_terminal=False).splitlines()[0]
        assert "\x1b" not in first
        assert first.startswith("HAProxy 3.0\\x1b[2J[bold]x — ")

    def test_unread_runtime_says_so_and_file_mode_says_nothing(self) -> None:
        """A socket that could not be read is named; without a socket no HAProxy line at all."""
        unread = render(DriftReport((), runtime=True), force_terminal=False)
        assert unread.splitlines()[0] == "HAProxy: runtime API not read (see the backends below)"
        world = World(group(instance(4)), socket=False, content=config_with(file_line(4)))
        assert "HAProxy" not in render(assess(world), force_terminal=False)

    def test_json_has_every_fact_and_follows_the_schema(self) -> None:
        """``haproxy``: the version, every command listed, what is missing, keywords, level."""
        world = World(group(instance(4)))
        world.converge()
        features = replace(HAPROXY_26, server_keywords=frozenset({"weight", "check"}))
        document = drift_table.to_json(with_haproxy(world, features))
        validate(document, drift_table.JSON_SCHEMA)
        assert document["haproxy"] == {
            "version": "2.6.12-1+deb12u4",
            "commands": sorted({*HAProxyFeatures.REQUIRED_COMMANDS, "help"}),
            "missing_commands": [],
            "server_keywords": ["check", "weight"],
            "level": "admin",
        }

    def test_json_without_a_read_runtime_has_null_and_follows_the_schema(self) -> None:
        """No socket, or the read failed: ``haproxy`` is ``null``, which the schema allows."""
        world = World(group(instance(4)), socket=False, content=config_with(file_line(4)))
        document = drift_table.to_json(assess(world))
        assert document["haproxy"] is None
        validate(document, drift_table.JSON_SCHEMA)
        with pytest.raises(AssertionError):
            validate({**document, "haproxy": {"version": "3.0"}}, drift_table.JSON_SCHEMA)
