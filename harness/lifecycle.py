"""
Lifecycle hooks on a ``Stack``: the hooks' names, the calls moto recorded, and the "witness".

``Cloud`` answers ``CompleteLifecycleAction`` and ``RecordLifecycleActionHeartbeat`` as AWS does
and records each call; ``witness_haproxy`` makes it also record what HAProxy and the file held at
that instant, so "completed only after the drain" (``released_after_drain``) is checked at the
moment of the call, not by timing. ``serve`` starts HTTP servers for instances still waiting in
``Pending:Wait``, which ``Stack.serve_instances`` (InService only) leaves alone.
"""

from __future__ import annotations

import csv
import json
import re
from typing import Any

from harness.moto import Cloud
from harness.stack import BACKEND, SERVER_PREFIX, Stack, Value


TERMINATE_HOOK = "haproxy-drain"
LAUNCH_HOOK = "haproxy-warm-up"
COMPLETE = "CompleteLifecycleAction"
HEARTBEAT = "RecordLifecycleActionHeartbeat"
#: Seconds given to a wait on ``reconcile --once`` in a child process (a drain, a completion):
#: generous, for a loaded CI machine.
DEADLINE = 30.0


def configure(stack: Stack, **backend: Value) -> None:
    """Write *stack*'s settings with *backend*'s keys added to (or replacing) its backend's."""
    stack.write_settings()
    text = stack.settings.read_text()
    for key, value in backend.items():
        # Without sections, the [[backend]] table is the file's last: a key appended joins it.
        text = re.sub(rf"(?m)^{key} = .*\n", "", text) + f"{key} = {json.dumps(value)}\n"
    stack.settings.write_text(text)


def calls(cloud: Cloud, operation: str = COMPLETE) -> list[dict[str, Any]]:
    """The recorded lifecycle calls of *operation*."""
    return [c for c in cloud.lifecycle_calls if c["operation"] == operation]


def witness_haproxy(stack: Stack) -> None:
    """Record, at every lifecycle call, HAProxy's servers (every backend) and the file."""
    stack.cloud.lifecycle_witness = lambda: {
        "runtime": stack.haproxy.command("show servers state"),
        "stat": stat_rows(stack),
        "file": stack.haproxy.config_path.read_text(),
    }


def released_after_drain(call: dict[str, Any]) -> bool:
    """At the moment of *call*, neither HAProxy nor the file had the instance's server."""
    witness = call["witness"]
    return call["instance_id"] not in witness["runtime"] + witness["file"]


def stat_rows(stack: Stack) -> dict[str, dict[str, str]]:
    """Instance id → ``show stat`` row of its server in the ``api`` backend."""
    rows = csv.DictReader(stack.haproxy.command("show stat").lstrip("# ").splitlines())
    return {
        row["svname"].removeprefix(SERVER_PREFIX): row
        for row in rows
        if row["pxname"] == BACKEND and row["svname"].startswith(SERVER_PREFIX)
    }


def sessions(stack: Stack, instance_id: str) -> int:
    """Current sessions of *instance_id*'s server (0 when it has none or no server)."""
    row = stat_rows(stack).get(instance_id)
    return int(row["scur"] or 0) if row else 0


def serve(stack: Stack, instance_ids: list[str]) -> None:
    """Start HTTP servers for instances that are not InService yet (``Pending:Wait``)."""
    reservations = stack.cloud.ec2.describe_instances(InstanceIds=instance_ids)["Reservations"]
    for instance in (i for r in reservations for i in r["Instances"]):
        instance_id = instance["InstanceId"]
        stack.servers[instance_id] = stack.backends.start(
            instance["PrivateIpAddress"], stack.port, name=instance_id
        )
