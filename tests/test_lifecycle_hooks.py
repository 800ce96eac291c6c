"""
Lifecycle hooks, AWS side and end to end.

The adapters (``AwsLifecycle``, and ``AwsMembership`` reading hooks) are tested against the moto
server, whose missing ``CompleteLifecycleAction`` and ``RecordLifecycleActionHeartbeat`` the
``cloud`` fixture answers as AWS does and records in ``cloud.lifecycle_calls``. The end-to-end
tests run ``reconcile --once`` in a child process against a real HAProxy; at every lifecycle
call the fake AWS also records what HAProxy and the file held at that moment (the "witness"), so
"completed only after the drain" is checked at the instant of the call, not by timing.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from harness.haproxy import (
    HEALTH_CHECK,
    BackendSpec,
    HAProxyFactory,
    HTTPBackends,
    free_port,
    wait_for,
)
from harness.lifecycle import (
    COMPLETE,
    DEADLINE,
    HEARTBEAT,
    LAUNCH_HOOK,
    TERMINATE_HOOK,
    calls,
    configure,
    released_after_drain,
    serve,
    sessions,
    stat_rows,
    witness_haproxy,
)
from harness.moto import LAUNCHING, TERMINATING, Cloud
from harness.stack import BACKEND, GROUP, RECONCILE, SERVER_PREFIX, Stack, build_stack
from reconciler.adapters.aws.clients import AwsClients, CallCounts
from reconciler.adapters.aws.lifecycle import AwsLifecycle
from reconciler.adapters.aws.membership import AwsMembership
from reconciler.core.errors import PermanentError, TransientError
from reconciler.core.model import LifecycleAction, LifecycleHook, LifecycleResult


pytestmark = pytest.mark.integration

#: A slow request long enough to hold a drain open for several cycles.
SLOW_SECONDS = 3


class SlowRequests:
    """Slow requests through HAProxy's frontend, each in its own thread."""

    def __init__(self, stack: Stack) -> None:
        """Send through *stack*'s HAProxy."""
        self._stack = stack
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="slow")
        self.sent: list[Future[tuple[int, str]]] = []

    def send(self, count: int, seconds: float = SLOW_SECONDS) -> None:
        """Start *count* requests of ``/slow?seconds=<seconds>``."""
        path = f"/slow?seconds={seconds}"
        self.sent += [self._pool.submit(self._stack.haproxy.get, path) for _ in range(count)]

    def results(self) -> list[tuple[int, str]]:
        """Wait for every request sent; their statuses and bodies."""
        return [future.result(DEADLINE) for future in self.sent]

    def close(self) -> None:
        """Wait for the threads."""
        self._pool.shutdown(wait=True)


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(name="clients")
def _clients(cloud: Cloud) -> AwsClients:
    """Clients without botocore retries, so each injected fault reaches the adapter."""
    return AwsClients(max_attempts=1)


@pytest.fixture(name="stack")
def _stack(
    cloud: Cloud, haproxy_factory: HAProxyFactory, http_backends: HTTPBackends, tmp_path: Path
) -> Stack:
    """Three instances serving through HAProxy; the backend completes lifecycle actions."""
    stack = build_stack(cloud, haproxy_factory, http_backends, tmp_path, size=3)
    configure(stack, complete_lifecycle_actions=True)
    witness_haproxy(stack)
    return stack


@pytest.fixture(name="slow")
def _slow(stack: Stack) -> Iterator[SlowRequests]:
    """Slow requests through the stack's HAProxy; their threads end with the test."""
    requests = SlowRequests(stack)
    yield requests
    requests.close()


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        """Start at an arbitrary moment."""
        self.now = 1000.0

    def __call__(self) -> float:
        """The current time."""
        return self.now


def action(
    instance_id: str,
    result: LifecycleResult,
    *,
    hook: str = TERMINATE_HOOK,
    waited: int = 0,
    timeout: int = 60,
) -> LifecycleAction:
    """A lifecycle action of the test group."""
    return LifecycleAction(GROUP, instance_id, hook, result, waited=waited, timeout=timeout)


def member_state(cloud: Cloud, instance_id: str) -> str | None:
    """The instance's lifecycle state in the group, ``None`` once it left the group."""
    group = cloud.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])
    states = {
        m["InstanceId"]: m["LifecycleState"] for m in group["AutoScalingGroups"][0]["Instances"]
    }
    return states.get(instance_id)


def ec2_state(cloud: Cloud, instance_id: str) -> str:
    """The instance's EC2 state name."""
    reservations = cloud.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    return str(reservations[0]["Instances"][0]["State"]["Name"])


# -- the adapter: completions ----------------------------------------------------------------------


class TestCompletion:
    """``AwsLifecycle`` completes actions by instance id, once, and shrugs at stale ones."""

    @pytest.fixture(name="leaving")
    def _leaving(self, cloud: Cloud) -> str:
        """One instance of a three-instance group, waiting on the terminate hook."""
        ids = cloud.create_group(GROUP, 3)
        cloud.put_lifecycle_hook(GROUP, TERMINATE_HOOK, TERMINATING)
        cloud.begin_scale_in(GROUP, ids[:1])
        return ids[0]

    def test_continue_releases_a_terminating_instance_once(
        self, cloud: Cloud, clients: AwsClients, leaving: str
    ) -> None:
        """One call by instance id; asked again (AWS lagging), nothing is sent twice."""
        lifecycle = AwsLifecycle(clients)
        assert lifecycle.carry_out(action(leaving, LifecycleResult.CONTINUE))
        assert not lifecycle.carry_out(action(leaving, LifecycleResult.CONTINUE))
        (call,) = calls(cloud)
        assert (call["group"], call["hook"], call["instance_id"], call["result"]) == (
            GROUP,
            TERMINATE_HOOK,
            leaving,
            "CONTINUE",
        )
        assert call["token"] is None
        assert member_state(cloud, leaving) is None
        assert ec2_state(cloud, leaving) == "terminated"

    def test_after_the_memory_lapses_a_repeat_is_a_harmless_no_op(
        self, cloud: Cloud, clients: AwsClients, leaving: str
    ) -> None:
        """Ten minutes on, the repeat reaches AWS, which waits no more: done, no error."""
        clock = Clock()
        lifecycle = AwsLifecycle(clients, clock=clock)
        lifecycle.carry_out(action(leaving, LifecycleResult.CONTINUE))
        clock.now += 601
        assert lifecycle.carry_out(action(leaving, LifecycleResult.CONTINUE))
        assert len(calls(cloud)) == 2
        assert not lifecycle.carry_out(action(leaving, LifecycleResult.CONTINUE))

    def test_an_action_nobody_waits_for_counts_as_done(
        self, cloud: Cloud, clients: AwsClients, leaving: str
    ) -> None:
        """An InService instance (completed elsewhere, or timed out): no error, nothing changes."""
        in_service = next(i for i in cloud.serving(GROUP) if i != leaving)
        lifecycle = AwsLifecycle(clients)
        assert lifecycle.carry_out(action(in_service, LifecycleResult.CONTINUE))
        assert member_state(cloud, in_service) == "InService"

    @pytest.mark.parametrize(
        ("result", "state_after", "ec2_after"),
        [
            pytest.param(LifecycleResult.CONTINUE, "InService", "running", id="continue"),
            pytest.param(LifecycleResult.ABANDON, None, "terminated", id="abandon"),
        ],
    )
    def test_launch_results(
        self,
        cloud: Cloud,
        clients: AwsClients,
        result: LifecycleResult,
        state_after: str | None,
        ec2_after: str,
    ) -> None:
        """CONTINUE puts a launching instance in service; ABANDON terminates it."""
        cloud.create_group(GROUP, 1)
        cloud.put_lifecycle_hook(GROUP, LAUNCH_HOOK, LAUNCHING)
        (new,) = cloud.begin_scale_out(GROUP, 1)
        AwsLifecycle(clients).carry_out(action(new, result, hook=LAUNCH_HOOK))
        assert member_state(cloud, new) == state_after
        assert ec2_state(cloud, new) == ec2_after

    @pytest.mark.parametrize(
        ("result", "permission"),
        [
            pytest.param(LifecycleResult.CONTINUE, "CompleteLifecycleAction", id="complete"),
            pytest.param(LifecycleResult.HEARTBEAT, HEARTBEAT, id="heartbeat"),
        ],
    )
    def test_a_missing_permission_is_permanent_and_names_it(
        self,
        cloud: Cloud,
        clients: AwsClients,
        leaving: str,
        result: LifecycleResult,
        permission: str,
    ) -> None:
        """AccessDenied: PermanentError advising the IAM action to allow."""
        operation = COMPLETE if result is LifecycleResult.CONTINUE else HEARTBEAT
        cloud.fail(operation, "AccessDenied", 1)
        with pytest.raises(PermanentError, match=f"allow autoscaling:{permission}"):
            AwsLifecycle(clients).carry_out(action(leaving, result, waited=60))

    def test_throttling_is_transient_and_not_remembered(
        self, cloud: Cloud, clients: AwsClients, leaving: str
    ) -> None:
        """A throttled completion raises TransientError; the next cycle's request is sent."""
        cloud.fail(COMPLETE, "Throttling", 1)
        lifecycle = AwsLifecycle(clients)
        with pytest.raises(TransientError, match="Throttling"):
            lifecycle.carry_out(action(leaving, LifecycleResult.CONTINUE))
        assert lifecycle.carry_out(action(leaving, LifecycleResult.CONTINUE))
        assert member_state(cloud, leaving) is None

    def test_an_unknown_hook_is_permanent(
        self, cloud: Cloud, clients: AwsClients, leaving: str
    ) -> None:
        """A hook that does not exist is not "nothing waits": it is an error to report."""
        with pytest.raises(PermanentError, match="No Lifecycle Hook found"):
            AwsLifecycle(clients).carry_out(
                action(leaving, LifecycleResult.CONTINUE, hook="no-such-hook")
            )


# -- the adapter: heartbeats -----------------------------------------------------------------------


class TestHeartbeats:
    """A heartbeat goes out only when the wait is half over and none went out for half of it."""

    @pytest.fixture(name="leaving")
    def _leaving(self, cloud: Cloud) -> str:
        """One instance waiting on a terminate hook with a 60 s heartbeat timeout."""
        ids = cloud.create_group(GROUP, 2)
        cloud.put_lifecycle_hook(GROUP, TERMINATE_HOOK, TERMINATING, heartbeat_timeout=60)
        cloud.begin_scale_in(GROUP, ids[:1])
        return ids[0]

    def test_every_half_timeout_while_the_drain_lasts(
        self, cloud: Cloud, clients: AwsClients, leaving: str
    ) -> None:
        """Due at 30 s of a 60 s timeout, then 30 s after each heartbeat, not in between."""
        clock = Clock()
        lifecycle = AwsLifecycle(clients, clock=clock)
        beats = []
        for waited in range(0, 100, 5):
            clock.now = 1000.0 + waited
            if lifecycle.carry_out(action(leaving, LifecycleResult.HEARTBEAT, waited=waited)):
                beats.append(waited)
        assert beats == [30, 60, 90]
        assert len(calls(cloud, HEARTBEAT)) == 3
        assert member_state(cloud, leaving) == "Terminating:Wait"

    def test_counts_from_the_first_request_when_haproxy_restarts_its_clock(
        self, cloud: Cloud, clients: AwsClients, leaving: str
    ) -> None:
        """Drain turning into maintenance resets HAProxy's time in state; the wait goes on."""
        clock = Clock()
        lifecycle = AwsLifecycle(clients, clock=clock)
        assert not lifecycle.carry_out(action(leaving, LifecycleResult.HEARTBEAT, waited=20))
        clock.now += 30
        assert lifecycle.carry_out(action(leaving, LifecycleResult.HEARTBEAT, waited=2))

    def test_a_restarted_controller_sends_at_most_one_extra(
        self, cloud: Cloud, clients: AwsClients, leaving: str
    ) -> None:
        """The new process knows no heartbeat: one at its first cycle, then the usual pace."""
        clock = Clock()
        AwsLifecycle(clients, clock=clock).carry_out(
            action(leaving, LifecycleResult.HEARTBEAT, waited=30)
        )
        restarted = AwsLifecycle(clients, clock=clock)
        sent = []
        for step in range(1, 30):
            clock.now += 1
            sent.append(
                restarted.carry_out(action(leaving, LifecycleResult.HEARTBEAT, waited=30 + step))
            )
        assert sent.count(True) == 1
        assert len(calls(cloud, HEARTBEAT)) == 2

    def test_no_heartbeat_for_an_instance_that_stopped_waiting(
        self, cloud: Cloud, clients: AwsClients, leaving: str
    ) -> None:
        """AWS no longer waits (completed elsewhere): the heartbeat is refused, quietly."""
        AwsLifecycle(clients).carry_out(action(leaving, LifecycleResult.CONTINUE))
        assert AwsLifecycle(clients).carry_out(
            action(leaving, LifecycleResult.HEARTBEAT, waited=30)
        )


# -- the membership adapter reads hooks ------------------------------------------------------------


def hook_reads(clients: AwsClients) -> CallCounts:
    """What the call counter saw of DescribeLifecycleHooks."""
    return clients.calls.snapshot().get("autoscaling:DescribeLifecycleHooks", CallCounts())


class TestReadingHooks:
    """``read_groups(with_hooks=...)``: one DescribeLifecycleHooks per group that needs it."""

    @pytest.fixture(autouse=True)
    def _groups(self, cloud: Cloud) -> None:
        """Groups ``a`` and ``b``, each with a terminate hook; ``a`` also has a launch hook."""
        for name in ("a", "b"):
            cloud.create_group(name, 1)
            cloud.put_lifecycle_hook(name, TERMINATE_HOOK, TERMINATING, heartbeat_timeout=45)
        cloud.put_lifecycle_hook("a", LAUNCH_HOOK, LAUNCHING)

    def test_reads_hooks_only_for_the_groups_asked(self, clients: AwsClients) -> None:
        """Hooks with their transition and heartbeat timeout; none read for ``b``."""
        seen = AwsMembership(clients).read_groups(["a", "b"], with_hooks={"a"})
        assert seen.errors == {}
        assert set(seen.groups["a"].hooks) == {
            LifecycleHook(TERMINATE_HOOK, TERMINATING, 45),
            LifecycleHook(LAUNCH_HOOK, LAUNCHING, 3600),
        }
        assert seen.groups["b"].hooks == ()
        assert hook_reads(clients).calls == 1

    def test_a_failed_read_is_an_error_of_that_group_only(
        self, cloud: Cloud, clients: AwsClients
    ) -> None:
        """AccessDenied on ``a``'s hooks: ``a`` is an error naming the permission, ``b`` reads."""
        cloud.fail("DescribeLifecycleHooks", "AccessDenied", 1)
        seen = AwsMembership(clients).read_groups(["a", "b"], with_hooks={"a", "b"})
        assert "allow autoscaling:DescribeLifecycleHooks" in seen.errors["a"]
        assert set(seen.groups) == {"b"}
        assert seen.groups["b"].hooks == (LifecycleHook(TERMINATE_HOOK, TERMINATING, 45),)

    def test_a_throttled_read_fails_its_group_until_the_next_read(
        self, cloud: Cloud, clients: AwsClients
    ) -> None:
        """Throttled past botocore's retries (none here): an error for now, the hooks next time."""
        cloud.fail("DescribeLifecycleHooks", "Throttling", 1)
        membership = AwsMembership(clients)
        assert "AWS kept throttling" in membership.read_groups(["b"], with_hooks={"b"}).errors["b"]
        seen = membership.read_groups(["b"], with_hooks={"b"})
        assert seen.errors == {}
        assert len(seen.groups["b"].hooks) == 1
        assert hook_reads(clients).calls == 2


# -- end to end: terminate hook --------------------------------------------------------------------


def scale_in_held_open(stack: Stack, slow: SlowRequests, *, heartbeat_timeout: int = 3600) -> str:
    """
    Converge, give the group a terminate hook, start slow requests on every server (round
    robin) and, once one is in flight on the first instance's, scale that instance in.
    Return its id.
    """
    assert stack.reconcile().returncode == 0
    stack.cloud.put_lifecycle_hook(
        GROUP, TERMINATE_HOOK, TERMINATING, heartbeat_timeout=heartbeat_timeout
    )
    leaving = sorted(stack.servers)[0]
    slow.send(2 * len(stack.servers))
    wait_for(lambda: sessions(stack, leaving) > 0, f"a slow request on {leaving}", DEADLINE)
    stack.cloud.begin_scale_in(GROUP, [leaving])
    return leaving


@pytest.mark.haproxy_versions
def test_terminate_is_completed_once_and_only_after_the_drain(
    stack: Stack, slow: SlowRequests
) -> None:
    """Drain with a slow request in flight; CONTINUE once, when the server is gone everywhere."""
    leaving = scale_in_held_open(stack, slow)

    done = stack.reconcile()

    assert done.returncode == 0, done.stderr
    (call,) = calls(stack.cloud)
    assert (call["instance_id"], call["result"]) == (leaving, "CONTINUE")
    assert released_after_drain(call)
    assert {status for status, _ in slow.results()} == {200}
    assert member_state(stack.cloud, leaving) is None
    assert stack.reconcile().returncode == 0
    assert len(calls(stack.cloud)) == 1


def test_heartbeats_keep_a_long_drain_alive(stack: Stack, slow: SlowRequests) -> None:
    """A 2 s heartbeat timeout, a drain held for longer: heartbeats, spaced, then CONTINUE."""
    timeout = 2
    leaving = scale_in_held_open(stack, slow, heartbeat_timeout=timeout)

    assert stack.reconcile().returncode == 0

    beats = calls(stack.cloud, HEARTBEAT)
    (completion,) = calls(stack.cloud)
    assert beats
    # The last may go out in the cycle that deletes the server: planned while it was there.
    assert {b["instance_id"] for b in beats} == {leaving}
    assert all(b["time"] < completion["time"] for b in beats)
    # Spaced by half the timeout (sent by the child's clock, so allow for delivery jitter).
    gaps = [later["time"] - earlier["time"] for earlier, later in itertools.pairwise(beats)]
    assert all(gap > timeout / 2 * 0.8 for gap in gaps), gaps
    assert released_after_drain(completion)


def test_a_controller_killed_mid_drain_completes_exactly_once_after_restart(
    stack: Stack, slow: SlowRequests
) -> None:
    """SIGKILL while ``--once`` waits for the drain; the next run finishes it and completes once."""
    leaving = scale_in_held_open(stack, slow)

    child = subprocess.Popen(
        [*RECONCILE, "--once", "--config", str(stack.settings)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    try:
        wait_for(
            lambda: stat_rows(stack)[leaving]["status"] in ("DRAIN", "MAINT"),
            "the drain to start",
            DEADLINE,
        )
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(DEADLINE)
    assert calls(stack.cloud) == []
    assert leaving in stat_rows(stack)

    assert stack.reconcile().returncode == 0

    (call,) = calls(stack.cloud)
    assert call["instance_id"] == leaving
    assert released_after_drain(call)
    assert {status for status, _ in slow.results()} == {200}


def test_a_reload_during_the_drain_waits_for_the_old_worker(
    stack: Stack, slow: SlowRequests
) -> None:
    """
    HAProxy is reloaded from outside while the leaving server drains slow requests: the new
    worker never had it (the file no longer lists it), the old one still serves them. CONTINUE
    only once no worker has a session on it.
    """
    witness = stack.cloud.lifecycle_witness
    stack.cloud.lifecycle_witness = lambda: {
        **witness(),  # type: ignore[dict-item]
        "workers": stack.haproxy.worker_sessions(BACKEND),
    }
    leaving = scale_in_held_open(stack, slow)
    child = subprocess.Popen(
        [*RECONCILE, "--once", "--config", str(stack.settings)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    try:
        wait_for(lambda: stat_rows(stack)[leaving]["status"] == "DRAIN", "the drain", DEADLINE)
        stack.haproxy.reload()
    except BaseException:
        child.kill()
        raise
    assert child.wait(DEADLINE) == 0
    (call,) = calls(stack.cloud)
    assert released_after_drain(call)
    server = f"{SERVER_PREFIX}{leaving}"
    assert not any(s.get(server) for s in call["witness"]["workers"].values()), call["witness"]
    assert {status for status, _ in slow.results()} == {200}


# -- end to end: launch hook -----------------------------------------------------------------------


@pytest.mark.haproxy_versions
def test_launch_is_completed_only_after_the_first_passing_check(stack: Stack) -> None:
    """Held in drain (no traffic, no file line) while failing; CONTINUE after a pass; serves."""
    assert stack.reconcile().returncode == 0
    stack.cloud.put_lifecycle_hook(GROUP, LAUNCH_HOOK, LAUNCHING)
    (new,) = stack.cloud.begin_scale_out(GROUP, 1)
    serve(stack, [new])
    stack.servers[new].healthy = False

    done = stack.reconcile("--timeout", "2")

    assert done.returncode == 1
    assert "not converged" in done.stderr
    assert calls(stack.cloud) == []
    assert not stat_rows(stack)[new]["status"].startswith("UP")
    assert not any(new in line for line in stack.file_servers())
    assert new not in stack.answering(30)

    stack.servers[new].healthy = True
    assert stack.reconcile().returncode == 0

    (call,) = calls(stack.cloud)
    assert (call["instance_id"], call["hook"], call["result"]) == (new, LAUNCH_HOOK, "CONTINUE")
    assert call["witness"]["stat"][new]["check_status"] == "L7OK"
    assert member_state(stack.cloud, new) == "InService"
    wait_for(lambda: new in stack.answering(), f"{new} serving", DEADLINE)
    assert any(new in line for line in stack.file_servers())


def test_launch_is_abandoned_after_the_limit(stack: Stack) -> None:
    """No passing check within ``abandon_launch_after``: ABANDON once, then the server goes."""
    configure(stack, complete_lifecycle_actions=True, abandon_launch_after=1)
    assert stack.reconcile().returncode == 0
    stack.cloud.put_lifecycle_hook(GROUP, LAUNCH_HOOK, LAUNCHING)
    (new,) = stack.cloud.begin_scale_out(GROUP, 1)
    serve(stack, [new])
    stack.servers[new].healthy = False

    done = stack.reconcile()

    assert done.returncode == 0, done.stderr
    (call,) = calls(stack.cloud)
    assert (call["instance_id"], call["result"]) == (new, "ABANDON")
    assert call["witness"]["stat"][new]["status"].startswith("DOWN")
    assert member_state(stack.cloud, new) is None
    assert new not in stat_rows(stack)
    assert not any(new in line for line in stack.file_servers())


def test_replacing_the_last_instance_launches_the_new_one_before_releasing_the_old(
    stack: Stack,
) -> None:
    """
    The only instance terminating, its replacement launching (a health replacement): the hold
    keeps the old server while the new one warms up and its launch completes; the old one is
    released only after it drained, when the new one serves.
    """
    configure(stack, complete_lifecycle_actions=True, drain_timeout=1)
    for instance_id in sorted(stack.servers)[1:]:
        stack.cloud.terminate(instance_id)
    (old,) = stack.cloud.serving(GROUP)
    assert stack.reconcile().returncode == 0
    stack.cloud.put_lifecycle_hook(GROUP, LAUNCH_HOOK, LAUNCHING)
    stack.cloud.put_lifecycle_hook(GROUP, TERMINATE_HOOK, TERMINATING)
    # A health replacement: the old one leaves first (desired stays 1), a new one launches.
    stack.cloud.set_lifecycle_state(GROUP, old, "Terminating:Wait")
    stack.cloud.set_desired(GROUP, 1)
    (new,) = set(stack.cloud.serving(GROUP)) - {old}
    stack.cloud.set_lifecycle_state(GROUP, new, "Pending:Wait")
    serve(stack, [new])

    assert stack.reconcile().returncode == 0

    launched, released = calls(stack.cloud)
    assert (launched["instance_id"], launched["result"]) == (new, "CONTINUE")
    assert launched["witness"]["stat"][old]["status"] == "UP"
    assert (released["instance_id"], released["result"]) == (old, "CONTINUE")
    assert released_after_drain(released)
    assert released["witness"]["stat"][new]["status"] == "UP"
    assert stack.converged()


# -- planner defects, each with the fix described in its reason ------------------------------------


def test_terminate_waits_for_every_backend_of_the_group(
    cloud: Cloud, haproxy_factory: HAProxyFactory, http_backends: HTTPBackends, tmp_path: Path
) -> None:
    """``api`` and ``api2`` share the group; ``api`` holds a slow request: no CONTINUE before."""
    cloud.create_group(GROUP, 2)
    haproxy = haproxy_factory(
        BackendSpec(BACKEND, lines=(HEALTH_CHECK,)), BackendSpec("api2", lines=(HEALTH_CHECK,))
    )
    stack = Stack(cloud, haproxy, http_backends, tmp_path / "reconciler.toml", free_port())
    stack.serve_instances()
    configure(stack, complete_lifecycle_actions=True)
    second = f'\n[[backend]]\nname = "api2"\nasg = "{GROUP}"\nport = {stack.port}\n'
    second += 'server_prefix = "api-"\nserver_options = "check inter 100ms"\n'
    second += "drain_timeout = 5\ncomplete_lifecycle_actions = true\n"
    stack.settings.write_text(stack.settings.read_text() + second)
    witness_haproxy(stack)
    slow = SlowRequests(stack)
    try:
        scale_in_held_open(stack, slow)
        assert stack.reconcile().returncode == 0
        assert {status for status, _ in slow.results()} == {200}
    finally:
        slow.close()
    assert all(released_after_drain(call) for call in calls(cloud))


def test_another_systems_hook_is_never_completed(stack: Stack) -> None:
    """A group with a log-shipping terminate hook besides ours: only ours may be completed."""
    assert stack.reconcile().returncode == 0
    stack.cloud.put_lifecycle_hook(GROUP, "ship-logs", TERMINATING)
    stack.cloud.put_lifecycle_hook(GROUP, TERMINATE_HOOK, TERMINATING)
    leaving = sorted(stack.servers)[0]
    stack.cloud.begin_scale_in(GROUP, [leaving])
    stack.reconcile()
    assert all(call["hook"] != "ship-logs" for call in calls(stack.cloud))


def test_the_named_hook_is_completed_when_the_group_has_several(stack: Stack) -> None:
    """``terminate_hook`` picks ours among several; the other system's is left alone."""
    configure(stack, complete_lifecycle_actions=True, terminate_hook=TERMINATE_HOOK)
    assert stack.reconcile().returncode == 0
    stack.cloud.put_lifecycle_hook(GROUP, "ship-logs", TERMINATING)
    stack.cloud.put_lifecycle_hook(GROUP, TERMINATE_HOOK, TERMINATING)
    leaving = sorted(stack.servers)[0]
    stack.cloud.begin_scale_in(GROUP, [leaving])
    assert stack.reconcile().returncode == 0
    assert [(c["hook"], c["instance_id"]) for c in calls(stack.cloud)] == [
        (TERMINATE_HOOK, leaving)
    ]


def test_completing_lifecycle_actions_needs_the_runtime_socket(stack: Stack) -> None:
    """Without the runtime API nothing can be warmed up or drained: a configuration error."""
    configure(stack, complete_lifecycle_actions=True)
    stack.settings.write_text(re.sub(r"(?m)^socket = .*\n", "", stack.settings.read_text()))
    done = stack.reconcile("--dry-run")
    assert done.returncode == 2
    assert "complete_lifecycle_actions: needs [haproxy] socket" in done.stderr
