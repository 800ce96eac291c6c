"""
The ``MembershipSource`` adapter: who is in each Auto Scaling group, and where they listen.

Two read calls make an observation. DescribeAutoScalingGroups (at most 50 names per call, paged
by ``NextToken``) lists each group's instances with their lifecycle and health states;
DescribeInstances (at most 1000 ids per call, paged) adds the EC2 state, the primary private
IPv4 address, the instance type and the Availability Zone; a mixed-instances group's launch
template overrides give the ``WeightedCapacity`` of each instance type. Every instance of a group
is returned, whatever its state: deciding who serves is the model's job. Both answers are read
for the few fields the controller uses, page by page (``reconciler.adapters.aws.answers``):
botocore's full parse of 5,000 instances cost seconds of CPU.

For the groups whose lifecycle actions the controller completes, a third call,
DescribeLifecycleHooks (one per group: it takes one group name and has no paging), adds the hooks.
Hooks change rarely and only matter to instances in a wait state, so the adapter keeps its copy
of a group's hooks and reads them again only when the copy is older than ``hooks_max_age`` (the
resync interval), when the group shows an instance in a wait state (``Pending:Wait``,
``Terminating:Wait``) that was not there at the last read (a hook may have been added since),
or when the last read failed.

Failures never raise. botocore's standard retry mode retries each call a bounded number of times
(the call level of the two retry levels, see ``reconciler.retry``); what still fails is reported
per group in ``AwsObservation.errors`` with what to do about it, so one broken call never blanks
every backend, and the planner leaves those backends untouched. The cycle is retried as a whole,
by the daemon's backoff, which re-reads every group.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import TYPE_CHECKING, TypedDict, TypeVar

from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

from reconciler.adapters.aws.answers import groups_answer, instances_answer, reduce_answers
from reconciler.adapters.aws.classify import error_codes, explain
from reconciler.core.model import AwsObservation, Group, Instance, LifecycleHook


if TYPE_CHECKING:
    from mypy_boto3_autoscaling.type_defs import (
        AutoScalingGroupsTypeTypeDef,
        AutoScalingGroupTypeDef,
        LifecycleHookTypeDef,
    )
    from mypy_boto3_autoscaling.type_defs import InstanceTypeDef as GroupMemberTypeDef
    from mypy_boto3_ec2.type_defs import (
        DescribeInstancesResultTypeDef,
        FilterTypeDef,
        InstanceTypeDef,
    )

    from reconciler.adapters.aws.clients import AwsClients

#: DescribeAutoScalingGroups refuses more names with its default ``MaxRecords``.
GROUP_NAMES_PER_CALL = 50
#: The EC2 pagination guide's limit for ``InstanceIds``.
INSTANCE_IDS_PER_CALL = 1000
#: DescribeInstances refuses more values in one filter (``FilterLimitExceeded``).
FILTER_VALUES_PER_CALL = 200

DESCRIBE_GROUPS = "autoscaling:DescribeAutoScalingGroups"
DESCRIBE_INSTANCES = "ec2:DescribeInstances"
DESCRIBE_HOOKS = "autoscaling:DescribeLifecycleHooks"
#: What AWS applies when a hook was created without ``HeartbeatTimeout``.
DEFAULT_HEARTBEAT_TIMEOUT = 3600

UNKNOWN_INSTANCE_CODE = "InvalidInstanceID.NotFound"
#: The lifecycle states an instance is held in while a hook waits for its action.
WAIT_STATES = frozenset({"Pending:Wait", "Terminating:Wait"})

#: Everything a read call may raise that is about AWS rather than about our code.
_READ_FAILURES = (ClientError, BotoCoreError, ResponseParserError)

_Page = TypeVar("_Page", "AutoScalingGroupsTypeTypeDef", "DescribeInstancesResultTypeDef")


class _InstanceQuery(TypedDict, total=False):
    """What DescribeInstances is asked for: ids, or (the fallback) an instance-id filter."""

    InstanceIds: Sequence[str]
    Filters: Sequence[FilterTypeDef]


class _NextPage(TypedDict, total=False):
    """The extra argument of every page after the first."""

    NextToken: str


@dataclass(frozen=True)
class _Hooks:
    """A group's hooks as last read, and what the group looked like then."""

    hooks: tuple[LifecycleHook, ...]
    #: Clock time of the read.
    read_at: float
    #: The group's instances in a wait state at the time of the read.
    waiting: frozenset[str]


class AwsMembership:
    """Reads Auto Scaling groups and their instances through botocore clients."""

    def __init__(
        self,
        clients: AwsClients,
        *,
        instance_ids_per_call: int = INSTANCE_IDS_PER_CALL,
        hooks_max_age: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """
        Read through *clients*, describing at most *instance_ids_per_call* ids per call; keep a
        group's hooks for up to *hooks_max_age* seconds of *clock* (0: read them every time).
        """
        self._autoscaling = clients.client("autoscaling")
        self._ec2 = clients.client("ec2")
        reduce_answers(self._autoscaling, "DescribeAutoScalingGroups", groups_answer)
        reduce_answers(self._ec2, "DescribeInstances", instances_answer)
        self._ids_per_call = instance_ids_per_call
        self._hooks_max_age = hooks_max_age
        self._clock = clock
        self._hooks: dict[str, _Hooks] = {}

    def read_groups(
        self, names: Sequence[str], *, with_hooks: Collection[str] = ()
    ) -> AwsObservation:
        """
        Read every group in *names*, and the lifecycle hooks of those in *with_hooks*; unknown
        names are left out, failures reported per group.
        """
        wanted = list(dict.fromkeys(names))
        errors: dict[str, str] = {}
        found = self._read_groups(wanted, errors)
        # Before the instances, so a group whose hooks cannot be read costs no DescribeInstances.
        hooks = self._hooks_of(
            {n: found[n] for n in wanted if n in found and n in with_hooks}, errors
        )
        readable = [name for name in wanted if name in found and name not in errors]
        described = self._read_instances({name: found[name] for name in readable}, errors)
        groups = {
            name: _group(group, described, hooks.get(name, ()))
            for name, group in found.items()
            if name not in errors
        }
        return AwsObservation(groups=groups, errors=errors)

    def _read_groups(
        self, names: Sequence[str], errors: dict[str, str]
    ) -> dict[str, AutoScalingGroupTypeDef]:
        """The groups of *names* that exist; the names of a failed call go into *errors*."""
        found: dict[str, AutoScalingGroupTypeDef] = {}
        for chunk in _chunks(names, GROUP_NAMES_PER_CALL):
            try:
                found.update(self._describe_groups(chunk))
            except _READ_FAILURES as exc:
                errors.update(dict.fromkeys(chunk, _explain(DESCRIBE_GROUPS, exc)))
        return found

    def _hooks_of(
        self, groups: Mapping[str, AutoScalingGroupTypeDef], errors: dict[str, str]
    ) -> dict[str, tuple[LifecycleHook, ...]]:
        """
        The hooks of each of *groups*, from the copy while it holds (see the module's
        docstring), else read; a group whose read failed goes into *errors*.
        """
        now = self._clock()
        kept, self._hooks = self._hooks, {}
        for name, group in groups.items():
            waiting = frozenset(
                m["InstanceId"]
                for m in group.get("Instances", [])
                if m["LifecycleState"] in WAIT_STATES
            )
            copy = kept.get(name)
            if copy is None or now - copy.read_at >= self._hooks_max_age or waiting - copy.waiting:
                try:
                    copy = _Hooks(self._describe_hooks(name), now, waiting)
                except _READ_FAILURES as exc:
                    errors[name] = _explain(DESCRIBE_HOOKS, exc)
                    continue
            self._hooks[name] = copy
        return {name: copy.hooks for name, copy in self._hooks.items()}

    def _read_instances(
        self, groups: Mapping[str, AutoScalingGroupTypeDef], errors: dict[str, str]
    ) -> dict[str, InstanceTypeDef]:
        """
        The EC2 descriptions of the members of *groups*, by instance id; the groups with a
        member in a failed chunk go into *errors*.
        """
        # Ids in request order, so each group's instances stay together in as few chunks as
        # possible and one failed chunk marks as few groups as possible.
        owner = {
            member["InstanceId"]: name
            for name, group in groups.items()
            for member in group.get("Instances", [])
        }
        described: dict[str, InstanceTypeDef] = {}
        for ids in _chunks(list(owner), self._ids_per_call):
            try:
                described.update(self._describe_instances(ids))
            except _READ_FAILURES as exc:
                message = _explain(DESCRIBE_INSTANCES, exc)
                errors.update(dict.fromkeys((owner[i] for i in ids), message))
        return described

    def _describe_groups(self, names: Sequence[str]) -> dict[str, AutoScalingGroupTypeDef]:
        requested = set(names)
        return {
            group["AutoScalingGroupName"]: group
            for page in self._pages(functools.partial(self._group_page, names))
            for group in page["AutoScalingGroups"]
            if group["AutoScalingGroupName"] in requested
        }

    def _group_page(self, names: Sequence[str], more: _NextPage) -> AutoScalingGroupsTypeTypeDef:
        return self._autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=names, **more)

    def _describe_hooks(self, name: str) -> tuple[LifecycleHook, ...]:
        answer = self._autoscaling.describe_lifecycle_hooks(AutoScalingGroupName=name)
        return tuple(lifecycle_hook(hook) for hook in answer.get("LifecycleHooks", []))

    def _describe_instances(self, ids: Sequence[str]) -> dict[str, InstanceTypeDef]:
        try:
            return self._instances({"InstanceIds": ids})
        except ClientError as exc:
            if UNKNOWN_INSTANCE_CODE not in error_codes(exc):
                raise
        # One id EC2 does not know yet (eventual consistency right after a launch) fails the
        # whole call; the instance-id filter ignores unknown ids, which then stay undescribed.
        described: dict[str, InstanceTypeDef] = {}
        for part in _chunks(ids, FILTER_VALUES_PER_CALL):
            by_filter: _InstanceQuery = {"Filters": [{"Name": "instance-id", "Values": part}]}
            described.update(self._instances(by_filter))
        return described

    def _instances(self, query: _InstanceQuery) -> dict[str, InstanceTypeDef]:
        return {
            instance["InstanceId"]: instance
            for page in self._pages(functools.partial(self._instance_page, query))
            for reservation in page["Reservations"]
            for instance in reservation.get("Instances", [])
            if "InstanceId" in instance
        }

    def _instance_page(
        self, query: _InstanceQuery, more: _NextPage
    ) -> DescribeInstancesResultTypeDef:
        return self._ec2.describe_instances(**query, **more)

    def _pages(self, fetch: Callable[[_NextPage], _Page]) -> Iterator[_Page]:
        # A page may hold fewer items than asked for while more exist: only NextToken tells.
        more: _NextPage = {}
        while True:
            page = fetch(more)
            yield page
            token = page.get("NextToken")
            if not token:
                return
            more = {"NextToken": token}


def _group(
    group: AutoScalingGroupTypeDef,
    described: Mapping[str, InstanceTypeDef],
    hooks: tuple[LifecycleHook, ...],
) -> Group:
    members = (_instance(m, described.get(m["InstanceId"])) for m in group.get("Instances", []))
    return Group(
        name=group["AutoScalingGroupName"],
        desired_capacity=group["DesiredCapacity"],
        instances=tuple(sorted(members, key=attrgetter("instance_id"))),
        hooks=hooks,
        capacities=_capacities(group),
    )


#: ``WeightedCapacity`` as AWS accepts it: a whole number from 1 to 999, in decimal digits.
_WEIGHTED_CAPACITY = re.compile(r"[0-9]{1,3}")


def _capacities(group: AutoScalingGroupTypeDef) -> dict[str, int]:
    """
    ``WeightedCapacity`` by instance type, from the overrides that give both; an override whose
    capacity is not a whole number from 1 to 999 is left out (its type then has none, unless
    another override gives one); a type listed twice keeps its first capacity.
    """
    policy = group.get("MixedInstancesPolicy", {}).get("LaunchTemplate", {})
    capacities: dict[str, int] = {}
    for override in policy.get("Overrides", []):
        kind, text = override.get("InstanceType"), override.get("WeightedCapacity")
        if kind and text and _WEIGHTED_CAPACITY.fullmatch(text) and int(text) > 0:
            capacities.setdefault(kind, int(text))
    return capacities


def lifecycle_hook(hook: LifecycleHookTypeDef) -> LifecycleHook:
    """A hook of ``DescribeLifecycleHooks``' answer, as the controller uses it."""
    return LifecycleHook(
        name=hook.get("LifecycleHookName", ""),
        transition=hook.get("LifecycleTransition", ""),
        heartbeat_timeout=hook.get("HeartbeatTimeout", DEFAULT_HEARTBEAT_TIMEOUT),
    )


#: DescribeInstances ``InstanceLifecycle`` of a Spot instance (absent for on-demand ones).
SPOT_LIFECYCLE = "spot"


def _instance(member: GroupMemberTypeDef, described: InstanceTypeDef | None) -> Instance:
    ec2 = described or {}
    return Instance(
        instance_id=member["InstanceId"],
        lifecycle_state=member["LifecycleState"],
        health_status=member["HealthStatus"],
        ec2_state=ec2.get("State", {}).get("Name"),
        # The top-level field is the primary ENI's; NetworkInterfaces[0] need not be device 0.
        private_ip=ec2.get("PrivateIpAddress") or None,
        spot=ec2.get("InstanceLifecycle") == SPOT_LIFECYCLE,
        instance_type=ec2.get("InstanceType") or None,
        zone=ec2.get("Placement", {}).get("AvailabilityZone") or None,
    )


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _explain(action: str, exc: Exception) -> str:
    """'<Operation> failed (<what>): <what to do>' for a call that failed for good."""
    found = explain(action, exc)
    return f"{action.partition(':')[2]} failed ({found.what}): {found.advice}"
