"""
Zone routing (issue 13): a three-zone world under paced load, the HAProxy node in zone ``a``.

Each scenario in a fresh world (``harness.zones``): ``per_zone`` instances in each zone, the
backend with ``option allbackups`` and ``option redispatch``, checks every 250 ms, the controller
running. Requests are counted by the instances' HTTP servers, so each zone's share is exact.

- ``cross_zone``: the share of requests answered outside zone ``a``, with ``zone_routing`` off
  (round robin over every zone: about two thirds) and on (0 while zone ``a`` is healthy);
- ``failover``: every zone ``a`` server fails its health check (``checks_fail``), or stops
  listening (``servers_stop``; ``servers_stop_observed`` with ``OBSERVED`` in the server
  options), under load: the requests that failed, and the share zones ``b`` and ``c`` took once
  HAProxy marked zone ``a`` DOWN. No controller cycle is needed: the other zones' servers are
  backups, and ``option allbackups`` makes them all take over at once;
- ``spill``: all but one of zone ``a``'s servers fail their checks (below the 0.75 threshold):
  seconds until HAProxy marks them DOWN (its checks), until the controller made the other zones
  active (a progress poll, then re-adding the servers), and each zone's share afterwards against
  its share of the healthy servers; then zone ``a`` recovers: seconds until it alone serves.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from bench.load import PacedLoad
from bench.profile import Profile
from bench.stats import figure
from bench.world import Lab, reloads
from harness.haproxy import wait_for
from harness.moto import Cloud
from harness.stack import Daemon, Value
from harness.zones import NODE_ZONE, ZONE_ROUTING, ZONES, ZoneStack, build_zone_stack


SERVER_OPTIONS = "check inter 250ms fall 2 rise 1"
#: Server options that mark a server DOWN at its first refused connection, not its checks'.
OBSERVED = "observe layer4 error-limit 1 on-error mark-down"
#: The failovers: key, whether zone a's servers stop (or only fail their checks), the options.
FAILOVERS = (
    ("checks_fail", False, SERVER_OPTIONS),
    ("servers_stop", True, SERVER_OPTIONS),
    ("servers_stop_observed", True, f"{SERVER_OPTIONS} {OBSERVED}"),
)
#: Seconds any change may take to show in HAProxy: far above what one needs.
DEADLINE = 30.0
#: How often the bench looks at HAProxy while it times a change.
POLL = 0.01
#: Threads of the paced load.
THREADS = 4


def run(cloud: Cloud, profile: Profile, log: Callable[[str], None]) -> dict[str, Any]:
    """Every scenario, each in a world of its own; the JSON of ``zones``."""
    log("zones: cross-zone share, zone_routing off")
    off = cross_zone(cloud, profile, routing=False)
    log("zones: cross-zone share, zone_routing on")
    on = cross_zone(cloud, profile, routing=True)
    failover = {}
    for key, stop, options in FAILOVERS:
        log(f"zones: failover, zone a {key.replace('_', ' ')}")
        failover[key] = local_zone_fails(cloud, profile, stop=stop, options=options)
    log(f"zones: spill on partial loss, {profile.zone_repeats} runs")
    spill = partial_loss(cloud, profile)
    return {
        "node_zone": NODE_ZONE,
        "per_zone": profile.zone_per_zone,
        "server_options": SERVER_OPTIONS,
        "load_rate_per_second": profile.load_rate,
        "cross_zone": {"off": off, "on": on},
        "failover": failover,
        "spill": spill,
    }


def world(
    lab: Lab, profile: Profile, *, routing: bool, options: str = SERVER_OPTIONS
) -> tuple[ZoneStack, Daemon]:
    """The three-zone stack in *lab*, its controller started and converged."""
    stack = build_zone_stack(
        lab.cloud, lab.haproxies, lab.backends, lab.directory, profile.zone_per_zone
    )
    backend: dict[str, Value] = {"server_options": options}
    if routing:
        backend |= ZONE_ROUTING
    daemon = lab.daemons.start(stack, backend, controller={"resync_interval": 300})
    remote = stack.remote() if routing else set()
    wait_for(lambda: stack.formed(remote, set()), "the first convergence", DEADLINE)
    return stack, daemon


def shares(stack: ZoneStack, before: Counter[str]) -> dict[str, float | None]:
    """Zone → share of the requests the instances answered since the counts *before*."""
    counted = stack.by_zone(stack.requests() - before)
    total = sum(counted.values())
    return {zone: round(counted[zone] / total, 4) if total else None for zone in ZONES}


def cross_zone(cloud: Cloud, profile: Profile, *, routing: bool) -> dict[str, Any]:
    """Paced load for ``zone_seconds`` over a healthy world: each zone's share, the failures."""
    with Lab(cloud) as lab:
        stack, _ = world(lab, profile, routing=routing)
        before = stack.requests()
        with PacedLoad(stack.haproxy, profile.load_rate, THREADS) as load:
            time.sleep(profile.zone_seconds)
        by_zone = shares(stack, before)
        return {
            "requests": load.count.requests,
            "failed": load.count.failed,
            "by_zone": by_zone,
            "cross_zone_share": round(1 - (by_zone[NODE_ZONE] or 0), 4),
            "reloads": reloads(stack.haproxy),
        }


def local_zone_fails(cloud: Cloud, profile: Profile, *, stop: bool, options: str) -> dict[str, Any]:
    """
    Zone ``a`` fails its checks (or its servers stop) under load: the failures, the seconds
    until HAProxy marked it DOWN, and where requests went afterwards.
    """
    with Lab(cloud) as lab:
        stack, _ = world(lab, profile, routing=True, options=options)
        local = stack.in_zone(NODE_ZONE)
        with PacedLoad(stack.haproxy, profile.load_rate, THREADS) as load:
            time.sleep(profile.zone_seconds / 2)
            failed_at = time.monotonic()
            for instance in local:
                if stop:
                    stack.servers[instance].stop()
                else:
                    stack.servers[instance].healthy = False
            wait_for(lambda: stack.down() == set(local), "zone a DOWN", DEADLINE)
            marked_down = time.monotonic() - failed_at
            before = stack.requests()
            time.sleep(profile.zone_seconds / 2)
        return {
            "requests": load.count.requests,
            "failed": load.count.failed,
            "server_options": options,
            "failure_kinds": dict(load.count.kinds),
            "seconds_to_down": round(marked_down, 3),
            "by_zone_after": shares(stack, before),
            "reloads": reloads(stack.haproxy),
        }


def partial_loss(cloud: Cloud, profile: Profile) -> dict[str, Any]:
    """All but one of zone ``a``'s servers fail their checks and recover, ``zone_repeats`` times."""
    runs: list[dict[str, Any]] = []
    with Lab(cloud) as lab:
        stack, _ = world(lab, profile, routing=True)
        local, remote = stack.in_zone(NODE_ZONE), stack.remote()
        # One left: the zone is degraded, not empty (an empty zone fails over by itself).
        failing = set(local[:-1])
        healthy = len(stack.servers) - len(failing)
        expected = {zone: len(stack.in_zone(zone)) / healthy for zone in ZONES}
        expected[NODE_ZONE] = (len(local) - len(failing)) / healthy
        with PacedLoad(stack.haproxy, profile.load_rate, THREADS) as load:
            for _ in range(profile.zone_repeats):
                runs.append(spill_once(stack, failing, remote, profile))
        return {
            "requests": load.count.requests,
            "failed": load.count.failed,
            "expected_by_zone": {zone: round(share, 4) for zone, share in expected.items()},
            "by_zone": {
                zone: figure([r["by_zone"][zone] for r in runs if r["by_zone"][zone] is not None])
                for zone in ZONES
            },
            **{key: figure([r[key] for r in runs]) for key in TIMES},
            "reloads": reloads(stack.haproxy),
        }


TIMES = ("seconds_to_down", "seconds_to_spill", "spill_after_down", "seconds_to_return")


def spill_once(
    stack: ZoneStack, failing: set[str], remote: set[str], profile: Profile
) -> dict[str, Any]:
    """One partial loss and its recovery: the times, and the shares while spilled."""
    started = time.monotonic()
    stack.fail(failing)
    down = timed(lambda: stack.down() == failing, started)
    spilled = timed(lambda: stack.formed(set(), failing), started)
    before = stack.requests()
    time.sleep(profile.zone_seconds / 2)
    by_zone = shares(stack, before)
    recovered = time.monotonic()
    stack.recover(failing)
    returned = timed(lambda: stack.formed(remote, set()), recovered)
    return {
        "seconds_to_down": down,
        "seconds_to_spill": spilled,
        "spill_after_down": spilled - down,
        "seconds_to_return": returned,
        "by_zone": by_zone,
    }


def timed(condition: Callable[[], bool], since: float) -> float:
    """Seconds from *since* until *condition* holds (looked at every ``POLL``)."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"zones: no change within {DEADLINE:g} s")
        time.sleep(POLL)
    return round(time.monotonic() - since, 3)
