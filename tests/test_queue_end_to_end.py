"""
What the long-running controller does with the messages in its queue when not everything is well,
as a user runs it: the real ``reconcile`` in a child process, moto's real SQS and SNS, a real
HAProxy. A group that stays broken holds only the messages that name it; forged and malformed Spot
warnings are reported as untrusted, deleted, and change nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.haproxy import (
    HEALTH_CHECK,
    BackendSpec,
    HAProxyFactory,
    HTTPBackends,
    free_port,
    wait_for,
)
from harness.moto import Cloud
from harness.stack import (
    ACCOUNT,
    BACKEND,
    CHECK_TIMEOUT,
    GROUP,
    HAND_WRITTEN,
    Daemon,
    Daemons,
    Notifications,
    Stack,
    Value,
    build_stack,
    spot_warning,
)
from tests.support.daemon import DEADLINE, controller, deleted, sqs


#: A backend fed by a group that does not exist: refused by every cycle.
BROKEN_BACKEND = "gone"
BROKEN_GROUP = "gone-asg"


class WithBrokenBackend(Stack):
    """The usual stack, plus a second backend whose group does not exist."""

    def write_settings(
        self, backend: Mapping[str, Value] | None = None, **sections: Mapping[str, Value]
    ) -> None:
        """The usual settings, and a ``[[backend]]`` for the missing group."""
        super().write_settings(backend, **sections)
        with self.settings.open("a") as file:
            file.write(
                f'\n[[backend]]\nname = "{BROKEN_BACKEND}"\nasg = "{BROKEN_GROUP}"\n'
                f'port = {self.port}\nserver_prefix = "{BROKEN_BACKEND}-"\n'
            )


def ec2_event(instance_id: str, state: str = "running") -> dict[str, Any]:
    """An EC2 instance state-change notification as an EventBridge rule delivers it."""
    return {
        "version": "0",
        "id": "7bf73129-1428-4cd3-a780-95db273d1602",
        "detail-type": "EC2 Instance State-change Notification",
        "source": "aws.ec2",
        "account": ACCOUNT,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": "eu-west-1",
        "resources": [f"arn:aws:ec2:eu-west-1:{ACCOUNT}:instance/{instance_id}"],
        "detail": {"instance-id": instance_id, "state": state},
    }


def receipts(daemon: Daemon, group: str) -> list[int]:
    """The receive counts of the messages naming *group* received so far."""
    return [
        int(r["receive_count"])
        for r in daemon.records()
        if r["message"] == "message received" and r.get("group") == group
    ]


def test_broken_group_holds_only_the_messages_that_name_it(
    cloud: Cloud,
    haproxy_factory: HAProxyFactory,
    http_backends: HTTPBackends,
    tmp_path: Path,
    daemons: Daemons,
    queue: Notifications,
) -> None:
    """
    One backend's group does not exist, so every cycle fails for it; the other backend is
    served. A plain-text body and an EC2 event are deleted after the cycle they wake; the
    notification naming the missing group comes back, and stays in the queue.
    """
    cloud.create_group(GROUP, 2)
    haproxy = haproxy_factory(
        BackendSpec(BACKEND, lines=(HEALTH_CHECK, CHECK_TIMEOUT), servers=(HAND_WRITTEN,)),
        BackendSpec(BROKEN_BACKEND, lines=(HEALTH_CHECK,), servers=(HAND_WRITTEN,)),
    )
    stack = WithBrokenBackend(cloud, haproxy, http_backends, tmp_path / "r.toml", free_port())
    stack.serve_instances()
    daemon = daemons.start(stack, controller=controller(max_backoff=1), sqs=sqs(queue))
    wait_for(stack.converged, "the healthy backend to be served", DEADLINE)
    assert daemon.cycles()[0]["result"] == "failed"

    instance = sorted(stack.serving())[0]
    queue.send("hello, reconciler", json.dumps(ec2_event(instance)))
    queue.publish("LAUNCH", "i-0123456789abcdef0", group=BROKEN_GROUP)
    wait_for(
        lambda: deleted(daemon).keys() >= {"not_json", "eventbridge_ec2"},
        "the group-less messages to be deleted",
        DEADLINE,
    )
    wait_for(lambda: max(receipts(daemon, BROKEN_GROUP), default=0) >= 2, "a return", DEADLINE)
    assert deleted(daemon) == {"not_json": 1, "eventbridge_ec2": 1}
    assert queue.depth() == 1
    assert daemon.metric("reconciler_cycles_total", result="ok") == 0
    assert stack.converged()


def test_forged_and_malformed_spot_warnings_change_nothing(
    cloud: Cloud,
    haproxy_factory: HAProxyFactory,
    http_backends: HTTPBackends,
    tmp_path: Path,
    daemons: Daemons,
    queue: Notifications,
) -> None:
    """
    With ``drain_on_spot_warning``, three warnings reach the queue: a well-formed one for an
    on-demand instance, one from another source, and one whose instance id carries a runtime
    command. Each is logged once as untrusted (message id, instance, reason; no body), counted,
    and deleted; every instance keeps serving.
    """
    stack = build_stack(cloud, haproxy_factory, http_backends, tmp_path)
    daemon = daemons.start(
        stack, backend={"drain_on_spot_warning": True}, controller=controller(), sqs=sqs(queue)
    )
    wait_for(stack.converged, "the first convergence", DEADLINE)
    admitted = stack.admitted()
    on_demand, other = sorted(admitted)
    forged = {**spot_warning(other), "source": "my.tool"}
    garbled = spot_warning(f"{other}\nset server {BACKEND}/{other} state drain")
    queue.send(json.dumps(spot_warning(on_demand)), json.dumps(forged), json.dumps(garbled))
    wait_for(lambda: sum(deleted(daemon).values()) >= 3, "three deletions", DEADLINE)
    assert deleted(daemon) == {"spot_warning": 3}
    assert queue.depth() == 0

    untrusted = [r for r in daemon.records() if r["message"] == "untrusted interruption warning"]
    assert sorted(r["instance"] for r in untrusted) == sorted(["-", on_demand, other])
    assert all(r["level"] == "warning" and r["message_id"] != "-" for r in untrusted)
    assert not [r for r in untrusted if "body" in r]
    assert daemon.metric("reconciler_untrusted_warnings_total", reason="not_spot") == 1
    assert daemon.metric("reconciler_untrusted_warnings_total", reason="malformed") == 2
    assert stack.admitted() == admitted
    assert stack.converged()
