"""
What ``reconcile check`` says about AWS: the identity and the permissions the settings need, and
whether each group exists (area ``aws``); the trigger queue, its dead-letter queue, its access
policy and what sends to it (``queue``); the lifecycle hooks the backends complete (``hooks``).
Pure: ``reconciler.adapters.aws.probes.read_facts`` reads everything into ``AwsFacts`` (a failed
read is a fact too), and ``judge`` turns the facts into rows.

Rows that depend on a read that failed are ``SKIP`` rows saying why, so one missing permission
or credential gives one failing row, not a cascade. The reads of the optional "Preflight" IAM
statement (notification configurations, topic subscriptions, EventBridge rules, queue
attributes) only ever give a warning when denied: the controller itself does not need them.
"""

from __future__ import annotations

import enum
import json
import math
import shlex
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from reconciler.core.checks import Check, Verdict
from reconciler.core.hook_actions import completed
from reconciler.core.model import LAUNCHING, TERMINATING, LifecycleHook
from reconciler.core.settings import Binding, Settings


AWS, QUEUE, HOOKS = "aws", "queue", "hooks"

DESCRIBE_GROUPS = "autoscaling:DescribeAutoScalingGroups"
DESCRIBE_INSTANCES = "ec2:DescribeInstances"
DESCRIBE_HOOKS = "autoscaling:DescribeLifecycleHooks"
DESCRIBE_NOTIFICATIONS = "autoscaling:DescribeNotificationConfigurations"
GET_QUEUE_ATTRIBUTES = "sqs:GetQueueAttributes"
LIST_SUBSCRIPTIONS = "sns:ListSubscriptionsByTopic"
LIST_RULES = "events:ListRuleNamesByTarget"
DESCRIBE_RULE = "events:DescribeRule"
RECEIVE = "sqs:ReceiveMessage"
DELETE = "sqs:DeleteMessage"
COMPLETE = "autoscaling:CompleteLifecycleAction"
HEARTBEAT = "autoscaling:RecordLifecycleActionHeartbeat"

#: The statement that grants each action: README "IAM policy", or ``Preflight`` in docs/check.md.
STATEMENTS: Mapping[str, str] = {
    DESCRIBE_GROUPS: "ReadAsgAndInstances",
    DESCRIBE_INSTANCES: "ReadAsgAndInstances",
    DESCRIBE_HOOKS: "ReadHooks",
    RECEIVE: "ConsumeTriggerQueue",
    DELETE: "ConsumeTriggerQueue",
    COMPLETE: "CompleteHooksOnOwnAsgOnly",
    HEARTBEAT: "CompleteHooksOnOwnAsgOnly",
    DESCRIBE_NOTIFICATIONS: "Preflight",
    GET_QUEUE_ATTRIBUTES: "Preflight",
    LIST_SUBSCRIPTIONS: "Preflight",
    LIST_RULES: "Preflight",
    DESCRIBE_RULE: "Preflight",
}

#: How each permission the controller needs is probed, without side effects.
PROBED_WITH: Mapping[str, str] = {
    DESCRIBE_GROUPS: "DescribeAutoScalingGroups of the configured groups",
    DESCRIBE_INSTANCES: "DescribeInstances with DryRun",
    DESCRIBE_HOOKS: "DescribeLifecycleHooks of each group",
}

#: Friendlier words for botocore's ``Credentials.method``.
CREDENTIAL_SOURCES: Mapping[str, str] = {
    "env": "environment (AWS_ACCESS_KEY_ID)",
    "explicit": "explicit keys",
    "shared-credentials-file": "shared credentials file",
    "config-file": "config file",
    "assume-role": "assumed role of a profile",
    "assume-role-with-web-identity": "web identity (Kubernetes service account, IRSA)",
    "container-role": "container credentials (ECS task role or EKS Pod Identity)",
    "iam-role": "instance profile (instance metadata service)",
    "sso": "IAM Identity Center (SSO)",
    "custom-process": "credential_process",
}

#: Seconds a hook must last beyond the controller noticing the waiting instance: a slow cycle
#: and a retried call. AWS's own minimum HeartbeatTimeout.
HOOK_MARGIN = 30
#: With a queue, a message wakes a cycle within seconds (long poll plus ``min_gap``).
QUEUE_NOTICE = 10
#: docs/lifecycle-hooks.md's advice for a hook's HeartbeatTimeout, and AWS's maximum.
ADVISED_TIMEOUT = 300
MAX_TIMEOUT = 7200
_SNS = "sns.amazonaws.com"
_EVENTS = "events.amazonaws.com"


class Trouble(enum.Enum):
    """Why a read failed."""

    #: The identity lacks the permission.
    DENIED = "denied"
    #: What was asked about does not exist (a queue).
    NOT_FOUND = "not found"
    #: Anything else: credentials, the network, throttling, AWS itself.
    FAILED = "failed"


@dataclass(frozen=True)
class Failure:
    """One read that failed."""

    #: The IAM action the read needs (``ec2:DescribeInstances``).
    action: str
    trouble: Trouble
    #: ``<Code>: <message>`` of the answer, or ``<Exception>: <message>`` when there was none.
    what: str
    #: What to do about it, when known (bad credentials, an unreachable endpoint).
    advice: str = ""


@dataclass(frozen=True)
class Hook(LifecycleHook):
    """A lifecycle hook with what only the check judges of it."""

    default_result: str
    notification_target: str = ""


@dataclass(frozen=True)
class Topic:
    """An SNS topic some groups send their notifications to."""

    arn: str
    #: The groups whose notification configurations name it.
    groups: tuple[str, ...]
    #: Whether a confirmed SQS subscription delivers it to the queue; ``None``: unknown (the
    #: subscriptions could not be listed: a ``Failure`` in ``QueueFacts.unread``).
    subscribed: bool | None


@dataclass(frozen=True)
class Rule:
    """An EventBridge rule that targets the queue."""

    name: str
    arn: str
    #: Its event pattern (JSON), ``None`` for a scheduled rule.
    pattern: str | None
    enabled: bool


@dataclass(frozen=True)
class QueueFacts:
    """What was read about ``[sqs] queue_url`` and what sends to it."""

    url: str
    #: ``GetQueueAttributes(All)``; empty when ``error``.
    attributes: Mapping[str, str] = field(default_factory=dict)
    error: Failure | None = None
    #: The topics the groups' notifications go to, with whether each delivers to the queue.
    topics: tuple[Topic, ...] = ()
    rules: tuple[Rule, ...] = ()
    #: Reads of producers that failed: the producers found may be incomplete.
    unread: tuple[Failure, ...] = ()

    @property
    def arn(self) -> str:
        """The queue's ARN, ``""`` when not read."""
        return self.attributes.get("QueueArn", "")


@dataclass(frozen=True)
class AwsFacts:
    """Everything ``reconcile check`` read of AWS for one settings file."""

    #: botocore's ``Credentials.method``; ``None``: no credentials found.
    credentials: str | None = None
    region: str | None = None
    #: Where the region came from (``[aws] region``, ``AWS_REGION``...).
    region_source: str = ""
    account: str = ""
    #: The caller's ARN (``sts:GetCallerIdentity``).
    identity: str = ""
    #: ``sts:GetCallerIdentity`` failed: no other read was tried.
    identity_error: Failure | None = None
    #: Each probed IAM action: ``None`` when allowed, else its failure; absent: not probed.
    permissions: Mapping[str, Failure | None] = field(default_factory=dict)
    #: Each group name: whether it exists (only when DescribeAutoScalingGroups answered).
    groups: Mapping[str, bool] = field(default_factory=dict)
    #: Each existing group's hooks (only when a backend completes lifecycle actions).
    hooks: Mapping[str, tuple[Hook, ...]] = field(default_factory=dict)
    hook_errors: Mapping[str, Failure] = field(default_factory=dict)
    #: ``None`` without ``[sqs] queue_url`` or when nothing could be read.
    queue: QueueFacts | None = None


def uses_hooks(loaded: Settings) -> bool:
    """Whether any backend completes lifecycle actions (so hooks are read and judged)."""
    return any(b.complete_lifecycle_actions for b in loaded.backends)


def group_names(loaded: Settings) -> tuple[str, ...]:
    """The groups of the settings, each once, in the order of the backends."""
    return tuple(dict.fromkeys(b.asg for b in loaded.backends))


def judge(loaded: Settings, facts: AwsFacts) -> tuple[Check, ...]:
    """The ``aws``, ``queue`` and ``hooks`` rows for *loaded*, from *facts*."""
    blocked = _blocked(facts)
    return (
        *_identity_rows(facts),
        *_permission_rows(loaded, facts, blocked),
        *_group_rows(loaded, facts, blocked),
        *_unprobed_rows(loaded),
        *_queue_rows(loaded, facts, blocked),
        *_hooks_rows(loaded, facts, blocked),
    )


# -- aws ------------------------------------------------------------------------------------------


def _blocked(facts: AwsFacts) -> str:
    """Why no AWS read could be made, ``""`` when they could."""
    if facts.credentials is None:
        return "no AWS credentials (see aws / credentials)"
    if facts.region is None:
        return "no AWS region (see aws / region)"
    if facts.identity_error is not None:
        return "the identity could not be read (see aws / account)"
    return ""


def _identity_rows(facts: AwsFacts) -> Iterator[Check]:
    if facts.credentials is None:
        yield Check(
            AWS,
            "credentials",
            Verdict.FAIL,
            "none found (environment, profile, web identity, container or instance role)",
            "run where an instance profile or a service-account role applies, or set "
            "AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (README, A real account)",
        )
    else:
        source = CREDENTIAL_SOURCES.get(facts.credentials, facts.credentials)
        yield Check(AWS, "credentials", Verdict.OK, f"from {source}")
    if facts.region is None:
        yield Check(
            AWS,
            "region",
            Verdict.FAIL,
            "none found in [aws] region, AWS_REGION, AWS_DEFAULT_REGION or the profile",
            'set [aws] region = "<the groups\' region>" (or AWS_REGION)',
        )
    else:
        yield Check(AWS, "region", Verdict.OK, f"{facts.region} (from {facts.region_source})")
    yield _account_row(facts)


def _account_row(facts: AwsFacts) -> Check:
    if facts.credentials is None or facts.region is None:
        return Check(AWS, "account", Verdict.SKIP, "needs credentials and a region")
    if facts.identity_error is not None:
        failure = facts.identity_error
        fix = failure.advice or "check the credentials and AWS_ENDPOINT_URL"
        return Check(AWS, "account", Verdict.FAIL, f"sts:GetCallerIdentity: {failure.what}", fix)
    return Check(AWS, "account", Verdict.OK, f"{facts.account} as {facts.identity}")


def _grant(action: str, facts: AwsFacts | None = None) -> str:
    """The fix for a denied *action*."""
    who = f" to {facts.identity}" if facts is not None and facts.identity else ""
    return f"grant {action}{who} ({_statement(STATEMENTS[action])})"


def _statement(sid: str) -> str:
    """Where the IAM statement *sid* is written down."""
    if sid == "Preflight":
        return "docs/check.md: statement Preflight"
    return f"README, IAM policy: statement {sid}"


def _permission_rows(loaded: Settings, facts: AwsFacts, blocked: str) -> Iterator[Check]:
    needed = [DESCRIBE_GROUPS, DESCRIBE_INSTANCES] + (
        [DESCRIBE_HOOKS] if uses_hooks(loaded) else []
    )
    for action in needed:
        if blocked:
            yield Check(AWS, action, Verdict.SKIP, f"not probed: {blocked}")
        elif action not in facts.permissions:
            yield Check(AWS, action, Verdict.SKIP, "not probed: no group exists to probe it with")
        else:
            yield _permission_row(action, facts.permissions[action], facts)


def _permission_row(action: str, failure: Failure | None, facts: AwsFacts) -> Check:
    if failure is None:
        return Check(AWS, action, Verdict.OK, f"allowed ({PROBED_WITH[action]})")
    if failure.trouble is Trouble.DENIED:
        return Check(AWS, action, Verdict.FAIL, f"denied: {failure.what}", _grant(action, facts))
    fix = failure.advice or "run the check again; report it if this persists"
    return Check(AWS, action, Verdict.WARN, f"could not be probed: {failure.what}", fix)


def _group_rows(loaded: Settings, facts: AwsFacts, blocked: str) -> Iterator[Check]:
    failed = facts.permissions.get(DESCRIBE_GROUPS)
    for name in group_names(loaded):
        subject = f"group '{name}'"
        backends = ", ".join(f"'{b.name}'" for b in loaded.backends if b.asg == name)
        if blocked or failed is not None or name not in facts.groups:
            why = blocked or f"needs {DESCRIBE_GROUPS} (see its row)"
            yield Check(AWS, subject, Verdict.SKIP, f"not checked: {why}")
        elif facts.groups[name]:
            yield Check(AWS, subject, Verdict.OK, f"exists in {facts.region}")
        else:
            yield Check(
                AWS,
                subject,
                Verdict.FAIL,
                f"no such group in {facts.region} (account {facts.account}); backend {backends}",
                f"correct asg = ... of backend {backends}, or [aws] region (groups are "
                "regional), or create the group",
            )


def _unprobed_rows(loaded: Settings) -> Iterator[Check]:
    actions = ([RECEIVE, DELETE] if loaded.sqs.queue_url else []) + (
        [COMPLETE, HEARTBEAT] if uses_hooks(loaded) else []
    )
    if actions:
        sids = ", ".join(dict.fromkeys(STATEMENTS[a] for a in actions))
        yield Check(
            AWS,
            ", ".join(actions),
            Verdict.SKIP,
            "not probed: they cannot be tried without side effects (a message received or "
            "deleted, a lifecycle action completed)",
            f"make sure the identity's policy allows them (README, IAM policy: {sids})",
        )


# -- queue ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Producer:
    """Something that sends to the queue."""

    label: str
    arn: str
    #: The service principal that sends; ``""`` for a hook's role (no queue policy involved).
    principal: str
    #: The groups whose Auto Scaling events it brings.
    groups: frozenset[str]


def _queue_rows(loaded: Settings, facts: AwsFacts, blocked: str) -> Iterator[Check]:
    url = loaded.sqs.queue_url
    if url is None:
        yield Check(
            QUEUE,
            "[sqs] queue_url",
            Verdict.SKIP,
            "not set: the controller sees changes only at its resync, every "
            f"{loaded.controller.resync_interval:g} s",
            "for changes within seconds, set [sqs] queue_url (README, A real account)",
        )
        return
    queue = facts.queue
    if blocked or queue is None:
        yield Check(QUEUE, url, Verdict.SKIP, f"not checked: {blocked or 'not read'}")
        return
    if queue.error is not None:
        yield _queue_error_row(queue.error, url)
        yield Check(
            QUEUE,
            "dead-letter queue, policy, producers",
            Verdict.SKIP,
            "need the queue's attributes",
        )
        return
    yield Check(QUEUE, url, Verdict.OK, f"exists: {queue.arn}")
    yield _dead_letter_row(queue)
    yield from _producer_rows(loaded, facts, queue)


def _queue_error_row(failure: Failure, url: str) -> Check:
    if failure.trouble is Trouble.NOT_FOUND:
        return Check(
            QUEUE,
            url,
            Verdict.FAIL,
            f"no such queue: {failure.what}",
            "correct [sqs] queue_url (the queue's URL, in the groups' region), or create the "
            "queue (README, A real account)",
        )
    if failure.trouble is Trouble.DENIED:
        return Check(
            QUEUE,
            url,
            Verdict.WARN,
            f"cannot check the queue without {GET_QUEUE_ATTRIBUTES}: {failure.what}",
            _grant(GET_QUEUE_ATTRIBUTES),
        )
    fix = failure.advice or "check [sqs] queue_url and the network path to SQS"
    return Check(QUEUE, url, Verdict.FAIL, f"unreachable: {failure.what}", fix)


def _dead_letter_row(queue: QueueFacts) -> Check:
    redrive = _json_object(queue.attributes.get("RedrivePolicy"))
    target = redrive.get("deadLetterTargetArn")
    if isinstance(target, str) and target:
        count = redrive.get("maxReceiveCount", "?")
        return Check(QUEUE, "dead-letter queue", Verdict.OK, f"{target} after {count} receives")
    policy = json.dumps(
        {"RedrivePolicy": json.dumps({"deadLetterTargetArn": "<DLQ ARN>", "maxReceiveCount": "10"})}
    )
    return Check(
        QUEUE,
        "dead-letter queue",
        Verdict.WARN,
        "no RedrivePolicy: a message that keeps failing comes back after every visibility "
        "timeout until its retention ends",
        "create a dead-letter queue with longer retention, then "
        f"aws sqs set-queue-attributes --queue-url {shlex.quote(queue.url)} "
        f"--attributes {shlex.quote(policy)} (README, A real account)",
    )


def _producers(loaded: Settings, facts: AwsFacts, queue: QueueFacts) -> tuple[_Producer, ...]:
    """What sends to the queue: subscribed topics, enabled rules, hooks that target it."""
    found = [
        _Producer(
            f"topic {t.arn} (notifications of {', '.join(t.groups)})",
            t.arn,
            _SNS,
            frozenset(t.groups),
        )
        for t in queue.topics
        if t.subscribed
    ]
    names = group_names(loaded)
    for rule in queue.rules:
        if rule.enabled:
            covered = frozenset(n for n in names if _rule_covers(rule.pattern, n))
            found.append(_Producer(f"EventBridge rule {rule.name}", rule.arn, _EVENTS, covered))
    # A hook sends with its own role: no queue policy involved.
    found.extend(
        _Producer(f"lifecycle hook {h.name} of '{group}'", queue.arn, "", frozenset({group}))
        for group, hooks in facts.hooks.items()
        for h in hooks
        if queue.arn and h.notification_target == queue.arn
    )
    return tuple(found)


def _producer_rows(loaded: Settings, facts: AwsFacts, queue: QueueFacts) -> Iterator[Check]:
    producers = _producers(loaded, facts, queue)
    policy = _json_object(queue.attributes.get("Policy"))
    for failure in queue.unread:
        denied = failure.trouble is Trouble.DENIED
        why = f"without {failure.action}" if denied else "now"
        yield Check(
            QUEUE,
            failure.action,
            Verdict.WARN,
            f"cannot check what sends to the queue {why}: {failure.what}",
            _grant(failure.action) if denied else failure.advice,
        )
    refused = [
        p for p in producers if p.principal and not _admits(policy, p.principal, p.arn, queue.arn)
    ]
    for producer in producers:
        if producer.principal:
            yield _admission_row(producer, queue, admitted=producer not in refused)
    yield _openness_row(policy, queue)
    admitted = [p for p in producers if p not in refused]
    yield from _coverage_rows(loaded, queue, admitted, refused)


def _admission_row(producer: _Producer, queue: QueueFacts, *, admitted: bool) -> Check:
    subject = f"policy admits {producer.label}"
    if admitted:
        return Check(QUEUE, subject, Verdict.OK, f"{producer.principal} by aws:SourceArn")
    condition = json.dumps({"ArnEquals": {"aws:SourceArn": producer.arn}})
    return Check(
        QUEUE,
        subject,
        Verdict.FAIL,
        f"the queue policy does not let {producer.principal} send from {producer.arn}: its "
        "messages are dropped",
        f'add a statement Allow {{"Service": "{producer.principal}"}} sqs:SendMessage on '
        f"{queue.arn} with Condition {condition}, and list the ARN in any Deny's "
        "ArnNotEquals (docs/aws-setup.md: queue-policy.json)",
    )


def _openness_row(policy: Mapping[str, Any], queue: QueueFacts) -> Check:
    if _admits(policy, None, None, queue.arn):
        return Check(
            QUEUE,
            "policy senders",
            Verdict.WARN,
            "the queue policy lets anyone send (Principal * without a condition): any message "
            "wakes the controller",
            "admit only the topic and rules by aws:SourceArn (docs/aws-setup.md: "
            "queue-policy.json)",
        )
    return Check(QUEUE, "policy senders", Verdict.OK, "no anonymous sender admitted")


def _coverage_rows(
    loaded: Settings,
    queue: QueueFacts,
    admitted: Sequence[_Producer],
    refused: Sequence[_Producer],
) -> Iterator[Check]:
    """Per group: what brings its events to the queue (the controller's wake-ups)."""
    for name in group_names(loaded):
        via = [p.label for p in admitted if name in p.groups]
        subject = f"events of group '{name}'"
        if via:
            yield Check(QUEUE, subject, Verdict.OK, "sent by " + "; ".join(via))
            continue
        blocked = [p.label for p in refused if name in p.groups]
        if blocked:
            detail = f"only {'; '.join(blocked)} sends them, and the queue policy refuses it"
            yield Check(QUEUE, subject, Verdict.FAIL, detail, "admit it (see its policy row)")
            continue
        missing = (
            f"nothing found that sends them to this queue: the controller sees this group's "
            f"changes only at its resync, every {loaded.controller.resync_interval:g} s"
            + _unsubscribed(queue, name)
            + _disabled(queue)
        )
        verdict = Verdict.WARN if queue.unread else Verdict.FAIL
        if queue.unread:
            missing += " (some producers could not be read, see above)"
        yield Check(QUEUE, subject, verdict, missing, _send_events_fix(name, queue))


def _unsubscribed(queue: QueueFacts, group: str) -> str:
    topics = [t.arn for t in queue.topics if group in t.groups and t.subscribed is False]
    return f"; its topic {', '.join(topics)} has no subscription for this queue" if topics else ""


def _disabled(queue: QueueFacts) -> str:
    rules = [r.name for r in queue.rules if not r.enabled]
    return f"; rule {', '.join(rules)} targets it but is disabled" if rules else ""


def _send_events_fix(group: str, queue: QueueFacts) -> str:
    topics = [t.arn for t in queue.topics if group in t.groups and t.subscribed is False]
    if topics:
        return (
            f"aws sns subscribe --topic-arn {topics[0]} --protocol sqs "
            f"--notification-endpoint {queue.arn}, and admit the topic in the queue policy"
        )
    pattern = json.dumps(
        {"source": ["aws.autoscaling"], "detail": {"AutoScalingGroupName": [group]}}
    )
    return (
        f"aws events put-rule --name <rule> --event-pattern {shlex.quote(pattern)}; "
        f"aws events put-targets --rule <rule> --targets Id=queue,Arn={queue.arn}; admit the "
        "rule in the queue policy (README, A real account; or the CloudFormation stack)"
    )


def _rule_covers(pattern: str | None, group: str) -> bool:
    """Whether an event pattern matches Auto Scaling events of *group*."""
    doc = _json_object(pattern)
    if not doc:
        return False
    sources = doc.get("source")
    if sources is not None and not _pattern_matches(sources, "aws.autoscaling"):
        return False
    detail = doc.get("detail")
    names = detail.get("AutoScalingGroupName") if isinstance(detail, dict) else None
    return names is None or _pattern_matches(names, group)


def _pattern_matches(values: object, text: str) -> bool:
    """Whether an event pattern's list of values matches *text* (exact, prefix, wildcard)."""
    if not isinstance(values, list):
        return False
    for value in values:
        if value == text:
            return True
        if isinstance(value, dict):
            prefix, wildcard = value.get("prefix"), value.get("wildcard")
            if isinstance(prefix, str) and text.startswith(prefix):
                return True
            if isinstance(wildcard, str) and fnmatchcase(text, wildcard):
                return True
    return False


# -- queue policy ---------------------------------------------------------------------------------


def _admits(
    policy: Mapping[str, Any], principal: str | None, source: str | None, queue: str
) -> bool:
    """
    Whether *policy* lets *principal* (a service; ``None``: anyone at all) send to *queue* from
    *source* (an ARN; ``None``: a request without ``aws:SourceArn``): an Allow applies and no
    Deny does. Only the parts a queue policy uses are understood; a condition on anything else
    makes its statement not apply, so an Allow it guards is not counted.
    """
    context = {} if source is None else {"aws:sourcearn": source}
    if source is not None and source.count(":") >= 5:
        context["aws:sourceaccount"] = source.split(":")[4]

    def applies(statement: Mapping[str, Any]) -> bool:
        return (
            _listed(statement.get("Action"), "sqs:SendMessage", case=False)
            and ("Resource" not in statement or _listed(statement["Resource"], queue))
            and _principal_matches(statement.get("Principal"), principal)
            and _conditions_hold(statement.get("Condition", {}), context)
        )

    statements = _statements(policy)
    allowed = any(s.get("Effect") == "Allow" and applies(s) for s in statements)
    return allowed and not any(s.get("Effect") == "Deny" and applies(s) for s in statements)


def _statements(policy: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    raw = policy.get("Statement", [])
    listed = raw if isinstance(raw, list) else [raw]
    return [s for s in listed if isinstance(s, dict)]


def _as_list(value: object) -> list[object]:
    return value if isinstance(value, list) else [value]


def _listed(patterns: object, text: str, *, case: bool = True) -> bool:
    """Whether any of *patterns* (a string or a list, with ``*`` and ``?``) matches *text*."""
    wanted = text if case else text.lower()
    return any(
        isinstance(p, str) and fnmatchcase(wanted, p if case else p.lower())
        for p in _as_list(patterns)
    )


def _principal_matches(principal: object, sender: str | None) -> bool:
    if principal == "*":
        return True
    if not isinstance(principal, dict):
        return False
    if "*" in _as_list(principal.get("AWS")):
        return True
    return sender is not None and sender in _as_list(principal.get("Service"))


def _conditions_hold(block: object, context: Mapping[str, str]) -> bool:
    """Whether every condition of a statement's *block* holds for *context* (lower-case keys)."""
    if not isinstance(block, dict):
        return False
    for operator, tests in block.items():
        if not isinstance(tests, dict):
            return False
        for key, values in tests.items():
            if not _condition_holds(str(operator), context.get(str(key).lower()), values):
                return False
    return True


def _condition_holds(operator: str, value: str | None, expected: object) -> bool:
    # ForAnyValue: / ForAllValues: on the single value a request has.
    operator = operator.rpartition(":")[2]
    if operator.endswith("IfExists"):
        operator = operator.removesuffix("IfExists")
        if value is None:
            return True
    if operator == "Null":
        return (value is None) == (str(expected).lower() == "true")
    negated = "Not" in operator
    base = operator.replace("Not", "")
    if base not in ("StringEquals", "ArnEquals", "StringLike", "ArnLike"):
        return False
    if value is None:
        return negated
    like = base.endswith("Like")
    found = any(
        isinstance(e, str) and (fnmatchcase(value, e) if like else value == e)
        for e in _as_list(expected)
    )
    return found != negated


def _json_object(text: str | None) -> dict[str, Any]:
    """*text* as a JSON object; ``{}`` when absent or not one."""
    if not text:
        return {}
    try:
        doc = json.loads(text)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


# -- hooks ----------------------------------------------------------------------------------------


def _hooks_rows(loaded: Settings, facts: AwsFacts, blocked: str) -> Iterator[Check]:
    bindings = [b for b in loaded.backends if b.complete_lifecycle_actions]
    if not bindings:
        yield Check(
            HOOKS,
            "lifecycle hooks",
            Verdict.SKIP,
            "not used: no backend sets complete_lifecycle_actions",
            "optional, for drains that finish before the instance stops (docs/lifecycle-hooks.md)",
        )
        return
    for binding in bindings:
        subject = f"hooks of '{binding.asg}' (backend '{binding.name}')"
        failure = facts.hook_errors.get(binding.asg)
        if blocked or not facts.groups.get(binding.asg):
            read = "was not found" if binding.asg in facts.groups else "could not be read"
            why = blocked or f"the group {read} (see its aws row)"
            yield Check(HOOKS, subject, Verdict.SKIP, f"not checked: {why}")
        elif failure is not None:
            detail = f"not checked: {DESCRIBE_HOOKS} failed ({failure.what})"
            yield Check(HOOKS, subject, Verdict.SKIP, detail)
        else:
            hooks = facts.hooks.get(binding.asg, ())
            for transition in (TERMINATING, LAUNCHING):
                yield from _transition_rows(loaded, binding, hooks, transition)


def _word(transition: str) -> str:
    return "terminate" if transition == TERMINATING else "launch"


def _transition_rows(
    loaded: Settings, binding: Binding, hooks: Iterable[Hook], transition: str
) -> Iterator[Check]:
    """The rows of the hook *binding* completes on *transition*, the way the controller picks it."""
    word = _word(transition)
    subject = f"{word} hook of '{binding.asg}' (backend '{binding.name}')"
    named = binding.launch_hook if transition == LAUNCHING else binding.terminate_hook
    on = [h for h in hooks if h.transition == transition]
    key = f"{word}_hook"
    chosen = completed(binding, hooks, transition)
    if chosen is not None:
        yield Check(HOOKS, subject, Verdict.OK, f"'{chosen.name}' on {transition}")
        yield _timeout_row(loaded, binding, chosen, subject)
        yield _default_result_row(loaded, binding, chosen, subject)
    elif named is not None:
        found = next((h for h in hooks if h.name == named), None)
        where = "no such hook" if found is None else f"'{named}' is on {found.transition}"
        yield Check(
            HOOKS,
            subject,
            Verdict.FAIL,
            f"{key} = '{named}': {where} of the group; the controller completes none",
            _put_hook(loaded, binding, named, transition),
        )
    elif on:
        names = ", ".join(f"'{h.name}'" for h in on)
        yield Check(
            HOOKS,
            subject,
            Verdict.FAIL,
            f"several hooks on {transition} ({names}) and none named: the controller completes "
            "none of them",
            f"set {key} = <the one this node completes> in backend '{binding.name}'",
        )
    else:
        yield _no_hook_row(loaded, binding, transition, subject)


def _no_hook_row(loaded: Settings, binding: Binding, transition: str, subject: str) -> Check:
    if transition == LAUNCHING:
        return Check(
            HOOKS,
            subject,
            Verdict.OK,
            "none (optional: with one, a new instance enters service only after its first "
            "passing check)",
        )
    return Check(
        HOOKS,
        subject,
        Verdict.WARN,
        "none: a leaving instance is terminated at once, so requests still running on it "
        "when it stops are cut",
        _put_hook(loaded, binding, "haproxy-drain", transition),
    )


def _notice(loaded: Settings) -> float:
    """Seconds the controller may take to notice an instance waiting on a hook."""
    return QUEUE_NOTICE if loaded.sqs.queue_url else loaded.controller.resync_interval


def _timeout_row(loaded: Settings, binding: Binding, hook: Hook, subject: str) -> Check:
    """
    A terminate hook must outlast the controller noticing the instance and sending its first
    heartbeat, half a timeout later (below that: FAIL), and should outlast the whole drain so
    the instance does not depend on heartbeats (WARN); a launch hook gets no heartbeat, so it
    must outlast noticing plus, when set, ``abandon_launch_after``.
    """
    notice = _notice(loaded)
    how = "the queue" if loaded.sqs.queue_url else "the resync (no queue)"
    if hook.transition == TERMINATING:
        least = 2 * notice + HOOK_MARGIN
        enough = _whole_drain(loaded, binding)
        short = f"shorter than the drain ({binding.drain_timeout:g} s) plus noticing it"
        late = "the hook can time out before the first heartbeat (sent at half the timeout)"
    else:
        least = enough = notice + (binding.abandon_launch_after or 0) + HOOK_MARGIN
        short = late = "the hook can time out before the controller completes it"
    seen = f"HeartbeatTimeout {hook.heartbeat_timeout} s; noticed within {notice:g} s via {how}"
    if hook.heartbeat_timeout >= enough:
        return Check(HOOKS, f"{subject}: timeout", Verdict.OK, seen)
    verdict = Verdict.FAIL if hook.heartbeat_timeout < least else Verdict.WARN
    why = late if verdict is Verdict.FAIL else f"{short}: it relies on heartbeats"
    return Check(
        HOOKS,
        f"{subject}: timeout",
        verdict,
        f"{seen}: {why}",
        _put_hook(loaded, binding, hook.name, hook.transition, timeout=_advised(enough)),
    )


def _whole_drain(loaded: Settings, binding: Binding) -> float:
    """Seconds a terminate hook lasts through the first heartbeat and the whole drain."""
    notice = _notice(loaded)
    return max(2 * notice, notice + binding.drain_timeout) + HOOK_MARGIN


def _advised(needed: float) -> int:
    """A HeartbeatTimeout of at least *needed* seconds, as docs/lifecycle-hooks.md advises it."""
    return min(MAX_TIMEOUT, max(ADVISED_TIMEOUT, math.ceil(needed / 60) * 60))


def _default_result_row(loaded: Settings, binding: Binding, hook: Hook, subject: str) -> Check:
    if hook.default_result != "ABANDON":
        return Check(HOOKS, f"{subject}: default result", Verdict.OK, hook.default_result)
    why = (
        "when the hook times out (the controller down or late), ABANDON skips the group's other "
        "terminate hooks, such as other HAProxy nodes' drains"
        if hook.transition == TERMINATING
        else "when the hook times out (the controller down or late), ABANDON terminates the new "
        "instance: the group cannot scale out while the controller is down"
    )
    return Check(
        HOOKS,
        f"{subject}: default result",
        Verdict.WARN,
        f"ABANDON: {why}; CONTINUE is advised",
        _put_hook(loaded, binding, hook.name, hook.transition, timeout=hook.heartbeat_timeout),
    )


def _put_hook(
    loaded: Settings, binding: Binding, name: str, transition: str, *, timeout: int | None = None
) -> str:
    """The command that creates or updates the hook (keeping its notification target, if any)."""
    if timeout is None:
        timeout = _advised(_whole_drain(loaded, binding))
    return (
        f"aws autoscaling put-lifecycle-hook --auto-scaling-group-name {shlex.quote(binding.asg)} "
        f"--lifecycle-hook-name {shlex.quote(name)} --lifecycle-transition {transition} "
        f"--heartbeat-timeout {timeout} --default-result CONTINUE (docs/lifecycle-hooks.md)"
    )
