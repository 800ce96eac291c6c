"""
Scale (issue 7, part 3): one cycle against a group of 1,000 and of 5,000 instances, the config
file then holding as many managed servers.

The cycle is the real one (``reconcile.run_cycle``) with the real adapters (``runner.build_ports``:
boto3 against moto, the file store with ``haproxy -c``, the runtime socket), run in this process
with each adapter wrapped by ``Timed``, which adds up the wall and CPU time of its calls. So one
cycle's wall time splits into:

- AWS reads (``read_groups``), itself split into our CPU (botocore building requests and parsing
  the answers) and waiting, which is almost all moto's time (moto runs in its own process and
  needs ~4 s per DescribeInstances of 1,000 ids: the emulator's cost, not ours);
- HAProxy reads (``show servers state`` + ``show stat``);
- parse + plan + render: everything else, pure CPU in our process;
- the file: read, then (when changed) lock, temp file, fsync, ``haproxy -c``, rename;
- runtime commands (``add server``, ``set server state``, ``del server``...), one connection each.

Cycles measured per size: ``initial``, HAProxy empty → every instance added; then ``change``,
repeated: 1 % of the group replaced (moto launches new ones and terminates others), then one cycle
(it adds the new servers, puts the gone ones in maintenance, deletes the previous round's, and
rewrites the file). Also recorded: AWS calls per cycle by operation, and the process's peak
resident memory during the cycle (``VmHWM``, reset before each cycle through
``/proc/self/clear_refs``; ``ru_maxrss`` since the start where that is not allowed).
"""

from __future__ import annotations

import resource
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from bench.profile import Profile
from bench.stats import figure
from bench.world import Lab
from harness.moto import Cloud
from harness.stack import GROUP
from reconciler.adapters import settings_file
from reconciler.adapters.aws.clients import AwsClients
from reconciler.core import settings
from reconciler.cycle import config_problems, run_cycle
from reconciler.ports import Ports
from reconciler.runner import build_ports


#: Instances per /24 subnet: moto launches all of a group's instances in its first subnet, so
#: the group is grown one subnet at a time.
PER_SUBNET = 200
FIRST_OCTET = 10
#: Share of the group replaced before each change cycle.
CHURN = 0.01
AWS, HAPROXY_READS, FILE, COMMANDS = "aws_reads", "haproxy_reads", "file", "runtime_commands"
#: The category of each timed adapter method.
CATEGORIES = {
    "read_groups": AWS,
    "read_servers": HAPROXY_READS,
    "read": FILE,
    "write": FILE,
    "reload": FILE,
}


class Ledger:
    """Wall time, CPU time and calls per category."""

    def __init__(self) -> None:
        """Start empty."""
        self.wall: defaultdict[str, float] = defaultdict(float)
        self.cpu: defaultdict[str, float] = defaultdict(float)
        self.calls: defaultdict[str, int] = defaultdict(int)


class Timed:
    """Wraps an adapter: every method call is timed into *ledger* under its category."""

    def __init__(self, inner: object, ledger: Ledger) -> None:
        """Time *inner*'s methods."""
        self._inner = inner
        self._ledger = ledger

    def __getattr__(self, name: str) -> Any:
        """The inner attribute; a method comes back timed."""
        method = getattr(self._inner, name)
        if not callable(method):
            return method
        category = CATEGORIES.get(name, COMMANDS)

        def timed(*args: Any, **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return method(*args, **kwargs)
            finally:
                self._ledger.wall[category] += time.perf_counter() - wall
                self._ledger.cpu[category] += time.process_time() - cpu
                self._ledger.calls[category] += 1

        return timed


def grow(cloud: Cloud, size: int) -> None:
    """
    Group ``api-asg`` with *size* instances, ``PER_SUBNET`` per subnet, then pointed at one more
    (empty) subnet, where moto launches the replacements of the change rounds.
    """
    vpc = None
    current = 0
    octet = FIRST_OCTET
    while True:
        if vpc is None:
            first = min(size, PER_SUBNET)
            cloud.create_group(GROUP, first, subnet_octet=octet, max_size=2 * size)
            current = first
            vpcs = cloud.ec2.describe_vpcs(Filters=[{"Name": "cidr", "Values": ["127.0.0.0/16"]}])
            vpc = vpcs["Vpcs"][0]["VpcId"]
        else:
            subnet = cloud.ec2.create_subnet(
                VpcId=vpc, CidrBlock=f"127.0.{octet}.0/24", AvailabilityZone=f"{cloud.region}a"
            )["Subnet"]["SubnetId"]
            cloud.autoscaling.update_auto_scaling_group(
                AutoScalingGroupName=GROUP, VPCZoneIdentifier=subnet
            )
            if current >= size:
                return
            current = min(size, current + PER_SUBNET)
            cloud.set_desired(GROUP, current)
        octet += 1


def churn(cloud: Cloud, size: int) -> None:
    """Replace ``CHURN`` of the group: launch that many, then scale back in (moto picks whom)."""
    count = max(1, round(size * CHURN))
    cloud.set_desired(GROUP, size + count)
    cloud.set_desired(GROUP, size)


def reset_peak_memory() -> bool:
    """Reset this process's peak resident memory (Linux 4.0+); False where that is refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_memory_mb(reset: bool) -> float:
    """The peak resident memory since the reset (*reset* True) or since the start, in MiB."""
    peak = _status_mb("VmHWM:") if reset else None
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _status_mb(field: str) -> float | None:
    """A memory *field* of ``/proc/self/status`` (``VmRSS:``...) in MiB; ``None`` if absent."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return None


def api_calls(clients: AwsClients) -> dict[str, int]:
    """AWS calls made so far, by operation."""
    return {operation: counts.calls for operation, counts in clients.calls.snapshot().items()}


def measure(loaded: settings.Settings, ports: Ports, clients: AwsClients) -> dict[str, Any]:
    """Run one cycle with every adapter timed; its split, calls and peak memory."""
    ledger = Ledger()
    timed = Ports(
        membership=cast("Any", Timed(ports.membership, ledger)),
        store=cast("Any", Timed(ports.store, ledger)),
        runtime=cast("Any", Timed(ports.runtime, ledger)),
    )
    calls_before = api_calls(clients)
    resident = _status_mb("VmRSS:")
    reset = reset_peak_memory()
    wall, cpu = time.perf_counter(), time.process_time()
    result = run_cycle(loaded, timed)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if not result.ok:
        raise RuntimeError(f"the cycle failed: {result.errors}")
    calls = {op: n - calls_before.get(op, 0) for op, n in api_calls(clients).items()}
    assert result.outcome is not None
    timed_wall = sum(ledger.wall.values())
    return {
        "wall_seconds": wall,
        "aws_reads_seconds": ledger.wall[AWS],
        "aws_reads_our_cpu_seconds": ledger.cpu[AWS],
        "aws_reads_waiting_seconds": ledger.wall[AWS] - ledger.cpu[AWS],
        "haproxy_reads_seconds": ledger.wall[HAPROXY_READS],
        "planning_seconds": wall - timed_wall,
        "file_seconds": ledger.wall[FILE],
        "runtime_commands_seconds": ledger.wall[COMMANDS],
        "our_cpu_seconds": cpu,
        "runtime_commands": result.outcome.commands,
        "file_written": int(result.outcome.file_written),
        "reloads": int(result.outcome.reloaded),
        "aws_calls": sum(n for n in calls.values() if n),
        "aws_calls_by_operation": {op: n for op, n in calls.items() if n},
        "memory_before_mb": resident,
        "peak_memory_mb": peak_memory_mb(reset),
        "peak_memory_since": "cycle start" if reset else "process start",
    }


def summarize(cycles: list[dict[str, Any]]) -> dict[str, Any]:
    """The numeric fields of *cycles* as medians with spreads; the rest from the last cycle."""
    summary: dict[str, Any] = {"runs": len(cycles)}
    for key, value in cycles[-1].items():
        numeric = isinstance(value, int | float)
        summary[key] = figure([c[key] for c in cycles]) if numeric else value
    return summary


def run_size(cloud: Cloud, size: int, rounds: int, log: Callable[[str], None]) -> dict[str, Any]:
    """The initial cycle and *rounds* change cycles at *size* instances."""
    with Lab(cloud) as lab:
        log(f"scale: {size} instances: building the group in moto")
        grow(cloud, size)
        stack = lab.haproxy_stack()
        stack.write_settings({"server_options": ""})
        loaded = settings_file.load(stack.settings)
        clients = AwsClients(loaded.aws.region)
        ports = build_ports(loaded, clients)
        problems = config_problems(loaded, ports.store.read())
        if problems:
            raise RuntimeError(f"the benchmark's HAProxy config is refused: {problems}")
        log(f"scale: {size} instances: initial cycle")
        initial = measure(loaded, ports, clients)
        changes = []
        for round_ in range(rounds):
            log(f"scale: {size} instances: change cycle {round_ + 1} of {rounds}")
            churn(cloud, size)
            changes.append(measure(loaded, ports, clients))
        return {"initial": summarize([initial]), "change": summarize(changes)}


def run(cloud: Cloud, profile: Profile, log: Callable[[str], None]) -> dict[str, Any]:
    """Every size; the JSON of ``scale``."""
    return {
        "churn_per_change_cycle": CHURN,
        "sizes": {str(size): run_size(cloud, size, rounds, log) for size, rounds in profile.scale},
    }
