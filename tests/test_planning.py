"""
The planner and one cycle over fakes: convergence, idempotence, minimality and the safety rules.

These drive ``reconcile.run_cycle`` over the worlds of tests/support/worlds.py (the hand-written
fakes of harness/fakes.py) so that hypothesis can try thousands of starting states; the real
HAProxy and moto are exercised in the end-to-end tests.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.core import plan as planner
from reconciler.core.model import (
    ADMIN_FDRAIN,
    ADMIN_FMAINT,
    LAUNCHING,
    TERMINATING,
    Change,
    Group,
    Instance,
    LifecycleHook,
    LifecycleResult,
    Observation,
    StepKind,
    is_ipv4_address,
)
from reconciler.cycle import observe, run_cycle
from tests.support.worlds import (
    ASG,
    BACKEND,
    CONFIG,
    PREFIX,
    STATES,
    UNMANAGED_LINE,
    Case,
    World,
    group,
    instance,
    make_settings,
    runtime_server,
    unknown_to_ec2,
    worlds,
)


def expected(g: Group) -> dict[str, str]:
    """The servers a group's serving instances call for."""
    return {f"{PREFIX}{i.instance_id}": f"{i.private_ip}:8080" for i in g.instances if i.serving}


class TestConvergence:
    """From any state, cycles reach exactly the serving set and then change nothing."""

    def test_from_empty_adds_every_serving_instance_after_its_check(self) -> None:
        """New servers are held in drain until their first check passes, then made ready."""
        g = group(instance(4), instance(5))
        world = World(g)
        first = run_cycle(world.settings, world.ports)
        kinds = [s.kind for s in first.plan.backends[0].steps]
        assert kinds == [StepKind.ADD, StepKind.ADD]
        assert world.runtime.servers[BACKEND][f"{PREFIX}i-{4:017x}"].admin_state == ADMIN_FDRAIN
        assert first.pending
        world.runtime.tick()
        world.converge()
        assert world.runtime_servers() == expected(g)
        assert world.file_servers() == expected(g)

    def test_second_run_sends_nothing_and_keeps_the_file(self) -> None:
        """Idempotence: a converged backend gets no command and an identical file."""
        g = group(instance(4), instance(5))
        world = World(g)
        world.converge()
        before, sent = world.store.content, len(world.runtime.commands)
        result = run_cycle(world.settings, world.ports)
        assert world.store.content == before
        assert len(world.runtime.commands) == sent
        assert {r.change for r in result.plan.backends[0].rows} == {Change.UNCHANGED}

    def test_hand_written_server_is_never_touched(self) -> None:
        """The unmanaged backup line keeps its bytes and its runtime server stays."""
        world = World(group(instance(4)))
        world.converge()
        assert UNMANAGED_LINE in world.store.content
        assert "maintenance-page" in world.runtime.servers[BACKEND]

    def test_scale_in_drains_then_deletes(self) -> None:
        """A leaving server with sessions goes drain, waits, then maint and del."""
        busy = runtime_server(5, sessions=3)
        world = World(
            group(instance(4), instance(5, "Terminating:Wait")), runtime=[runtime_server(4), busy]
        )
        first = run_cycle(world.settings, world.ports)
        assert [s.kind for s in first.plan.backends[0].steps] == [StepKind.DRAIN]
        assert world.runtime.servers[BACKEND][busy.name].draining
        world.runtime.tick()
        world.converge()
        assert busy.name not in world.runtime.servers[BACKEND]
        assert busy.name not in world.file_servers()

    @pytest.mark.parametrize("how", ["terminated", "left-the-group"])
    def test_gone_instance_goes_to_maintenance_and_its_sessions_may_finish(self, how: str) -> None:
        """
        A plain scale-in (no hook): the server goes straight to maintenance, which takes no new
        request, and the requests in flight finish; then it is deleted. Nothing is cut.
        """
        members = [instance(4)]
        if how == "terminated":
            members.append(instance(5, "Terminated", "terminated"))
        busy = runtime_server(5, sessions=2)
        world = World(group(*members), runtime=[runtime_server(4), busy])
        first = run_cycle(world.settings, world.ports)
        assert [s.kind for s in first.plan.backends[0].steps] == [StepKind.MAINT]
        assert first.pending
        world.runtime.servers[BACKEND][busy.name] = replace(
            world.runtime.servers[BACKEND][busy.name], seconds_in_state=4
        )
        waiting = run_cycle(world.settings, world.ports)
        assert waiting.plan.backends[0].steps == ()
        assert waiting.pending
        world.runtime.tick()
        world.converge()
        assert busy.name not in world.runtime.servers[BACKEND]
        assert not any(c.startswith("shutdown sessions") for c in world.runtime.commands)

    def test_gone_instance_sessions_are_cut_after_the_drain_timeout(self) -> None:
        """Sessions on a gone instance's server that outlive drain_timeout are cut."""
        stuck = runtime_server(5, admin_state=ADMIN_FMAINT, sessions=1, seconds_in_state=5)
        world = World(group(instance(4)), runtime=[runtime_server(4), stuck])
        kinds = [s.kind for s in run_cycle(world.settings, world.ports).plan.backends[0].steps]
        assert kinds == [StepKind.KILL_SESSIONS]

    def test_gone_while_draining_keeps_the_time_already_drained(self) -> None:
        """A draining server whose instance dies: maintenance, cut only past the drain timeout."""
        terminated = group(instance(4), instance(5, "Terminated", "terminated"))
        early = runtime_server(5, admin_state=ADMIN_FDRAIN, sessions=1, seconds_in_state=2)
        world = World(terminated, runtime=[runtime_server(4), early])
        kinds = [s.kind for s in run_cycle(world.settings, world.ports).plan.backends[0].steps]
        assert kinds == [StepKind.MAINT]
        late = replace(early, seconds_in_state=5)
        world = World(terminated, runtime=[runtime_server(4), late])
        kinds = [s.kind for s in run_cycle(world.settings, world.ports).plan.backends[0].steps]
        assert kinds == [StepKind.MAINT, StepKind.KILL_SESSIONS]

    def test_gone_instance_with_zero_drain_timeout_is_cut_at_once(self) -> None:
        """drain_timeout = 0 keeps meaning "cut at once": maintenance and cut in one cycle."""
        world = World(
            group(instance(4), instance(5, "Terminated", "terminated")),
            runtime=[runtime_server(4), runtime_server(5, sessions=2)],
            drain_timeout=0,
        )
        first = run_cycle(world.settings, world.ports)
        kinds = [s.kind for s in first.plan.backends[0].steps]
        assert kinds == [StepKind.MAINT, StepKind.KILL_SESSIONS]

    def test_drain_timeout_cuts_sessions(self) -> None:
        """Sessions that outlive drain_timeout are cut and the server goes to maintenance."""
        stuck = runtime_server(5, admin_state=ADMIN_FDRAIN, sessions=1, seconds_in_state=6)
        world = World(group(instance(4)), runtime=[runtime_server(4), stuck])
        kinds = [s.kind for s in run_cycle(world.settings, world.ports).plan.backends[0].steps]
        assert kinds == [StepKind.MAINT, StepKind.KILL_SESSIONS]

    def test_address_change_is_applied_in_place(self) -> None:
        """A server whose address differs is moved through maintenance and warmed up again."""
        moved = runtime_server(4, address="127.0.1.99")
        world = World(group(instance(4)), runtime=[moved])
        first = run_cycle(world.settings, world.ports)
        assert [s.kind for s in first.plan.backends[0].steps] == [StepKind.READDRESS]
        world.runtime.tick()
        world.converge()
        assert world.runtime_servers() == expected(group(instance(4)))

    def test_without_socket_edits_the_file_and_reloads(self) -> None:
        """File mode: one write, one reload, then nothing."""
        g = group(instance(4), instance(5))
        world = World(g, socket=False)
        world.converge()
        assert world.file_servers() == expected(g)
        assert world.store.reloads == 1
        run_cycle(world.settings, world.ports)
        assert world.store.reloads == 1

    def test_new_options_need_a_reload(self) -> None:
        """New server_options cannot be applied at runtime: file rewritten, HAProxy reloaded."""
        world = World(group(instance(4)))
        world.converge()
        world.settings = make_settings(options="check inter 2s")
        world.converge()
        assert world.store.reloads == 1
        assert b"inter 2s" in world.store.content


class TestSafety:
    """Partial or suspicious data never removes servers."""

    def test_failed_group_read_refuses_the_backend(self) -> None:
        """An AWS error for the group: refused, nothing sent, file unchanged."""
        world = World(group(instance(4)), runtime=[runtime_server(9)])
        world.membership.errors[ASG] = "DescribeAutoScalingGroups failed"
        result = run_cycle(world.settings, world.ports)
        assert result.plan.backends[0].refused == "DescribeAutoScalingGroups failed"
        assert not result.ok
        assert world.runtime.commands == []
        assert world.store.content == CONFIG

    def test_missing_group_is_an_error_not_an_empty_group(self) -> None:
        """A group that does not exist refuses the backend instead of emptying it."""
        world = World(group(instance(4)), runtime=[runtime_server(4)])
        world.membership.groups.clear()
        result = run_cycle(world.settings, world.ports)
        assert "not found" in (result.plan.backends[0].refused or "")
        assert world.runtime.commands == []

    def test_never_empty_while_desired_capacity_is_above_zero(self) -> None:
        """Zero serving instances with desired capacity 2 keeps the current servers."""
        g = group(instance(4, "Pending"), instance(5, "Pending"), desired=2)
        world = World(g, runtime=[runtime_server(1), runtime_server(2)])
        result = run_cycle(world.settings, world.ports)
        assert result.plan.backends[0].held
        assert world.runtime.commands == []

    def test_empty_group_at_zero_capacity_empties_the_backend(self) -> None:
        """A group really scaled to zero removes every managed server."""
        world = World(group(desired=0), runtime=[runtime_server(1)])
        world.converge()
        assert world.runtime_servers() == {}
        assert world.file_servers() == {}

    def test_runtime_read_failure_refuses_every_backend(self) -> None:
        """No runtime observation with a socket configured: nothing is planned."""
        world = World(group(instance(4)))
        del world.runtime.servers[BACKEND]
        result = run_cycle(world.settings, world.ports)
        assert "no backend 'api'" in (result.plan.backends[0].refused or "")

    def test_static_algorithm_is_refused_with_a_socket(self) -> None:
        """A backend that cannot take dynamic servers is refused before anything is sent."""
        content = CONFIG.replace(b"balance roundrobin", b"balance static-rr")
        world = World(group(instance(4)), content=content)
        result = run_cycle(world.settings, world.ports)
        assert "static-rr" in (result.plan.backends[0].refused or "")
        assert world.runtime.commands == []


# -- properties ------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_any_state_converges_to_the_serving_set(case: Case) -> None:
    """
    Applying plans until nothing is pending reaches the serving set, while the servers of
    instances whose reads disagree stay exactly as they were; a further plan is empty.
    """
    g, runtime, socket = case
    doubtful = {f"{PREFIX}{instance_id}" for instance_id in g.doubts}
    kept = {s.name: (s.address, s.admin_state) for s in runtime if s.name in doubtful}
    world = World(g, socket=socket, runtime=runtime)
    result = run_cycle(world.settings, world.ports)
    backend_plan = result.plan.backends[0]
    if backend_plan.held:
        assert world.runtime.commands == []
        assert world.store.content == CONFIG
        return
    world.runtime.tick()
    world.converge()
    assert world.file_servers() == expected(g)
    if socket:
        now = world.runtime.servers[BACKEND]
        assert {n: (s.address, s.admin_state) for n, s in now.items() if n in doubtful} == kept
        ready = {n: f"{address}:8080" for n, (address, admin) in kept.items() if admin == 0}
        assert world.runtime_servers() == expected(g) | ready
    assert UNMANAGED_LINE in world.store.content
    assert "maintenance-page" in world.runtime.servers[BACKEND]
    before, sent = world.store.content, len(world.runtime.commands)
    again = run_cycle(world.settings, world.ports)
    assert again.plan.backends[0].steps == ()
    assert world.store.content == before
    assert len(world.runtime.commands) == sent


@settings(max_examples=100, deadline=None)
@given(worlds())
def test_unmanaged_servers_are_never_planned(case: Case) -> None:
    """No step ever names a server outside the managed prefix + instance id pattern."""
    g, runtime, socket = case
    world = World(g, socket=socket, runtime=runtime)
    decided = planner.compute(world.settings, _observe(world))
    binding = world.settings.backends[0]
    for step in decided.backends[0].steps:
        assert binding.instance_of(step.server) is not None


@settings(max_examples=100, deadline=None)
@given(worlds(), st.sampled_from(["aws", "runtime"]))
def test_a_failed_read_never_yields_removals(case: Case, failing: str) -> None:
    """Whichever read fails, the backend's plan has no step and no file change."""
    g, runtime, _ = case
    world = World(g, socket=True, runtime=runtime)
    if failing == "aws":
        world.membership.errors[ASG] = "throttled"
    else:
        del world.runtime.servers[BACKEND]
    decided = planner.compute(world.settings, _observe(world)).backends[0]
    assert decided.refused
    assert decided.steps == ()
    assert decided.lines is None


def _observe(world: World) -> Observation:
    return observe(world.settings, world.ports)[0]


@pytest.mark.parametrize("socket", [True, False], ids=["runtime", "file-only"])
def test_plan_rows_name_instance_address_and_reason(socket: bool) -> None:
    """Report rows carry the instance id, address and a reason for every managed server."""
    world = World(
        group(instance(4), instance(5, "Standby")), socket=socket, runtime=[runtime_server(5)]
    )
    if not socket:
        line = b"    server api-i-00000000000000005 127.0.1.5:8080 id 105 check inter 1s\n"
        world.store.content = CONFIG.replace(UNMANAGED_LINE, UNMANAGED_LINE + line)
    rows = {r.instance_id: r for r in run_cycle(world.settings, world.ports).plan.backends[0].rows}
    assert rows[f"i-{4:017x}"].change is Change.ADD
    assert rows[f"i-{4:017x}"].address == "127.0.1.4:8080"
    assert "Standby" in rows[f"i-{5:017x}"].reason


TERMINATE_HOOK = LifecycleHook("drain-first", TERMINATING, heartbeat_timeout=60)
LAUNCH_HOOK = LifecycleHook("warm-first", LAUNCHING, heartbeat_timeout=60)


def hooked(*instances: Instance, hooks: tuple[LifecycleHook, ...], desired: int) -> Group:
    """A group with lifecycle hooks."""
    return Group(ASG, desired, instances, hooks)


def results(world: World) -> list[tuple[str, LifecycleResult]]:
    """The lifecycle actions sent so far, without heartbeats."""
    return [
        (a.instance_id, a.result)
        for a in world.lifecycle.actions
        if a.result is not LifecycleResult.HEARTBEAT
    ]


class TestLifecycleHooks:
    """Lifecycle actions are completed only when HAProxy is ready for them."""

    def test_terminate_completes_only_after_the_drain(self) -> None:
        """A Terminating:Wait instance is drained, deleted, then (next cycle) continued."""
        leaving = instance(5, "Terminating:Wait")
        g = hooked(instance(4), leaving, hooks=(TERMINATE_HOOK,), desired=1)
        world = World(
            g,
            runtime=[runtime_server(4), runtime_server(5, sessions=2)],
            complete_lifecycle_actions=True,
        )
        run_cycle(world.settings, world.ports)
        assert results(world) == []
        assert world.lifecycle.actions[0].result is LifecycleResult.HEARTBEAT
        world.runtime.tick()
        world.converge()
        assert results(world) == [(leaving.instance_id, LifecycleResult.CONTINUE)]
        assert f"{PREFIX}{leaving.instance_id}" not in world.runtime.servers[BACKEND]

    def test_terminate_waits_for_a_worker_from_before_a_reload(self) -> None:
        """
        The leaving server is gone from the file and from a worker younger than the drain
        timeout: a reload started it, and the worker before it may still serve the instance.
        The action waits until the worker is a drain timeout old, then CONTINUE.
        """
        leaving = instance(5, "Terminating:Wait")
        world = World(
            hooked(instance(4), leaving, hooks=(TERMINATE_HOOK,), desired=1),
            runtime=[runtime_server(4)],
            complete_lifecycle_actions=True,
        )
        world.runtime.worker_uptime = 2  # the drain timeout is 5 s
        assert run_cycle(world.settings, world.ports).pending
        assert results(world) == []
        world.runtime.worker_uptime = 5
        run_cycle(world.settings, world.ports)
        assert results(world) == [(leaving.instance_id, LifecycleResult.CONTINUE)]

    def test_terminate_of_a_never_served_instance_completes_at_once(self) -> None:
        """An instance that never had a server is released in the first cycle."""
        leaving = instance(5, "Terminating:Wait")
        world = World(
            hooked(instance(4), leaving, hooks=(TERMINATE_HOOK,), desired=1),
            complete_lifecycle_actions=True,
        )
        run_cycle(world.settings, world.ports)
        assert results(world) == [(leaving.instance_id, LifecycleResult.CONTINUE)]

    def test_no_completion_without_the_setting(self) -> None:
        """Hooks exist but the backend does not complete them: nothing is sent."""
        world = World(
            hooked(instance(4), instance(5, "Terminating:Wait"), hooks=(TERMINATE_HOOK,), desired=1)
        )
        world.converge()
        assert world.lifecycle.actions == []

    def test_launch_warms_up_then_completes_and_serves_only_when_in_service(self) -> None:
        """Pending:Wait: added held in drain with no file line; CONTINUE after the check."""
        launching = instance(6, "Pending:Wait")
        g = hooked(instance(4), launching, hooks=(LAUNCH_HOOK,), desired=2)
        world = World(g, runtime=[runtime_server(4)], complete_lifecycle_actions=True)
        run_cycle(world.settings, world.ports)
        name = f"{PREFIX}{launching.instance_id}"
        assert world.runtime.servers[BACKEND][name].draining
        assert name not in world.file_servers()
        assert results(world) == []
        world.runtime.tick()
        run_cycle(world.settings, world.ports)
        assert results(world) == [(launching.instance_id, LifecycleResult.CONTINUE)]
        assert world.runtime.servers[BACKEND][name].draining
        world.membership.groups[ASG] = replace(g, instances=(instance(4), instance(6)))
        world.converge()
        assert world.runtime_servers() == expected(world.membership.groups[ASG])
        assert name in world.file_servers()

    def test_launch_without_check_is_held_until_in_service(self) -> None:
        """Without a health check a launching server is still held in drain."""
        g = hooked(instance(6, "Pending:Wait"), hooks=(LAUNCH_HOOK,), desired=1)
        world = World(g, options="", complete_lifecycle_actions=True)
        run_cycle(world.settings, world.ports)
        assert world.runtime.servers[BACKEND][f"{PREFIX}i-{6:017x}"].draining

    def test_launch_is_abandoned_after_the_limit(self) -> None:
        """A check that never passes within abandon_launch_after: ABANDON."""
        failing = runtime_server(6, admin_state=ADMIN_FDRAIN, check_result=2, seconds_in_state=31)
        g = hooked(instance(6, "Pending:Wait"), hooks=(LAUNCH_HOOK,), desired=1)
        world = World(
            g, runtime=[failing], complete_lifecycle_actions=True, abandon_launch_after=30
        )
        run_cycle(world.settings, world.ports)
        assert results(world) == [(f"i-{6:017x}", LifecycleResult.ABANDON)]


class TestSpotWarnings:
    """A warning is acted on only for a Spot instance of the backend's own group."""

    def test_spot_warning_drains_the_instance_while_it_lasts(self) -> None:
        """An interrupted Spot instance is drained; once the warning lapses it serves again."""
        g = group(instance(4), replace(instance(5), spot=True))
        world = World(g, runtime=[runtime_server(4), runtime_server(5)], drain_on_spot_warning=True)
        warned = frozenset({f"i-{5:017x}"})
        first = run_cycle(world.settings, world.ports, interrupted=warned)
        rows = {r.instance_id: r for r in first.plan.backends[0].rows}
        assert "Spot" in rows[f"i-{5:017x}"].reason
        world.runtime.tick()
        while run_cycle(world.settings, world.ports, interrupted=warned).pending:
            world.runtime.tick()
        assert set(world.runtime_servers()) == {f"{PREFIX}i-{4:017x}"}
        world.converge()
        assert world.runtime_servers() == expected(g)

    @pytest.mark.parametrize(
        "warned",
        [pytest.param(5, id="on-demand-member"), pytest.param(9, id="no-managed-group")],
    )
    def test_warning_for_anything_but_a_spot_member_changes_nothing(self, warned: int) -> None:
        """
        A warning naming an on-demand InService Healthy member, or an instance the group does
        not have: no step, the file and the runtime stay as they are, every row unchanged.
        """
        g = group(instance(4), instance(5), replace(instance(6), spot=True))
        world = World(g, drain_on_spot_warning=True)
        world.converge()
        content, runtime = world.store.content, dict(world.runtime.servers[BACKEND])
        result = run_cycle(world.settings, world.ports, interrupted=frozenset({f"i-{warned:017x}"}))
        assert result.plan.backends[0].steps == ()
        assert {r.change for r in result.plan.backends[0].rows} == {Change.UNCHANGED}
        assert world.store.content == content
        assert world.runtime.servers[BACKEND] == runtime


DISAGREEMENT = "DescribeInstances did not return it"


def line_of(n: int, address: str | None = None) -> bytes:
    """The file line a converged cycle writes for instance *n*."""
    return (
        f"    server {PREFIX}i-{n:017x} {address or f'127.0.1.{n}'}:8080 id {100 + n} "
        "check inter 1s\n"
    ).encode()


def with_lines(*lines: bytes) -> bytes:
    """The planner tests' config with *lines* after the hand-written server."""
    return CONFIG.replace(UNMANAGED_LINE, UNMANAGED_LINE + b"".join(lines))


class TestDisagreeingReads:
    """
    The group says InService and Healthy, DescribeInstances does not know the instance: the
    reads disagree, so the server is kept exactly as it is, reported, and read again soon.
    """

    def test_serving_server_is_kept_as_it_is(self) -> None:
        """Runtime state and file line stay; no command; a held row; the backend is pending."""
        world = World(
            group(instance(4), unknown_to_ec2(5), desired=2),
            runtime=[runtime_server(4), runtime_server(5, sessions=3)],
            content=with_lines(line_of(4), line_of(5)),
        )
        before = dict(world.runtime.servers[BACKEND])
        result = run_cycle(world.settings, world.ports)
        decided = result.plan.backends[0]
        assert world.runtime.commands == []
        assert world.runtime.servers[BACKEND] == before
        assert world.store.content == with_lines(line_of(4), line_of(5))
        row = next(r for r in decided.rows if r.instance_id == f"i-{5:017x}")
        assert row.change is Change.HELD
        assert DISAGREEMENT in row.reason
        assert decided.pending
        assert result.ok

    def test_absent_server_is_not_added(self) -> None:
        """An instance the reads disagree about gets no server and no line; the others do."""
        world = World(group(instance(4), unknown_to_ec2(5), desired=2))
        result = run_cycle(world.settings, world.ports)
        assert [(s.kind, s.server) for s in result.plan.backends[0].steps] == [
            (StepKind.ADD, f"{PREFIX}i-{4:017x}")
        ]
        assert f"i-{5:017x}" not in world.store.content.decode()
        assert result.plan.backends[0].pending

    def test_every_instance_unknown_to_ec2_removes_nothing(self) -> None:
        """DescribeInstances returning none of the group: every server stays, nothing sent."""
        world = World(
            group(unknown_to_ec2(4), unknown_to_ec2(5), desired=2),
            runtime=[runtime_server(4), runtime_server(5)],
            content=with_lines(line_of(4), line_of(5)),
        )
        result = run_cycle(world.settings, world.ports)
        assert world.runtime.commands == []
        assert world.store.content == with_lines(line_of(4), line_of(5))
        assert {r.change for r in result.plan.backends[0].rows} == {Change.HELD}

    @pytest.mark.parametrize("state", ["shutting-down", "terminated"])
    def test_ec2_saying_the_machine_is_gone_is_no_disagreement(self, state: str) -> None:
        """EC2's own word that the instance is going away is acted on: maintenance."""
        world = World(
            group(instance(4), instance(5, ec2=state), desired=2),
            runtime=[runtime_server(4), runtime_server(5)],
        )
        steps = run_cycle(world.settings, world.ports).plan.backends[0].steps
        assert [(s.kind, s.server) for s in steps] == [
            (StepKind.MAINT, f"{PREFIX}i-{5:017x}"),
            (StepKind.DELETE, f"{PREFIX}i-{5:017x}"),
        ]

    def test_once_ec2_knows_it_again_it_is_managed_as_usual(self) -> None:
        """The next read that agrees ends the hold: the server is simply kept serving."""
        world = World(
            group(instance(4), unknown_to_ec2(5), desired=2),
            runtime=[runtime_server(4), runtime_server(5)],
            content=with_lines(line_of(4), line_of(5)),
        )
        run_cycle(world.settings, world.ports)
        world.membership.groups[ASG] = group(instance(4), instance(5))
        again = run_cycle(world.settings, world.ports)
        assert again.plan.backends[0].steps == ()
        assert not again.pending
        assert {r.change for r in again.plan.backends[0].rows} == {Change.UNCHANGED}


MALFORMED = [
    pytest.param("i-00000000000000005\nset server api/maintenance-page state drain", id="newline"),
    pytest.param("i-00000000000000005\tx", id="tab"),
    pytest.param("i-00000000000000005;help", id="semicolon"),
    pytest.param("i-00000000000000005 x", id="space"),
    pytest.param("I-00000000000000005", id="upper-case"),
    pytest.param("i-5", id="short"),
    pytest.param("", id="empty"),
]


class TestMalformedValues:
    """An AWS value without its documented shape refuses that instance alone."""

    @pytest.mark.parametrize("bad_id", MALFORMED)
    def test_malformed_instance_id_refuses_that_instance_only(self, bad_id: str) -> None:
        """Never raises; the other instances converge; the cycle reports the problem."""
        odd = Instance(bad_id, "InService", "Healthy", "running", "127.0.1.5")
        world = World(group(instance(4), odd))
        result = run_cycle(world.settings, world.ports)
        assert not result.ok
        assert any(repr(bad_id) in e for e in result.errors)
        world.runtime.tick()
        while run_cycle(world.settings, world.ports).pending:
            world.runtime.tick()
        assert world.runtime_servers() == expected(group(instance(4)))
        assert world.file_servers() == expected(group(instance(4)))
        rows = run_cycle(world.settings, world.ports).plan.backends[0].rows
        held = [r for r in rows if r.change is Change.HELD]
        assert [r.instance_id for r in held] == [bad_id]

    @pytest.mark.parametrize(
        "address",
        [
            "127.0.1.5\nset server api/maintenance-page state drain",
            "127.0.1.5 backup",
            "127.0.1.5;",
            "127.0.1.500",
            "127.000.1.5",
            "::1",
            "host.example",
            "",
        ],
    )
    def test_malformed_address_keeps_the_server_as_it_is(self, address: str) -> None:
        """
        A server already serving the instance keeps its runtime state and file line; a new
        instance with such an address is not added. Both are reported; nothing raises.
        """
        world = World(
            group(
                replace(instance(5), private_ip=address),
                replace(instance(6), private_ip=address),
                instance(4),
            ),
            runtime=[runtime_server(5)],
            content=with_lines(line_of(5)),
        )
        before = world.runtime.servers[BACKEND][f"{PREFIX}i-{5:017x}"]
        result = run_cycle(world.settings, world.ports)
        assert not result.ok
        assert sum(repr(address) in e for e in result.errors) == 2
        names = {s.server for s in result.plan.backends[0].steps}
        assert names == {f"{PREFIX}i-{4:017x}"}
        assert world.runtime.servers[BACKEND][f"{PREFIX}i-{5:017x}"] == before
        assert line_of(5) in world.store.content
        assert f"i-{6:017x}" not in world.store.content.decode()


# -- property: whatever AWS returns, only valid values reach a step or a line ----------------------

#: Text that looks almost right: valid values with a character added, dropped or changed.
_NEAR = st.sampled_from(["\n", "\t", "\r", " ", ";", "\\", "#", "\x00", "\x1b[31m", "é", "A"])


@st.composite
def instance_ids(draw: st.DrawFn) -> str:
    """A valid id, a near miss, or any text."""
    valid = draw(st.sampled_from([f"i-{draw(st.integers(4, 40)):017x}", "i-0a1b2c3d"]))
    return draw(
        st.one_of(
            st.just(valid),
            _NEAR.map(lambda c: valid + c),
            _NEAR.map(lambda c: c + valid),
            st.just(valid.upper()),
            st.text(max_size=30),
        )
    )


@st.composite
def addresses(draw: st.DrawFn) -> str | None:
    """A valid loopback address, a near miss, any text, or none."""
    valid = f"127.0.1.{draw(st.integers(4, 250))}"
    return draw(
        st.one_of(
            st.just(valid),
            st.none(),
            _NEAR.map(lambda c: valid + c),
            _NEAR.map(lambda c: c + valid),
            st.text(max_size=30),
        )
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(instance_ids(), addresses(), st.sampled_from(STATES), st.booleans()),
        max_size=6,
    ),
    st.lists(st.integers(4, 40), unique=True, max_size=4),
    st.booleans(),
)
def test_no_malformed_value_ever_reaches_a_step_or_a_line(
    members: list[tuple[str, str | None, str, bool]], running: list[int], socket: bool
) -> None:
    """
    Whatever ids and addresses AWS returns, control characters, blanks and ``;`` included:
    planning and applying never raise, and every step and line names a valid managed server
    at a valid IPv4 address.
    """
    instances = tuple(
        Instance(iid, state, "Healthy", "running", ip, spot=spot)
        for iid, ip, state, spot in members
    )
    world = World(
        Group(ASG, len(instances), instances),
        socket=socket,
        runtime=[runtime_server(n) for n in running],
        drain_on_spot_warning=True,
    )
    warned = frozenset(iid for iid, *_ in members)
    binding = world.settings.backends[0]
    for _ in range(3):
        result = run_cycle(world.settings, world.ports, interrupted=warned)
        decided = result.plan.backends[0]
        lines = [s.line for s in decided.steps if s.line is not None] + list(decided.lines or ())
        assert all(binding.instance_of(s.server) is not None for s in decided.steps)
        for line in lines:
            assert binding.instance_of(line.name) is not None
            assert ipaddress.IPv4Address(line.address)
        world.runtime.tick()
    assert UNMANAGED_LINE in world.store.content


@settings(max_examples=500, deadline=None)
@given(
    st.text("0123456789.", max_size=16)
    | st.builds("{}.{}.{}.{}".format, *[st.integers(0, 300)] * 4)
    | st.text(max_size=16)
)
def test_ipv4_check_accepts_what_ipaddress_accepts(text: str) -> None:
    """The address check (a regular expression, for speed) agrees with ``ipaddress``."""
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        accepted = False
    else:
        accepted = True
    assert is_ipv4_address(text) is accepted


@given(
    st.builds(
        Instance,
        instance_id=st.sampled_from(["i-0123456789abcdef0", "i-01234567", "i-XYZ", ""]),
        lifecycle_state=st.sampled_from(["InService", "Pending:Wait", "Terminating"]),
        health_status=st.sampled_from(["Healthy", "Unhealthy"]),
        ec2_state=st.sampled_from(["running", "stopped", None]),
        private_ip=st.sampled_from(["127.0.0.5", "127.0.0.500", "", None]),
    )
)
def test_serving_is_exactly_no_reason_not_to(instance: Instance) -> None:
    """``serving`` (its states checked first, for speed) agrees with ``not_serving_reason``."""
    assert instance.serving is (instance.not_serving_reason is None)
    assert instance.serving is (instance.in_service and instance.malformed is None)
