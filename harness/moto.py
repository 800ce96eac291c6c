"""
AWS on loopback: a real moto server, reached over HTTP by real boto3.

- ``moto_server()`` runs one ``ThreadedMotoServer`` on ``127.0.0.1`` with a free port, yielding
  ``http://127.0.0.1:<port>``; ``moto_environment(endpoint)`` is the ``AWS_*`` environment that
  points boto3 and child processes at it (dummy keys, region ``eu-west-1``, no config file), and
  ``use_moto_only`` puts this process's environment on it, every other ``AWS_*`` variable removed.
- ``Cloud`` creates groups whose instances get loopback private IPs (VPC ``127.0.0.0/16``, subnets
  ``127.0.<octet>.0/24``), spread over Availability Zones (zone ``<region>a``, ``b``, ``c`` has
  subnet ``127.0.1``, ``.2``, ``.3.0/24``) and of mixed instance types if asked (moto itself
  launches every member in the group's first subnet, of the launch template's type: the harness
  launches them with RunInstances and attaches them instead). It bends moto where moto is too
  perfect: lifecycle states moto never produces, instances EC2 does not know yet, short pages, and
  AWS errors on demand. It also answers the two lifecycle-action calls moto lacks
  (``CompleteLifecycleAction``, ``RecordLifecycleActionHeartbeat``) the way AWS does, recording
  each in ``lifecycle_calls``. The server runs in this process, so all of that is done by changing
  moto's objects directly; ``close`` removes every such change.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import cycle, groupby
from typing import TYPE_CHECKING, Any, Final, cast
from xml.sax.saxutils import escape as xml_escape

import boto3
from botocore.config import Config
from moto.autoscaling.exceptions import AutoscalingClientError, ValidationError
from moto.autoscaling.models import AutoScalingBackend, autoscaling_backends
from moto.autoscaling.responses import AutoScalingResponse
from moto.core.exceptions import ServiceException
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.core.responses import ActionResult, BaseResponse, EmptyResult
from moto.core.utils import camelcase_to_underscores
from moto.ec2.exceptions import EC2ClientError, InvalidInstanceIdError
from moto.ec2.models import ec2_backends
from moto.ec2.responses import EC2Response
from moto.server import ThreadedMotoServer
from moto.sns.exceptions import SNSException
from moto.sns.responses import SNSResponse
from moto.sqs.exceptions import SQSException
from moto.sqs.responses import SQSResponse


if TYPE_CHECKING:
    from mypy_boto3_autoscaling import AutoScalingClient
    from mypy_boto3_autoscaling.type_defs import (
        LaunchTemplateOverridesTypeDef,
        LaunchTemplateSpecificationTypeDef,
        MixedInstancesPolicyTypeDef,
    )
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.literals import InstanceTypeType
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient

REGION = "eu-west-1"
#: moto accepts any access key; this one is used for both halves.
MOTO_KEY = "testing"
#: The VPC every group lives in: loopback, so servers can be bound to instance addresses.
VPC_CIDR = "127.0.0.0/16"
#: ``Cloud.fail`` code that makes moto answer as for an action it lacks: an HTML 500 page, which
#: boto3 turns into ``ResponseParserError``.
UNIMPLEMENTED = "(unimplemented)"
#: EC2 ``State.Code`` of each ``State.Name``.
EC2_STATE_CODES = {
    "pending": 0,
    "running": 16,
    "shutting-down": 32,
    "terminated": 48,
    "stopping": 64,
    "stopped": 80,
}
#: ``create_group``'s default maximum size, when the group starts smaller.
DEFAULT_MAX_SIZE = 100
#: The image of every instance the harness launches, and its type unless told otherwise.
IMAGE_ID: Final = "ami-12c6146b"
INSTANCE_TYPE: Final = "t3.micro"
#: The third octet of each Availability Zone's subnet, by the zone's letter: zone
#: ``<region>b``'s instances get addresses in ``127.0.2.0/24``.
ZONE_OCTETS: Final = {"a": 1, "b": 2, "c": 3}
LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"
#: The state a hook on each transition holds an instance in until its action is completed.
WAIT_STATES = {LAUNCHING: "Pending:Wait", TERMINATING: "Terminating:Wait"}

#: The moto request handlers ``Cloud.fail`` can patch, one per service the project uses, with
#: the error class moto serialises in that service's protocol.
_HANDLERS: dict[type[BaseResponse], type[ServiceException]] = {
    AutoScalingResponse: AutoscalingClientError,
    EC2Response: EC2ClientError,
    SQSResponse: SQSException,
    SNSResponse: SNSException,
}
_ABSENT = object()

#: A moto request handler: a ``BaseResponse`` method taking no argument but the response.
Handler = Callable[..., Any]


@dataclass(frozen=True)
class Placed:
    """Where DescribeInstances says an instance runs, and as what."""

    private_ip: str
    #: The Availability Zone's name (``eu-west-1b``).
    zone: str
    instance_type: str


class Cloud:
    """A moto server seen as an AWS account: build groups, then make them misbehave."""

    def __init__(self, endpoint: str, region: str = REGION) -> None:
        """Talk to the moto server at *endpoint* (``http://127.0.0.1:<port>``) in *region*."""
        self.endpoint = endpoint
        self.region = region
        # Explicit endpoint, keys and no proxy: independent of the environment, always loopback.
        session = boto3.session.Session(
            aws_access_key_id=MOTO_KEY, aws_secret_access_key=MOTO_KEY, region_name=region
        )
        config = Config(proxies={}, retries={"mode": "standard", "total_max_attempts": 1})
        self.autoscaling: AutoScalingClient = session.client(
            "autoscaling", endpoint_url=endpoint, config=config
        )
        self.ec2: EC2Client = session.client("ec2", endpoint_url=endpoint, config=config)
        self.sqs: SQSClient = session.client("sqs", endpoint_url=endpoint, config=config)
        self.sns: SNSClient = session.client("sns", endpoint_url=endpoint, config=config)
        self._vpc_id: str | None = None
        #: Third octet → the subnet's id and its zone's letter.
        self._subnets: dict[int, tuple[str, str]] = {}
        self._template: str | None = None
        self._undo: list[tuple[type[BaseResponse], str, object]] = []
        #: Every ``CompleteLifecycleAction`` and ``RecordLifecycleActionHeartbeat`` call since
        #: the last ``reset``, answered or refused as AWS would (not those ``fail`` failed):
        #: ``operation``, ``group``, ``hook``, ``instance_id``, ``token``, ``result`` (``None``
        #: for heartbeats), ``time`` (``time.monotonic``) and ``witness`` (what
        #: ``lifecycle_witness`` returned at that moment).
        self.lifecycle_calls: list[dict[str, Any]] = []
        #: Called at every lifecycle call, before it is answered, to record what else was
        #: true at that moment (e.g. HAProxy's servers).
        self.lifecycle_witness: Callable[[], object] = lambda: None
        self._answering_actions = False
        #: What DescribeInstances leaves out (instance ids) and misreports (real private IP →
        #: the address it gives instead), from the first ``forget_instance`` or
        #: ``misreport_address`` on.
        self._forgotten: set[str] = set()
        self._misreported: dict[str, str] = {}
        self._reporting = False

    # -- state ------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Wipe every moto backend (the whole server, not only what this object made)."""
        # The endpoint is moto's own URL on loopback (``moto_server``), never a user's input.
        url = f"{self.endpoint}/moto-api/reset"
        request = urllib.request.Request(url, method="POST")  # noqa: S310
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request):
            pass
        self._vpc_id = None
        self._subnets.clear()
        self._template = None
        self.lifecycle_calls.clear()
        self.lifecycle_witness = lambda: None

    def close(self) -> None:
        """
        Remove every patch ``fail``, ``limit_group_pages`` and ``put_lifecycle_hook`` made,
        newest first.
        """
        self._answering_actions = False
        self._forgotten.clear()
        self._misreported.clear()
        self._reporting = False
        while self._undo:
            owner, name, original = self._undo.pop()
            if original is _ABSENT:
                delattr(owner, name)
            else:
                setattr(owner, name, original)

    # -- groups -----------------------------------------------------------------------------------

    def create_group(
        self,
        name: str,
        size: int,
        *,
        subnet_octet: int = 1,
        max_size: int | None = None,
        zones: Mapping[str, int] | None = None,
        instance_types: Sequence[str] = (),
        overrides: Mapping[str, int | str | None] | None = None,
    ) -> list[str]:
        """
        Create group *name* with *size* InService instances in subnet ``127.0.<subnet_octet>.0/24``
        (zone ``<region>a``) and return their ids, sorted. *max_size* defaults to *size* or
        ``DEFAULT_MAX_SIZE``, whichever is larger.

        - *zones*, instead of *subnet_octet*: how many of the instances run in each zone, by
          letter (``{"a": 2, "b": 2, "c": 2}``; the counts add up to *size*), each zone in its
          subnet (``ZONE_OCTETS``); the group's subnets are those zones'.
        - *instance_types*: the members' types in launch order (zone by zone in the order of
          *zones*), repeated as needed: ``["c5.large", "c5.4xlarge"]`` alternates them;
          default ``INSTANCE_TYPE``.
        - *overrides*: make it a mixed-instances group whose launch template overrides give
          each instance type a ``WeightedCapacity`` (an int; any text, to play a malformed one;
          ``None``: an override without one).

        The desired capacity is the number of instances, as moto counts it (AWS counts weighted
        capacity units in a group with weights; the controller only asks whether it is 0).
        Grow such a group with ``add_instances``: moto's own ``set_desired`` launches into the
        first subnet only, as the template's type (and, with weights, divides by the first
        override's).
        """
        plain = zones is None and not instance_types and overrides is None
        spread = dict(zones) if zones is not None else {"a": size}
        if sum(spread.values()) != size:
            msg = f"zones {spread} do not add up to {size} instances"
            raise ValueError(msg)
        subnets = (
            [self.zone_subnet(letter) for letter in spread]
            if zones is not None
            else [self._subnet(subnet_octet)]
        )
        template = self._launch_template()
        shape: dict[str, Any] = (
            {"LaunchTemplate": {"LaunchTemplateName": template}}
            if overrides is None
            else {"MixedInstancesPolicy": _mixed_policy(template, overrides)}
        )
        self.autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=name,
            MinSize=0,
            MaxSize=max(size, DEFAULT_MAX_SIZE) if max_size is None else max_size,
            # moto would launch every member in the first subnet, as the template's type.
            DesiredCapacity=size if plain else 0,
            # Without it moto hands out random 10.x addresses, whatever the default subnet.
            VPCZoneIdentifier=",".join(subnets),
            **shape,
        )
        if not plain:
            counts = zip(subnets, spread.values(), strict=True)
            self._launch(name, counts, instance_types or [INSTANCE_TYPE])
        return sorted(m["InstanceId"] for m in self._members(name))

    def add_instances(
        self, name: str, count: int, *, zone: str = "a", instance_type: str = INSTANCE_TYPE
    ) -> list[str]:
        """
        Launch *count* running instances of *instance_type* in *zone* (a letter: its subnet,
        ``ZONE_OCTETS``) into group *name*, InService, and return their ids, sorted. Their
        desired capacity is added to the group's, as AWS does for attached instances. (moto's
        own scale-out, ``set_desired``, launches into the group's first subnet only.)
        """
        return self._attach_new(name, self.zone_subnet(zone), instance_type, count)

    def set_instance_type(self, instance_id: str, instance_type: str) -> None:
        """
        Make DescribeInstances say *instance_id* is an *instance_type*, at once, as after AWS
        stopped, resized and started it (same address). The group's own member listing keeps
        the old type; the controller reads DescribeInstances'.
        """
        self.ec2.modify_instance_attribute(
            InstanceId=instance_id, InstanceType={"Value": instance_type}
        )

    def set_overrides(self, name: str, overrides: Mapping[str, int | str | None]) -> None:
        """Give mixed-instances group *name* these launch template overrides (``create_group``)."""
        policy = _mixed_policy(self._launch_template(), overrides)
        self.autoscaling.update_auto_scaling_group(
            AutoScalingGroupName=name, MixedInstancesPolicy=policy
        )

    def placements(self, name: str) -> dict[str, Placed]:
        """Instance id → where the running members of group *name* are and what they are."""
        ids = [m["InstanceId"] for m in self._members(name)]
        if not ids:
            return {}
        reservations = self.ec2.describe_instances(InstanceIds=ids)["Reservations"]
        return {
            i["InstanceId"]: Placed(
                i["PrivateIpAddress"], i["Placement"]["AvailabilityZone"], i["InstanceType"]
            )
            for r in reservations
            for i in r["Instances"]
            if i["State"]["Name"] == "running"
        }

    def zone(self, letter: str) -> str:
        """The name of zone *letter* in this region: ``eu-west-1b`` for ``b``."""
        return f"{self.region}{letter}"

    def zone_subnet(self, letter: str) -> str:
        """The id of zone *letter*'s subnet, ``127.0.<ZONE_OCTETS[letter]>.0/24``."""
        return self._subnet(ZONE_OCTETS[letter], letter)

    def serving(self, name: str) -> dict[str, str]:
        """Instance id → private IP of the members that should serve: InService and Healthy."""
        ids = [
            m["InstanceId"]
            for m in self._members(name)
            if m["LifecycleState"] == "InService" and m["HealthStatus"] == "Healthy"
        ]
        if not ids:
            return {}
        reservations = self.ec2.describe_instances(InstanceIds=ids)["Reservations"]
        return {
            i["InstanceId"]: i["PrivateIpAddress"]
            for r in reservations
            for i in r["Instances"]
            if i["State"]["Name"] == "running"
        }

    def set_desired(self, name: str, capacity: int) -> None:
        """Scale group *name* to *capacity*; moto launches or terminates at once."""
        self.autoscaling.set_desired_capacity(
            AutoScalingGroupName=name, DesiredCapacity=capacity, HonorCooldown=False
        )

    def terminate(self, instance_id: str, *, decrement: bool = True) -> None:
        """
        Terminate through the group: the instance leaves it at once and EC2 says ``terminated``;
        without *decrement* moto launches a replacement.
        """
        self.autoscaling.terminate_instance_in_auto_scaling_group(
            InstanceId=instance_id, ShouldDecrementDesiredCapacity=decrement
        )

    def set_lifecycle_state(self, group: str, instance_id: str, state: str) -> None:
        """
        Put a member in lifecycle *state* (``Pending:Wait``, ``Terminating:Wait``...), which
        moto never does by itself. moto counts only InService members as capacity, so a later
        ``set_desired`` launches replacements for them.
        """
        for member in self._backend().autoscaling_groups[group].instance_states:
            if member.instance.id == instance_id:
                member.lifecycle_state = state
                return
        msg = f"{instance_id} is not a member of {group}"
        raise KeyError(msg)

    def begin_scale_in(self, name: str, instance_ids: list[str]) -> None:
        """
        What AWS does when it scales group *name* in by *instance_ids* while a terminate hook
        exists: the desired capacity drops and they wait in ``Terminating:Wait`` (running).
        """
        group = self._backend().autoscaling_groups[name]
        if group.desired_capacity is None:
            msg = f"{name} has no desired capacity"
            raise KeyError(msg)
        group.desired_capacity -= len(instance_ids)
        for instance_id in instance_ids:
            self.set_lifecycle_state(name, instance_id, WAIT_STATES[TERMINATING])

    def begin_scale_out(self, name: str, count: int) -> list[str]:
        """
        What AWS does when it scales group *name* out by *count* while a launch hook exists:
        new running instances wait in ``Pending:Wait``. Return their ids, sorted.
        """
        before = {m["InstanceId"] for m in self._members(name)}
        self.set_desired(name, len(before) + count)
        new = sorted({m["InstanceId"] for m in self._members(name)} - before)
        for instance_id in new:
            self.set_lifecycle_state(name, instance_id, WAIT_STATES[LAUNCHING])
        return new

    def put_lifecycle_hook(
        self, group: str, name: str, transition: str, *, heartbeat_timeout: int = 3600
    ) -> None:
        """
        Give *group* a lifecycle hook on *transition* (``LAUNCHING`` or ``TERMINATING``), and
        answer lifecycle actions from now on (``fail`` can then fail them too). moto accepts a
        *heartbeat_timeout* below AWS's minimum of 30 s, which keeps heartbeat tests short.
        """
        self.autoscaling.put_lifecycle_hook(
            AutoScalingGroupName=group,
            LifecycleHookName=name,
            LifecycleTransition=transition,
            HeartbeatTimeout=heartbeat_timeout,
        )
        if not self._answering_actions:
            self._answering_actions = True
            complete, heartbeat = self._complete_action, self._heartbeat_action
            self._patch(AutoScalingResponse, "complete_lifecycle_action", _handler(complete))
            self._patch(
                AutoScalingResponse, "record_lifecycle_action_heartbeat", _handler(heartbeat)
            )

    def set_health(self, instance_id: str, status: str) -> None:
        """Record ``Healthy`` or ``Unhealthy``; moto replaces nothing."""
        self.autoscaling.set_instance_health(InstanceId=instance_id, HealthStatus=status)

    def attach_spot_instance(self, name: str, *, subnet_octet: int = 1) -> str:
        """
        Launch a Spot instance in subnet ``127.0.<subnet_octet>.0/24`` and attach it to group
        *name*, which counts it in its desired capacity; return its id. DescribeInstances says
        ``InstanceLifecycle: spot`` for it, while moto launches only on-demand instances for a
        group, whatever its launch template asks for.
        """
        launched = self.ec2.run_instances(
            ImageId=IMAGE_ID,
            InstanceType=INSTANCE_TYPE,
            MinCount=1,
            MaxCount=1,
            SubnetId=self._subnet(subnet_octet),
            InstanceMarketOptions={"MarketType": "spot"},
        )
        instance_id = launched["Instances"][0]["InstanceId"]
        self.autoscaling.attach_instances(AutoScalingGroupName=name, InstanceIds=[instance_id])
        return instance_id

    def forget_instance(self, instance_id: str) -> None:
        """
        Make EC2 not know *instance_id* while its group still lists it, as happens right after
        a launch (eventual consistency): DescribeInstances with its id fails as NotFound, and
        no other query returns it, until ``remember_instance``.
        """
        self._answer_instances_as_reported()
        self._forgotten.add(instance_id)

    def remember_instance(self, instance_id: str) -> None:
        """Undo ``forget_instance``: EC2 knows *instance_id* again."""
        self._forgotten.discard(instance_id)

    def misreport_address(self, instance_id: str, address: str) -> None:
        """
        Make DescribeInstances give *address* (any text) as *instance_id*'s private IP address,
        as a broken or hostile endpoint between the controller and AWS could.
        """
        instance = ec2_backends[DEFAULT_ACCOUNT_ID][self.region].get_instance_by_id(instance_id)
        if instance is None or instance.private_ip is None:
            msg = f"EC2 knows no address of {instance_id}"
            raise KeyError(msg)
        self._answer_instances_as_reported()
        self._misreported[instance.private_ip] = address

    def set_ec2_state(self, instance_id: str, state: str) -> None:
        """
        Set the EC2 state (``shutting-down``, ``terminated``, ``stopped``...) behind the group's
        back, as in the moments after an instance dies outside Auto Scaling's control: the
        group still lists it, unchanged. (moto's own TerminateInstances replaces it at once.)
        """
        instance = ec2_backends[DEFAULT_ACCOUNT_ID][self.region].get_instance_by_id(instance_id)
        if instance is None:
            msg = f"EC2 does not know {instance_id}"
            raise KeyError(msg)
        # moto keeps the state private and offers no setter that leaves the group alone.
        instance._state.name = state
        instance._state.code = EC2_STATE_CODES[state]

    def delete_group(self, name: str) -> None:
        """Delete group *name* with its instances."""
        self.autoscaling.delete_auto_scaling_group(AutoScalingGroupName=name, ForceDelete=True)

    # -- faults -----------------------------------------------------------------------------------

    def fail(
        self,
        operation: str,
        code: str,
        times: int,
        *,
        status: int = 400,
        message: str = "injected by the test",
    ) -> None:
        """
        Make the next *times* calls of *operation* (``DescribeInstances``, ``ReceiveMessage``...)
        fail with AWS error *code* and HTTP *status*, serialised in the service's own protocol;
        with ``UNIMPLEMENTED`` they get moto's HTML 500 page instead. Later calls succeed. The
        faults hit whichever client calls next, this object's own clients included.
        """
        owner, name = _handler_of(operation)
        original: Handler = getattr(owner, name)
        faults = _Countdown(times)

        def failing(response: BaseResponse) -> Any:
            if not faults.take():
                return original(response)
            if code == UNIMPLEMENTED:
                raise NotImplementedError(operation)
            answer = ActionResult(_HANDLERS[owner](code, message))
            _, headers, body = response.serialized(answer)
            return body, {**headers, "status": status}

        self._patch(owner, name, failing)

    def limit_group_pages(self, size: int) -> None:
        """
        Make DescribeAutoScalingGroups return at most *size* groups per page, with a
        ``NextToken``, as AWS may do whatever ``MaxRecords`` says.
        """
        original = AutoScalingResponse.describe_auto_scaling_groups

        def short(response: AutoScalingResponse) -> Any:
            answer = original(response)
            groups = cast("dict[str, Any]", answer.result)["AutoScalingGroups"]
            if len(groups) <= size:
                return answer
            # moto's token is the last name of the page it resumes after.
            return ActionResult(
                {"AutoScalingGroups": groups[:size], "NextToken": groups[size - 1].name}
            )

        self._patch(AutoScalingResponse, "describe_auto_scaling_groups", short)

    # -- lifecycle actions (moto lacks both calls) ------------------------------------------------

    def _complete_action(self, response: AutoScalingResponse) -> ActionResult:
        """
        ``CompleteLifecycleAction`` as AWS answers it: a launch CONTINUEd goes InService; an
        abandoned launch and any completed termination leave the group, terminated in EC2.
        (AWS would launch a replacement for an abandoned launch; this does not.)
        """
        group, member = self._waiting(response, "CompleteLifecycleAction")
        if member.lifecycle_state == WAIT_STATES[LAUNCHING] and (
            response._get_param("LifecycleActionResult") == "CONTINUE"
        ):
            member.lifecycle_state = "InService"
        else:
            group.instance_states.remove(member)
            self._backend().ec2_backend.terminate_instances([member.instance.id])
        return EmptyResult()

    def _heartbeat_action(self, response: AutoScalingResponse) -> ActionResult:
        """``RecordLifecycleActionHeartbeat``: recorded; refused when nothing waits."""
        self._waiting(response, "RecordLifecycleActionHeartbeat")
        return EmptyResult()

    def _waiting(self, response: AutoScalingResponse, operation: str) -> tuple[Any, Any]:
        """
        Record the call, then find the group and the member whose action it completes; raise
        AWS's ``ValidationError`` when there is no such hook, or the member is not waiting on it.
        """
        names = {
            "group": "AutoScalingGroupName",
            "hook": "LifecycleHookName",
            "instance_id": "InstanceId",
            "result": "LifecycleActionResult",
            "token": "LifecycleActionToken",
        }
        call: dict[str, Any] = {key: response._get_param(param) for key, param in names.items()}
        call.update(operation=operation, time=time.monotonic(), witness=self.lifecycle_witness())
        self.lifecycle_calls.append(call)
        backend = self._backend()
        group = backend.autoscaling_groups.get(call["group"])
        hook = backend.lifecycle_hooks.get(f"{call['group']}_{call['hook']}")
        if group is None or hook is None:
            msg = f"No Lifecycle Hook found with name {call['hook']} for group {call['group']}"
            raise ValidationError(msg)
        wait_state = WAIT_STATES.get(hook.lifecycle_transition or "")
        for member in group.instance_states:
            if member.instance.id == call["instance_id"] and member.lifecycle_state == wait_state:
                return group, member
        msg = f"No active Lifecycle Action found with instance ID {call['instance_id']}"
        raise ValidationError(msg)

    # -- helpers ----------------------------------------------------------------------------------

    def _answer_instances_as_reported(self) -> None:
        """Route DescribeInstances through ``_forgotten`` and ``_misreported`` (once)."""
        if self._reporting:
            return
        self._reporting = True
        original: Handler = EC2Response.describe_instances

        def as_reported(response: EC2Response) -> Any:
            asked = self._forgotten.intersection(response._get_param("InstanceIds", []))
            if asked:
                raise InvalidInstanceIdError(sorted(asked))
            result = cast("dict[str, Any]", original(response).result)
            shown = []
            for reservation in result["Reservations"]:
                kept = [i for i in reservation.instances if i.id not in self._forgotten]
                if kept:
                    shown.append(copy.copy(reservation))
                    shown[-1].instances = kept
            _, headers, answer = response.serialized(
                ActionResult({**result, "Reservations": shown})
            )
            body = answer if isinstance(answer, str) else answer.decode()
            for real, reported in self._misreported.items():
                body = body.replace(
                    f"<privateIpAddress>{real}</privateIpAddress>",
                    f"<privateIpAddress>{xml_escape(reported)}</privateIpAddress>",
                )
            return body, headers

        self._patch(EC2Response, "describe_instances", as_reported)

    def _backend(self) -> AutoScalingBackend:
        return autoscaling_backends[DEFAULT_ACCOUNT_ID][self.region]

    def _members(self, name: str) -> list[Any]:
        groups = self.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])
        return list(groups["AutoScalingGroups"][0]["Instances"])

    def _patch(self, owner: type[BaseResponse], name: str, handler: Handler) -> None:
        self._undo.append((owner, name, owner.__dict__.get(name, _ABSENT)))
        setattr(owner, name, handler)

    def _subnet(self, octet: int, zone: str = "a") -> str:
        """Subnet ``127.0.<octet>.0/24`` in zone letter *zone*, created on first use."""
        if self._vpc_id is None:
            self._vpc_id = self.ec2.create_vpc(CidrBlock=VPC_CIDR)["Vpc"]["VpcId"]
        if octet not in self._subnets:
            subnet = self.ec2.create_subnet(
                VpcId=self._vpc_id,
                CidrBlock=f"127.0.{octet}.0/24",
                AvailabilityZone=self.zone(zone),
            )
            self._subnets[octet] = (subnet["Subnet"]["SubnetId"], zone)
        subnet_id, made_in = self._subnets[octet]
        if made_in != zone:
            msg = f"subnet 127.0.{octet}.0/24 is in zone {made_in!r}, not {zone!r}"
            raise ValueError(msg)
        return subnet_id

    def _launch(self, name: str, counts: Iterable[tuple[str, int]], types: Sequence[str]) -> None:
        """For each subnet and count of *counts*, attach that many new instances to group
        *name*, whose types are the next ones of *types* (repeated as needed)."""
        kinds = cycle(types)
        slots = [(subnet, next(kinds)) for subnet, count in counts for _ in range(count)]
        for (subnet, kind), run in groupby(slots):
            self._attach_new(name, subnet, kind, len(list(run)))

    def _attach_new(self, name: str, subnet: str, instance_type: str, count: int) -> list[str]:
        """Launch *count* instances in *subnet* and attach them to group *name*; their ids."""
        launched = self.ec2.run_instances(
            ImageId=IMAGE_ID,
            # Any text: moto checks it against the region's offerings, as AWS does.
            InstanceType=cast("InstanceTypeType", instance_type),
            MinCount=count,
            MaxCount=count,
            SubnetId=subnet,
        )
        ids = sorted(i["InstanceId"] for i in launched["Instances"])
        self.autoscaling.attach_instances(AutoScalingGroupName=name, InstanceIds=ids)
        return ids

    def _launch_template(self) -> str:
        if self._template is None:
            self._template = "reconciler-test"
            self.ec2.create_launch_template(
                LaunchTemplateName=self._template,
                LaunchTemplateData={"ImageId": IMAGE_ID, "InstanceType": INSTANCE_TYPE},
            )
        return self._template

    # -- notification configurations (moto lacks them) --------------------------------------------

    def put_notification_configuration(self, group: str, topic_arn: str) -> None:
        """
        Send *group*'s launch and terminate notifications to SNS topic *topic_arn*, as
        ``PutNotificationConfiguration`` does, and answer ``DescribeNotificationConfigurations``
        from now on (moto has neither). The configurations live on moto's group object, so a
        reset or the group's deletion wipes them. Nothing is ever published: tests that need a
        notification publish it themselves.
        """
        moto_group = self._backend().autoscaling_groups[group]
        configured = getattr(moto_group, "harness_notifications", [])
        # moto's group has no such attribute: a new one, which its type does not know.
        vars(moto_group)["harness_notifications"] = [
            *configured,
            *(
                {"AutoScalingGroupName": group, "TopicARN": topic_arn, "NotificationType": kind}
                for kind in (
                    "autoscaling:EC2_INSTANCE_LAUNCH",
                    "autoscaling:EC2_INSTANCE_TERMINATE",
                )
            ),
        ]
        self.answer_notification_configurations()

    def answer_notification_configurations(self) -> None:
        """
        Answer ``DescribeNotificationConfigurations`` as AWS does from now on (moto's own answer
        is an HTML 500 page): with what ``put_notification_configuration`` configured, an empty
        list for a group without any. ``fail`` can then fail it too.
        """
        if "describe_notification_configurations" not in AutoScalingResponse.__dict__:
            answer = self._notification_configurations
            self._patch(
                AutoScalingResponse, "describe_notification_configurations", _handler(answer)
            )

    def _notification_configurations(self, response: AutoScalingResponse) -> ActionResult:
        """``DescribeNotificationConfigurations`` of the groups named (one page)."""
        groups = self._backend().autoscaling_groups
        names = response._get_param("AutoScalingGroupNames", [])
        found = [
            config
            for name in names
            if name in groups
            for config in getattr(groups[name], "harness_notifications", [])
        ]
        return ActionResult({"NotificationConfigurations": found})


class _Countdown:
    """How many faults are still to inject; thread-safe, as the server answers in threads."""

    def __init__(self, times: int) -> None:
        self._left = times
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Use up one fault; False once there are none left."""
        with self._lock:
            if self._left <= 0:
                return False
            self._left -= 1
            return True


def _mixed_policy(
    template: str, overrides: Mapping[str, int | str | None]
) -> MixedInstancesPolicyTypeDef:
    """A ``MixedInstancesPolicy`` on launch *template* with one override per instance type."""
    listed: list[LaunchTemplateOverridesTypeDef] = []
    for kind, weight in overrides.items():
        override: LaunchTemplateOverridesTypeDef = {"InstanceType": kind}
        if weight is not None:
            override["WeightedCapacity"] = str(weight)
        listed.append(override)
    spec: LaunchTemplateSpecificationTypeDef = {"LaunchTemplateName": template}
    return {"LaunchTemplate": {"LaunchTemplateSpecification": spec, "Overrides": listed}}


def _handler(answer: Callable[[AutoScalingResponse], ActionResult]) -> Handler:
    """*answer* as a plain function, which moto then calls as a method of its response object."""

    def handler(response: AutoScalingResponse) -> ActionResult:
        return answer(response)

    return handler


def _handler_of(operation: str) -> tuple[type[BaseResponse], str]:
    name = camelcase_to_underscores(operation)
    owners = [cls for cls in _HANDLERS if hasattr(cls, name)]
    if len(owners) != 1:
        msg = f"{operation}: handled by {len(owners)} of the patchable moto services, need 1"
        raise ValueError(msg)
    return owners[0], name


# -- the server -----------------------------------------------------------------------------------


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto server on 127.0.0.1 (its request log silenced); yields its base URL."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def use_moto_only(endpoint: str) -> None:
    """
    Point this process and its children at moto, and at nothing else: a profile, keys or an
    endpoint from the user's own AWS setup must never reach a real account.
    """
    for var in [v for v in os.environ if v.startswith("AWS_")]:
        del os.environ[var]
    os.environ.update(moto_environment(endpoint))


def moto_environment(endpoint: str) -> dict[str, str]:
    """The AWS_* environment pointing boto3 (and child processes) at *endpoint* only."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": MOTO_KEY,
        "AWS_SECRET_ACCESS_KEY": MOTO_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "NO_PROXY": "127.0.0.1",
    }
