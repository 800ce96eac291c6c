"""
Zone-aware routing against the real HAProxy: three instances in each of three Availability Zones
(moto subnets ``127.0.N.0/24``), the node in zone ``a``, the backend with ``option allbackups``
and ``option redispatch``, checks every 100 ms; ``reconcile`` runs as a controller in a child
process. Traffic is counted by the instances' HTTP servers, or from the answers under load (each
names the instance that served it).

- while the local zone is healthy, no request leaves it: the other zones' servers are backups;
- when every local server fails its check, no request fails, with no controller cycle in between:
  HAProxy's own failover to every backup (``option allbackups``);
- when the local zone is degraded below the threshold but not empty, the first progress poll
  after HAProxy saw it turns the other zones' servers active: traffic in proportion to each
  zone's healthy servers; when the zone recovers, traffic returns to it;
- never a reload: the worker that served the first request serves the last;
- a backend without ``option allbackups`` is refused, the message naming the line to add.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from harness.haproxy import HAProxyFactory, HTTPBackends, wait_for
from harness.load import Hit, Load
from harness.moto import Cloud
from harness.stack import Daemon, Daemons
from harness.zones import (
    ALLBACKUPS,
    NODE_ZONE,
    ZONE_LINES,
    ZONE_ROUTING,
    ZONES,
    ZoneStack,
    build_zone_stack,
)
from tests.support.daemon import DEADLINE, controller, settled


#: HAProxy's own failover and the re-adds in the other form, on every version of the matrix.
pytestmark = pytest.mark.haproxy_versions

#: Requests counted after each change: a multiple of 3 and 7 (the healthy servers spilled to).
REQUESTS = 84


@pytest.fixture(name="stack")
def _stack(
    cloud: Cloud, haproxy_factory: HAProxyFactory, http_backends: HTTPBackends, tmp_path: Path
) -> ZoneStack:
    """Three instances serving in each zone; HAProxy with no server yet."""
    return build_zone_stack(cloud, haproxy_factory, http_backends, tmp_path)


@pytest.fixture(name="daemon")
def _daemon(stack: ZoneStack, daemons: Daemons) -> Daemon:
    """A controller routing by zone, after its first convergence (remote servers as backups)."""
    daemon = daemons.start(stack, ZONE_ROUTING, controller=controller())
    others = stack.remote()
    wait_for(lambda: stack.formed(others, set()), "the other zones as backups", DEADLINE)
    wait_for(lambda: settled(daemon), "the controller to rest", DEADLINE)
    return daemon


def zone_share(stack: ZoneStack, requests: int = REQUESTS) -> dict[str, float]:
    """
    Zone → share of the requests the instances answered while this sent *requests* through the
    frontend (each must succeed), those of any load running meanwhile included.
    """
    before = stack.requests()
    stack.answering(requests)
    counted = stack.by_zone(stack.requests() - before)
    total = sum(counted.values())
    return {zone: counted[zone] / total for zone in ZONES}


def failures(hits: list[Hit]) -> list[Hit]:
    """The requests that did not get a 200."""
    return [hit for hit in hits if hit.status != 200]


def first_acting(daemon: Daemon, since: int) -> tuple[int, dict[str, Any]] | None:
    """The index and summary of the first cycle after the first *since* that sent commands."""
    for index, cycle in enumerate(daemon.cycles()):
        if index >= since and cycle["commands"]:
            return index, cycle
    return None


def test_healthy_local_zone_gets_every_request(stack: ZoneStack, daemon: Daemon) -> None:
    """Every request stays in zone a; the file marks the other zones' lines `backup`."""
    worker = stack.haproxy.worker_pid()

    assert zone_share(stack) == {NODE_ZONE: 1.0, ZONES[1]: 0.0, ZONES[2]: 0.0}
    for instance, words in stack.file_options().items():
        assert ("backup" in words) is (instance not in stack.in_zone(NODE_ZONE)), words
    assert stack.haproxy.worker_pid() == worker


def test_local_zone_failing_its_checks_fails_no_request(stack: ZoneStack, daemon: Daemon) -> None:
    """
    With no controller running, every local server fails its check under load: no request
    fails, and once HAProxy marked them DOWN, both other zones (every backup) take the traffic.
    """
    daemon.kill()
    worker = stack.haproxy.worker_pid()
    local = stack.in_zone(NODE_ZONE)
    with Load(stack.haproxy, ["/"] * 4) as load:
        wait_for(lambda: len(load.hits()) > 20, "requests before the failure", DEADLINE)
        stack.fail(local)
        wait_for(lambda: stack.down() == set(local), "HAProxy to mark zone a DOWN", DEADLINE)
        marked, marked_at = len(load.hits()), time.monotonic()
        wait_for(lambda: len(load.hits()) > marked + 60, "requests after the failover", DEADLINE)
    hits = load.hits()

    assert failures(hits) == []
    after = stack.by_zone(Counter(hit.instance for hit in hits if hit.started > marked_at))
    assert after[NODE_ZONE] == 0
    assert after[ZONES[1]] > 0
    assert after[ZONES[2]] > 0
    assert stack.haproxy.worker_pid() == worker


def test_degraded_local_zone_spills_then_traffic_returns(stack: ZoneStack, daemon: Daemon) -> None:
    """
    Two of zone a's three servers fail their checks (1 of 7 healthy servers, below the
    threshold's 1.75): the first progress poll after HAProxy saw it makes every zone active,
    and traffic follows the healthy servers (1:3:3). Back healthy: back to zone a only. No
    request fails meanwhile, and HAProxy never reloads.
    """
    worker = stack.haproxy.worker_pid()
    local = stack.in_zone(NODE_ZONE)
    with Load(stack.haproxy, ["/"] * 2) as load:
        cycles_at_failure = len(daemon.cycles())
        stack.fail(local[:2])
        wait_for(lambda: stack.down() == set(local[:2]), "HAProxy to mark two DOWN", DEADLINE)
        cycles_at_down = len(daemon.cycles())
        wait_for(lambda: stack.formed(set(), set(local[:2])), "every zone active", DEADLINE)
        # While one server only is DOWN, zone a still carries the traffic: nothing to do.
        spilled = wait_for(lambda: first_acting(daemon, cycles_at_failure), "its log", DEADLINE)

        shares = zone_share(stack)

        stack.recover(local[:2])
        wait_for(lambda: stack.formed(stack.remote(), set()), "zone a alone again", DEADLINE)
        returned = zone_share(stack)
    hits = load.hits()

    index, summary = spilled
    # The cycle running when the test saw the servers DOWN may have read HAProxy just before.
    assert index <= cycles_at_down + 1
    assert summary["trigger"] == "progress"
    assert shares[NODE_ZONE] == pytest.approx(1 / 7, abs=0.05)
    assert shares[ZONES[1]] == pytest.approx(3 / 7, abs=0.05)
    assert shares[ZONES[2]] == pytest.approx(3 / 7, abs=0.05)
    assert returned == {NODE_ZONE: 1.0, ZONES[1]: 0.0, ZONES[2]: 0.0}
    assert failures(hits) == []
    assert stack.haproxy.worker_pid() == worker


def test_backend_without_allbackups_is_refused(
    cloud: Cloud, haproxy_factory: HAProxyFactory, http_backends: HTTPBackends, tmp_path: Path
) -> None:
    """`reconcile --once` refuses the backend, naming the line to add; HAProxy is untouched."""
    lines = [line for line in ZONE_LINES if line != ALLBACKUPS]
    stack = build_zone_stack(cloud, haproxy_factory, http_backends, tmp_path, lines=lines)
    stack.write_settings(ZONE_ROUTING)
    before = stack.haproxy.config_path.read_text()

    done = stack.reconcile()

    assert done.returncode != 0
    assert "option allbackups" in done.stderr + done.stdout
    assert "zone_routing" in done.stderr + done.stdout
    assert stack.haproxy.config_path.read_text() == before
    assert stack.states() == {}


def test_turning_zone_routing_on_under_load_fails_no_request(
    stack: ZoneStack, daemons: Daemons
) -> None:
    """
    A backend served without zone routing, every server active and busy: a controller started
    with zone routing drains the other zones' servers and adds them again as backups, with no
    request failing and no reload, and zone a then takes every request.
    """
    plain = daemons.start(stack, controller=controller())
    wait_for(lambda: stack.formed(set(), set()), "every server active", DEADLINE)
    wait_for(lambda: settled(plain), "the controller to rest", DEADLINE)
    worker = stack.haproxy.worker_pid()
    with Load(stack.haproxy, ["/"] * 4) as load:
        wait_for(lambda: len(load.hits()) > 40, "requests to every zone", DEADLINE)
        plain.kill()
        routing = daemons.start(stack, ZONE_ROUTING, controller=controller())
        wait_for(
            lambda: stack.formed(stack.remote(), set()), "the other zones as backups", DEADLINE
        )
        wait_for(lambda: settled(routing), "the controller to rest", DEADLINE)
        marked = len(load.hits())
        wait_for(lambda: len(load.hits()) > marked + 40, "requests after the change", DEADLINE)
    hits = load.hits()

    assert failures(hits) == []
    after = stack.by_zone(Counter(hit.instance for hit in hits[marked + 4 :]))
    assert after[ZONES[1]] == after[ZONES[2]] == 0
    assert stack.haproxy.worker_pid() == worker
