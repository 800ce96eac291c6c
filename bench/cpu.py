"""
The CPU-only micro-benchmark (issue 7, part 3): parse + plan + render for one backend of 10,000
servers, no I/O.

The world is in memory: a config file of 10,000 managed servers (written by the controller's own
editor), the running HAProxy holding the same servers (all up, check passed), and a group in which
1 % of them were replaced since. The three stages are timed as a cycle runs them, through the
in-memory fakes of the ports the tests of the core use too (``harness.fakes``):

- parse: ``reconcile.observe`` (the file parsed, the managed backend extracted; the fakes' reads
  cost nothing);
- plan: ``plan.compute``;
- render: the in-place editor making the next file from the plan's lines.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.profile import Profile
from bench.stats import figure
from harness.fakes import FakeMembership, FakeRuntime, FakeStore
from reconciler.core import next_config, plan
from reconciler.core.model import (
    CHECK_CONFIGURED,
    CHECK_ENABLED,
    CHECK_RESULT_PASSED,
    Group,
    Instance,
    RuntimeServer,
    ServerLine,
)
from reconciler.core.settings import AwsSettings, Binding, HAProxySettings, Settings
from reconciler.cycle import observe
from reconciler.ports import Ports


BACKEND = "api"
GROUP = "api-asg"
PORT = 8080
OPTIONS = ("check", "inter", "2s")
#: Share of the group replaced since the file was written.
CHURN = 0.01
BASE_CONFIG = b"""global
    stats socket /run/haproxy/admin.sock mode 600 level admin

defaults
    mode http
    timeout connect 1s
    timeout client 10s
    timeout server 10s

frontend fe
    bind 127.0.0.1:8080
    default_backend api

backend api
    balance roundrobin
    option httpchk GET /health
"""


def instance(n: int) -> Instance:
    """Instance number *n*: InService, healthy, running, an address of its own."""
    address = f"127.{1 + n // 62500}.{n // 250 % 250}.{1 + n % 250}"
    return Instance(f"i-{n:017x}", "InService", "Healthy", "running", address)


def world(servers: int) -> tuple[Settings, Ports]:
    """The settings and fake ports of a backend of *servers* servers, 1 % replaced in the group."""
    binding = Binding(BACKEND, GROUP, PORT, "api-", OPTIONS)
    settings = Settings(
        AwsSettings("eu-west-1"),
        HAProxySettings(config=Path("haproxy.cfg"), socket=Path("admin.sock")),
        (binding,),
    )
    old = [instance(n) for n in range(servers)]
    lines = [
        ServerLine(binding.server_name(i.instance_id), i.private_ip or "", PORT, n + 1, OPTIONS)
        for n, i in enumerate(old)
    ]
    content = next_config.EditInPlace(settings, BASE_CONFIG).next_file({BACKEND: lines}).content
    running = {
        line.name: RuntimeServer(
            backend=BACKEND,
            name=line.name,
            server_id=line.server_id or 0,
            address=line.address,
            port=PORT,
            op_state=2,
            admin_state=0,
            check_state=CHECK_CONFIGURED | CHECK_ENABLED,
            check_result=CHECK_RESULT_PASSED,
            seconds_in_state=600,
            status="UP",
            check_status="L7OK",
        )
        for line in lines
    }
    replaced = max(1, round(servers * CHURN))
    members = old[replaced:] + [instance(servers + n) for n in range(replaced)]
    group = Group(GROUP, servers, tuple(members))
    ports = Ports(
        membership=FakeMembership({GROUP: group}),
        store=FakeStore(content),
        runtime=FakeRuntime({BACKEND: running}),
    )
    return settings, ports


def timed(repeats: int, work: Callable[[], object]) -> list[float]:
    """The seconds each of *repeats* runs of *work* took."""
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        runs.append(time.perf_counter() - started)
    return runs


def run(profile: Profile, log: Callable[[str], None]) -> dict[str, Any]:
    """Time each stage *repeats* times; the JSON of ``cpu``."""
    log(f"cpu: parse + plan + render of {profile.cpu_servers} servers")
    settings, ports = world(profile.cpu_servers)
    observed, data = observe(settings, ports)
    decided = plan.compute(settings, observed)
    lines = {b.backend: list(b.lines or ()) for b in decided.backends}
    renderer = next_config.EditInPlace(settings, data)
    stages = {
        "parse": lambda: observe(settings, ports),
        "plan": lambda: plan.compute(settings, observed),
        "render": lambda: renderer.next_file(lines),
    }
    runs = {name: timed(profile.cpu_repeats, work) for name, work in stages.items()}
    totals = [sum(parts) for parts in zip(*runs.values(), strict=True)]
    backend = decided.backends[0]
    return {
        "servers": profile.cpu_servers,
        "file_bytes": len(data),
        "steps_planned": len(backend.steps),
        **{f"{name}_seconds": figure(values) for name, values in runs.items()},
        "total_seconds": figure(totals),
    }
