"""
The verdicts on Spot interruption warnings (``judge_warnings``): what one cycle's read says about
the instances that warnings named.

A message is no fact. A warning may be true only for a Spot instance (DescribeInstances
``InstanceLifecycle: spot``) of a managed group; one for an instance in no managed group, or for
one that is no Spot instance, is untrusted. An instance the read cannot judge yet (a group, or its
description, was not read) is in no verdict set, so the loop remembers the warning until a cycle
can. What the loop does with the verdicts is in ``test_controller.py``; the real controller with
moto and HAProxy in ``test_spot_warnings_end_to_end.py``.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.model import AwsObservation, Group, Instance, Observation, Verdicts
from reconciler.cycle import judge_warnings, run_cycle
from tests.support.worlds import (
    ASG,
    BACKEND,
    PREFIX,
    STATES,
    World,
    group,
    instance,
    runtime_server,
    unknown_to_ec2,
)


OTHER = "batch-asg"


def iid(n: int) -> str:
    """The id of instance *n*, as ``instance(n)`` names it."""
    return f"i-{n:017x}"


def spot(n: int, state: str = "InService", ec2: str = "running") -> Instance:
    """Instance *n*, which DescribeInstances says is a Spot instance."""
    return replace(instance(n, state, ec2), spot=True)


def judge(*groups: Group, failed: tuple[str, ...] = (), warned: tuple[int, ...] = (4,)) -> Verdicts:
    """The verdicts of a read of *groups* (and of the *failed* ones) on warnings for *warned*."""
    aws = AwsObservation({g.name: g for g in groups}, dict.fromkeys(failed, "throttled"))
    return judge_warnings(Observation(aws, {}, None, interrupted=frozenset(map(iid, warned))))


class TestVerified:
    """A Spot instance of a group that was read: the warning may be true."""

    @pytest.mark.parametrize(
        ("state", "ec2"),
        [("InService", "running"), ("Terminating:Wait", "shutting-down"), ("Standby", "stopped")],
    )
    def test_spot_member_is_verified_whatever_its_state(self, state: str, ec2: str) -> None:
        """Being reclaimed is what a warning announces: the state of the member does not matter."""
        assert judge(group(spot(4, state, ec2))) == Verdicts(verified=frozenset({iid(4)}))

    def test_spot_member_is_verified_while_another_group_is_unreadable(self) -> None:
        """The failure of another group says nothing about an instance found where it is."""
        verdicts = judge(group(instance(5), spot(4)), failed=(OTHER,))
        assert verdicts == Verdicts(verified=frozenset({iid(4)}))


class TestUntrusted:
    """A warning the read refutes."""

    def test_on_demand_member_is_not_spot(self) -> None:
        """InService, Healthy, running, but no Spot instance: the warning is forged."""
        assert judge(group(instance(4), spot(5))) == Verdicts(not_spot=frozenset({iid(4)}))

    def test_instance_of_no_managed_group_is_unmanaged(self) -> None:
        """Every managed group was read and none lists the instance."""
        verdicts = judge(group(spot(5)), Group(OTHER, 1, (spot(6),)))
        assert verdicts == Verdicts(unmanaged=frozenset({iid(4)}))

    def test_a_group_that_does_not_exist_holds_no_instance(self) -> None:
        """A managed group absent from the read (it does not exist) is no reason to wait."""
        assert judge() == Verdicts(unmanaged=frozenset({iid(4)}))

    def test_each_warning_is_judged_on_its_own(self) -> None:
        """Several warnings in one cycle: each instance gets its own verdict."""
        verdicts = judge(group(instance(4), spot(5)), warned=(4, 5, 9))
        assert verdicts == Verdicts(
            verified=frozenset({iid(5)}),
            unmanaged=frozenset({iid(9)}),
            not_spot=frozenset({iid(4)}),
        )


class TestUndecided:
    """The read cannot judge the instance yet: no verdict, the warning waits for a later cycle."""

    def test_member_that_describe_instances_did_not_return(self) -> None:
        """The group lists it, EC2 does not know it yet: whether it is Spot is unknown."""
        assert unknown_to_ec2(4).disagreement is not None
        assert judge(group(unknown_to_ec2(4), spot(5))) == Verdicts()

    def test_instance_in_no_read_group_while_a_group_is_unreadable(self) -> None:
        """The group that could not be read may be the one that holds it."""
        assert judge(group(spot(5)), failed=(OTHER,)) == Verdicts()


KINDS = ("spot", "on-demand", "undescribed")
POOL = range(4, 16)


def member(n: int, state: str, kind: str) -> Instance:
    """Instance *n* in *state*; Spot or not only when DescribeInstances returned it."""
    if kind == "undescribed":
        return replace(unknown_to_ec2(n), lifecycle_state=state)
    return replace(instance(n, state), spot=kind == "spot")


@st.composite
def reads(draw: st.DrawFn) -> Observation:
    """
    Two managed groups, each read, failed or nonexistent; each instance of the pool in at most
    one group (as in AWS); warnings for any of them.
    """
    names = (ASG, OTHER)
    outcome = {name: draw(st.sampled_from(["read", "failed", "missing"])) for name in names}
    where = st.sampled_from([*names, None])
    placed = [
        (draw(where), member(n, draw(st.sampled_from(STATES)), draw(st.sampled_from(KINDS))))
        for n in POOL
    ]
    groups = {
        name: Group(name, 0, tuple(m for owner, m in placed if owner == name))
        for name in names
        if outcome[name] == "read"
    }
    errors = {name: "throttled" for name in names if outcome[name] == "failed"}
    warned = draw(st.sets(st.sampled_from(POOL)))
    return Observation(
        AwsObservation(groups, errors), {}, None, interrupted=frozenset(map(iid, warned))
    )


@given(reads())
def test_every_warning_gets_the_verdict_the_rule_gives(observed: Observation) -> None:
    """
    Every warned instance is in exactly one of: verified, unmanaged, not Spot, undecided. The
    verified ones are exactly the warned Spot instances of the groups read; the others are
    refuted or left undecided only for the reasons the rule gives.
    """
    verdicts = judge_warnings(observed)
    judged = (verdicts.verified, verdicts.unmanaged, verdicts.not_spot)
    decided = frozenset().union(*judged)
    assert sum(map(len, judged)) == len(decided)
    assert decided <= observed.interrupted
    members = [i for g in observed.aws.groups.values() for i in g.instances]
    listed = {i.instance_id for i in members}
    undescribed = {i.instance_id for i in members if i.ec2_state is None}
    on_demand = {i.instance_id for i in members if i.ec2_state is not None and not i.spot}
    assert verdicts.verified == observed.interrupted & {i.instance_id for i in members if i.spot}
    assert verdicts.not_spot == observed.interrupted & on_demand
    assert all(i not in listed and not observed.aws.errors for i in verdicts.unmanaged)
    for waiting in observed.interrupted - decided:
        assert waiting in undescribed or (waiting not in listed and observed.aws.errors)


@pytest.mark.parametrize(
    ("warned", "verdict"),
    [
        pytest.param(4, "not_spot", id="on-demand-member"),
        pytest.param(9, "unmanaged", id="no-managed-group"),
    ],
)
def test_only_a_verified_warning_drains(warned: int, verdict: str) -> None:
    """
    One cycle over fakes: the verdicts ride on its result, and only the verified warning changes
    anything (its busy server drains); an untrusted one leaves the file and the runtime as they
    were.
    """
    world = World(
        group(instance(4), spot(5)),
        runtime=[runtime_server(4), runtime_server(5)],
        drain_on_spot_warning=True,
    )
    world.converge()
    busy = f"{PREFIX}{iid(5)}"
    world.runtime.servers[BACKEND][busy] = runtime_server(5, sessions=2)
    content, servers = world.store.content, dict(world.runtime.servers[BACKEND])
    untrusted = run_cycle(world.settings, world.ports, interrupted=frozenset({iid(warned)}))
    assert untrusted.interruptions == Verdicts(**{verdict: frozenset({iid(warned)})})
    assert world.store.content == content
    assert world.runtime.servers[BACKEND] == servers

    verified = run_cycle(world.settings, world.ports, interrupted=frozenset({iid(5)}))
    assert verified.interruptions == Verdicts(verified=frozenset({iid(5)}))
    assert set(world.runtime_servers()) == {f"{PREFIX}{iid(4)}"}
    assert world.runtime.servers[BACKEND][busy].draining
