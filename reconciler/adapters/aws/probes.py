"""
What ``reconcile check`` reads of AWS: read operations only, each failure kept as a fact.

The clients are the controller's own (``AwsClients``: the same credentials chain, region and
endpoint, ``AWS_ENDPOINT_URL`` included), so the check sees what the controller would see. The
identity is read first (``sts:GetCallerIdentity`` needs no permission): when it fails, nothing
else is tried, as every other call would fail the same way (bad keys, an unreachable endpoint).
Each permission is probed through its harmless read; ``ec2:DescribeInstances`` through
``DryRun``, whose ``DryRunOperation`` refusal means "allowed" (an endpoint that ignores the flag
and answers the call says the same). ``core.aws_checks.judge`` turns the facts into rows.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

import botocore.session
from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

from reconciler.adapters.aws.classify import Cause, error_codes, explain
from reconciler.adapters.aws.clients import AwsClients
from reconciler.adapters.aws.membership import lifecycle_hook
from reconciler.core.aws_checks import (
    DESCRIBE_GROUPS,
    DESCRIBE_HOOKS,
    DESCRIBE_INSTANCES,
    DESCRIBE_NOTIFICATIONS,
    DESCRIBE_RULE,
    GET_QUEUE_ATTRIBUTES,
    LIST_RULES,
    LIST_SUBSCRIPTIONS,
    AwsFacts,
    Failure,
    Hook,
    QueueFacts,
    Rule,
    Topic,
    Trouble,
    group_names,
    uses_hooks,
)
from reconciler.core.errors import ConfigError


if TYPE_CHECKING:
    from reconciler.core.settings import Settings

_T = TypeVar("_T")
_CALL_FAILURES = (ClientError, BotoCoreError, ResponseParserError)
#: What AWS answers for a queue, topic or rule that does not exist (SQS in both spellings).
NOT_FOUND_CODES = frozenset(
    {
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "NotFound",
        "ResourceNotFoundException",
    }
)
#: DescribeAutoScalingGroups and DescribeNotificationConfigurations take at most 50 names.
MAX_NAMES = 50
#: What "the check will try again" means here.
AGAIN = "run the check again"


class _ReadError(Exception):
    """A read failed; carries it as a fact."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.what)
        self.failure = failure


def read_facts(loaded: Settings) -> AwsFacts:
    """Everything ``judge`` needs about AWS for *loaded*; never raises for an AWS answer."""
    try:
        clients = AwsClients(loaded.aws.region)
    except ConfigError:
        found = botocore.session.get_session().get_credentials()
        return AwsFacts(credentials=None if found is None else found.method)
    facts = AwsFacts(
        credentials=clients.credentials_method(),
        region=clients.region,
        region_source=clients.region_source,
    )
    if facts.credentials is None:
        return facts
    sts: Any = clients.client("sts")
    try:
        identity = _call("sts:GetCallerIdentity", sts.get_caller_identity)
    except _ReadError as failed:
        return replace(facts, identity_error=failed.failure)
    facts = replace(facts, account=identity.get("Account", ""), identity=identity.get("Arn", ""))
    facts = _read_groups(clients, loaded, facts)
    facts = _read_hooks(clients, loaded, facts)
    if loaded.sqs.queue_url:
        facts = replace(facts, queue=_read_queue(clients, loaded.sqs.queue_url, facts))
    return facts


def _call(action: str, call: Callable[[], _T]) -> _T:
    """*call*'s answer; raise ``_ReadError`` with what went wrong (*action*: the IAM action)."""
    try:
        return call()
    except _CALL_FAILURES as exc:
        raise _ReadError(_failure(action, exc)) from exc


def _failure(action: str, exc: Exception) -> Failure:
    found = explain(action, exc, again=AGAIN)
    if found.cause is Cause.ACCESS:
        trouble = Trouble.DENIED
    elif error_codes(exc) & NOT_FOUND_CODES:
        trouble = Trouble.NOT_FOUND
    else:
        trouble = Trouble.FAILED
    return Failure(action, trouble, found.what, found.advice)


def _pages(action: str, client: Any, operation: str, **params: object) -> list[Any]:
    """Every page of *operation*'s answer, read through *client*'s paginator."""
    paginator = client.get_paginator(operation)
    return _call(action, lambda: list(paginator.paginate(**params)))


def _chunks(names: Sequence[str]) -> Iterator[list[str]]:
    return (list(names[i : i + MAX_NAMES]) for i in range(0, len(names), MAX_NAMES))


def _read_groups(clients: AwsClients, loaded: Settings, facts: AwsFacts) -> AwsFacts:
    """Which groups exist (probing DescribeAutoScalingGroups), and DescribeInstances."""
    autoscaling = clients.client("autoscaling")
    names = group_names(loaded)
    permissions: dict[str, Failure | None] = {DESCRIBE_INSTANCES: _probe_instances(clients)}
    groups: dict[str, bool] = {}
    operation = "describe_auto_scaling_groups"
    try:
        existing = {
            group["AutoScalingGroupName"]
            for chunk in _chunks(names)
            for page in _pages(DESCRIBE_GROUPS, autoscaling, operation, AutoScalingGroupNames=chunk)
            for group in page["AutoScalingGroups"]
        }
    except _ReadError as failed:
        permissions[DESCRIBE_GROUPS] = failed.failure
    else:
        permissions[DESCRIBE_GROUPS] = None
        groups = {name: name in existing for name in names}
    return replace(facts, permissions=permissions, groups=groups)


def _probe_instances(clients: AwsClients) -> Failure | None:
    """``None`` when DescribeInstances is allowed, else why not (asked with ``DryRun``)."""
    ec2 = clients.client("ec2")
    try:
        _call(DESCRIBE_INSTANCES, lambda: ec2.describe_instances(DryRun=True, MaxResults=5))
    except _ReadError as failed:
        cause = failed.__cause__
        if cause is not None and "DryRunOperation" in error_codes(cause):
            return None
        return failed.failure
    return None


def _read_hooks(clients: AwsClients, loaded: Settings, facts: AwsFacts) -> AwsFacts:
    """Each existing group's hooks, when a backend completes lifecycle actions."""
    existing = [name for name, found in facts.groups.items() if found]
    if not uses_hooks(loaded) or not existing:
        return facts
    autoscaling = clients.client("autoscaling")
    hooks: dict[str, tuple[Hook, ...]] = {}
    errors: dict[str, Failure] = {}
    for name in existing:
        try:
            answer = _call(
                DESCRIBE_HOOKS,
                functools.partial(autoscaling.describe_lifecycle_hooks, AutoScalingGroupName=name),
            )
        except _ReadError as failed:
            errors[name] = failed.failure
            continue
        hooks[name] = tuple(
            Hook(
                **vars(lifecycle_hook(h)),
                default_result=h.get("DefaultResult", "ABANDON"),
                notification_target=h.get("NotificationTargetARN", ""),
            )
            for h in answer.get("LifecycleHooks", [])
        )
    permission = next(iter(errors.values()), None)
    return replace(
        facts,
        permissions={**facts.permissions, DESCRIBE_HOOKS: permission},
        hooks=hooks,
        hook_errors=errors,
    )


def _read_queue(clients: AwsClients, url: str, facts: AwsFacts) -> QueueFacts:
    """The queue's attributes, then what sends to it."""
    sqs = clients.client("sqs")
    try:
        answer = _call(
            GET_QUEUE_ATTRIBUTES,
            lambda: sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]),
        )
    except _ReadError as failed:
        return QueueFacts(url, error=failed.failure)
    attributes = {str(k): v for k, v in answer.get("Attributes", {}).items()}
    queue = QueueFacts(url, attributes=attributes)
    unread: list[Failure] = []
    topics = _read_topics(clients, facts, queue.arn, unread)
    rules = _read_rules(clients, queue.arn, unread)
    return replace(queue, topics=topics, rules=rules, unread=tuple(unread))


def _read_topics(
    clients: AwsClients, facts: AwsFacts, queue_arn: str, unread: list[Failure]
) -> tuple[Topic, ...]:
    """The topics the groups notify, each with whether it delivers to the queue."""
    existing = [name for name, found in facts.groups.items() if found]
    autoscaling = clients.client("autoscaling")
    operation = "describe_notification_configurations"
    by_topic: dict[str, list[str]] = {}
    try:
        configs = [
            config
            for chunk in _chunks(existing)
            for page in _pages(
                DESCRIBE_NOTIFICATIONS, autoscaling, operation, AutoScalingGroupNames=chunk
            )
            for config in page.get("NotificationConfigurations", [])
        ]
    except _ReadError as failed:
        unread.append(failed.failure)
        configs = []
    for config in configs:
        by_topic.setdefault(config.get("TopicARN", ""), []).append(config["AutoScalingGroupName"])
    return tuple(
        Topic(arn, tuple(dict.fromkeys(groups)), _subscribed(clients, arn, queue_arn, unread))
        for arn, groups in by_topic.items()
        if arn
    )


def _subscribed(
    clients: AwsClients, topic_arn: str, queue_arn: str, unread: list[Failure]
) -> bool | None:
    """Whether a confirmed SQS subscription of *topic_arn* delivers to *queue_arn*."""
    sns = clients.client("sns")
    try:
        found = _pages(LIST_SUBSCRIPTIONS, sns, "list_subscriptions_by_topic", TopicArn=topic_arn)
    except _ReadError as failed:
        unread.append(failed.failure)
        return None
    return any(
        s.get("Protocol") == "sqs"
        and s.get("Endpoint") == queue_arn
        and s.get("SubscriptionArn", "").startswith("arn:")
        for page in found
        for s in page.get("Subscriptions", [])
    )


def _read_rules(clients: AwsClients, queue_arn: str, unread: list[Failure]) -> tuple[Rule, ...]:
    """The EventBridge rules (of the default bus) that target the queue."""
    events: Any = clients.client("events")
    try:
        pages = _pages(LIST_RULES, events, "list_rule_names_by_target", TargetArn=queue_arn)
    except _ReadError as failed:
        unread.append(failed.failure)
        return ()
    rules = []
    for name in [n for page in pages for n in page.get("RuleNames", [])]:
        try:
            rule = _call(DESCRIBE_RULE, functools.partial(events.describe_rule, Name=name))
        except _ReadError as failed:
            unread.append(failed.failure)
            continue
        enabled = rule.get("State") != "DISABLED"
        rules.append(Rule(name, rule.get("Arn", ""), rule.get("EventPattern"), enabled))
    return tuple(rules)
