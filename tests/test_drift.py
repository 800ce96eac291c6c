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

from reconciler import drift_table, plan_table
from reconciler.core import config_edit, drift
from reconciler.core import plan as planner
from reconciler.core.drift import CheckResult, DriftReport, DriftRow, RuntimeState, Status, Verdict
from reconciler.core.errors import ConfigError
from reconciler.core.model import (
    ADMIN_FDRAIN,
    ADMIN_FMAINT,
    CHECK_RESULT_PASSED,
    LAUNCHING,
    TERMINATING,
    AwsObservation,
    BackendPlan,
    Change,
    ConfigBackend,
    ConfigServer,
    Group,
    HAProxyFeatures,
    Instance,
    LifecycleHook,
    Observation,
    Plan,
    Row,
    RuntimeObservation,
    RuntimeServer,
    ServerLine,
    ZoneCount,
    ZoneMode,
    ZoneStatus,
)
from reconciler.core.settings import Binding, Weights
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
#: The words of generated file lines: the settings', others, and the controller's own.
LINE_OPTIONS = [
    OPTIONS,
    OPTIONS,
    "check inter 2s",
    f"{OPTIONS} weight 80",
    f"{OPTIONS} weight 10",
    f"{OPTIONS} backup",
    f"{OPTIONS} weight 80 backup",
    f"{OPTIONS} backup weight 80",
]
#: The weights of the backends that set them, by instance type.
TYPES = {"c5.large": 10, "c5.4xlarge": 80}
NODE_ZONE = "eu-west-1a"
BALANCE = b"    balance roundrobin\n"
ALLBACKUPS = b"    option allbackups\n"
#: Zone routing refuses a hand-written backup server: its worlds keep the line as an active one.
UNMANAGED_ACTIVE = UNMANAGED_LINE.replace(b" backup", b"")
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
    interrupted: frozenset[str] = frozenset()
    #: The backend weighs its servers by instance type (``TYPES``).
    weights: bool = False
    #: The backend routes by zone (with a socket only); the section has ``option allbackups``
    #: unless *allbackups* is false (then the backend is refused).
    zoned: bool = False
    allbackups: bool = True

    def world(self) -> World:
        """The fakes for this scenario."""
        g, runtime, socket = self.case
        if self.hooks:
            g = replace(g, hooks=HOOKS)
        content = config_with(*self.lines)
        if self.zoned:
            content = content.replace(UNMANAGED_LINE, UNMANAGED_ACTIVE)
        if self.zoned and self.allbackups:
            content = content.replace(BALANCE, BALANCE + ALLBACKUPS)
        world = World(g, socket=socket, runtime=runtime, content=content)
        binding = replace(
            world.settings.backends[0],
            complete_lifecycle_actions=self.hooks,
            drain_on_spot_warning=bool(self.interrupted),
            weights=Weights(capacity=False, table=TYPES) if self.weights else None,
            zone_routing=self.zoned,
        )
        haproxy = replace(world.settings.haproxy, zone=NODE_ZONE if self.zoned else None)
        world.settings = replace(world.settings, haproxy=haproxy, backends=(binding,))
        return world


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """
    A planner world plus managed file lines, mostly for its instances and runtime servers, each
    with the right or a wrong address, id and options; maybe hooks, maybe Spot warnings.
    """
    g, runtime, socket = draw(worlds())
    # Now and then AWS returns a malformed address: that instance's server is held as it is.
    # At most one: more would hold most servers, and leave few for the other verdicts.
    ids = [i.instance_id for i in g.instances]
    odd = draw(st.sets(st.sampled_from(ids), max_size=1)) if ids else ()
    members = tuple(
        replace(
            i,
            private_ip=f"{i.private_ip}\n" if i.instance_id in odd else i.private_ip,
            instance_type=draw(st.sampled_from([*TYPES, "m5.large", None])),
            zone=draw(st.sampled_from([NODE_ZONE, NODE_ZONE, "eu-west-1b", "eu-west-1c", None])),
        )
        for i in g.instances
    )
    runtime = [
        replace(s, weight=draw(st.sampled_from([1, 10, 80, 0])), backup=draw(st.booleans()))
        for s in runtime
    ]
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
            options=draw(st.sampled_from(LINE_OPTIONS)),
        )
        for n in numbers
    ]
    interrupted = draw(st.frozensets(st.sampled_from(ids))) if ids else frozenset()
    zoned = socket and draw(st.booleans())
    return Scenario(
        case,
        lines,
        draw(st.booleans()),
        interrupted,
        weights=draw(st.booleans()),
        zoned=zoned,
        allbackups=draw(st.integers(0, 7)) > 0,
    )


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
    _agrees_with_the_planner(scenario, cycles)


@st.composite
def routed_scenarios(draw: st.DrawFn) -> Scenario:
    """
    Serving instances of several types and zones (some leaving), their servers running in
    every weight, backup form and state, their file lines with or without the controller's
    words; weights, zone routing, or both.
    """
    numbers = draw(st.lists(st.integers(4, 40), unique=True, min_size=1, max_size=8))
    members = [
        replace(
            typed(
                n,
                draw(st.sampled_from([*TYPES, "m5.large"])),
                draw(st.sampled_from([NODE_ZONE, NODE_ZONE, "eu-west-1b", None])),
            ),
            lifecycle_state=draw(st.sampled_from(["InService"] * 4 + ["Terminating:Wait"])),
        )
        for n in numbers
    ]
    runtime = [
        runtime_server(
            n,
            weight=draw(st.sampled_from([80, 10, 1, 0])),
            backup=draw(st.booleans()),
            admin_state=draw(st.sampled_from([0, 0, 0, ADMIN_FDRAIN, ADMIN_FMAINT])),
            op_state=draw(st.sampled_from([2, 2, 0])),
            sessions=draw(st.integers(0, 2)),
            seconds_in_state=draw(st.sampled_from([1, 100])),
            check_result=draw(st.sampled_from([CHECK_RESULT_PASSED, CHECK_RESULT_PASSED, 2, 0])),
        )
        for n in draw(st.lists(st.sampled_from(numbers), unique=True))
    ]
    # Mostly the weight the instance's type gets, so that a line differs in one thing at a time.
    weight_of = {m.instance_id: TYPES.get(m.instance_type or "", 10) for m in members}
    lines = []
    for n in draw(st.lists(st.sampled_from(numbers), unique=True)):
        weight = draw(st.sampled_from([weight_of[iid(n)]] * 3 + [None, 1]))
        words = [OPTIONS, *([f"weight {weight}"] if weight is not None else [])]
        lines.append(
            file_line(n, options=" ".join([*words, *["backup"][: draw(st.integers(0, 1))]]))
        )
    routing = draw(st.sampled_from([(True, False), (False, True), (True, True)]))
    return Scenario((group(*members), runtime, True), lines, False, frozenset(), *routing)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(routed_scenarios(), st.integers(0, 3))
def test_weights_and_zones_drift_exactly_when_the_cycle_has_something_to_do(
    scenario: Scenario, cycles: int
) -> None:
    """The same agreement for backends that set weights, route by zone, or both."""
    _agrees_with_the_planner(scenario, cycles)


def _agrees_with_the_planner(scenario: Scenario, cycles: int) -> None:
    """The drift report of *scenario* after *cycles* agrees with the plan, as a whole and by row."""
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
    # A server zone routing re-adds in its other form may wait for its sessions to end.
    waiting = {
        row.server
        for row in decided.rows
        if row.change in (Change.WARMING, Change.DRAINING, Change.HELD, Change.ZONE)
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
    return have != (line.address, line.port, line.server_id, line.file_options)


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


# -- weights and zone routing: the report's view ---------------------------------------------------

LOCAL_STATUS = ZoneStatus(
    NODE_ZONE,
    ZoneMode.LOCAL,
    {NODE_ZONE: ZoneCount(2, 2, 160), "eu-west-1b": ZoneCount(2, 1, 80)},
    needed=90.0,
    cross_zone_share=0.0,
)


def zoned_row(verdict: Verdict, n: int, **facts: Any) -> DriftRow:
    """A row of instance *n* with zone and weight *facts*."""
    return replace(_row(verdict), server=server_name(n), instance_id=iid(n), in_file=True, **facts)


def zoned_report() -> DriftReport:
    """A backend with zone routing and weights beside one with neither."""
    rows = (
        zoned_row(
            Verdict.WEIGHT,
            4,
            zone=NODE_ZONE,
            local=True,
            weight_desired=80,
            weight_runtime=10,
            weight_file=80,
        ),
        zoned_row(
            Verdict.ZONE,
            5,
            zone="eu-west-1b",
            local=False,
            weight_desired=80,
            weight_runtime=80,
            weight_file=None,
        ),
        zoned_row(
            Verdict.OK,
            6,
            zone=NODE_ZONE,
            local=True,
            weight_desired=80,
            weight_runtime=80,
            weight_file=80,
        ),
    )
    routed = drift.BackendDrift(
        "api",
        "api-asg",
        rows=rows,
        warnings=(
            "instance type 'm5.large' is not in [backend.weights]; its 1 server gets weight 10",
        ),
        weights=True,
        zones=LOCAL_STATUS,
    )
    plain = drift.BackendDrift("web", "web-asg", rows=(zoned_row(Verdict.OK, 7),))
    return DriftReport((routed, plain), runtime=True)


class TestZonesAndWeightsShown:
    """The new columns and lines appear for the backends that use them, and only there."""

    def test_zone_line_warnings_and_columns_of_a_routed_backend(self) -> None:
        """Zone mode and why, per-zone health, the cross-zone share; the warning; both columns."""
        text = render(zoned_report(), force_terminal=False)
        assert (
            "zone routing local: the local zone eu-west-1a carries the traffic (healthy "
            "capacity 160, 90 needed); eu-west-1a 2/2 healthy, eu-west-1b 1/2 healthy; 0.0% of "
            "requests sent cross-zone" in text
        )
        assert "warning: instance type 'm5.large' is not in [backend.weights]" in text
        api, web = text.split("backend web")
        header = next(line for line in api.splitlines() if line.startswith("verdict"))
        assert header.split()[-3:] == ["zone", "weight", "detail"]
        assert "eu-west-1a (local)" in api
        assert "80 (runtime 10)" in api
        assert "80 (file none)" in api
        web_header = next(line for line in web.splitlines() if line.startswith("verdict"))
        assert web_header.split() == [
            "verdict",
            "instance",
            "ASG",
            "EC2",
            "IP",
            "server",
            "file",
            "runtime",
            "check",
            "detail",
        ]

    def test_at_80_columns_the_new_facts_are_stacked_pairs(self) -> None:
        """Piped: zone and weight become ``name value`` pairs like the others; nothing is cut."""
        text = render(zoned_report(), width=80, force_terminal=False)
        assert "zone eu-west-1b" in text
        assert "weight 80 (runtime 10)" in text
        assert max(len(line) for line in text.splitlines()) <= 80

    def test_backend_without_either_renders_as_before(self) -> None:
        """The new columns cost an unrouted, unweighted backend nothing: same lines as before."""
        plain = DriftReport((zoned_report().backends[1],), runtime=True)
        text = render(plain, force_terminal=False)
        assert "zone" not in text
        assert "weight" not in text

    def test_weight_column_when_a_running_weight_is_not_the_files(self) -> None:
        """Without weights, a server someone set another weight on shows the column."""
        row = zoned_row(Verdict.OK, 7, weight_runtime=0, weight_file=5)
        text = render(
            DriftReport((drift.BackendDrift("web", "web-asg", rows=(row,)),), runtime=True),
            force_terminal=False,
        )
        header = next(line for line in text.splitlines() if line.startswith("verdict"))
        assert header.split()[-2:] == ["weight", "detail"]
        assert "  0  " in text

    def test_json_has_the_new_fields_and_follows_the_schema(self) -> None:
        """Rows: zone, local, three weights; backends: warnings, weights, zone_routing."""
        document = drift_table.to_json(zoned_report())
        validate(json.loads(json.dumps(document)), drift_table.JSON_SCHEMA)
        routed, plain = document["backends"]
        assert routed["warnings"] == list(zoned_report().backends[0].warnings)
        assert routed["weights"] is True
        assert routed["zone_routing"] == {
            "node_zone": NODE_ZONE,
            "mode": "local",
            "reason": "the local zone eu-west-1a carries the traffic (healthy capacity 160, "
            "90 needed)",
            "needed": 90.0,
            "cross_zone_share": 0.0,
            "zones": [
                {
                    "zone": NODE_ZONE,
                    "local": True,
                    "servers": 2,
                    "healthy": 2,
                    "healthy_capacity": 160,
                },
                {
                    "zone": "eu-west-1b",
                    "local": False,
                    "servers": 2,
                    "healthy": 1,
                    "healthy_capacity": 80,
                },
            ],
        }
        first = routed["rows"][0]
        assert (first["zone"], first["local"]) == (NODE_ZONE, True)
        assert (first["weight_desired"], first["weight_runtime"], first["weight_file"]) == (
            80,
            10,
            80,
        )
        assert (plain["warnings"], plain["weights"], plain["zone_routing"]) == ([], False, None)
        assert plain["rows"][0]["local"] is None

    @pytest.mark.parametrize(
        ("status", "says"),
        [
            (replace(LOCAL_STATUS, cross_zone_share=None), "no request yet"),
            (
                replace(LOCAL_STATUS, mode=ZoneMode.SPILL, needed=200.0, cross_zone_share=0.25),
                "zone routing spill: the local zone eu-west-1a is degraded (healthy capacity "
                "160, 200 needed); eu-west-1a 2/2 healthy, eu-west-1b 1/2 healthy; "
                "25.0% of requests sent cross-zone",
            ),
            (
                replace(
                    LOCAL_STATUS, zones={"eu-west-1b": ZoneCount(2, 2, 2)}, mode=ZoneMode.SPILL
                ),
                "no server in the local zone eu-west-1a",
            ),
            (
                replace(
                    LOCAL_STATUS,
                    zones={NODE_ZONE: ZoneCount(2, 0, 0), "eu-west-1b": ZoneCount(1, 1, 1)},
                ),
                "no healthy server in the local zone eu-west-1a; HAProxy sends to the other zones",
            ),
            (
                replace(LOCAL_STATUS, zones={NODE_ZONE: ZoneCount(2, 0, 0)}),
                "no healthy server in any zone",
            ),
        ],
        ids=["no-requests", "spill", "no-local-server", "local-zone-down", "none-healthy"],
    )
    def test_zone_line_says_why(self, status: ZoneStatus, says: str) -> None:
        """Each reason for a mode, in words."""
        assert says in drift.zone_summary(status)


# -- weights and zone routing: the verdicts --------------------------------------------------------


def typed(n: int, kind: str = "c5.4xlarge", zone: str | None = NODE_ZONE) -> Instance:
    """Instance *n*, InService, of instance type *kind* in *zone*."""
    return replace(instance(n), instance_type=kind, zone=zone)


def weighted(*members: Instance, **world: Any) -> World:
    """A world whose backend weighs its servers by ``TYPES``."""
    return World(group(*members), weights=Weights(capacity=False, table=TYPES), **world)


class TestWeightVerdicts:
    """The weight each server gets, runs with and is written with."""

    def test_converged_backend_shows_each_servers_weight_and_is_in_sync(self) -> None:
        """Desired, runtime and file weights agree once converged: ok, and the backend says so."""
        world = weighted(typed(4, "c5.large"), typed(5))
        world.converge()
        report = assess(world)
        rows = rows_of(world)
        weights = lambda row: (row.weight_desired, row.weight_runtime, row.weight_file)  # noqa: E731
        assert weights(rows[iid(4)]) == (10, 10, 10)
        assert weights(rows[iid(5)]) == (80, 80, 80)
        assert report.backends[0].weights
        assert report.in_sync

    def test_running_weight_not_the_desired_one_is_weight(self) -> None:
        """The running server has another weight: drift the next cycle's ``set server`` ends."""
        world = weighted(
            typed(5),
            runtime=[runtime_server(5, weight=10)],
            content=config_with(file_line(5, options=f"{OPTIONS} weight 80")),
        )
        row = rows_of(world)[iid(5)]
        assert row.verdict is Verdict.WEIGHT
        assert row.detail == "runs at weight 10; the next cycle sets 80"
        assert (row.weight_desired, row.weight_runtime, row.weight_file) == (80, 10, 80)

    def test_file_line_without_the_weight_is_weight(self) -> None:
        """The file line lacks the weight the server runs with: a rewrite, no reload."""
        world = weighted(
            typed(5), runtime=[runtime_server(5, weight=80)], content=config_with(file_line(5))
        )
        row = rows_of(world)[iid(5)]
        assert row.verdict is Verdict.WEIGHT
        assert row.detail == "the file line has no weight; the next cycle writes weight 80"

    def test_other_options_beside_a_weight_are_outdated(self) -> None:
        """Options the settings do not have need a reload: outdated wins over the weight."""
        world = weighted(
            typed(5),
            runtime=[runtime_server(5, weight=80)],
            content=config_with(file_line(5, options="check inter 2s weight 10")),
        )
        row = rows_of(world)[iid(5)]
        assert row.verdict is Verdict.OUTDATED
        assert "options 'check inter 2s', the settings 'check inter 1s'" in row.detail

    def test_instance_type_without_a_weight_is_a_warning_not_drift(self) -> None:
        """An unknown type gets the smallest weight and a warning; the backend is in sync."""
        world = weighted(typed(4, "c5.large"), typed(6, "m5.large"))
        world.converge()
        report = assess(world)
        (warning,) = report.backends[0].warnings
        assert "instance type 'm5.large' is not in [backend.weights]" in warning
        assert rows_of(world)[iid(6)].weight_desired == 10
        assert report.in_sync
        text = render(report, force_terminal=False)
        assert f"warning: {warning}" in text

    def test_without_weights_a_hand_set_weight_is_shown_but_no_drift(self) -> None:
        """No weights set: a running weight unlike the file line's is shown, never judged."""
        options = f"{OPTIONS} weight 5"
        world = World(
            group(instance(4)),
            options=options,
            runtime=[runtime_server(4, weight=0)],
            content=config_with(file_line(4, options=options)),
        )
        row = rows_of(world)[iid(4)]
        assert row.verdict is Verdict.OK
        assert (row.weight_desired, row.weight_runtime, row.weight_file) == (None, 0, 5)
        assert not assess(world).backends[0].weights


def zoned(*members: Instance, allbackups: bool = True, **world: Any) -> World:
    """A world whose backend routes by zone, the node being in ``NODE_ZONE``."""
    content = world.pop("content", CONFIG).replace(UNMANAGED_LINE, UNMANAGED_ACTIVE)
    if allbackups:
        content = content.replace(BALANCE, BALANCE + ALLBACKUPS)
    made = World(group(*members), content=content, zone_routing=True, **world)
    haproxy = replace(made.settings.haproxy, zone=NODE_ZONE)
    made.settings = replace(made.settings, haproxy=haproxy)
    return made


#: Two servers in the node's zone, two in another.
SPREAD = (typed(4), typed(5), typed(6, zone="eu-west-1b"), typed(7, zone="eu-west-1b"))


class TestZoneVerdicts:
    """Each server's zone, whether it is local, and the backup form zone routing calls for."""

    def test_converged_backend_keeps_other_zones_as_backups_and_is_in_sync(self) -> None:
        """Local zone healthy: the others' servers run as backups; every row ok, zone shown."""
        world = zoned(*SPREAD)
        world.converge()
        report = assess(world)
        backend = report.backends[0]
        assert backend.zones is not None
        assert backend.zones.mode is ZoneMode.LOCAL
        rows = rows_of(world)
        assert (rows[iid(4)].zone, rows[iid(4)].local) == (NODE_ZONE, True)
        assert (rows[iid(6)].zone, rows[iid(6)].local) == ("eu-west-1b", False)
        assert world.runtime.servers[BACKEND][server_name(6)].backup
        assert not world.runtime.servers[BACKEND][server_name(4)].backup
        assert report.in_sync
        text = render(report, force_terminal=False)
        assert "zone routing local: the local zone eu-west-1a carries the traffic" in text

    @pytest.mark.parametrize(
        ("sessions", "tail"),
        [(0, ""), (2, " once unused (2 sessions, 0 queued)")],
        ids=["idle", "in-use"],
    )
    def test_other_zones_server_running_active_is_zone(self, sessions: int, tail: str) -> None:
        """In local mode a remote server must be a backup: re-added as one, drained first."""
        world = zoned(
            *SPREAD,
            runtime=[
                runtime_server(4),
                runtime_server(5),
                runtime_server(6, sessions=sessions),
                runtime_server(7, backup=True),
            ],
            content=config_with(
                file_line(4),
                file_line(5),
                file_line(6, options=f"{OPTIONS} backup"),
                file_line(7, options=f"{OPTIONS} backup"),
            ),
        )
        row = rows_of(world)[iid(6)]
        assert row.verdict is Verdict.ZONE
        assert row.detail == (
            "active at runtime; re-added to backup: local zone carries the traffic" + tail
        )
        assert rows_of(world)[iid(7)].verdict is Verdict.OK

    def test_file_line_in_the_other_form_is_zone(self) -> None:
        """Running as a backup, but the file line is active: the next cycle rewrites it."""
        world = zoned(
            *SPREAD,
            runtime=[
                runtime_server(4),
                runtime_server(5),
                runtime_server(6, backup=True),
                runtime_server(7, backup=True),
            ],
            content=config_with(
                file_line(4),
                file_line(5),
                file_line(6),
                file_line(7, options=f"{OPTIONS} backup"),
            ),
        )
        row = rows_of(world)[iid(6)]
        assert row.verdict is Verdict.ZONE
        assert row.detail.startswith("the file line is active; the next cycle writes it to backup")

    def test_degraded_local_zone_spills_and_backups_are_zone(self) -> None:
        """One of two local servers down: below the threshold, remote backups become active."""
        world = zoned(
            *SPREAD,
            runtime=[
                runtime_server(4),
                runtime_server(5, op_state=0, check_result=2),
                runtime_server(6, backup=True),
                runtime_server(7, backup=True),
            ],
            content=config_with(
                file_line(4),
                file_line(5),
                file_line(6, options=f"{OPTIONS} backup"),
                file_line(7, options=f"{OPTIONS} backup"),
            ),
        )
        report = assess(world)
        backend = report.backends[0]
        assert backend.zones is not None
        assert backend.zones.mode is ZoneMode.SPILL
        rows = rows_of(world)
        assert rows[iid(6)].verdict is Verdict.ZONE
        assert rows[iid(6)].detail.startswith("a backup at runtime; re-added active: local zone")
        assert rows[iid(5)].verdict is Verdict.DOWN
        assert "zone routing spill: the local zone eu-west-1a is degraded" in render(
            report, force_terminal=False
        )

    def test_section_without_allbackups_is_refused(self) -> None:
        """Zone routing needs ``option allbackups``: the report refuses as the planner does."""
        report = assess(zoned(*SPREAD, allbackups=False))
        backend = report.backends[0]
        assert backend.status is Status.REFUSED
        assert "option allbackups" in (backend.refused or "")


def test_once_table_lists_the_warnings_and_the_new_changes() -> None:
    """``reconcile --once``'s table: weight and zone rows sort among the changes; warnings shown."""
    rows = (
        Row(server_name(4), iid(4), "127.0.1.4:8080", Change.UNCHANGED, "InService"),
        Row(server_name(5), iid(5), "127.0.1.5:8080", Change.WEIGHT, "weight 10 -> 80"),
        Row(server_name(6), iid(6), "127.0.1.6:8080", Change.ZONE, "to backup: local zone"),
    )
    warning = "instance type 'm5.large' is not in [backend.weights]; its 1 server gets weight 10"
    plan = Plan((BackendPlan("api", "api-asg", rows=rows, warnings=(warning,)),))
    out = Console(file=io.StringIO(), width=200, force_terminal=False)
    out.print(plan_table.plan_tables(plan))
    assert isinstance(out.file, io.StringIO)
    text = out.file.getvalue()
    assert text.index("zone ") < text.index("weight ") < text.index("unchanged")
    assert "1 weight, 1 zone, 1 unchanged" in text
    # The caption wraps to the table's width.
    assert f"warning: {warning}" in " ".join(text.split())
