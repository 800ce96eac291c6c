"""
Zone routing: keep the node's requests in its own Availability Zone while that zone can carry
them. Pure.

HAProxy does the routing itself, so no failure waits for the controller: in ``LOCAL`` mode the
servers of the other zones are ``backup`` servers, which (with ``option allbackups``) all take
over the moment no local server is usable; in ``SPILL`` mode every server is active and the load
balancer spreads the requests in proportion to the weights of the healthy ones. The controller
only picks the mode, every cycle, from what HAProxy's health checks say:

- a server's capacity is its desired weight (1 without weights), and it is healthy when
  ``RuntimeServer.usable``;
- ``H`` is the healthy capacity of all zones, ``Z`` the number of zones with a desired server,
  and ``needed = zone_threshold * H / Z``: the share an even spread would give a zone, times the
  threshold (Envoy's rule for zone-aware routing);
- ``L``, the local zone's healthy capacity: ``LOCAL`` when ``L >= needed``, ``SPILL`` below;
- ``SPILL`` when the local zone has no desired server at all;
- when ``L`` is 0 the form the servers run in stays: HAProxy already fails over in both (to the
  backups, or to the active servers of the other zones), and re-adding the servers that carry
  every request would only interrupt them.

The decision does not depend on the mode the servers run in (backup servers are checked too),
so it does not flip back and forth by itself. How a server changes form without losing the
traffic it carries is ``server_steps.reformed``'s; ``carried`` tells it whether a server in use
may drain.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping

from reconciler.core.model import (
    Instance,
    RuntimeServer,
    ServerLine,
    ZoneCount,
    ZoneMode,
    ZoneStatus,
)


#: The zone of an instance DescribeInstances gave none; never the node's.
UNKNOWN = "unknown"


def zone_of(instance: Instance | None) -> str:
    """The Availability Zone of *instance* (``UNKNOWN`` without one, or without an instance)."""
    return (instance.zone if instance is not None else None) or UNKNOWN


def decide(
    node_zone: str,
    threshold: float,
    members: Iterable[tuple[str, Instance]],
    runtime: Mapping[str, RuntimeServer],
    capacity: Callable[[Instance], int],
    located: Callable[[str], str],
) -> ZoneStatus:
    """
    The mode of a backend whose desired servers are *members* (server name, instance), from
    the *runtime* servers (the managed ones, by name) and each instance's *capacity*; *located*
    gives the zone of any managed server by name, for the cross-zone share.
    """
    servers: dict[str, int] = defaultdict(int)
    healthy: dict[str, int] = defaultdict(int)
    healthy_capacity: dict[str, int] = defaultdict(int)
    remote_active = False
    for name, instance in members:
        zone = zone_of(instance)
        servers[zone] += 1
        running = runtime.get(name)
        if running is None:
            continue
        remote_active = remote_active or (zone != node_zone and not running.backup)
        if running.usable:
            healthy[zone] += 1
            healthy_capacity[zone] += capacity(instance)
    zones = {z: ZoneCount(servers[z], healthy[z], healthy_capacity[z]) for z in sorted(servers)}
    needed = threshold * sum(healthy_capacity.values()) / max(len(servers), 1)
    local = healthy_capacity[node_zone]
    if node_zone not in servers:
        mode = ZoneMode.SPILL
    elif local == 0:
        mode = ZoneMode.SPILL if remote_active else ZoneMode.LOCAL
    else:
        mode = ZoneMode.LOCAL if local >= needed else ZoneMode.SPILL
    return ZoneStatus(
        node_zone, mode, zones, needed, _cross_zone_share(node_zone, runtime, located)
    )


def carried(lines: Iterable[ServerLine], runtime: Mapping[str, RuntimeServer]) -> bool:
    """
    Some line wants an active server, and its server runs active and usable at the line's
    address: whatever else changes form this cycle, the traffic has a server that stays.
    """
    for line in lines:
        running = None if line.backup else runtime.get(line.name)
        if (
            running is not None
            and running.usable
            and not running.backup
            and running.address == line.address
            and running.port == line.port
        ):
            return True
    return False


def backup(status: ZoneStatus, instance: Instance) -> bool:
    """Whether *instance*'s server runs as a backup server in *status*'s mode."""
    return status.mode is ZoneMode.LOCAL and zone_of(instance) != status.node_zone


def reason(status: ZoneStatus, *, to_backup: bool) -> str:
    """Why a server is turned into a backup server (*to_backup*) or back into an active one."""
    if to_backup:
        return "to backup: local zone carries the traffic"
    local = status.local.healthy_capacity
    if status.node_zone not in status.zones:
        return f"active: no server in the local zone {status.node_zone}"
    if local == 0:
        return "active: other zones' servers already carry the traffic"
    return f"active: local zone degraded, {capacity(status)}"


def capacity(status: ZoneStatus) -> str:
    """The local zone's healthy capacity against the threshold, for reports."""
    return f"healthy capacity {status.local.healthy_capacity}, {status.needed:.3g} needed"


def _cross_zone_share(
    node_zone: str, runtime: Mapping[str, RuntimeServer], located: Callable[[str], str]
) -> float | None:
    """
    The share of the load balancer's choices since the worker started that went to servers
    outside *node_zone*; ``None`` before any choice.
    """
    chosen = sum(server.chosen for server in runtime.values())
    if chosen == 0:
        return None
    local = sum(s.chosen for name, s in runtime.items() if s.chosen and located(name) == node_zone)
    return (chosen - local) / chosen
