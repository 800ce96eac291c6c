"""
How long ``reconcile drift`` takes after its reads, for one backend of 2,000 instances.

Builds the observation in memory (no AWS, no HAProxy), with a little of every kind of drift, then
times ``drift.assess``, rendering the tables to a file-like console (no terminal: no escape codes,
as when piped) and ``to_json`` + ``json.dumps``. Target: the three together well under a second.

    .venv/bin/python bench/drift_render.py [instances] [repeats]
"""

from __future__ import annotations

import io
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from reconciler import drift_table
from reconciler.core import drift
from reconciler.core.model import (
    ADMIN_FDRAIN,
    ADMIN_FMAINT,
    CHECK_CONFIGURED,
    CHECK_ENABLED,
    CHECK_RESULT_PASSED,
    AwsObservation,
    ConfigBackend,
    ConfigServer,
    Group,
    Instance,
    Observation,
    RuntimeObservation,
    RuntimeServer,
)
from reconciler.core.settings import AwsSettings, Binding, HAProxySettings, Settings


BACKEND = "api"
ASG = "api-asg"
PORT = 8080
OPTIONS = ("check", "inter", "1s")
TARGET_SECONDS = 1.0


def observation(size: int) -> tuple[Settings, Observation]:
    """*size* instances; every 50th missing, every 70th stale, every 90th warming or in maint."""
    binding = Binding(BACKEND, ASG, PORT, "api-", OPTIONS)
    settings = Settings(
        AwsSettings("eu-west-1"),
        HAProxySettings(config=Path("haproxy.cfg"), socket=Path("admin.sock")),
        (binding,),
    )
    instances, file_servers, running = [], [], []
    for n in range(size):
        instance_id = f"i-{n:017x}"
        ip = f"127.{1 + n // 250}.{n % 250}.{1 + n % 7}"
        state = "Terminating:Wait" if n % 70 == 0 else "InService"
        instances.append(Instance(instance_id, state, "Healthy", "running", ip))
        if n % 50 == 1:
            continue
        name = binding.server_name(instance_id)
        file_servers.append(ConfigServer(name, ip, PORT, 100 + n, OPTIONS, n))
        admin = (ADMIN_FDRAIN, ADMIN_FMAINT)[n % 2] if n % 90 == 3 else 0
        running.append(
            RuntimeServer(
                backend=BACKEND,
                name=name,
                server_id=100 + n,
                address=ip,
                port=PORT,
                op_state=2,
                admin_state=admin,
                check_state=CHECK_CONFIGURED | CHECK_ENABLED,
                check_result=CHECK_RESULT_PASSED,
                seconds_in_state=100,
                status="UP",
                check_status="L7OK",
            )
        )
    section = ConfigBackend(BACKEND, tuple(file_servers), "roundrobin", "map-based")
    observed = Observation(
        AwsObservation({ASG: Group(ASG, size, tuple(instances))}),
        {BACKEND: section},
        RuntimeObservation({BACKEND: tuple(running)}),
    )
    return settings, observed


def best_of(repeats: int, work: Callable[[], object]) -> float:
    """The fastest of *repeats* runs of *work*, in seconds."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def main(argv: list[str]) -> int:
    """Time each stage and the whole; exit 1 when the whole misses the target."""
    size = int(argv[0]) if argv else 2000
    repeats = int(argv[1]) if len(argv) > 1 else 5
    settings, observed = observation(size)
    report = drift.assess(settings, observed)

    def render() -> None:
        console = Console(file=io.StringIO(), force_terminal=False, width=200)
        console.print(drift_table.tables(report))

    stages = {
        "assess": lambda: drift.assess(settings, observed),
        "render tables": render,
        "to_json + dumps": lambda: json.dumps(drift_table.to_json(report)),
    }
    total = 0.0
    for label, work in stages.items():
        seconds = best_of(repeats, work)
        total += seconds
        print(f"{label:>16}: {seconds * 1000:8.1f} ms")
    drifted = len(report.backends[0].drifted)
    print(f"{'total':>16}: {total * 1000:8.1f} ms for {size} instances ({drifted} drift rows)")
    return 0 if total < TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
