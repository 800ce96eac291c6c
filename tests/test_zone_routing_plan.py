"""
Zone routing in the planner, over fakes: which form each server takes (active, or backup in
LOCAL mode), how a server changes form without a reload and without losing the traffic it
carries, and the section's ``option allbackups`` that HAProxy's own failover needs.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.fakes import FakeStore
from reconciler.core import config_parse, zones
from reconciler.core.model import (
    ADMIN_FDRAIN,
    ADMIN_FMAINT,
    CHECK_RESULT_PASSED,
    BackendPlan,
    Change,
    Group,
    Instance,
    RuntimeServer,
    StepKind,
    ZoneCount,
    ZoneMode,
    ZoneStatus,
)
from reconciler.core.settings import Weights
from reconciler.cycle import config_problems, run_cycle
from tests.support.worlds import (
    ASG,
    BACKEND,
    CONFIG,
    PREFIX,
    UNMANAGED_LINE,
    World,
    instance,
    runtime_server,
)


NODE = "eu-west-1a"
ZONES = {1: NODE, 2: NODE, 3: "eu-west-1b", 4: "eu-west-1b", 5: "eu-west-1c", 6: "eu-west-1c"}
#: With zone routing, no hand-written backup server may share the failover (see TestRefusals).
ROUTED = CONFIG.replace(
    b"    balance roundrobin\n", b"    balance roundrobin\n    option allbackups\n"
).replace(UNMANAGED_LINE, b"")


def name(n: int) -> str:
    return f"{PREFIX}i-{n:017x}"


def placed(n: int, zone: str | None) -> Instance:
    """Instance *n* in *zone*."""
    return replace(instance(n), zone=zone)


def routed(
    zones: dict[int, str | None] | None = None,
    *,
    runtime: list[RuntimeServer] | None = None,
    content: bytes = ROUTED,
    node: str | None = NODE,
    **binding: Any,
) -> World:
    """A world whose backend routes by zone, the node in *node*."""
    members = [placed(n, zone) for n, zone in (ZONES if zones is None else zones).items()]
    world = World(
        Group(ASG, len(members), tuple(members)),
        runtime=runtime,
        content=content,
        zone_routing=True,
        **binding,
    )
    haproxy = replace(world.settings.haproxy, zone=node)
    world.settings = replace(world.settings, haproxy=haproxy)
    return world


def cycle(world: World) -> BackendPlan:
    """One cycle; its plan of the backend."""
    result = run_cycle(world.settings, world.ports)
    assert result.ok, result.errors
    return result.plan.backends[0]


def forms(world: World) -> dict[int, bool]:
    """Whether each managed server runs as a backup, by instance number."""
    return {
        int(s.name[len(PREFIX) + 2 :], 16): s.backup
        for s in world.runtime.servers[BACKEND].values()
        if s.name.startswith(PREFIX)
    }


def fail(world: World, *numbers: int) -> None:
    """The health checks of these servers fail (HAProxy takes them out of traffic)."""
    for n in numbers:
        server = world.runtime.servers[BACKEND][name(n)]
        world.runtime.servers[BACKEND][name(n)] = replace(server, op_state=0, check_result=2)


def recover(world: World, *numbers: int) -> None:
    """The health checks of these servers pass again."""
    for n in numbers:
        server = world.runtime.servers[BACKEND][name(n)]
        world.runtime.servers[BACKEND][name(n)] = replace(
            server, op_state=2, check_result=CHECK_RESULT_PASSED
        )


def converged() -> World:
    """Six servers over three zones, converged: the node's two active, the others backups."""
    world = routed()
    world.converge()
    return world


REMOTE = {3: True, 4: True, 5: True, 6: True}
LOCAL_ACTIVE = {1: False, 2: False}


class TestModes:
    """LOCAL while the local zone can carry the traffic, SPILL when it cannot."""

    def test_healthy_local_zone_makes_the_other_zones_backups(self) -> None:
        """At runtime and in the file, the other zones' servers are backups."""
        world = converged()
        assert forms(world) == {**LOCAL_ACTIVE, **REMOTE}
        decided = cycle(world)
        assert decided.zones is not None
        assert decided.zones.mode is ZoneMode.LOCAL
        assert decided.zones.local == ZoneCount(2, 2, 2)
        assert decided.zones.needed == pytest.approx(0.75 * 6 / 3)
        assert decided.watches_health
        assert not decided.pending
        assert decided.steps == ()
        assert b"127.0.1.3:8080 id 4 check inter 1s backup\n" in world.store.content
        assert b"127.0.1.1:8080 id 2 check inter 1s\n" in world.store.content
        assert world.store.reloads == 0

    def test_degraded_local_zone_spills_at_once_without_a_reload(self) -> None:
        """One of two local servers fails: the backups are added again, active and ready."""
        world = converged()
        fail(world, 1)
        decided = cycle(world)
        assert decided.zones is not None
        assert decided.zones.mode is ZoneMode.SPILL
        kinds = [(s.kind, s.server, s.proven) for s in decided.steps if s.server == name(3)]
        assert kinds == [
            (StepKind.MAINT, name(3), False),
            (StepKind.DELETE, name(3), False),
            (StepKind.ADD, name(3), True),
        ]
        (row,) = [r for r in decided.rows if r.server == name(3)]
        assert row.change is Change.ZONE
        assert row.reason == "active: local zone degraded, healthy capacity 1, 1.25 needed; ready"
        assert forms(world) == {1: False, 2: False, 3: False, 4: False, 5: False, 6: False}
        assert all(s.admin_state == 0 for s in world.runtime.servers[BACKEND].values())
        assert b"backup\n" not in world.store.content.replace(b"never touched\n", b"")
        assert world.store.reloads == 0

    def test_recovered_local_zone_drains_the_busy_remote_servers_first(self) -> None:
        """Traffic returns at once (drain), then the drained servers become backups again."""
        world = converged()
        fail(world, 1)
        cycle(world)
        recover(world, 1)
        for n in (3, 4):
            server = world.runtime.servers[BACKEND][name(n)]
            world.runtime.servers[BACKEND][name(n)] = replace(server, sessions=2)
        decided = cycle(world)
        assert decided.zones is not None
        assert decided.zones.mode is ZoneMode.LOCAL
        assert [s.kind for s in decided.steps if s.server == name(3)] == [StepKind.DRAIN]
        # Idle ones change form at once.
        assert [s.kind for s in decided.steps if s.server == name(5)] == [
            StepKind.MAINT,
            StepKind.DELETE,
            StepKind.ADD,
        ]
        assert decided.pending
        world.runtime.tick()
        again = cycle(world)
        assert [(s.kind, s.proven) for s in again.steps if s.server == name(3)] == [
            (StepKind.MAINT, False),
            (StepKind.DELETE, False),
            (StepKind.ADD, True),
        ]
        assert forms(world) == {**LOCAL_ACTIVE, **REMOTE}
        assert world.converge() == 1
        assert world.store.reloads == 0

    def test_a_dead_local_zone_keeps_the_backups_that_carry_everything(self) -> None:
        """Every local server fails: HAProxy's backups take over; the controller moves nothing."""
        world = converged()
        fail(world, 1, 2)
        decided = cycle(world)
        assert decided.zones is not None
        assert decided.zones.mode is ZoneMode.LOCAL
        assert decided.steps == ()
        assert forms(world) == {**LOCAL_ACTIVE, **REMOTE}

    def test_a_dead_local_zone_after_a_spill_stays_spilled(self) -> None:
        """Spilled, then the last local server fails too: every remote server stays active."""
        world = converged()
        fail(world, 1)
        cycle(world)
        fail(world, 2)
        decided = cycle(world)
        assert decided.zones is not None
        assert decided.zones.mode is ZoneMode.SPILL
        assert decided.steps == ()

    def test_no_local_server_at_all_spills(self) -> None:
        """The group has no instance in the node's zone: every server is active."""
        world = routed({3: "eu-west-1b", 5: "eu-west-1c"})
        world.converge()
        assert forms(world) == {3: False, 5: False}
        decided = cycle(world)
        assert decided.zones is not None
        assert decided.zones.mode is ZoneMode.SPILL

    def test_an_instance_without_a_zone_is_never_local(self) -> None:
        """No zone from DescribeInstances: the server counts in zone "unknown", a backup."""
        world = routed({1: NODE, 2: None})
        world.converge()
        assert forms(world) == {1: False, 2: True}
        decided = cycle(world)
        assert decided.zones is not None
        assert decided.zones.zones["unknown"] == ZoneCount(1, 1, 1)

    def test_weights_are_the_capacity_of_a_zone(self) -> None:
        """One large local server carries more than two small remote ones."""
        world = routed(
            {1: NODE, 3: "eu-west-1b", 4: "eu-west-1b"},
            weights=Weights(capacity=False, table={"big": 200, "small": 10}),
        )
        group = world.membership.groups[ASG]
        kinds = {1: "big", 3: "small", 4: "small"}
        members = tuple(
            replace(i, instance_type=kinds[int(i.instance_id[2:], 16)]) for i in group.instances
        )
        world.membership.groups[ASG] = replace(group, instances=members)
        world.converge()
        decided = cycle(world)
        assert decided.zones is not None
        assert decided.zones.local == ZoneCount(1, 1, 200)
        assert decided.zones.mode is ZoneMode.LOCAL
        assert b"check inter 1s weight 10 backup\n" in world.store.content

    def test_threshold_one_spills_on_any_imbalance(self) -> None:
        """zone_threshold = 1: the local zone needs its full even share."""
        world = routed({1: NODE, 3: "eu-west-1b", 4: "eu-west-1b"}, zone_threshold=1.0)
        world.converge()
        decided = cycle(world)
        assert decided.zones is not None
        # 1 local of 3 healthy over 2 zones: needs 1.5.
        assert decided.zones.mode is ZoneMode.SPILL

    def test_cross_zone_share_from_the_load_balancer_counters(self) -> None:
        """lbtot of the other zones' servers over all: the share sent cross-zone."""
        world = converged()
        counts = {1: 30, 2: 30, 3: 20, 4: 0, 5: 10, 6: 10}
        for n, chosen in counts.items():
            server = world.runtime.servers[BACKEND][name(n)]
            world.runtime.servers[BACKEND][name(n)] = replace(server, chosen=chosen)
        decided = cycle(world)
        assert decided.zones is not None
        assert decided.zones.cross_zone_share == pytest.approx(0.4)
        fresh = cycle(converged()).zones
        assert fresh is not None
        assert fresh.cross_zone_share is None


class TestChangingForm:
    """A server changes form through MAINT, DELETE and ADD, never losing traffic."""

    def test_a_busy_backup_is_not_drained(self) -> None:
        """A backup in use carries what no active server can: it changes form once unused."""
        world = converged()
        fail(world, 1)
        server = world.runtime.servers[BACKEND][name(3)]
        world.runtime.servers[BACKEND][name(3)] = replace(server, sessions=4)
        decided = cycle(world)
        assert [s for s in decided.steps if s.server == name(3)] == []
        (row,) = [r for r in decided.rows if r.server == name(3)]
        assert row.change is Change.ZONE
        assert row.reason.endswith("once the backups are unused")
        assert decided.pending

    def test_busy_actives_are_not_drained_without_a_server_in_place(self) -> None:
        """
        The local servers run as backups (the node moved zones): the busy remote actives keep
        their traffic until a local server serves active.
        """
        runtime = [
            runtime_server(1, backup=True),
            runtime_server(3, sessions=2),
            runtime_server(5, sessions=2),
        ]
        world = routed({1: NODE, 3: "eu-west-1b", 5: "eu-west-1c"}, runtime=runtime)
        decided = cycle(world)
        assert decided.zones is not None
        assert decided.zones.mode is ZoneMode.LOCAL
        kinds = {s.server: s.kind for s in decided.steps if s.kind is not StepKind.DELETE}
        assert StepKind.DRAIN not in kinds.values()
        assert [s.kind for s in decided.steps if s.server == name(1)] == [
            StepKind.MAINT,
            StepKind.DELETE,
            StepKind.ADD,
        ]
        # Next cycle a local server serves active: now the remote ones drain.
        again = cycle(world)
        assert [s.kind for s in again.steps if s.server == name(3)] == [StepKind.DRAIN]

    def test_sessions_that_outlive_the_drain_timeout_are_cut(self) -> None:
        """A server draining to become a backup is cut at the drain timeout, then re-added."""
        world = converged()
        fail(world, 1)
        cycle(world)
        recover(world, 1)
        server = world.runtime.servers[BACKEND][name(3)]
        world.runtime.servers[BACKEND][name(3)] = replace(
            server, admin_state=ADMIN_FDRAIN, sessions=1, seconds_in_state=5
        )
        decided = cycle(world)
        assert [s.kind for s in decided.steps if s.server == name(3)] == [
            StepKind.MAINT,
            StepKind.KILL_SESSIONS,
        ]
        # In maintenance now, its check state unknown: added again, warming up.
        again = cycle(world)
        assert [(s.kind, s.proven) for s in again.steps if s.server == name(3)] == [
            (StepKind.DELETE, False),
            (StepKind.ADD, False),
        ]

    def test_a_failing_server_is_added_again_warming_up(self) -> None:
        """Only a server that was up is added ready at once."""
        world = routed(zone_threshold=1.0)
        world.converge()
        fail(world, 1, 3)
        decided = cycle(world)
        add = next(s for s in decided.steps if s.server == name(3) and s.kind is StepKind.ADD)
        assert not add.proven
        assert world.runtime.servers[BACKEND][name(3)].admin_state == ADMIN_FDRAIN

    def test_a_server_in_maintenance_changes_form_without_a_second_maint(self) -> None:
        """Already in maintenance and unused: deleted and added in its new form."""
        world = converged()
        server = world.runtime.servers[BACKEND][name(1)]
        world.runtime.servers[BACKEND][name(1)] = replace(
            server, admin_state=ADMIN_FMAINT, backup=True
        )
        decided = cycle(world)
        assert [s.kind for s in decided.steps if s.server == name(1)] == [
            StepKind.DELETE,
            StepKind.ADD,
        ]


class TestRefusals:
    """What zone routing needs of the section and of the settings."""

    MESSAGE = (
        "backend 'api': zone_routing needs 'option allbackups' in its section (the other zones' "
        "servers are backups and must all take over when the local zone fails); add the line "
        "and reload HAProxy once"
    )

    def test_without_option_allbackups_the_backend_is_refused(self) -> None:
        """Nothing is sent and the file is left as it is; the preflight check says the same."""
        world = routed(content=CONFIG)
        result = run_cycle(world.settings, world.ports)
        assert result.plan.backends[0].refused == self.MESSAGE
        assert world.runtime.commands == []
        assert world.store.content == CONFIG
        assert config_problems(world.settings, FakeStore(CONFIG).read()) == [self.MESSAGE]

    def test_option_allbackups_from_the_defaults_is_enough(self) -> None:
        """The effective option counts: inherited from the defaults section."""
        content = CONFIG.replace(b"    mode http\n", b"    mode http\n    option allbackups\n")
        world = routed(content=content.replace(UNMANAGED_LINE, b""))
        assert cycle(world).refused is None

    def test_no_option_allbackups_in_the_section_cancels_the_defaults(self) -> None:
        """``no option allbackups`` in the section wins over the defaults."""
        content = CONFIG.replace(b"    mode http\n", b"    mode http\n    option allbackups\n")
        content = content.replace(
            b"    balance roundrobin\n", b"    balance roundrobin\n    no option allbackups\n"
        )
        world = routed(content=content)
        assert run_cycle(world.settings, world.ports).plan.backends[0].refused == self.MESSAGE

    def test_a_hand_written_backup_server_refuses_the_backend(self) -> None:
        """
        With ``option allbackups`` it would take a share of every failover: a sorry page (or a
        server that does not answer) would get the local zone's requests with the other zones.
        """
        content = ROUTED.replace(
            b"    option allbackups\n", b"    option allbackups\n" + UNMANAGED_LINE
        )
        world = routed(content=content)
        result = run_cycle(world.settings, world.ports)
        assert result.plan.backends[0].refused == (
            "backend 'api': zone_routing makes the other zones' servers backups, and with "
            "'option allbackups' the hand-written backup server 'maintenance-page' (line 11) "
            "would take a share of their failover traffic; remove its 'backup' word or the "
            "line, or turn zone_routing off"
        )
        assert world.runtime.commands == []
        assert world.store.content == content

    def test_an_unresolved_zone_refuses_the_backend(self) -> None:
        """zone = "auto" that the runner could not resolve: no guess."""
        world = routed(node="auto")
        refused = run_cycle(world.settings, world.ports).plan.backends[0].refused
        assert refused is not None
        assert "zone_routing needs the node's Availability Zone" in refused
        assert world.runtime.commands == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(b"backend b1\n", False, id="absent"),
        pytest.param(b"backend b1\n option allbackups\n", True, id="own"),
        pytest.param(b"defaults\n option allbackups\nbackend b1\n", True, id="inherited"),
        pytest.param(
            b"defaults\n option allbackups\nbackend b1\n no option allbackups\n", False, id="no"
        ),
        pytest.param(
            b"defaults\n option allbackups\ndefaults\nbackend b1\n", False, id="later-defaults"
        ),
        pytest.param(
            b"defaults d1\n option allbackups\ndefaults from d1\nbackend b1\n", True, id="chain"
        ),
        pytest.param(
            b"defaults\n option allbackups\nbackend b1\n no option allbackups\n"
            b" default option allbackups\n",
            True,
            id="default-restores",
        ),
        pytest.param(
            b"backend b1\n.if defined(X)\n option allbackups\n.endif\n", False, id="conditional"
        ),
        pytest.param(b"backend b1\n option allbackups\n balance first\n", True, id="with-balance"),
    ],
)
def test_effective_option_allbackups(text: bytes, expected: bool) -> None:
    """``option allbackups`` as HAProxy applies it: the section's own last word, or its defaults."""
    found = config_parse.backend(config_parse.parse(text), "b1")
    assert found is not None
    assert found.allbackups is expected


# -- properties ------------------------------------------------------------------------------------

PROPERTY_ZONES = [NODE, NODE, "eu-west-1b", "eu-west-1c", None]


@st.composite
def zone_worlds(draw: st.DrawFn) -> World:
    """Instances over the zones, and managed servers at runtime in any form and state."""
    numbers = draw(st.lists(st.integers(1, 12), unique=True, min_size=1, max_size=7))
    zones = {n: draw(st.sampled_from(PROPERTY_ZONES)) for n in numbers}
    runtime = [
        runtime_server(
            n,
            backup=draw(st.booleans()),
            op_state=draw(st.sampled_from([0, 2, 2])),
            admin_state=draw(st.sampled_from([0, 0, ADMIN_FDRAIN, ADMIN_FMAINT])),
            sessions=draw(st.integers(0, 2)),
            seconds_in_state=draw(st.sampled_from([0, 100])),
            check_result=draw(st.sampled_from([0, 2, CHECK_RESULT_PASSED])),
        )
        for n in draw(st.lists(st.sampled_from(numbers), unique=True))
    ]
    threshold = draw(st.sampled_from([0.25, 0.75, 1.0]))
    return routed(zones, runtime=runtime, zone_threshold=threshold)


def usable_in_place(world: World) -> set[str]:
    """The managed servers that take requests (active or backup), at their instance's address."""
    return {
        s.name
        for s in world.runtime.servers[BACKEND].values()
        if s.name.startswith(PREFIX) and s.usable and s.address == f"127.0.1.{int(s.name[-2:], 16)}"
    }


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(zone_worlds())
def test_a_healthy_server_never_loses_both_forms(world: World) -> None:
    """A usable server of a serving instance still runs after the cycle, in either form."""
    before = usable_in_place(world)
    cycle(world)
    assert before <= set(world.runtime.servers[BACKEND])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(zone_worlds())
def test_local_mode_makes_exactly_the_remote_lines_backups(world: World) -> None:
    """In LOCAL mode a line is a backup exactly when its instance is outside the node's zone."""
    decided = cycle(world)
    assert decided.zones is not None
    zone_of = {i.instance_id: i.zone for i in world.membership.groups[ASG].instances}
    for line in decided.lines or ():
        remote = zone_of[line.name[len(PREFIX) :]] != NODE
        assert line.backup is (decided.zones.mode is ZoneMode.LOCAL and remote)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(zone_worlds())
def test_steps_never_leave_the_backend_without_a_usable_server(world: World) -> None:
    """Some server took requests before the cycle: some server takes them after it, each cycle."""
    for _ in range(4):
        had = bool(usable_in_place(world))
        decided = cycle(world)
        if had:
            assert usable_in_place(world), decided.steps
        world.runtime.tick()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(PROPERTY_ZONES), st.booleans(), st.integers(1, 256)),
        min_size=1,
        max_size=8,
    ),
    st.lists(st.booleans(), min_size=8, max_size=8),
    st.sampled_from([0.25, 0.75, 1.0]),
)
def test_the_mode_does_not_depend_on_the_form_the_servers_run_in(
    servers: list[tuple[str | None, bool, int]], backups: list[bool], threshold: float
) -> None:
    """
    While the local zone has healthy capacity, the mode follows from health and weights alone:
    turning servers into backups or back never changes it, so it cannot flip by itself.
    """
    members = [(name(n), placed(n, zone)) for n, (zone, _, _) in enumerate(servers, 1)]
    weight = {i.instance_id: w for (_, i), (_, _, w) in zip(members, servers, strict=True)}
    runtime = {
        name(n): runtime_server(n, op_state=2 if up else 0)
        for n, (_, up, _) in enumerate(servers, 1)
    }
    reformed = {
        server: replace(running, backup=backup)
        for (server, running), backup in zip(runtime.items(), backups, strict=False)
    }

    def decided(run: dict[str, RuntimeServer]) -> ZoneStatus:
        return zones.decide(
            NODE, threshold, members, run, lambda i: weight[i.instance_id], lambda _: "x"
        )

    first, second = decided(runtime), decided(reformed)
    assert first.zones == second.zones
    if first.local.healthy_capacity > 0 or NODE not in first.zones:
        assert first.mode is second.mode
    healthy = sum(c.healthy_capacity for c in first.zones.values())
    assert first.needed == pytest.approx(threshold * healthy / len(first.zones))
