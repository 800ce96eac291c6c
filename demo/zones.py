"""
The demo's second world, for its last step: a mixed-instances group in three Availability Zones
and the node in the first, with weights from ``WeightedCapacity`` and zone routing on.

Its own AWS region of the same moto server (the first world's group has the same name), its own
HAProxy, HTTP servers and controller, all on loopback, each registered on the demo's clean-up
stack when it starts. The controller runs with the environment of a node in that region outside
template mode: the first world's template variables stay with the first world.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from harness.haproxy import HAProxyFactory, HTTPBackends, free_port
from harness.moto import Cloud, moto_environment
from harness.stack import PROCESS_DEADLINE, RECONCILE, Daemon, Value
from harness.zones import ZONE_ROUTING, ZoneStack, build_zone_stack


#: ``WeightedCapacity`` of each instance type in the group's launch template overrides.
CAPACITIES = {"c5.large": 2, "c5.4xlarge": 8}
#: The backend's settings: weights from the group's capacities, and zone routing.
BACKEND: dict[str, Value] = {"weight": "capacity", **ZONE_ROUTING}
PER_ZONE = 2
#: Not the first world's: a region of its own, where the group's name is free.
REGION = "eu-central-1"
#: The first world's variables, which would put this controller in template mode.
FIRST_WORLD = ("RECONCILER_", "FRONTEND_BIND")


@dataclass
class ZoneWorld:
    """The running parts of the second world."""

    stack: ZoneStack
    daemon: Daemon
    #: The environment of its controller and of ``reconcile drift`` on it.
    environment: dict[str, str]

    def drift(self) -> int:
        """``reconcile drift`` on this world, its table on the terminal; its exit code."""
        done = subprocess.run(
            [*RECONCILE, "drift", "--config", str(self.stack.settings)],
            stdin=subprocess.DEVNULL,
            env=self.environment,
            timeout=PROCESS_DEADLINE,
            check=False,
        )
        return done.returncode


def start(cleanup: ExitStack, first: Cloud, directory: Path, haproxy_binary: str) -> ZoneWorld:
    """
    Start the second world in ``REGION`` of *first*'s moto server, its logs in *directory*;
    *cleanup* stops it, newest first.
    """
    cloud = Cloud(first.endpoint, REGION)
    factory = HAProxyFactory(haproxy_binary)
    cleanup.callback(factory.stop_all)
    backends = HTTPBackends()
    cleanup.callback(backends.stop_all)
    # Short (/tmp/...): UNIX socket paths must stay under 108 bytes.
    files = Path(tempfile.mkdtemp(prefix="asg-zones-"))
    cleanup.callback(shutil.rmtree, files, True)
    stack = build_zone_stack(cloud, factory, backends, files, PER_ZONE, types=CAPACITIES)
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", *FIRST_WORLD))},
        **moto_environment(first.endpoint),
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
    }
    listen = f"127.0.0.1:{free_port()}"
    stack.write_settings(BACKEND, server={"listen": listen})
    # The child takes this process's environment as it starts: this one, for that moment.
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(environment)
    try:
        daemon = Daemon(stack.settings, directory / "reconcile-zones.log", listen)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    cleanup.callback(daemon.kill)
    return ZoneWorld(stack, daemon, environment)
