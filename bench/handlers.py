"""
What keeps HAProxy in step with the group in each compared mode, started the same way for every
benchmark, and the work each one reports.

``start`` runs the real ``reconcile`` command as a controller (``harness.stack.Daemons``),
or ``bench/naive.py``; the returned ``Counts`` reads what it has done from its own reports (the
controller's JSON log and ``/metrics``, the naive script's stats file), so nothing is counted from
the outside except HAProxy's reloads (``bench.world.reloads``).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bench.naive import NaiveHandler
from bench.world import Lab, environment, reload_command
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


EVENT = Mode("event", "controller: queue, runtime API")
POLLING = Mode("polling", "controller: polling only", queue=False)
NAIVE = Mode("naive", "naive per-message script", naive=True)
RELOAD = Mode("reload", "controller: queue, reloads", socket=False)


class Counts:
    """What a mode's handler has done so far, from its own reports; subtract two snapshots."""

    def __init__(self, snapshot: Callable[[], dict[str, int]]) -> None:
        """*snapshot* reads the counts now."""
        self.snapshot = snapshot

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
        # Pure polling: every cycle on the timer. With the default poll_interval (0.5 s), the
        # re-check made while a warm-up or drain is in progress would also catch new changes,
        # and with a change every half second something nearly always is in progress.
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
    return Counts(lambda: daemon_counts(daemon))


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
    """Cycles, AWS read calls, queue calls and runtime commands of a controller, so far."""
    cycles = daemon.cycles()
    queue_calls = sum(
        value
        for (name, labels), value in daemon.metrics().items()
        if name == "reconciler_aws_api_calls_total"
        and dict(labels).get("operation", "").startswith("sqs:")
    )
    return {
        "cycles": len(cycles),
        "aws_read_calls": sum(int(c["api_calls"]) for c in cycles),
        "queue_calls": int(queue_calls),
        "runtime_commands": sum(int(c["commands"]) for c in cycles),
    }


def naive_counts(naive: NaiveHandler) -> dict[str, int]:
    """The naive script's counts in the controller's terms, so far."""
    stats = naive.stats()
    return {
        "messages": stats["messages"],
        "aws_read_calls": stats["describe_calls"],
        "queue_calls": stats["receive_calls"] + stats["delete_calls"],
        "file_writes": stats["file_writes"],
        "reloads_requested": stats["reloads"],
    }
