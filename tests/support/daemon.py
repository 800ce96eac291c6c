"""
Helpers for end-to-end tests of ``reconcile`` as a long-running controller
(``harness.stack.Daemon``): its ``[controller]`` and ``[sqs]`` settings, waiting for its first
convergence, and reading from its ``/metrics`` and its log what it deleted and which cycles new
wake-ups caused.
"""

from __future__ import annotations

from typing import Any

from harness.haproxy import wait_for
from harness.stack import Daemon, Daemons, Notifications, Stack


#: The resync interval of tests in which only a message may explain a cycle.
NEVER = 300
#: Far beyond anything the tests wait for, far below any timeout of CI.
DEADLINE = 20.0


def controller(**values: float) -> dict[str, float]:
    """``[controller]`` settings: nothing happens without a message unless *values* say so."""
    return {"resync_interval": NEVER, "follow_up_delay": 1, "poll_interval": 0.2, **values}


def sqs(queue: Notifications, **values: float) -> dict[str, Any]:
    """``[sqs]`` settings for *queue*."""
    return {"queue_url": queue.queue_url, **values}


def start_converged(daemons: Daemons, stack: Stack, **sections: Any) -> Daemon:
    """Start a controller and wait until HAProxy serves the group and the controller rests."""
    daemon = daemons.start(stack, **sections)
    wait_for(stack.converged, "the first convergence", DEADLINE)
    wait_for(lambda: settled(daemon), "the controller to rest", DEADLINE)
    return daemon


def settled(daemon: Daemon) -> bool:
    """
    The controller rests: its last cycle left nothing pending and sent no command (a cycle that
    sends one is followed by a progress poll that looks at the result).
    """
    cycles = daemon.cycles()
    return bool(cycles) and not cycles[-1]["pending"] and not cycles[-1]["commands"]


def deleted(daemon: Daemon) -> dict[str, float]:
    """Messages the controller deleted so far, by kind."""
    return {
        dict(labels)["kind"]: value
        for (name, labels), value in daemon.metrics().items()
        if name == "reconciler_sqs_messages_deleted_total"
    }


def wait_deleted(daemon: Daemon, queue: Notifications, count: int) -> dict[str, float]:
    """Wait until the controller deleted *count* messages; the queue is then empty."""
    wait_for(lambda: sum(deleted(daemon).values()) >= count, f"{count} deletions", DEADLINE)
    assert queue.depth() == 0
    return deleted(daemon)


def woken_cycles(daemon: Daemon) -> int:
    """How many cycles saw new wake-ups so far."""
    return len([c for c in daemon.cycles() if c["wakeups"]])


def wait_for_woken_cycle(daemon: Daemon, woken: int) -> None:
    """Wait until more than *woken* cycles saw new wake-ups."""
    wait_for(lambda: woken_cycles(daemon) > woken, "a cycle for the message", DEADLINE)
