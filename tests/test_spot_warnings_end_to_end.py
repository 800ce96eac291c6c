"""
Spot interruption warnings, end to end: the controller in a child process, the warning put on
its queue as EventBridge delivers it, a real HAProxy serving the group.

A message is a wake-up, not a fact: anyone allowed to send to the queue can write one. A warning
drains an instance only when DescribeInstances, read by the cycle, says it is a Spot instance
(``InstanceLifecycle: spot``) of the backend's own group. A warning about anything else changes
nothing: not the file, not HAProxy's runtime, not the traffic.
"""

from __future__ import annotations

import json

import pytest

from harness.haproxy import wait_for
from harness.stack import GROUP, Daemon, Daemons, Notifications, Stack, spot_warning
from tests.support.daemon import (
    DEADLINE,
    controller,
    sqs,
    start_converged,
    wait_deleted,
    wait_for_woken_cycle,
    woken_cycles,
)


#: A group the controller does not manage, with a Spot instance of its own.
OTHER_GROUP = "batch-asg"


def start(daemons: Daemons, stack: Stack, queue: Notifications) -> Daemon:
    """A controller that drains on Spot warnings, once HAProxy serves the group."""
    return start_converged(
        daemons,
        stack,
        backend={"drain_on_spot_warning": True},
        controller=controller(),
        sqs=sqs(queue),
    )


def test_warning_for_a_spot_member_drains_it_at_once(
    stack: Stack, daemons: Daemons, queue: Notifications
) -> None:
    """
    A warning for a Spot instance of the group: the controller takes it out of HAProxy at
    once, although the group still lists it InService (no API says what the warning says);
    the on-demand instances keep serving.
    """
    on_demand = set(stack.cloud.serving(GROUP))
    spot = stack.cloud.attach_spot_instance(GROUP)
    stack.serve_instances()
    daemon = start(daemons, stack, queue)

    queue.send(json.dumps(spot_warning(spot)))

    wait_for(lambda: spot not in stack.serving(), "the warned instance to leave", DEADLINE)
    assert stack.admitted() == on_demand
    assert spot in stack.cloud.serving(GROUP)
    assert wait_deleted(daemon, queue, 1) == {"spot_warning": 1}


@pytest.mark.parametrize("target", ["on-demand-member", "spot-of-another-group"])
def test_warning_for_anything_else_changes_nothing(
    stack: Stack, daemons: Daemons, queue: Notifications, target: str
) -> None:
    """
    A forged warning naming an on-demand InService Healthy member, or a real Spot instance
    of a group no backend manages: after the cycle it woke (a warning claims nothing a
    follow-up could look for), the file's bytes and HAProxy's servers are as before, every
    instance still answers, and the message is gone from the queue.
    """
    if target == "on-demand-member":
        warned = sorted(stack.cloud.serving(GROUP))[0]
    else:
        stack.cloud.create_group(OTHER_GROUP, 0, subnet_octet=2)
        warned = stack.cloud.attach_spot_instance(OTHER_GROUP, subnet_octet=2)
    daemon = start(daemons, stack, queue)
    content, states = stack.haproxy.config_path.read_bytes(), stack.states()
    woken = woken_cycles(daemon)

    queue.send(json.dumps(spot_warning(warned)))

    wait_for_woken_cycle(daemon, woken)
    assert stack.haproxy.config_path.read_bytes() == content
    assert stack.states() == states
    assert set(stack.answering()) == set(stack.cloud.serving(GROUP))
    assert wait_deleted(daemon, queue, 1) == {"spot_warning": 1}
