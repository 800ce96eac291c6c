"""
What a message says has changed, as a hint of whether to look again. Pure.

A message is never truth: every cycle reads everything, whatever woke it. But AWS is eventually
consistent, and a notification can arrive before the change it announces is visible. So the
controller asks one question of a message: does the cycle it woke already see what the message
says? If it does, nothing is left to look for; if not, a follow-up cycle looks again (with
backoff, for a bounded time: see ``reconciler.loop``).

=================================================================  ==============================
message                                                            seen when the read shows
=================================================================  ==============================
scaling ``EC2_INSTANCE_LAUNCH``, EventBridge Launch Successful     the instance serving
lifecycle ``EC2_INSTANCE_LAUNCHING``                                the instance in
                                                                   ``Pending:Wait`` and known
                                                                   to EC2, or serving
scaling ``EC2_INSTANCE_TERMINATE``, lifecycle                      the instance not serving, or
``EC2_INSTANCE_TERMINATING``, EventBridge Terminate Successful,    not listed (and the reads
EC2 state ``shutting-down``/``terminated``/``stopping``/``stopped``  agree about it)
anything else (tests, errors, Spot warnings, EC2 ``running``...)   no claim: no follow-up
=================================================================  ==============================

A claim about a group that was not read because no backend manages it is seen at once: no
follow-up can find anything there. One about a group whose read failed is not: the retry reads it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from reconciler.core.messages import SCALING_EVENT_PREFIX, Kind, Trigger
from reconciler.core.model import (
    GONE_EC2_STATES,
    LAUNCH_WAIT,
    LAUNCHING,
    TERMINATING,
    AwsObservation,
    Instance,
)


class Expect(enum.Enum):
    """What a message says about its instance."""

    #: Launched: it serves.
    SERVES = "serves"
    #: Held at launch by a lifecycle hook: listed in ``Pending:Wait`` and known to EC2.
    WAITS = "waits"
    #: Leaving or gone: it no longer serves.
    LEAVES = "leaves"


@dataclass(frozen=True)
class Claim:
    """What one message says about one instance of a group (``None``: it names none)."""

    expect: Expect
    instance_id: str
    group: str | None = None


_SCALING = {
    f"{SCALING_EVENT_PREFIX}LAUNCH": Expect.SERVES,
    f"{SCALING_EVENT_PREFIX}TERMINATE": Expect.LEAVES,
}
_LIFECYCLE = {LAUNCHING: Expect.WAITS, TERMINATING: Expect.LEAVES}
_EVENTBRIDGE_ASG = {
    "EC2 Instance Launch Successful": Expect.SERVES,
    "EC2 Instance Terminate Successful": Expect.LEAVES,
}
_BY_KIND = {
    Kind.SCALING: _SCALING,
    Kind.LIFECYCLE: _LIFECYCLE,
    Kind.EVENTBRIDGE_ASG: _EVENTBRIDGE_ASG,
    Kind.EVENTBRIDGE_EC2: dict.fromkeys(GONE_EC2_STATES, Expect.LEAVES),
}


def of(trigger: Trigger) -> Claim | None:
    """The claim a classified message makes, or ``None`` when it makes none worth a follow-up."""
    expect = _BY_KIND.get(trigger.kind, {}).get(trigger.event)
    if expect is None or trigger.instance_id is None:
        return None
    return Claim(expect, trigger.instance_id, trigger.group)


def seen(claim: Claim, read: AwsObservation) -> bool:
    """Whether *read* already shows what *claim* says (or can never show more about it)."""
    if claim.group is not None:
        if claim.group in read.errors:
            return False
        if claim.group not in read.groups:
            return True  # a group no backend manages, or that does not exist
        groups = [read.groups[claim.group]]
    else:
        groups = list(read.groups.values())
    listed = [i for g in groups for i in g.instances if i.instance_id == claim.instance_id]
    if not listed:
        if claim.group is None:
            # In no managed group, unless one that failed to read lists it.
            return not read.errors
        return claim.expect is Expect.LEAVES
    return all(_shows(claim.expect, instance) for instance in listed)


def _shows(expect: Expect, instance: Instance) -> bool:
    """Whether one listing of the instance shows what is expected of it."""
    if expect is Expect.LEAVES:
        return instance.gone or (not instance.serving and instance.disagreement is None)
    if expect is Expect.WAITS and instance.lifecycle_state == LAUNCH_WAIT:
        return instance.ec2_state is not None
    return instance.serving
