"""
Progress watched in HAProxy alone: how soon to look again (``core.progress``), which plans wait
on HAProxy and which must read AWS again, a backend that routes by zone looked at all the time
(but no work ``--once`` waits for; the loop's polls of it are in ``test_controller.py``), a
cycle given an earlier AWS read reading no AWS, and, end to end with moto and a real HAProxy, a
warm-up and a drain finished by progress polls that make no AWS call, and a restarted controller
resuming a warm-up from HAProxy's state.
"""

from __future__ import annotations

import csv
import threading
from typing import Any

import pytest

from harness.fakes import FakeMembership, FakeStore
from harness.haproxy import wait_for
from harness.stack import BACKEND, GROUP, SERVER_PREFIX, Daemon, Daemons, Notifications, Stack
from reconciler.core import progress
from reconciler.core.model import (
    ADMIN_FDRAIN,
    BackendPlan,
    CycleResult,
    Deferral,
    Outcome,
    Plan,
    RuntimeStep,
    StepKind,
)
from reconciler.core.settings import (
    AwsSettings,
    Binding,
    ControllerSettings,
    HAProxySettings,
    Settings,
)
from reconciler.cycle import run_cycle
from reconciler.ports import Ports
from reconciler.runner import converge
from tests.support.daemon import (
    DEADLINE,
    controller,
    settled,
    sqs,
    start_converged,
    wait_deleted,
)
from tests.support.worlds import World, group, instance, runtime_server, unknown_to_ec2


@pytest.mark.parametrize(
    ("options", "seconds"),
    [
        ("check inter 100ms fall 2 rise 1", 0.1),
        ("check inter 3s fastinter 500ms downinter 1s", 0.5),
        ("check inter 250", 0.25),  # a bare number is milliseconds
        ("check inter 2m", 120),
        ("check inter 1500us", 0.0015),
        ("check", progress.DEFAULT_INTER),
        ("", progress.DEFAULT_INTER),
        ("check inter soon", progress.DEFAULT_INTER),
        ("check inter", progress.DEFAULT_INTER),
    ],
)
def test_check_interval_is_the_shortest_the_options_set(options: str, seconds: float) -> None:
    """``inter``, ``fastinter``, ``downinter`` in HAProxy's time units; else ``inter``'s 2 s."""
    assert progress.check_interval(tuple(options.split())) == pytest.approx(seconds)


def binding(name: str, options: str) -> Binding:
    """A backend *name* whose servers take *options*."""
    return Binding(name, f"{name}-asg", 80, server_options=tuple(options.split()))


@pytest.mark.parametrize(
    ("options", "seconds"),
    [
        (["check inter 100ms"], 0.025),
        (["check inter 40ms"], progress.MIN_DELAY),
        (["check inter 10s"], 0.5),
        (["check"], 0.5),
        (["check inter 1s", "check inter 200ms"], 0.05),
    ],
)
def test_delay_is_a_quarter_check_interval_within_bounds(
    options: list[str], seconds: float
) -> None:
    """A quarter of the shortest interval of the backends in question, in [20 ms, poll_interval]."""
    bindings = [binding(f"b{n}", words) for n, words in enumerate(options)]
    assert progress.delay(bindings, ControllerSettings(poll_interval=0.5)) == pytest.approx(seconds)


@pytest.mark.parametrize(("waited", "seconds"), [(0, 0.025), (0.1, 0.025), (0.4, 0.1), (60, 0.5)])
def test_delay_grows_with_the_time_the_looks_found_nothing(waited: float, seconds: float) -> None:
    """After *waited* seconds of looks with nothing to do: a quarter of that, to poll_interval."""
    bindings = [binding("api", "check inter 100ms")]
    config = ControllerSettings(poll_interval=0.5)
    assert progress.delay(bindings, config, waited) == pytest.approx(seconds)


def test_watched_backends_are_those_waiting_on_haproxy() -> None:
    """
    Warm-ups, drains and postponed deletions wait on HAProxy, and steps just sent are looked at
    once more; disagreeing reads need AWS, not HAProxy.
    """
    plan = Plan(
        (
            BackendPlan("warming", "a", pending=True, awaits_haproxy=True),
            BackendPlan("doubtful", "b", pending=True, rereads_aws=True),
            BackendPlan("idle", "c"),
            BackendPlan("deleting", "d"),
            BackendPlan("refused", "e", refused="unreadable"),
            BackendPlan("readied", "f", steps=(RuntimeStep("readied", "s", StepKind.READY),)),
        )
    )
    outcome = Outcome(deferred=(Deferral("deleting", "api-i-1", "connections attached"),))
    assert progress.watched(CycleResult(plan, outcome)) == {"warming", "deleting", "readied"}


#: A backend that routes by zone (checks every 400 ms) and one warming up (every 100 ms).
ZONED = Settings(
    aws=AwsSettings(),
    haproxy=HAProxySettings(),
    backends=(binding("zoned", "check inter 400ms"), binding("warming", "check inter 100ms")),
    controller=ControllerSettings(poll_interval=0.5),
)


def zone_routed(*more: BackendPlan) -> CycleResult:
    """A cycle that left nothing pending, ``zoned`` routing by zone, and the *more* plans."""
    zoned = BackendPlan("zoned", "zoned-asg", watches_health=True)
    return CycleResult(Plan((zoned, *more)), Outcome())


@pytest.mark.parametrize("waited", [0, 1, 60])
def test_a_backend_routing_by_zone_is_looked_at_steadily_with_nothing_pending(
    waited: float,
) -> None:
    """
    Its health checks decide where requests go: HAProxy is looked at a quarter check interval
    later, however long the looks found nothing to do; yet no work is left for a later cycle.
    """
    result = zone_routed()
    assert not result.pending
    assert progress.watched(result) == frozenset()
    assert progress.watching_health(result) == {"zoned"}
    assert progress.next_look(ZONED, result, waited) == pytest.approx(0.1)


def test_a_refused_backend_routing_by_zone_is_not_looked_at() -> None:
    """A backend refused this cycle has no plan to follow its health with."""
    refused = BackendPlan("zoned", "zoned-asg", refused="unreadable", watches_health=True)
    assert progress.next_look(ZONED, CycleResult(Plan((refused,)), Outcome())) is None


@pytest.mark.parametrize(("waited", "seconds"), [(0, 0.025), (60, 0.1)])
def test_the_sooner_of_a_warm_up_and_a_zone_watch_decides(waited: float, seconds: float) -> None:
    """
    A warm-up's looks grow rarer while they find nothing (to ``poll_interval``); the backend that
    routes by zone keeps HAProxy looked at every quarter of its own check interval.
    """
    warming = BackendPlan("warming", "warming-asg", pending=True, awaits_haproxy=True)
    assert progress.next_look(ZONED, zone_routed(warming), waited) == pytest.approx(seconds)


def test_once_does_not_wait_for_a_backend_routing_by_zone() -> None:
    """``--once`` ends after the cycle that left nothing pending: a zone watch is no work."""
    cycles: list[object] = []

    def cycle(*args: object, **kwargs: object) -> CycleResult:
        cycles.append(args)
        return zone_routed()

    def sleep(seconds: float) -> None:
        raise AssertionError(f"--once waited {seconds}s")

    ports = Ports(FakeMembership(), FakeStore(b""), None)
    report = converge(ZONED, ports, dry_run=False, limit=60, cycle=cycle, sleep=sleep)
    assert (len(cycles), report.errors) == (1, ())


def test_plans_say_what_they_wait_on() -> None:
    """A warm-up awaits HAProxy; reads that disagree must read AWS again; both can hold at once."""
    warming = runtime_server(1, admin_state=ADMIN_FDRAIN, check_result=0)
    world = World(group(instance(1), unknown_to_ec2(2)), runtime=[warming])
    (backend,) = run_cycle(world.settings, world.ports).plan.backends
    assert (backend.pending, backend.awaits_haproxy, backend.rereads_aws) == (True, True, True)
    world.runtime.tick()  # the check passes
    (backend,) = run_cycle(world.settings, world.ports).plan.backends
    assert (backend.pending, backend.awaits_haproxy, backend.rereads_aws) == (True, False, True)


def test_a_cycle_given_an_aws_read_reads_no_aws_and_plans_with_it() -> None:
    """A progress cycle plans with the read it is given and reports it; AWS is not asked."""
    world = World(group(instance(1)))
    first = run_cycle(world.settings, world.ports)
    world.membership.groups.clear()  # AWS would now say the group is gone
    again = run_cycle(world.settings, world.ports, aws=first.aws)
    assert again.aws == first.aws
    assert [row.instance_id for row in again.plan.backends[0].rows] == [instance(1).instance_id]
    assert again.ok


# -- end to end ------------------------------------------------------------------------------------


def aws_reads(daemon: Daemon, count: int) -> list[dict[str, Any]]:
    """The cycles after the first *count* that read AWS."""
    return [c for c in daemon.cycles()[count:] if c["aws_read"]]


def polls(daemon: Daemon, count: int) -> list[dict[str, Any]]:
    """The cycles after the first *count* that did not read AWS."""
    return [c for c in daemon.cycles()[count:] if not c["aws_read"]]


@pytest.mark.haproxy_versions
def test_a_warm_up_finishes_through_progress_polls_without_aws_calls(
    stack: Stack, daemons: Daemons, queue: Notifications
) -> None:
    """
    A launch: the cycle the notification wakes reads AWS and adds the server in drain; polls of
    HAProxy alone (no AWS call, ``inter 100ms``) make it ready once its first check passes.
    """
    daemon = start_converged(daemons, stack, controller=controller(), sqs=sqs(queue))
    count = len(daemon.cycles())
    (new,) = stack.scale_to(3)
    queue.publish("LAUNCH", new)
    wait_for(lambda: new in stack.serving(), "the new instance to serve", DEADLINE)
    wait_for(lambda: settled(daemon), "the warm-up to end", DEADLINE)
    (event,) = aws_reads(daemon, count)
    assert (event["trigger"], event["changes"]) == ("event", 1)
    polled = polls(daemon, count)
    assert {c["trigger"] for c in polled} == {"progress"}
    assert [c["api_calls"] for c in polled] == [0] * len(polled)
    # A poll saw the first passing check and made the server ready; one more saw it ready.
    assert [c["commands"] for c in polled[-2:]] == [1, 0]
    assert all(isinstance(c["cpu_ms"], float | int) for c in daemon.cycles())
    wait_deleted(daemon, queue, 1)


def sessions(stack: Stack, instance_id: str) -> int:
    """The sessions the managed server of *instance_id* has now."""
    rows = csv.DictReader(stack.haproxy.command("show stat").lstrip("# ").splitlines())
    name = f"{SERVER_PREFIX}{instance_id}"
    return sum(int(r["scur"] or 0) for r in rows if r["pxname"] == BACKEND and r["svname"] == name)


@pytest.mark.haproxy_versions
def test_a_drain_finishes_through_progress_polls_without_aws_calls(
    stack: Stack, daemons: Daemons, queue: Notifications
) -> None:
    """
    An instance terminates while slow requests run on it: the cycle the notification wakes puts
    its server in maintenance; polls of HAProxy alone see the requests finish and delete it.
    Every request is answered.
    """
    daemon = start_converged(daemons, stack, controller=controller(), sqs=sqs(queue))
    leaving, _ = sorted(stack.admitted())
    answers: list[int] = []
    requests = [
        threading.Thread(target=lambda: answers.append(stack.haproxy.get("/slow?seconds=1.5")[0]))
        for _ in range(4)
    ]
    for thread in requests:
        thread.start()
    wait_for(lambda: sessions(stack, leaving) > 0, "a slow request on the leaving server", DEADLINE)
    count = len(daemon.cycles())
    stack.cloud.terminate(leaving)
    queue.publish("TERMINATE", leaving)
    wait_for(lambda: leaving not in stack.states(), "the server to be deleted", DEADLINE)
    for thread in requests:
        thread.join(DEADLINE)
    assert answers == [200] * 4
    wait_for(lambda: settled(daemon), "the drain to end", DEADLINE)
    (event,) = aws_reads(daemon, count)
    assert event["trigger"] == "event"
    polled = polls(daemon, count)
    assert len(polled) >= 2
    assert [c["api_calls"] for c in polled] == [0] * len(polled)
    assert polled[-2]["commands"] >= 1  # the delete, then a look that finds it gone


def test_a_restarted_controller_resumes_a_warm_up_from_haproxy(
    stack: Stack, daemons: Daemons
) -> None:
    """
    A run ended while a new server waits for its first passing check: the controller started
    next reads AWS once, finds the server warming in HAProxy, and polls HAProxy alone until it
    is ready.
    """
    stack.cloud.set_desired(GROUP, 3)
    (new,) = set(stack.cloud.serving(GROUP)) - set(stack.servers)
    # The run before the restart added it; no HTTP server on it yet: its check fails.
    assert stack.reconcile("--timeout", "0").returncode != 0
    assert new in stack.states()
    assert new not in stack.serving()
    second = daemons.start(stack, controller=controller())
    second.wait_cycles(2, "the first cycle and a poll")
    stack.serve_instances()
    wait_for(lambda: new in stack.serving(), "the warm-up to finish", DEADLINE)
    wait_for(lambda: settled(second), "the last poll", DEADLINE)
    reads = aws_reads(second, 0)
    assert [c["trigger"] for c in reads] == ["resync"]
    assert reads[0]["changes"] == 0  # found warming, not added again
    assert all(c["api_calls"] == 0 for c in polls(second, 0))
