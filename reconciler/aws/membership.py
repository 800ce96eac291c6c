"""
The ``MembershipSource`` adapter: who is in each Auto Scaling group, and where they listen.

Two read calls make an observation. DescribeAutoScalingGroups (at most 50 names per call, paged
by ``NextToken``) lists each group's instances with their lifecycle and health states;
DescribeInstances (at most 1000 ids per call, paged) adds the EC2 state and the primary private
IPv4 address. Every instance of a group is returned, whatever its state: deciding who serves is
the model's job.

Failures never raise. botocore's standard retry mode absorbs short throttling bursts; on top of
it a bounded tenacity retry rides out slightly longer trouble. What still fails is reported per
group in ``AwsObservation.errors`` with what to do about it, so one broken call never blanks
every backend, and the planner leaves those backends untouched.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from operator import attrgetter
from typing import TYPE_CHECKING, TypedDict, TypeVar

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, NoCredentialsError
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.parsers import ResponseParserError
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

from reconciler.model import AwsObservation, Group, Instance


if TYPE_CHECKING:
    from mypy_boto3_autoscaling.type_defs import (
        AutoScalingGroupsTypeTypeDef,
        AutoScalingGroupTypeDef,
    )
    from mypy_boto3_autoscaling.type_defs import InstanceTypeDef as GroupMemberTypeDef
    from mypy_boto3_ec2.type_defs import (
        DescribeInstancesResultTypeDef,
        FilterTypeDef,
        InstanceTypeDef,
    )

    from reconciler.aws.clients import AwsClients

#: DescribeAutoScalingGroups refuses more names with its default ``MaxRecords``.
GROUP_NAMES_PER_CALL = 50
#: The EC2 pagination guide's limit for ``InstanceIds``.
INSTANCE_IDS_PER_CALL = 1000
#: DescribeInstances refuses more values in one filter (``FilterLimitExceeded``).
FILTER_VALUES_PER_CALL = 200

DESCRIBE_GROUPS = "autoscaling:DescribeAutoScalingGroups"
DESCRIBE_INSTANCES = "ec2:DescribeInstances"

THROTTLING_CODES = frozenset(
    {"Throttling", "ThrottlingException", "RequestLimitExceeded", "EC2ThrottledException"}
)
ACCESS_DENIED_CODES = frozenset(
    {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnauthorizedAccess"}
)
BAD_CREDENTIALS_CODES = frozenset(
    {
        "AuthFailure",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "RequestExpired",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
    }
)
UNKNOWN_INSTANCE_CODE = "InvalidInstanceID.NotFound"

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


class AwsMembership:
    """Reads Auto Scaling groups and their instances through boto3 clients."""

    def __init__(
        self,
        clients: AwsClients,
        *,
        instance_ids_per_call: int = INSTANCE_IDS_PER_CALL,
        retry_attempts: int = 4,
        retry_seconds: float = 5.0,
        retry_backoff: float = 0.5,
    ) -> None:
        """
        Read through *clients*. Each API call is tried up to *retry_attempts* times while
        transient errors last, waiting a random time up to *retry_backoff* doubled per attempt,
        and never starting a wait that would end more than *retry_seconds* after its first try.
        """
        self._autoscaling = clients.client("autoscaling")
        self._ec2 = clients.client("ec2")
        self._ids_per_call = instance_ids_per_call
        self._retrying = Retrying(
            stop=stop_after_attempt(retry_attempts) | stop_before_delay(retry_seconds),
            wait=wait_random_exponential(multiplier=retry_backoff, max=retry_seconds),
            retry=retry_if_exception(_transient),
            reraise=True,
        )

    def read_groups(self, names: Sequence[str]) -> AwsObservation:
        """Read every group in *names*; unknown names are left out, failures reported per group."""
        wanted = list(dict.fromkeys(names))
        found: dict[str, AutoScalingGroupTypeDef] = {}
        errors: dict[str, str] = {}
        for chunk in _chunks(wanted, GROUP_NAMES_PER_CALL):
            try:
                found.update(self._describe_groups(chunk))
            except _READ_FAILURES as exc:
                errors.update(dict.fromkeys(chunk, _explain(DESCRIBE_GROUPS, exc)))

        # Ids in request order, so each group's instances stay together in as few chunks as
        # possible and one failed chunk marks as few groups as possible.
        owner = {
            member["InstanceId"]: name
            for name in wanted
            if name in found
            for member in found[name].get("Instances", [])
        }
        described: dict[str, InstanceTypeDef] = {}
        for ids in _chunks(list(owner), self._ids_per_call):
            try:
                described.update(self._describe_instances(ids))
            except _READ_FAILURES as exc:
                message = _explain(DESCRIBE_INSTANCES, exc)
                errors.update(dict.fromkeys((owner[i] for i in ids), message))

        groups = {
            name: _group(group, described) for name, group in found.items() if name not in errors
        }
        return AwsObservation(groups=groups, errors=errors)

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

    def _describe_instances(self, ids: Sequence[str]) -> dict[str, InstanceTypeDef]:
        try:
            return self._instances({"InstanceIds": ids})
        except ClientError as exc:
            if _code(exc) != UNKNOWN_INSTANCE_CODE:
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
            page = self._retrying(fetch, more)
            yield page
            token = page.get("NextToken")
            if not token:
                return
            more = {"NextToken": token}


def _group(group: AutoScalingGroupTypeDef, described: Mapping[str, InstanceTypeDef]) -> Group:
    members = (_instance(m, described.get(m["InstanceId"])) for m in group.get("Instances", []))
    return Group(
        name=group["AutoScalingGroupName"],
        desired_capacity=group["DesiredCapacity"],
        instances=tuple(sorted(members, key=attrgetter("instance_id"))),
    )


def _instance(member: GroupMemberTypeDef, described: InstanceTypeDef | None) -> Instance:
    ec2 = described or {}
    return Instance(
        instance_id=member["InstanceId"],
        lifecycle_state=member["LifecycleState"],
        health_status=member["HealthStatus"],
        ec2_state=ec2.get("State", {}).get("Name"),
        # The top-level field is the primary ENI's; NetworkInterfaces[0] need not be device 0.
        private_ip=ec2.get("PrivateIpAddress") or None,
    )


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def _status(exc: ClientError) -> int:
    return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)


def _transient(exc: BaseException) -> bool:
    """True for failures that another try soon may not meet."""
    if isinstance(exc, ClientError):
        return _code(exc) in THROTTLING_CODES or _status(exc) >= 500
    # A parser error is what a proxy's or an emulator's HTML error page turns into.
    return isinstance(exc, BotoConnectionError | HTTPClientError | ResponseParserError)


def _explain(action: str, exc: Exception) -> str:
    """'<Operation> failed (<what>): <what to do>' for a call that failed for good."""
    operation = action.split(":", 1)[1]
    if isinstance(exc, ClientError):
        what = f"{_code(exc)}: {exc.response.get('Error', {}).get('Message', '')}"
    else:
        # Parser errors quote the whole unparsable body after their first line.
        first_line = next(iter(str(exc).splitlines()), "")
        what = f"{type(exc).__name__}: {first_line}"
    return f"{operation} failed ({what}): {_advice(action, exc)}"


def _advice(action: str, exc: Exception) -> str:
    if isinstance(exc, ClientError):
        code = _code(exc)
        if code in ACCESS_DENIED_CODES:
            return f"allow {action} for this identity"
        if code in BAD_CREDENTIALS_CODES:
            return "check the AWS credentials (wrong or expired keys, or a skewed clock)"
        if code in THROTTLING_CODES:
            return (
                "AWS kept throttling; the next cycle tries again "
                "(resync less often, or ask AWS for a higher API rate)"
            )
        if _status(exc) >= 500:
            return "AWS failed internally; the next cycle tries again"
        return "the next cycle tries again; report it if this persists"
    if isinstance(exc, NoCredentialsError):
        return "no AWS credentials found; provide them (environment, profile or instance role)"
    if isinstance(exc, ResponseParserError):
        return "the endpoint did not answer like AWS; check AWS_ENDPOINT_URL and any proxy"
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return "cannot reach AWS; check the network path, proxy and AWS_ENDPOINT_URL"
    return "the next cycle tries again; report it if this persists"
