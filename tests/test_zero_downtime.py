"""
Zero downtime, proven under load: scale-in and scale-out while threads keep sending requests
through a real HAProxy, short ones and slow ones, and every answer is recorded.

The claims, each checked from the recorded answers rather than from timing:

- a scale-in through a terminate hook fails no request, slow requests in flight on the leaving
  instances included; no request starts on an instance after its release;
- a plain scale-in (no hook: the instances leave the group at once, terminated) fails no
  request either while the leaving instances keep answering: keep-alive clients with slow
  requests in flight on them get every answer;
- a scale-out sends nothing to a new server before its first passing check: no answer from a new
  instance arrives before the test makes its health check pass.

``reconcile --once`` runs in a child process, as a user runs it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from harness.haproxy import HAProxyFactory, HTTPBackends, wait_for
from harness.lifecycle import (
    DEADLINE,
    LAUNCH_HOOK,
    TERMINATE_HOOK,
    calls,
    configure,
    released_after_drain,
    serve,
    sessions,
    witness_haproxy,
)
from harness.load import Hit, Load
from harness.moto import LAUNCHING, TERMINATING, Cloud
from harness.stack import GROUP, Stack, build_stack


#: Seconds each slow request takes: longer than a few cycles, well below the drain timeout.
SLOW_SECONDS = 2
SHORT = "/"
SLOW = f"/slow?seconds={SLOW_SECONDS}"


def failures(hits: Sequence[Hit]) -> list[Hit]:
    """The requests that did not get a 200."""
    return [hit for hit in hits if hit.status != 200]


@pytest.fixture(name="stack")
def _stack(
    cloud: Cloud, haproxy_factory: HAProxyFactory, http_backends: HTTPBackends, tmp_path: Path
) -> Stack:
    """Five instances serving; the backend completes lifecycle actions; drains may last 15 s."""
    stack = build_stack(cloud, haproxy_factory, http_backends, tmp_path, size=5)
    configure(stack, complete_lifecycle_actions=True, drain_timeout=15)
    witness_haproxy(stack)
    assert stack.reconcile().returncode == 0
    return stack


def test_scale_in_of_several_instances_fails_no_request(stack: Stack) -> None:
    """
    Three of five instances leave through the terminate hook while short and slow requests
    flow: every request gets 200, slow ones in flight on the leavers included; each leaver is
    released once, after its drain, and nothing starts on it after its release.
    """
    stack.cloud.put_lifecycle_hook(GROUP, TERMINATE_HOOK, TERMINATING)
    leaving = sorted(stack.servers)[:3]
    slow_threads = 8
    with Load(stack.haproxy, [SHORT] * 4 + [SLOW] * slow_threads) as load:
        # Once the first slow answers are in, every slow thread always has one in flight.
        wait_for(
            lambda: len([h for h in load.hits() if h.path == SLOW]) >= slow_threads,
            "the first slow answers",
            DEADLINE,
        )
        wait_for(lambda: all(sessions(stack, i) for i in leaving), "busy leavers", DEADLINE)
        scaled_in = time.monotonic()
        stack.cloud.begin_scale_in(GROUP, leaving)

        done = stack.reconcile()

        assert done.returncode == 0, done.stderr
        sent = len(load.hits())
        wait_for(lambda: len(load.hits()) > sent + 20, "requests after the scale-in", DEADLINE)
    hits = load.hits()

    assert failures(hits) == []
    # Slow requests on leaving instances, in flight when the scale-in (hence the drain) began.
    held_open = [
        h
        for h in hits
        if h.path == SLOW and h.instance in leaving and h.started < scaled_in < h.ended
    ]
    assert held_open
    releases = {c["instance_id"]: c for c in calls(stack.cloud)}
    assert sorted(releases) == leaving
    assert len(calls(stack.cloud)) == len(leaving)
    assert all(released_after_drain(c) for c in releases.values())
    assert all(h.started < releases[h.instance]["time"] for h in hits if h.instance in leaving)
    assert stack.converged()


@pytest.mark.haproxy_versions
def test_plain_scale_in_of_several_instances_fails_no_request(stack: Stack) -> None:
    """
    Three of five instances leave their group without a hook, terminated at once, while they
    keep answering and eight keep-alive clients send short and slow (0.3-0.5 s) requests:
    every request gets 200, those in flight on the leavers included; then HAProxy has only
    the remaining instances.
    """
    leaving = sorted(stack.servers)[:3]
    slow = [f"/slow?seconds={seconds}" for seconds in (0.3, 0.4, 0.5, 0.3, 0.4, 0.5)]
    with Load(stack.haproxy, [SHORT, SHORT, *slow], keep_alive=True) as load:
        wait_for(lambda: all(sessions(stack, i) for i in leaving), "busy leavers", DEADLINE)
        scaled_in = time.monotonic()
        for instance_id in leaving:
            stack.cloud.terminate(instance_id)

        done = stack.reconcile()

        assert done.returncode == 0, done.stderr
        sent = len(load.hits())
        wait_for(lambda: len(load.hits()) > sent + 20, "requests after the scale-in", DEADLINE)
    hits = load.hits()

    assert failures(hits) == []
    in_flight = [h for h in hits if h.instance in leaving and h.started < scaled_in < h.ended]
    assert in_flight
    assert set(stack.states()) == set(stack.servers) - set(leaving)
    assert stack.converged()


@pytest.mark.haproxy_versions
@pytest.mark.parametrize("launch_hook", [False, True], ids=["in-service", "launch-hook"])
def test_scale_out_sends_nothing_to_a_server_before_its_first_passing_check(
    stack: Stack, launch_hook: bool
) -> None:
    """
    Two new instances (plain, or waiting on a launch hook) fail their health check while
    requests flow: no answer comes from them until the check passes; no request fails; then
    they serve.
    """
    if launch_hook:
        stack.cloud.put_lifecycle_hook(GROUP, LAUNCH_HOOK, LAUNCHING)
        new = stack.cloud.begin_scale_out(GROUP, 2)
        serve(stack, new)
    else:
        new = sorted(stack.scale_to(7))
    for instance_id in new:
        stack.servers[instance_id].healthy = False
    with Load(stack.haproxy, [SHORT] * 4) as load:
        done = stack.reconcile("--timeout", "2")
        assert done.returncode == 1
        assert "not converged" in done.stderr
        healthy_at = time.monotonic()
        for instance_id in new:
            stack.servers[instance_id].healthy = True

        assert stack.reconcile().returncode == 0

        wait_for(
            lambda: set(new) <= {h.instance for h in load.hits()},
            "the new instances to serve",
            DEADLINE,
        )
    hits = load.hits()

    assert failures(hits) == []
    assert [h for h in hits if h.instance in new and h.ended < healthy_at] == []
    # Launches complete in whichever order their checks pass.
    assert sorted(c["instance_id"] for c in calls(stack.cloud)) == (
        sorted(new) if launch_hook else []
    )
    assert stack.converged()
