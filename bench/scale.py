"""
Scale (issue 12, item 4): the controller process alone, at 1,000 and at 5,000 instances.

moto runs in its own process (``bench.world.MotoServer``) and every measured controller is the
real ``reconcile`` command in a process of its own; the benchmark reads that process's CPU time
and memory from the kernel, so neither moto nor this process counts. One group of *size*
instances, one backend, the runtime socket, no health checks:

- ``once_initial``: ``reconcile --once`` on an empty HAProxy (every instance added); CPU (user +
  system) and wall time of the whole run, imports included, and its peak resident memory
  (``ru_maxrss`` from ``wait4``);
- ``once_no_change``: ``reconcile --once`` again, the world converged: the same figures;
- ``daemon_cycle``: the daemon (``resync_interval`` 1 s) on the converged world; for each
  no-change cycle after its first, the CPU the process used between the end of the previous
  cycle and the end of this one (``/proc/<pid>/stat``; the idle second in between adds nothing
  measurable), ``VmRSS`` right after the cycle (idle), ``VmHWM`` over the cycle (reset through
  ``/proc/<pid>/clear_refs`` at the end of the previous one; since the process start where the
  kernel refuses), and the cycle's wall time, AWS calls and changes from its log line.

Most of a cycle's wall time is moto answering DescribeInstances (about 5 s per 1,000 ids): the
emulator's time, not ours. Against AWS the answer comes much sooner and the CPU is what remains,
paid at every resync: the figure the issue's targets are about.
"""

from __future__ import annotations

import functools
import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.profile import Profile
from bench.stats import figure
from bench.world import Lab
from harness.haproxy import wait_for
from harness.moto import Cloud
from harness.stack import GROUP, RECONCILE, Daemon, Stack


#: Instances per /24 subnet: moto launches all of a group's instances in its first subnet, so
#: the group is grown one subnet at a time.
PER_SUBNET = 200
FIRST_OCTET = 10
#: The daemon's resync interval: its cycles follow each other one second apart.
RESYNC_SECONDS = 1
#: Seconds a ``--once`` run or a daemon cycle may take per 1,000 instances (moto needs ~5),
#: on top of ``BASE_DEADLINE``.
DEADLINE_PER_THOUSAND = 30.0
BASE_DEADLINE = 60.0
#: How often the peak memory of a ``--once`` run is read while it runs.
PEAK_POLL_SECONDS = 0.01


def grow(cloud: Cloud, size: int) -> None:
    """
    Group ``api-asg`` with *size* instances, ``PER_SUBNET`` per subnet, then pointed at one more
    (empty) subnet.
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


def deadline(size: int) -> float:
    """Seconds one ``--once`` run or one daemon cycle may take at *size* instances."""
    return BASE_DEADLINE + DEADLINE_PER_THOUSAND * size / 1000


def run_once(stack: Stack, size: int, log_path: Path) -> dict[str, float]:
    """
    One ``reconcile --once`` (its log in *log_path*): its wall time, CPU time and peak resident
    memory. The peak is ``VmHWM`` read until it exits: ``ru_maxrss`` would also count this
    process's memory, which the child shares between the fork and its exec.
    """
    limit = deadline(size)
    started = time.perf_counter()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*RECONCILE, "--once", "--timeout", str(limit), "--config", str(stack.settings)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=os.environ.copy(),
        )
    probe = Probe(process.pid)
    peak = 0.0
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        # Absent once it has exited, until reaped.
        peak = max(peak, probe.memory_mb("VmHWM") or 0.0)
        time.sleep(PEAK_POLL_SECONDS)
    wall = time.perf_counter() - started
    # wait4 reaped it: tell Popen, or it would wait for a pid that is gone.
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"reconcile --once exited {process.returncode}: see {log_path}")
    return {
        "wall_seconds": wall,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": peak,
    }


class Probe:
    """What the kernel says about one process: CPU time and memory."""

    def __init__(self, pid: int) -> None:
        """Watch process *pid*."""
        self._proc = Path(f"/proc/{pid}")

    def cpu_seconds(self) -> float:
        """User plus system CPU time used so far."""
        fields = (self._proc / "stat").read_text().rpartition(")")[2].split()
        # utime and stime are the 14th and 15th fields; two were before the ")" split.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory_mb(self, field: str) -> float | None:
        """A memory field of ``status`` (``VmRSS``, ``VmHWM``) in MiB; ``None`` if absent."""
        try:
            lines = (self._proc / "status").read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
        return None

    def reset_peak(self) -> bool:
        """Restart ``VmHWM`` from the current ``VmRSS`` (Linux 4.0+); False where refused."""
        try:
            (self._proc / "clear_refs").write_text("5")
        except OSError:
            return False
        return True


def watch_daemon(lab: Lab, stack: Stack, size: int, cycles: int) -> list[dict[str, Any]]:
    """The daemon on the converged world: *cycles* no-change cycles after its first, measured."""
    stack.write_settings({"server_options": ""}, controller={"resync_interval": RESYNC_SECONDS})
    daemon = Daemon(stack.settings, lab.directory / f"reconcile-{size}.log", "-")
    lab.cleanups.append(daemon.kill)
    probe = Probe(daemon.process.pid)
    limit = deadline(size)
    wait_for(functools.partial(_ended, daemon, 1), "the daemon's first cycle", limit)
    measured = []
    for done in range(1, cycles + 1):
        reset = probe.reset_peak()
        cpu = probe.cpu_seconds()
        wait_for(functools.partial(_ended, daemon, done + 1), "a cycle", limit)
        if not daemon.alive:
            raise RuntimeError(f"the daemon exited: {daemon.log_path.read_text()[-2000:]}")
        used = probe.cpu_seconds() - cpu
        line = daemon.cycles()[done]
        if line.get("result") != "ok":
            raise RuntimeError(f"a daemon cycle failed: {line}")
        measured.append(
            {
                "cpu_seconds": used,
                "idle_rss_mb": probe.memory_mb("VmRSS") or 0.0,
                "peak_rss_mb": probe.memory_mb("VmHWM") or 0.0,
                "peak_rss_since": "cycle start" if reset else "process start",
                "wall_seconds": line.get("duration_ms", 0) / 1000,
                "aws_calls": line.get("api_calls", 0),
                "changes": line.get("changes", 0),
            }
        )
    return measured


def _ended(daemon: Daemon, cycles: int) -> bool:
    """*daemon* has ended *cycles* cycles, or exited."""
    return len(daemon.cycles()) >= cycles or not daemon.alive


def summarize(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The numeric fields of *runs* as medians with spreads; the rest from the last run."""
    summary: dict[str, Any] = {}
    for key, value in runs[-1].items():
        numeric = isinstance(value, int | float)
        summary[key] = figure([r[key] for r in runs]) if numeric else value
    return summary


def run_size(cloud: Cloud, size: int, cycles: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Both ``--once`` runs and *cycles* daemon cycles at *size* instances."""
    with Lab(cloud) as lab:
        log(f"scale: {size} instances: building the group in moto")
        grow(cloud, size)
        stack = lab.haproxy_stack()
        stack.write_settings({"server_options": ""})
        log(f"scale: {size} instances: reconcile --once, every server added")
        initial = run_once(stack, size, lab.directory / "once-initial.log")
        log(f"scale: {size} instances: reconcile --once, no change")
        no_change = run_once(stack, size, lab.directory / "once-no-change.log")
        log(f"scale: {size} instances: the daemon, {cycles} no-change cycle(s) after its first")
        daemon = watch_daemon(lab, stack, size, cycles)
        return {
            "once_initial": summarize([initial]),
            "once_no_change": summarize([no_change]),
            "daemon_cycle": summarize(daemon),
        }


def run(cloud: Cloud, profile: Profile, log: Callable[[str], None]) -> dict[str, Any]:
    """Every size; the JSON of ``scale``."""
    return {
        "resync_interval_seconds": RESYNC_SECONDS,
        "sizes": {str(size): run_size(cloud, size, cycles, log) for size, cycles in profile.scale},
    }
