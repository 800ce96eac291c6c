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

import http.client
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import pytest

from tests.support.haproxy import HAProxyFactory, HAProxyProcess, HTTPBackends, wait_for
from tests.support.moto import LAUNCHING, TERMINATING, Cloud
from tests.support.stack import GROUP, Stack, build_stack
from tests.test_lifecycle_hooks import (
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


#: Seconds each slow request takes: longer than a few cycles, well below the drain timeout.
SLOW_SECONDS = 2
SHORT = "/"
SLOW = f"/slow?seconds={SLOW_SECONDS}"


@dataclass(frozen=True)
class Hit:
    """One request sent through HAProxy and its answer (status 0: no HTTP answer at all)."""

    path: str
    started: float
    ended: float
    status: int
    body: str

    @property
    def instance(self) -> str:
        """The instance that answered, from the backend's ``hello from <id>``."""
        return self.body.strip().removeprefix("hello from ") if self.status == 200 else ""


class Load:
    """
    One thread per path, each sending its request in a loop until stopped: on a new connection
    each time, or as a keep-alive client reusing one connection (a new one after a failure).
    """

    def __init__(
        self, haproxy: HAProxyProcess, paths: Sequence[str], *, keep_alive: bool = False
    ) -> None:
        """Send through *haproxy*'s frontend; one thread for each of *paths*."""
        self._haproxy = haproxy
        self._keep_alive = keep_alive
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._hits: list[Hit] = []
        self._threads = [
            threading.Thread(target=self._run, args=(path,), name=f"load-{n}", daemon=True)
            for n, path in enumerate(paths)
        ]

    def __enter__(self) -> Load:
        """Start every thread."""
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop, letting the requests in flight finish."""
        self.stop()

    def stop(self) -> list[Hit]:
        """Stop sending, wait for the answers in flight; every hit."""
        self._stop.set()
        for thread in self._threads:
            thread.join(DEADLINE)
        return self.hits()

    def hits(self) -> list[Hit]:
        """The answers so far."""
        with self._lock:
            return list(self._hits)

    def _run(self, path: str) -> None:
        client: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                if not self._keep_alive:
                    status, body = self._haproxy.get(path)
                else:
                    if client is None:
                        client = http.client.HTTPConnection("127.0.0.1", self._haproxy.port)
                    client.request("GET", path)
                    response = client.getresponse()
                    status, body = response.status, response.read().decode()
                    if response.will_close:
                        client.close()
                        client = None
            except (OSError, http.client.HTTPException) as exc:
                status, body = 0, repr(exc)
                if client is not None:
                    client.close()
                    client = None
            hit = Hit(path, started, time.monotonic(), status, body)
            with self._lock:
                self._hits.append(hit)
        if client is not None:
            client.close()


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
