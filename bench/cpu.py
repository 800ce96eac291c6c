"""
The CPU-only micro-benchmark (issue 7, part 3; issue 12, item 3): parse + plan + render for one
backend of 1,000 and of 10,000 servers (``Profile.cpu_sizes``), no I/O.

The world is in memory: a config file of that many managed servers (written by the controller's own
editor), the running HAProxy holding the same servers (all up, check passed), and a group in which
1 % of them were replaced since. The three stages are timed as a cycle runs them, through the
in-memory fakes of the ports the tests of the core use too (``harness.fakes``):

- parse: the file read and parsed into its configured sections, as a cycle's observation does
  (``next_config.for_cycle``, then its ``config``; the fakes' reads cost nothing);
- plan: ``plan.compute``;
- render: that same cycle's maker making the next file from the plan's lines, in the parse the
  plan was made from (a cycle parses the file once).

The three stages run in turn ``Profile.cpu_repeats`` times, each timed in CPU time
(``cpu_seconds``); a figure is the median of its runs, the total's the median of the rounds' sums.
The garbage collector is tuned first, as the controller tunes it at start-up
(``reconciler.collector``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.profile import Profile
from bench.stats import figure
from harness.fakes import FakeMembership, FakeRuntime, FakeStore
from reconciler import collector
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


def parsed(settings: Settings, ports: Ports) -> next_config.NextFileMaker:
    """What a cycle's observation parses: the file read and its configured sections parsed."""
    maker = next_config.for_cycle(settings, ports.store.read())
    maker.config  # noqa: B018 - parsed on first use
    return maker


def cpu_seconds(work: Callable[[], object]) -> float:
    """
    The CPU seconds one run of *work* took: this thread's CPU time, so the other processes of a
    busy machine do not count, and the garbage collector's pauses do.
    """
    started = time.thread_time()
    work()
    return time.thread_time() - started


def run(profile: Profile, log: Callable[[str], None]) -> dict[str, Any]:
    """Each size of ``profile.cpu_sizes`` measured in turn; the JSON of ``cpu``."""
    # The garbage collector as the controller runs it (``reconciler.collector``).
    collector.tune()
    sizes = {
        str(servers): measure(servers, profile.cpu_repeats, log) for servers in profile.cpu_sizes
    }
    # The largest size also at the top level, where result files before the sizes have it.
    return {**sizes[str(max(profile.cpu_sizes))], "sizes": sizes}


def measure(servers: int, repeats: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Each stage for a backend of *servers* servers, *repeats* times."""
    log(f"cpu: parse + plan + render of {servers} servers")
    settings, ports = world(servers)
    observed, data = observe(settings, ports)
    decided = plan.compute(settings, observed)
    lines = {b.backend: list(b.lines or ()) for b in decided.backends}
    # A new maker each round, as every cycle makes its own: the file it parses to plan is the
    # one it edits.
    makers: list[next_config.NextFileMaker] = []
    stages = {
        "parse": lambda: makers.append(parsed(settings, ports)),
        "plan": lambda: plan.compute(settings, observed),
        "render": lambda: makers.pop().next_file(lines),
    }
    runs: dict[str, list[float]] = {name: [] for name in stages}
    # The stages in turn, as a cycle runs them: a total is one cycle's.
    for _ in range(repeats):
        for name, work in stages.items():
            runs[name].append(cpu_seconds(work))
    totals = [sum(parts) for parts in zip(*runs.values(), strict=True)]
    backend = decided.backends[0]
    return {
        "servers": servers,
        "file_bytes": len(data),
        "steps_planned": len(backend.steps),
        **{f"{name}_seconds": figure(values) for name, values in runs.items()},
        "total_seconds": figure(totals),
    }
