"""
Three Availability Zones on loopback, for zone routing and weights, every part real.

``build_zone_stack`` makes a ``ZoneStack``: group ``api-asg`` with instances in the region's zones
``a``, ``b`` and ``c`` (each zone its own ``127.0.N.0/24`` subnet, ``harness.moto``), their HTTP
servers, a real HAProxy whose ``api`` backend has what zone routing needs (``option allbackups``,
``option redispatch``, checks every 100 ms) and the settings file, the node in zone ``a``. Then
``fail``/``recover`` make servers' health checks fail or pass again (they keep answering
requests: HAProxy alone decides where traffic goes), and ``by_zone`` counts where it went.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from harness.haproxy import (
    HEALTH_CHECK,
    BackendSpec,
    HAProxyFactory,
    HAProxyProcess,
    HTTPBackends,
    free_port,
)
from harness.moto import REGION, Cloud
from harness.stack import BACKEND, CHECK_TIMEOUT, GROUP, SERVER_PREFIX, Stack, Value


#: The zones' letters: each has its subnet (``harness.moto.ZONE_OCTETS``).
LETTERS = ("a", "b", "c")
#: The zones of the default region.
ZONES = tuple(f"{REGION}{letter}" for letter in LETTERS)
#: The zone of the HAProxy node.
NODE_ZONE = ZONES[0]
ALLBACKUPS = "option allbackups"
#: The backend's lines: checks on ``/health``, every backup taking over together when the
#: local zone fails, and a request whose server failed sent to another one.
ZONE_LINES = (HEALTH_CHECK, CHECK_TIMEOUT, ALLBACKUPS, "option redispatch", "retries 3")
#: The backend settings that turn zone routing on.
ZONE_ROUTING: dict[str, Value] = {"zone_routing": True}


class ZoneStack(Stack):
    """A ``Stack`` whose instances live in three zones and whose settings name the node's zone."""

    def __init__(
        self,
        cloud: Cloud,
        haproxy: HAProxyProcess,
        backends: HTTPBackends,
        settings_path: Path,
        port: int,
    ) -> None:
        """As ``Stack``; the node runs in the first zone of *cloud*'s region."""
        #: The zones of *cloud*'s region, the node's first.
        self.zone_names = tuple(cloud.zone(letter) for letter in LETTERS)
        self.node_zone = self.zone_names[0]
        super().__init__(cloud, haproxy, backends, settings_path, port)

    def write_settings(
        self, backend: Mapping[str, Value] | None = None, **sections: Mapping[str, Value]
    ) -> None:
        """``Stack.write_settings``, with ``zone`` in the ``[haproxy]`` table."""
        super().write_settings(backend, **sections)
        text = self.settings.read_text()
        self.settings.write_text(
            text.replace("[haproxy]\n", f'[haproxy]\nzone = "{self.node_zone}"\n', 1)
        )

    def zones(self) -> dict[str, str]:
        """Instance id → Availability Zone of the group's running members (DescribeInstances)."""
        return {i: placed.zone for i, placed in self.cloud.placements(GROUP).items()}

    def types(self) -> dict[str, str]:
        """Instance id → instance type of the group's running members (DescribeInstances)."""
        return {i: placed.instance_type for i, placed in self.cloud.placements(GROUP).items()}

    def in_zone(self, zone: str) -> list[str]:
        """The serving instances of *zone*, sorted."""
        zones = self.zones()
        return sorted(i for i in self.cloud.serving(GROUP) if zones.get(i) == zone)

    def remote(self) -> set[str]:
        """The serving instances outside the node's zone."""
        return {i for zone in self.zone_names[1:] for i in self.in_zone(zone)}

    def formed(self, backups: set[str], down: set[str]) -> bool:
        """
        HAProxy has a managed server for every instance served, *backups* are the backups and
        *down* those not UP: zone routing's form, and HAProxy's view of health, as expected.
        """
        states = self.states()
        return (
            set(states) == set(self.servers)
            and self.backups() == backups
            and {i for i, status in states.items() if status != "UP"} == down
        )

    def fail(self, instances: Iterable[str]) -> None:
        """Make *instances*' health checks fail; they keep answering every other request."""
        for instance in instances:
            self.servers[instance].healthy = False

    def recover(self, instances: Iterable[str]) -> None:
        """Make *instances*' health checks pass again."""
        for instance in instances:
            self.servers[instance].healthy = True

    def by_zone(self, answered: Mapping[str, int]) -> Counter[str]:
        """*answered* (instance id → requests) summed by zone."""
        zones = self.zones()
        found: Counter[str] = Counter()
        for instance, count in answered.items():
            found[zones.get(instance, "unknown")] += count
        return found

    def requests(self) -> Counter[str]:
        """Instance id → requests its HTTP server answered so far (health checks aside)."""
        return Counter({i: server.requests for i, server in self.servers.items()})

    def backups(self) -> set[str]:
        """The instances whose managed server HAProxy runs as a backup (``show stat`` bck)."""
        rows = csv.DictReader(self.haproxy.command("show stat").lstrip("# ").splitlines())
        return {
            row["svname"].removeprefix(SERVER_PREFIX)
            for row in rows
            if row["pxname"] == BACKEND
            and row["svname"].startswith(SERVER_PREFIX)
            and row["bck"] == "1"
        }

    def down(self) -> set[str]:
        """The instances whose managed server HAProxy marked DOWN (its checks failed)."""
        return {i for i, status in self.states().items() if status.startswith("DOWN")}

    def file_options(self) -> dict[str, list[str]]:
        """Instance id → the words after the address of its managed line in the file."""
        found = {}
        for line in self.file_servers():
            words = line.split()
            if words[1].startswith(SERVER_PREFIX):
                found[words[1].removeprefix(SERVER_PREFIX)] = words[3:]
        return found

    def file_weights(self) -> dict[str, int | None]:
        """Instance id → the ``weight`` its managed line in the file sets (``None``: none)."""
        weights: dict[str, int | None] = {}
        for instance, words in self.file_options().items():
            match = re.search(r"\bweight (\d+)\b", " ".join(words))
            weights[instance] = int(match[1]) if match else None
        return weights

    def runtime_weights(self) -> dict[str, int]:
        """Instance id → the weight HAProxy uses (``show stat`` weight) for its managed server."""
        rows = csv.DictReader(self.haproxy.command("show stat").lstrip("# ").splitlines())
        return {
            row["svname"].removeprefix(SERVER_PREFIX): int(row["weight"])
            for row in rows
            if row["pxname"] == BACKEND and row["svname"].startswith(SERVER_PREFIX)
        }


def build_zone_stack(
    cloud: Cloud,
    haproxy_factory: HAProxyFactory,
    http_backends: HTTPBackends,
    directory: Path,
    per_zone: int = 3,
    *,
    lines: Sequence[str] = ZONE_LINES,
    types: Mapping[str, int] | None = None,
) -> ZoneStack:
    """
    *per_zone* InService instances in each zone of *cloud*'s region, serving; HAProxy whose
    ``api`` backend has *lines* and no server. With *types* (instance type →
    ``WeightedCapacity``), a mixed-instances group whose instances take those types in turn.

    No hand-written backup server, unlike ``harness.stack``: with ``option allbackups`` it would
    take its share of the requests with the other zones' servers when the local zone fails (a
    maintenance page on a closed port costs each request it gets HAProxy's retries: 3 s).
    """
    cloud.create_group(
        GROUP,
        per_zone * len(LETTERS),
        zones=dict.fromkeys(LETTERS, per_zone),
        instance_types=list(types or ()),
        overrides=types,
    )
    haproxy = haproxy_factory(BackendSpec(BACKEND, lines=tuple(lines)))
    stack = ZoneStack(cloud, haproxy, http_backends, directory / "reconciler.toml", free_port())
    stack.serve_instances()
    return stack
