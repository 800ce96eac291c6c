"""
What keeps HAProxy in step with the group in each compared mode, started the same way for every
benchmark, and the work each one reports.

``start`` runs the real ``reconcile`` command as a controller (``harness.stack.Daemons``),
or ``bench/naive.py``; the returned ``Counts`` reads what it has done from its own reports (the
controller's JSON log and ``/metrics``, the naive script's stats file), so nothing is counted from
the outside except HAProxy's reloads (``bench.world.reloads``) and the CPU time of the handler's
process (``bench.world.process_cpu_ms``).

A *read pair* is one look at the group: for the controller, a ``DescribeAutoScalingGroups`` call
(each one is followed by the ``DescribeInstances`` of the instances it lists); for the naive
script, the one ``DescribeInstances`` it makes per message.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bench.naive import NaiveHandler
from bench.stats import distribution
from bench.world import Lab, environment, process_cpu_ms, reload_command
from harness.haproxy import wait_for
from harness.stack import Daemon, Notifications, Stack, Value
from reconciler.adapters import settings_file


@dataclass(frozen=True)
class Mode:
    """One way of keeping HAProxy in step with the group."""

    key: str
    label: str
    #: The controller is woken by the queue (else every cycle runs on a ``polling_interval``
    #: timer: ``resync_interval`` and ``poll_interval``).
    queue: bool = True
    #: The controller uses HAProxy's runtime API (else it edits the file and reloads).
    socket: bool = True
    #: ``bench/naive.py`` instead of the controller.
    naive: bool = False
    #: Lines added to HAProxy's ``global`` section in this mode's world.
    haproxy_global: tuple[str, ...] = ()


EVENT = Mode("event", "controller: queue, runtime API")
#: HAProxy runs a server's first check one ``inter`` after ``add server`` unless
#: ``max-spread-checks`` caps that wait: the setting docs/controller.md recommends for the runtime
#: path.
FIRST_CHECK = Mode(
    "event_first_check",
    "controller: queue, runtime API, max-spread-checks 10ms",
    haproxy_global=("max-spread-checks 10ms",),
)
POLLING = Mode("polling", "controller: polling only", queue=False)
NAIVE = Mode("naive", "naive per-message script", naive=True)
RELOAD = Mode("reload", "controller: queue, reloads", socket=False)
#: The operation of which one call starts each of the controller's reads of a group.
GROUP_READ = "autoscaling:DescribeAutoScalingGroups"
#: Seconds a handler may take to empty the queue and handle every message.
IDLE_TIMEOUT = 60.0


class Counts:
    """What a mode's handler has done so far, from its own reports; subtract two snapshots."""

    def __init__(
        self,
        snapshot: Callable[[], dict[str, int]],
        cycles: Callable[[], list[dict[str, Any]]] = list,
    ) -> None:
        """*snapshot* reads the counts now; *cycles*, a controller's cycle lines so far."""
        self.snapshot = snapshot
        self.cycles = cycles

    def since(self, before: Mapping[str, int]) -> dict[str, int]:
        """The counts accumulated since *before*."""
        now = self.snapshot()
        return {name: now[name] - before.get(name, 0) for name in now}


def start(
    mode: Mode,
    lab: Lab,
    stack: Stack,
    queue: Notifications,
    *,
    backend: Mapping[str, Value] | None = None,
    polling_interval: float = 5.0,
) -> Counts:
    """
    Start what keeps *stack*'s HAProxy in step in *mode*, the ``[[backend]]`` keys of *backend*
    changed for the controller and the naive script alike; return how to read its counts.
    """
    if mode.naive:
        return _start_naive(lab, stack, queue, backend)
    sections: dict[str, Any] = {}
    if mode.queue:
        sections["sqs"] = {"queue_url": queue.queue_url}
    else:
        # Pure polling: AWS read on the timer only. poll_interval is also the wait before AWS is
        # read again after disagreeing reads (the timer's, here), and only bounds the looks at
        # HAProxy during warm-ups and drains (a quarter of the check interval, far shorter).
        sections["controller"] = {
            "resync_interval": polling_interval,
            "poll_interval": polling_interval,
        }
    overrides = {}
    if not mode.socket:
        # An empty value unsets the file's socket: every change becomes a file edit + reload.
        overrides = {
            "RECONCILER_HAPROXY_SOCKET": "",
            "RECONCILER_HAPROXY_RELOAD_COMMAND": reload_command(stack.haproxy),
        }
    with environment(**overrides):
        daemon = lab.daemons.start(stack, backend, **sections)
    return Counts(lambda: daemon_counts(daemon), daemon.cycles)


def _start_naive(
    lab: Lab, stack: Stack, queue: Notifications, backend: Mapping[str, Value] | None
) -> Counts:
    # The script only follows messages: the controller sets HAProxy up once, as a user would
    # have done by hand before starting it.
    stack.write_settings(backend)
    done = stack.reconcile()
    if done.returncode != 0:
        raise RuntimeError(f"reconcile --once failed: {done.stderr}")
    # The same server options as the controller's, from the same settings file.
    binding = settings_file.load(stack.settings).backends[0]
    naive = NaiveHandler(
        lab.directory,
        queue_url=queue.queue_url,
        config=stack.haproxy.config_path,
        port=stack.port,
        options=" ".join(binding.server_options),
        # What `systemctl reload haproxy` runs: check the file, then signal the master.
        reload=(
            f"{shlex.quote(stack.haproxy.binary)} -c -q -f {stack.haproxy.config_path} && "
            f"{reload_command(stack.haproxy)}"
        ),
    )
    lab.cleanups.append(naive.stop)
    return Counts(lambda: naive_counts(naive))


def daemon_counts(daemon: Daemon) -> dict[str, int]:
    """
    Cycles, AWS read calls and pairs, queue calls, runtime commands and CPU of a controller, so
    far; with the cycles that read AWS when its log line says (``aws_read``, since issue 12).
    """
    cycles = daemon.cycles()
    calls = {
        dict(labels).get("operation", ""): int(value)
        for (name, labels), value in daemon.metrics().items()
        if name == "reconciler_aws_api_calls_total"
    }
    counts = {
        "cycles": len(cycles),
        "aws_read_calls": sum(int(c["api_calls"]) for c in cycles),
        "aws_read_pairs": calls.get(GROUP_READ, 0),
        "queue_calls": sum(n for operation, n in calls.items() if operation.startswith("sqs:")),
        "runtime_commands": sum(int(c["commands"]) for c in cycles),
        "cpu_ms": process_cpu_ms(daemon.process.pid),
    }
    if any("aws_read" in c for c in cycles):
        counts["cycles_reading_aws"] = sum(1 for c in cycles if c.get("aws_read"))
    return counts


def naive_counts(naive: NaiveHandler) -> dict[str, int]:
    """The naive script's counts in the controller's terms, so far."""
    stats = naive.stats()
    return {
        "messages": stats["messages"],
        "aws_read_calls": stats["describe_calls"],
        "aws_read_pairs": stats["describe_calls"],
        "queue_calls": stats["receive_calls"] + stats["delete_calls"],
        "file_writes": stats["file_writes"],
        "reloads_requested": stats["reloads"],
        "cpu_ms": process_cpu_ms(naive.process.pid),
    }


def wait_idle(
    mode: Mode, counts: Counts, queue: Notifications, messages: int, quiet: float
) -> None:
    """
    Wait until *mode*'s handler has handled all *messages* and is idle again (a controller: no
    new cycle for *quiet* seconds), so that the work an event causes later is counted too. A
    polling controller reads no queue: nothing to wait for.
    """
    if not mode.queue:
        return  # its cycles come from its timer, never quiet for long
    wait_for(lambda: queue.depth() == 0, "the queue to empty", IDLE_TIMEOUT)
    if mode.naive:
        wait_for(lambda: counts.snapshot()["messages"] >= messages, "every message", IDLE_TIMEOUT)
        return
    last, since = len(counts.cycles()), time.monotonic()
    while time.monotonic() - since < quiet:
        time.sleep(0.25)
        now = len(counts.cycles())
        if now != last:
            last, since = now, time.monotonic()


def cycle_cpu(cycles: list[dict[str, Any]]) -> dict[str, Any] | None:
    """
    The CPU time of *cycles* from their log lines (``cpu_ms``, since issue 12): a distribution
    per cycle and the total, in ms; ``None`` when the lines do not say.
    """
    values = [float(c["cpu_ms"]) for c in cycles if "cpu_ms" in c]
    if not values:
        return None
    return distribution(values, digits=2) | {"total": round(sum(values), 1)}
