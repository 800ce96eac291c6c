"""
Convergence latency (issue 7, part 1) and traffic during change (part 4), measured in the same runs;
and the work each event costs (issue 12).

Each compared mode gets a fresh world (moto account, HAProxy, HTTP servers on the instances'
addresses) and the same workload: scale-out and scale-in events in turn, at the same random
moments (a fixed seed). An event is what AWS does: the group launches an instance (or terminates
one), then the notification is published to SNS, which delivers it to the queue. Its latency runs
from the moment the benchmark publishes the notification until HAProxy's runtime shows the server
``UP`` (scale-out) or no longer has it (scale-in), as seen by polling ``show stat`` every 10 ms.

Meanwhile a paced load generator sends requests through HAProxy; every request that does not get
a 200 is a failure. An instance's HTTP server keeps answering after termination, so failures count
what the way HAProxy is changed costs, not dead machines. One exception is by design: the
controller cuts the sessions of a server whose instance is gone (no answer can come back from a
terminated machine), so a request in flight at that moment fails here although the emulated
machine would still have answered; ``sessions_at_maintenance`` counts those moments from
HAProxy's log (a terminate lifecycle hook makes the controller drain instead).

Modes:

- ``event``: the controller woken by the queue, changes through the runtime API (the default);
- ``polling``: the same controller without a queue, reading AWS on a 5 s timer only
  (``resync_interval`` and ``poll_interval`` = 5 s): a polling sync tool. A new server with a
  health check is added by the timer's cycle, then made ready by looks at HAProxy alone (a
  quarter of the check interval apart), so both directions show the polling delay;
- ``naive``: ``bench/naive.py``, one DescribeInstances, file rewrite and reload per message;
- ``reload``: the controller woken by the queue but without a runtime socket, so every change is a
  file edit plus ``reload_command`` (part 4's reload path).

The floor is the time of the two Describe calls alone (``AwsMembership.read_groups``), sampled
with nothing else running: no controller can converge faster than it reads.

Every mode runs on each HAProxy version of ``harness.haproxy.haproxy_matrix`` in turn (the system's
first; ``make bench`` sets ``HAPROXY_MATRIX``), with the same schedule, so the versions' figures
stand side by side. The servers are checked every 100 ms (``DENSE_OPTIONS``) and the events come
0.3-0.7 s apart, so that one event's cycles often meet the next one's.

A second world (``spread``), on the first version only, compares the controller (``event``) with
the naive script on single events: the servers checked every 250 ms as in many real setups, the
events 3.5-4.5 s apart in ``make bench``, so that each is handled, and paid for, alone. There an
event is *served* when HAProxy routes as it says: a scale-out's server takes requests (``UP``), a
scale-in's takes no new ones. Its figures are the issue's headline comparison, and its work (AWS
read pairs per event, CPU) is what a spread single event costs.

After the last event every handler is waited for until idle (``handlers.wait_idle``), so that the
work counted includes the follow-up cycles of the last events.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bench import handlers
from bench.handlers import cycle_cpu
from bench.load import PacedLoad
from bench.profile import Profile
from bench.stats import distribution
from bench.world import (
    InstanceServers,
    Lab,
    reloads,
    server_states,
    serving,
    sessions_at_maintenance,
    sleep_until,
    wait_master,
)
from harness.haproxy import HAProxyBinary, HAProxyProcess, haproxy_matrix, wait_for
from harness.moto import Cloud
from harness.stack import GROUP, Notifications, Stack, build_stack
from reconciler.adapters.aws.clients import AwsClients
from reconciler.adapters.aws.membership import AwsMembership


#: Seconds between two looks at HAProxy's servers: the resolution of every latency.
POLL_INTERVAL = 0.01
#: Scale-in never takes the group's serving servers below this many.
MIN_SERVING = 2
#: The schedule of events is the same in every mode.
SEED = 7
SCALE_OUT = "scale_out"
SCALE_IN = "scale_in"
#: Seconds the first convergence of a mode may take.
FIRST_CONVERGENCE = 60.0
#: The managed servers' options in the first world, for the controller and the script alike.
DENSE_OPTIONS = "check inter 100ms fall 2 rise 1"
MODES = (
    handlers.EVENT,
    handlers.FIRST_CHECK,
    handlers.POLLING,
    handlers.NAIVE,
    handlers.RELOAD,
)
#: The same in the world of single events.
SPREAD_OPTIONS = "check inter 250ms fall 2 rise 1"
SPREAD_MODES = (handlers.EVENT, handlers.FIRST_CHECK, handlers.NAIVE)


@dataclass(frozen=True)
class World:
    """What the compared modes of one world share."""

    #: The managed servers' options (``server_options``), for every mode.
    server_options: str
    #: Scale-outs, and as many scale-ins, per mode.
    events: int
    #: Seconds between two events, drawn uniformly in this range (the same draws in every mode).
    gap: tuple[float, float]
    modes: tuple[handlers.Mode, ...]


def dense(profile: Profile) -> World:
    """The first world: every mode, checks every 100 ms, events 0.3-0.7 s apart (full size)."""
    return World(DENSE_OPTIONS, profile.events, profile.event_gap, MODES)


def spread(profile: Profile) -> World:
    """The world of single events: the controller and the script, checks every 250 ms."""
    return World(SPREAD_OPTIONS, profile.spread_events, profile.spread_gap, SPREAD_MODES)


@dataclass
class Event:
    """One scale event and when HAProxy showed it."""

    kind: str
    instance: str
    published: float
    #: Scale-in: when the server stopped taking new requests (draining, maintenance or gone).
    left: float | None = None
    #: When HAProxy showed the event done: the server ``UP``, or gone.
    done: float | None = None


class Watcher:
    """Polls HAProxy's managed servers and stamps each tracked event when HAProxy shows it."""

    def __init__(self, haproxy: HAProxyProcess) -> None:
        """Watch *haproxy*; nothing runs before ``__enter__``."""
        self._haproxy = haproxy
        self._lock = threading.Lock()
        self._pending: list[Event] = []
        self._states: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watcher", daemon=True)

    def __enter__(self) -> Watcher:
        """Start polling."""
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop polling."""
        self._stop.set()
        self._thread.join()

    def track(self, event: Event) -> None:
        """Stamp *event* once HAProxy shows it."""
        with self._lock:
            self._pending.append(event)

    def states(self) -> dict[str, str]:
        """The managed servers' statuses at the last successful look."""
        with self._lock:
            return dict(self._states)

    def wait_all(self, timeout: float) -> None:
        """Wait until every tracked event is stamped, or *timeout* seconds passed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._pending:
                    return
            time.sleep(0.05)

    def _run(self) -> None:
        while not self._stop.wait(POLL_INTERVAL):
            states = server_states(self._haproxy)
            seen = time.monotonic()
            if states is None:
                continue
            up = serving(states)
            with self._lock:
                self._states = states
                for event in self._pending:
                    _stamp(event, states, up, seen)
                self._pending = [e for e in self._pending if e.done is None]


def _stamp(event: Event, states: Mapping[str, str], up: set[str], seen: float) -> None:
    if event.kind == SCALE_OUT:
        if event.instance in up:
            event.done = seen
        return
    if event.left is None and event.instance not in up:
        event.left = seen
    if event.instance not in states:
        event.done = seen


class Scaler:
    """Makes scale events happen in moto, serves new instances, publishes the notifications."""

    def __init__(
        self, stack: Stack, queue: Notifications, servers: InstanceServers, watcher: Watcher
    ) -> None:
        """Start from the group as it is."""
        self._stack = stack
        self._queue = queue
        self._servers = servers
        self._watcher = watcher
        #: Members, the first ones in id order, then in launch order: scale-in takes the first
        #: that serves.
        self._members = sorted(stack.cloud.serving(GROUP))

    def scale_out(self) -> Event:
        """Launch one instance, serve it, then notify."""
        cloud = self._stack.cloud
        cloud.set_desired(GROUP, len(self._members) + 1)
        now = cloud.serving(GROUP)
        (new,) = (i for i in now if i not in self._members)
        self._servers.serve({new: now[new]})
        self._members.append(new)
        published = time.monotonic()
        self._queue.publish("LAUNCH", new)
        return Event(SCALE_OUT, new, published)

    def scale_in(self, timeout: float) -> Event:
        """Terminate the oldest instance HAProxy serves (waiting for one if need be), notify."""
        victim = wait_for(self._victim, "an instance to scale in", timeout)
        self._stack.cloud.terminate(victim)
        self._members.remove(victim)
        published = time.monotonic()
        self._queue.publish("TERMINATE", victim)
        return Event(SCALE_IN, victim, published)

    def _victim(self) -> str | None:
        up = serving(self._watcher.states())
        candidates = [i for i in self._members if i in up]
        return candidates[0] if len(candidates) > MIN_SERVING else None


def run_mode(
    cloud: Cloud, mode: handlers.Mode, world: World, profile: Profile, binary: str
) -> dict[str, Any]:
    """One mode's latencies, failed requests, reloads and work, in a world of its own."""
    rng = random.Random(SEED)
    with Lab(cloud, binary) as lab:
        stack = build_stack(
            cloud,
            lab.haproxies,
            lab.backends,
            lab.directory,
            profile.base_size,
            global_lines=mode.haproxy_global,
        )
        wait_master(stack.haproxy)
        queue = Notifications(cloud)
        counts = handlers.start(
            mode,
            lab,
            stack,
            queue,
            backend={"server_options": world.server_options},
            polling_interval=profile.polling_interval,
        )
        wait_for(stack.converged, f"{mode.key}: the first convergence", FIRST_CONVERGENCE)
        servers = InstanceServers(stack)
        before, reloads_before = counts.snapshot(), reloads(stack.haproxy)
        cycles_before = len(counts.cycles())
        cut_before = sessions_at_maintenance(stack.haproxy)
        events: list[Event] = []
        started = time.monotonic()
        with Watcher(stack.haproxy) as watcher, PacedLoad(stack.haproxy, profile.load_rate) as load:
            scaler = Scaler(stack, queue, servers, watcher)
            due = time.monotonic()
            for n in range(2 * world.events):
                due += rng.uniform(*world.gap)
                sleep_until(due)
                event = scaler.scale_out() if n % 2 == 0 else scaler.scale_in(profile.settle)
                watcher.track(event)
                events.append(event)
            watcher.wait_all(profile.settle)
        seconds = time.monotonic() - started
        handlers.wait_idle(mode, counts, queue, len(events), profile.quiet)
        return {
            "label": mode.label,
            **latencies(events),
            "reloads": reloads(stack.haproxy) - reloads_before,
            "sessions_at_maintenance": sessions_at_maintenance(stack.haproxy) - cut_before,
            "work": counts.since(before),
            "cycle_cpu_ms": cycle_cpu(counts.cycles()[cycles_before:]),
            "load": load.count.to_json(),
            "seconds": round(seconds, 2),
        }


def latencies(events: list[Event]) -> dict[str, Any]:
    """The latency distributions of *events*, and how many never showed in HAProxy."""

    def of(kind: str, stamp: Callable[[Event], float | None]) -> list[float]:
        return [
            value - e.published
            for e in events
            if e.kind == kind and (value := stamp(e)) is not None
        ]

    out, gone, left = (
        of(SCALE_OUT, lambda e: e.done),
        of(SCALE_IN, lambda e: e.done),
        of(SCALE_IN, lambda e: e.left),
    )
    return {
        SCALE_OUT: distribution(out),
        SCALE_IN: distribution(gone),
        "scale_in_out_of_rotation": distribution(left),
        # Every event until HAProxy routes as it says: the new server serves, the old one not.
        "served": distribution(out + left),
        "events": len(events),
        "unfinished": sum(1 for e in events if e.done is None),
    }


def floor(cloud: Cloud, profile: Profile) -> dict[str, Any]:
    """
    The two Describe calls alone, as the controller's own adapter makes them, on a group of the
    benchmark's size with nothing else running: the latency no event-driven tool can beat.
    """
    cloud.reset()
    cloud.create_group(GROUP, profile.base_size)
    membership = AwsMembership(AwsClients())
    samples = []
    for _ in range(profile.floor_samples):
        started = time.perf_counter()
        observed = membership.read_groups([GROUP])
        samples.append(time.perf_counter() - started)
        if observed.errors:
            raise RuntimeError(f"reading the group failed: {observed.errors}")
    return distribution(samples)


def run(cloud: Cloud, profile: Profile, log: Callable[[str], None]) -> dict[str, Any]:
    """
    The floor, every mode on each HAProxy version, then the world of single events on the first
    version; the JSON of ``convergence``.
    """
    binaries = haproxy_matrix()
    if not binaries:
        raise RuntimeError("haproxy is not on PATH: `make bench` installs it")
    log("convergence: the floor (two Describe calls)")
    results: dict[str, Any] = {
        "floor": floor(cloud, profile),
        "server_options": DENSE_OPTIONS,
        "versions": [],
    }
    for binary in binaries:
        results["versions"].append(run_version(cloud, dense(profile), profile, binary, log))
    single = spread(profile)
    results["spread"] = {
        "server_options": single.server_options,
        "event_gap": list(single.gap),
        **run_version(cloud, single, profile, binaries[0], log),
    }
    return results


def run_version(
    cloud: Cloud,
    world: World,
    profile: Profile,
    binary: HAProxyBinary,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Every mode of *world* on *binary*: its version, its label and the modes' figures."""
    modes = {}
    for mode in world.modes:
        log(
            f"convergence: {mode.key} on {binary.label}, {world.server_options!r} "
            f"({2 * world.events} events)"
        )
        modes[mode.key] = run_mode(cloud, mode, world, profile, binary.path)
    return {"haproxy": binary.version, "label": binary.label, "modes": modes}
