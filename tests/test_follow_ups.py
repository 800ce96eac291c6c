"""
Follow-ups only when they can find something: what a message claims (``core.claims``), whether a
read already shows it, and, end to end with moto and a real HAProxy, that a change the first
cycle sees costs no follow-up while one AWS shows late is followed up until it shows.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from harness.haproxy import wait_for
from harness.messages import I1, I2, envelope, eventbridge, scaling
from harness.stack import Daemon, Daemons, Notifications, Stack
from reconciler.core import claims, messages
from reconciler.core.claims import Claim, Expect
from reconciler.core.model import AwsObservation, Group, Instance
from tests.support.corpus import CORPUS
from tests.support.daemon import (
    DEADLINE,
    controller,
    settled,
    sqs,
    start_converged,
    wait_deleted,
)


WEB = "web-asg"


def classified(body: str) -> Claim | None:
    """The claim of a message *body*."""
    return claims.of(messages.classify(body))


def lifecycle(transition: str) -> str:
    """A lifecycle hook message for ``I1`` of ``web-asg`` on *transition*, sent straight to SQS."""
    return json.dumps(
        {
            "Origin": "EC2",
            "LifecycleHookName": "hook",
            "Destination": "AutoScalingGroup",
            "LifecycleTransition": f"autoscaling:EC2_INSTANCE_{transition}",
            "AutoScalingGroupName": WEB,
            "EC2InstanceId": I1,
            "LifecycleActionToken": "71514b9d-6a40-4b26-8523-05e7ee35fa40",
        }
    )


@pytest.mark.parametrize(
    ("body", "claim"),
    [
        (envelope(json.dumps(scaling())), Claim(Expect.SERVES, I1, WEB)),
        (
            envelope(json.dumps(scaling(Event="autoscaling:EC2_INSTANCE_TERMINATE"))),
            Claim(Expect.LEAVES, I1, WEB),
        ),
        (lifecycle("LAUNCHING"), Claim(Expect.WAITS, I1, WEB)),
        (lifecycle("TERMINATING"), Claim(Expect.LEAVES, I1, WEB)),
        (
            eventbridge(
                "aws.autoscaling",
                "EC2 Instance Launch Successful",
                {"AutoScalingGroupName": WEB, "EC2InstanceId": I1},
            ),
            Claim(Expect.SERVES, I1, WEB),
        ),
        (
            eventbridge(
                "aws.ec2",
                "EC2 Instance State-change Notification",
                {"instance-id": I2, "state": "terminated"},
            ),
            Claim(Expect.LEAVES, I2),
        ),
    ],
    ids=["launch", "terminate", "launching", "terminating", "eventbridge-launch", "ec2-gone"],
)
def test_messages_about_a_change_claim_it(body: str, claim: Claim) -> None:
    """Launches and terminations, however delivered, say what a read should show."""
    assert classified(body) == claim


@pytest.mark.parametrize(
    "body",
    [
        envelope(json.dumps(scaling(Event="autoscaling:EC2_INSTANCE_LAUNCH_ERROR"))),
        envelope(json.dumps(scaling(EC2InstanceId=""))),
        eventbridge("aws.ec2", "EC2 Spot Instance Interruption Warning", {"instance-id": I1}),
        eventbridge(
            "aws.ec2",
            "EC2 Instance State-change Notification",
            {"instance-id": I1, "state": "running"},
        ),
        "plain text",
        json.dumps({"unknown": "shape"}),
    ],
    ids=["launch-error", "no-instance", "spot-warning", "ec2-running", "text", "unknown-json"],
)
def test_other_messages_claim_nothing(body: str) -> None:
    """Errors, warnings, running instances and unknown bodies: nothing for a follow-up to find."""
    assert classified(body) is None


def test_every_corpus_message_is_classified_into_a_claim_or_none() -> None:
    """No real sample makes claiming fail."""
    if not CORPUS.is_dir():
        pytest.skip(f"message corpus not found at {CORPUS}")
    for path in sorted(CORPUS.glob("*.json")):
        classified(path.read_text(encoding="utf-8"))


def instance(
    state: str = "InService", ec2: str | None = "running", health: str = "Healthy"
) -> Instance:
    """``I1`` in lifecycle *state*, EC2 state *ec2* (``None``: DescribeInstances misses it)."""
    return Instance(I1, state, health, ec2, "127.0.1.4" if ec2 else None)


def read(*instances: Instance, errors: bool = False) -> AwsObservation:
    """A read of ``web-asg`` listing *instances* (or failing)."""
    if errors:
        return AwsObservation(errors={WEB: "throttled"})
    return AwsObservation(groups={WEB: Group(WEB, len(instances), instances)})


SERVES = Claim(Expect.SERVES, I1, WEB)
WAITS = Claim(Expect.WAITS, I1, WEB)
LEAVES = Claim(Expect.LEAVES, I1, WEB)


@pytest.mark.parametrize(
    ("claim", "observed", "shown"),
    [
        (SERVES, read(instance()), True),
        (SERVES, read(), False),
        (SERVES, read(instance("Pending", ec2="pending")), False),
        (SERVES, read(instance(ec2=None)), False),  # listed, not described yet
        (SERVES, read(instance("Pending:Wait")), False),
        (SERVES, read(errors=True), False),
        (SERVES, AwsObservation(), True),  # no backend manages the group
        (WAITS, read(instance("Pending:Wait")), True),
        (WAITS, read(instance("Pending:Wait", ec2=None)), False),
        (WAITS, read(instance()), True),
        (WAITS, read(), False),
        (LEAVES, read(), True),
        (LEAVES, read(instance("Terminating:Wait")), True),
        (LEAVES, read(instance(ec2="shutting-down")), True),
        (LEAVES, read(instance(health="Unhealthy")), True),
        (LEAVES, read(instance()), False),
        (LEAVES, read(instance(ec2=None)), False),  # the reads disagree: look again
        (LEAVES, read(errors=True), False),
        (Claim(Expect.LEAVES, I1), read(), True),
        (Claim(Expect.LEAVES, I1), read(instance()), False),
        (Claim(Expect.LEAVES, I1), read(errors=True), False),
    ],
)
def test_a_read_shows_a_claim_or_not(claim: Claim, observed: AwsObservation, shown: bool) -> None:
    """
    Launched: serving. Held by a launch hook: in ``Pending:Wait`` and known to EC2. Leaving:
    not serving, or not listed, while the reads agree. A failed read shows nothing; a group no
    backend manages has nothing to show.
    """
    assert claims.seen(claim, observed) is shown


# -- end to end ------------------------------------------------------------------------------------


def event_cycles(daemon: Daemon, count: int) -> list[dict[str, Any]]:
    """The summaries of the cycles after the first *count* that read AWS."""
    return [c for c in daemon.cycles()[count:] if c["aws_read"]]


@pytest.mark.haproxy_versions
def test_a_launch_the_first_cycle_sees_costs_no_follow_up(
    stack: Stack, daemons: Daemons, queue: Notifications
) -> None:
    """
    The group launches an instance, then notifies: the cycle the notification wakes reads it
    serving, so the launch costs one AWS read (one DescribeAutoScalingGroups/DescribeInstances
    pair) and no follow-up; its warm-up is watched in HAProxy alone.
    """
    daemon = start_converged(daemons, stack, controller=controller(), sqs=sqs(queue))
    count = len(daemon.cycles())
    (new,) = stack.scale_to(3)
    queue.publish("LAUNCH", new)
    wait_for(lambda: new in stack.serving(), "the new instance to serve", DEADLINE)
    wait_deleted(daemon, queue, 1)
    wait_for(lambda: settled(daemon), "the warm-up to end", DEADLINE)
    after = daemon.cycles()[count:]
    assert [c["trigger"] for c in event_cycles(daemon, count)] == ["event"]
    assert "follow-up" not in {c["trigger"] for c in after}
    assert all(c["api_calls"] == 0 for c in after if not c["aws_read"])
    groups_calls = "autoscaling:DescribeAutoScalingGroups"
    assert daemon.metric("reconciler_aws_api_calls_total", operation=groups_calls) == len(
        [c for c in daemon.cycles() if c["aws_read"]]
    )


def test_follow_ups_back_off_until_aws_shows_the_change(
    stack: Stack, daemons: Daemons, queue: Notifications
) -> None:
    """
    A termination announced before AWS shows it: the event cycle still reads the instance
    serving, so follow-ups read AWS again, each twice as long after the last, until one reads it
    gone and removes its server; then they stop.
    """
    daemon = start_converged(
        daemons, stack, controller=controller(follow_up_delay=0.2), sqs=sqs(queue)
    )
    count = len(daemon.cycles())
    leaving, staying = sorted(stack.admitted())
    queue.publish("TERMINATE", leaving)

    def follow_ups() -> list[dict[str, Any]]:
        return [c for c in event_cycles(daemon, count) if c["trigger"] == "follow-up"]

    wait_for(lambda: len(follow_ups()) >= 2, "two follow-ups", DEADLINE)
    assert stack.admitted() == {leaving, staying}
    stack.cloud.terminate(leaving)
    wait_for(lambda: leaving not in stack.states(), "a follow-up to remove it", DEADLINE)
    assert stack.admitted() == {staying}

    def changed() -> list[dict[str, Any]]:
        return [c for c in daemon.cycles()[count:] if c["changes"]]

    wait_for(changed, "the removal's log line", DEADLINE)
    reads = event_cycles(daemon, count)
    assert reads[0]["trigger"] == "event"
    assert {c["trigger"] for c in reads[1:]} == {"follow-up"}
    # The follow-up that reads it gone starts the removal; 2.6 may postpone the delete to a
    # progress poll while an idle connection lasts.
    assert changed()[0]["trigger"] in {"follow-up", "progress"}
    assert wait_deleted(daemon, queue, 1) == {"scaling": 1}


@pytest.mark.haproxy_versions
def test_cycles_converge_when_ec2_describes_the_instance_late(
    stack: Stack, daemons: Daemons, queue: Notifications
) -> None:
    """
    Eventual consistency: the group lists the new instance, but DescribeInstances does not know it
    when the notification arrives. The event cycle leaves it out (the reads disagree); later
    cycles read AWS again until EC2 knows it, and then it serves.
    """
    daemon = start_converged(daemons, stack, controller=controller(), sqs=sqs(queue))
    count = len(daemon.cycles())
    (new,) = stack.scale_to(3)
    stack.cloud.forget_instance(new)
    queue.publish("LAUNCH", new)
    wait_for(lambda: len(event_cycles(daemon, count)) >= 3, "two reads after the event", DEADLINE)
    assert new not in stack.states()
    first = event_cycles(daemon, count)[0]
    assert (first["trigger"], first["changes"]) == ("event", 0)
    stack.cloud.remember_instance(new)
    wait_for(lambda: new in stack.serving(), "a later read to serve it", DEADLINE)
    later = {c["trigger"] for c in event_cycles(daemon, count)[1:]}
    assert later <= {"progress", "follow-up"}
    assert wait_deleted(daemon, queue, 1) == {"scaling": 1}
