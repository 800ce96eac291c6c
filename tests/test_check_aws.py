"""
``reconcile check``'s AWS part: the ``aws``, ``queue`` and ``hooks`` rows.

``read_facts`` runs end to end against the moto server (the ``cloud`` fixture), where a fully
set-up world (group, hooks, queue with a dead-letter queue and the README's queue policy, an SNS
topic the group notifies, an EventBridge rule) passes every row, and each kind of mistake a user
makes gives its failing row with a fix. The rules ``judge`` applies to facts moto cannot produce
(a policy open to anyone, an unreachable identity, several hooks) are tested on hand-built facts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import boto3
import pytest
from botocore.config import Config
from typer.testing import CliRunner

from harness.moto import LAUNCHING, MOTO_KEY, TERMINATING, Cloud
from harness.stack import Stack
from reconciler.adapters.aws.probes import read_facts
from reconciler.cli import app
from reconciler.core.aws_checks import (
    AwsFacts,
    Failure,
    Hook,
    QueueFacts,
    Rule,
    Topic,
    Trouble,
    judge,
)
from reconciler.core.checks import Check, Verdict, exit_code
from reconciler.core.settings import Settings, parse


pytestmark = pytest.mark.integration

GROUP = "web-asg"
DRAIN_HOOK = "haproxy-drain-a"
LAUNCH_HOOK = "haproxy-launch-a"
ACCOUNT = "123456789012"
REGION = "eu-west-1"
QUEUE_ARN = f"arn:aws:sqs:{REGION}:{ACCOUNT}:haproxy-node-a"
TOPIC_ARN = f"arn:aws:sns:{REGION}:{ACCOUNT}:asg-events"
RULE_ARN = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/haproxy-node-a-ec2"


def settings(queue_url: str | None = None, **backend: Any) -> Settings:
    """One backend on ``GROUP`` completing lifecycle actions with the named hooks."""
    raw: dict[str, Any] = {
        "aws": {"region": REGION},
        "haproxy": {"socket": "/run/haproxy/admin.sock"},
        "backend": [
            {
                "name": "api",
                "asg": GROUP,
                "port": 8080,
                "complete_lifecycle_actions": True,
                "terminate_hook": DRAIN_HOOK,
                "launch_hook": LAUNCH_HOOK,
                **backend,
            }
        ],
    }
    if queue_url is not None:
        raw["sqs"] = {"queue_url": queue_url}
    return parse(raw, {}, "reconciler.toml")


def row(rows: tuple[Check, ...], area: str, subject_part: str) -> Check:
    """The row of *area* whose subject is *subject_part*, else the one that contains it."""
    exact = [r for r in rows if r.area == area and subject_part == r.subject]
    found = exact or [r for r in rows if r.area == area and subject_part in r.subject]
    assert len(found) == 1, (subject_part, rows)
    return found[0]


def not_passing(rows: tuple[Check, ...]) -> list[Check]:
    """The rows that did not pass, besides the one listing what cannot be probed."""
    return [r for r in rows if r.verdict is not Verdict.OK and "not probed: they" not in r.detail]


# -- the world ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    queue_url: str
    queue_arn: str
    topic_arn: str
    rule_arn: str


def queue_policy(queue_arn: str, senders: Mapping[str, str]) -> str:
    """docs/aws-setup.md's queue policy: an Allow per sender (service: ARN), a Deny for others."""
    allows = [
        {
            "Effect": "Allow",
            "Principal": {"Service": service},
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": arn}},
        }
        for service, arn in senders.items()
    ]
    deny = {
        "Sid": "NobodyElse",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "sqs:SendMessage",
        "Resource": queue_arn,
        "Condition": {"ArnNotEquals": {"aws:SourceArn": list(senders.values())}},
    }
    return json.dumps({"Version": "2012-10-17", "Statement": [*allows, deny]})


def build_world(
    cloud: Cloud,
    *,
    dead_letter: bool = True,
    admit_topic: bool = True,
    notify: bool = True,
    rule: bool = True,
    drain_timeout: int = 600,
    drain_result: str = "CONTINUE",
) -> World:
    """The README's setup for one node: group, both hooks, queue + DLQ + policy, topic, rule."""
    cloud.create_group(GROUP, 1)
    for name, transition, timeout, result in (
        (DRAIN_HOOK, TERMINATING, drain_timeout, drain_result),
        (LAUNCH_HOOK, LAUNCHING, 600, "CONTINUE"),
    ):
        cloud.autoscaling.put_lifecycle_hook(
            AutoScalingGroupName=GROUP,
            LifecycleHookName=name,
            LifecycleTransition=transition,
            HeartbeatTimeout=timeout,
            DefaultResult=result,
        )
    attributes = {}
    if dead_letter:
        dlq = cloud.sqs.create_queue(QueueName="haproxy-node-a-dlq")["QueueUrl"]
        dlq_arn = arn_of(cloud, dlq)
        redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "10"}
        attributes["RedrivePolicy"] = json.dumps(redrive)
    url = cloud.sqs.create_queue(QueueName="haproxy-node-a", Attributes=attributes)["QueueUrl"]
    queue_arn = arn_of(cloud, url)
    topic = cloud.sns.create_topic(Name="asg-events")["TopicArn"]
    cloud.sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    cloud.answer_notification_configurations()
    if notify:
        cloud.put_notification_configuration(GROUP, topic)
    rule_arn = RULE_ARN
    if rule:
        rule_arn = put_rule(cloud, "haproxy-node-a-ec2", {"source": ["aws.ec2"]}, queue_arn)
    senders = {"sns.amazonaws.com": topic} if admit_topic else {}
    senders["events.amazonaws.com"] = rule_arn
    policy = queue_policy(queue_arn, senders)
    cloud.sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": policy})
    return World(url, queue_arn, topic, rule_arn)


def arn_of(cloud: Cloud, url: str) -> str:
    attributes = cloud.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return attributes["Attributes"]["QueueArn"]


def put_rule(cloud: Cloud, name: str, pattern: Mapping[str, Any], target: str) -> str:
    """An EventBridge rule with *pattern* targeting *target*; its ARN."""
    events = boto3.client(
        "events",
        endpoint_url=cloud.endpoint,
        region_name=cloud.region,
        aws_access_key_id=MOTO_KEY,
        aws_secret_access_key=MOTO_KEY,
        config=Config(proxies={}),
    )
    arn = str(events.put_rule(Name=name, EventPattern=json.dumps(pattern))["RuleArn"])
    events.put_targets(Rule=name, Targets=[{"Id": "queue", "Arn": target}])
    return arn


# -- end to end against moto ----------------------------------------------------------------------


def test_a_fully_set_up_world_passes_every_row(cloud: Cloud) -> None:
    world = build_world(cloud)
    loaded = settings(world.queue_url)

    rows = judge(loaded, read_facts(loaded))

    assert not_passing(rows) == []
    assert exit_code(rows) == 0
    assert [r.area for r in rows] == sorted(
        (r.area for r in rows), key=["aws", "queue", "hooks"].index
    )
    assert row(rows, "aws", "credentials").detail == "from environment (AWS_ACCESS_KEY_ID)"
    assert row(rows, "aws", "region").detail == f"{REGION} (from [aws] region)"
    assert row(rows, "aws", "account").detail.startswith(ACCOUNT)
    assert row(rows, "aws", "ec2:DescribeInstances").detail == (
        "allowed (DescribeInstances with DryRun)"
    )
    unprobed = row(rows, "aws", "sqs:ReceiveMessage")
    assert unprobed.verdict is Verdict.SKIP
    assert "autoscaling:CompleteLifecycleAction" in unprobed.subject
    assert "without side effects" in unprobed.detail
    assert f"policy admits topic {world.topic_arn} (notifications of {GROUP})" in {
        r.subject for r in rows
    }
    assert "policy admits EventBridge rule haproxy-node-a-ec2" in {r.subject for r in rows}
    assert row(rows, "queue", "events of group").detail == (
        f"sent by topic {world.topic_arn} (notifications of {GROUP})"
    )
    assert (
        row(rows, "hooks", "terminate hook of 'web-asg' (backend 'api')").detail
        == f"'{DRAIN_HOOK}' on {TERMINATING}"
    )
    assert (
        row(rows, "hooks", "launch hook of 'web-asg' (backend 'api')").detail
        == f"'{LAUNCH_HOOK}' on {LAUNCHING}"
    )


def test_an_eventbridge_rule_for_the_group_is_a_producer(cloud: Cloud) -> None:
    world = build_world(cloud, notify=False, rule=False)
    pattern = {"source": ["aws.autoscaling"], "detail": {"AutoScalingGroupName": [GROUP]}}
    rule_arn = put_rule(cloud, "haproxy-node-a-asg", pattern, world.queue_arn)
    policy = queue_policy(world.queue_arn, {"events.amazonaws.com": rule_arn})
    cloud.sqs.set_queue_attributes(QueueUrl=world.queue_url, Attributes={"Policy": policy})
    loaded = settings(world.queue_url)

    rows = judge(loaded, read_facts(loaded))

    assert not_passing(rows) == []
    assert (
        row(rows, "queue", "events of group").detail
        == "sent by EventBridge rule haproxy-node-a-asg"
    )


def test_no_credentials(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    world = build_world(cloud)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    # botocore would otherwise ask the instance metadata service, off loopback.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    loaded = settings(world.queue_url)

    rows = judge(loaded, read_facts(loaded))

    credentials = row(rows, "aws", "credentials")
    assert credentials.verdict is Verdict.FAIL
    assert "AWS_ACCESS_KEY_ID" in credentials.fix
    assert exit_code(rows) == 1
    # One failing row; everything that needed the identity says why it was skipped.
    assert [r.subject for r in rows if r.verdict is Verdict.FAIL] == ["credentials"]
    assert row(rows, "aws", f"group '{GROUP}'").detail == (
        "not checked: no AWS credentials (see aws / credentials)"
    )
    assert row(rows, "queue", world.queue_url).verdict is Verdict.SKIP
    assert row(rows, "hooks", "hooks of").verdict is Verdict.SKIP


def test_an_unreachable_endpoint_fails_the_account_row_only(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    loaded = settings()

    rows = judge(loaded, read_facts(loaded))

    account = row(rows, "aws", "account")
    assert account.verdict is Verdict.FAIL
    assert account.detail.startswith("sts:GetCallerIdentity: EndpointConnectionError")
    assert "AWS_ENDPOINT_URL" in account.fix
    assert [r.subject for r in rows if r.verdict is Verdict.FAIL] == ["account"]


def test_a_missing_group(cloud: Cloud) -> None:
    world = build_world(cloud)
    loaded = settings(world.queue_url, asg="web-asg-typo")

    rows = judge(loaded, read_facts(loaded))

    group = row(rows, "aws", "group 'web-asg-typo'")
    assert group.verdict is Verdict.FAIL
    assert group.detail == f"no such group in {REGION} (account {ACCOUNT}); backend 'api'"
    assert "asg" in group.fix
    assert row(rows, "hooks", "hooks of").detail == (
        "not checked: the group was not found (see its aws row)"
    )


def test_describe_instances_denied(cloud: Cloud) -> None:
    world = build_world(cloud)
    cloud.fail("DescribeInstances", "UnauthorizedOperation", 5)
    loaded = settings(world.queue_url)

    rows = judge(loaded, read_facts(loaded))

    denied = row(rows, "aws", "ec2:DescribeInstances")
    assert denied.verdict is Verdict.FAIL
    assert denied.detail.startswith("denied: UnauthorizedOperation")
    assert denied.fix == (
        "grant ec2:DescribeInstances to arn:aws:sts::123456789012:user/moto "
        "(README, IAM policy: statement ReadAsgAndInstances)"
    )
    assert [r.subject for r in not_passing(rows)] == ["ec2:DescribeInstances"]


def test_describe_groups_denied(cloud: Cloud) -> None:
    world = build_world(cloud)
    cloud.fail("DescribeAutoScalingGroups", "AccessDenied", 5)
    loaded = settings(world.queue_url)

    rows = judge(loaded, read_facts(loaded))

    denied = row(rows, "aws", "autoscaling:DescribeAutoScalingGroups")
    assert denied.verdict is Verdict.FAIL
    assert "statement ReadAsgAndInstances" in denied.fix
    group = row(rows, "aws", f"group '{GROUP}'")
    assert group.verdict is Verdict.SKIP
    assert "autoscaling:DescribeAutoScalingGroups" in group.detail
    assert exit_code(rows) == 1


def test_a_missing_queue(cloud: Cloud) -> None:
    world = build_world(cloud)
    url = world.queue_url.replace("haproxy-node-a", "haproxy-node-b")
    loaded = settings(url)

    rows = judge(loaded, read_facts(loaded))

    queue = row(rows, "queue", url)
    assert queue.verdict is Verdict.FAIL
    assert queue.detail.startswith("no such queue: ")
    assert "[sqs] queue_url" in queue.fix
    assert row(rows, "queue", "dead-letter").verdict is Verdict.SKIP


def test_no_dead_letter_queue(cloud: Cloud) -> None:
    world = build_world(cloud, dead_letter=False)
    loaded = settings(world.queue_url)

    rows = judge(loaded, read_facts(loaded))

    dlq = row(rows, "queue", "dead-letter queue")
    assert dlq.verdict is Verdict.WARN
    assert "RedrivePolicy" in dlq.fix
    assert f"--queue-url {world.queue_url}" in dlq.fix
    assert not_passing(rows) == [dlq]
    assert exit_code(rows) == 0


def test_a_policy_that_does_not_admit_the_topic(cloud: Cloud) -> None:
    world = build_world(cloud, admit_topic=False)
    loaded = settings(world.queue_url)

    rows = judge(loaded, read_facts(loaded))

    refused = row(rows, "queue", f"policy admits topic {world.topic_arn}")
    assert refused.verdict is Verdict.FAIL
    assert f'"aws:SourceArn": "{world.topic_arn}"' in refused.fix
    assert row(rows, "queue", "policy admits EventBridge rule").verdict is Verdict.OK
    events = row(rows, "queue", "events of group")
    assert events.verdict is Verdict.FAIL
    assert "the queue policy refuses it" in events.detail


def test_no_producer_targets_the_queue(cloud: Cloud) -> None:
    world = build_world(cloud, notify=False, rule=False)
    loaded = settings(world.queue_url)

    rows = judge(loaded, read_facts(loaded))

    events = row(rows, "queue", "events of group")
    assert events.verdict is Verdict.FAIL
    assert "only at its resync, every 60 s" in events.detail
    assert "aws events put-rule" in events.fix
    assert [r.subject for r in not_passing(rows)] == [f"events of group '{GROUP}'"]


def test_a_denied_preflight_read_is_a_warning(cloud: Cloud) -> None:
    world = build_world(cloud, rule=False)
    cloud.fail("DescribeNotificationConfigurations", "AccessDenied", 5)
    loaded = settings(world.queue_url)

    rows = judge(loaded, read_facts(loaded))

    denied = row(rows, "queue", "autoscaling:DescribeNotificationConfigurations")
    assert denied.verdict is Verdict.WARN
    assert "statement Preflight" in denied.fix
    assert row(rows, "queue", "events of group").verdict is Verdict.WARN
    assert exit_code(rows) == 0


def test_a_missing_hook(cloud: Cloud) -> None:
    world = build_world(cloud)
    loaded = settings(world.queue_url, terminate_hook="haproxy-drain-b")

    rows = judge(loaded, read_facts(loaded))

    missing = row(rows, "hooks", "terminate hook of 'web-asg' (backend 'api')")
    assert missing.verdict is Verdict.FAIL
    assert missing.detail == (
        "terminate_hook = 'haproxy-drain-b': no such hook of the group; the controller "
        "completes none"
    )
    assert missing.fix.startswith(
        f"aws autoscaling put-lifecycle-hook --auto-scaling-group-name {GROUP} "
        f"--lifecycle-hook-name haproxy-drain-b --lifecycle-transition {TERMINATING} "
    )


def test_a_hook_timeout_too_short(cloud: Cloud) -> None:
    build_world(cloud, drain_timeout=30)
    loaded = settings()  # no queue: the controller notices a waiting instance at its resync

    rows = judge(loaded, read_facts(loaded))

    short = row(rows, "hooks", "terminate hook of 'web-asg' (backend 'api'): timeout")
    assert short.verdict is Verdict.FAIL
    assert short.detail.startswith("HeartbeatTimeout 30 s; noticed within 60 s via the resync")
    assert "--heartbeat-timeout 300 --default-result CONTINUE" in short.fix


def test_an_abandon_default_result(cloud: Cloud) -> None:
    world = build_world(cloud, drain_result="ABANDON")
    loaded = settings(world.queue_url)

    rows = judge(loaded, read_facts(loaded))

    abandon = row(rows, "hooks", "terminate hook of 'web-asg' (backend 'api'): default result")
    assert abandon.verdict is Verdict.WARN
    assert "other HAProxy nodes' drains" in abandon.detail
    assert "--default-result CONTINUE" in abandon.fix
    assert not_passing(rows) == [abandon]


def test_the_check_command_fails_on_a_denied_permission(stack: Stack) -> None:
    """``reconcile check --json`` on a working stack whose identity may not DescribeInstances."""
    stack.cloud.fail("DescribeInstances", "UnauthorizedOperation", 5)

    result = CliRunner().invoke(app, ["check", "--config", str(stack.settings), "--json"])

    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    assert report["ok"] is False
    failed = [c for c in report["checks"] if c["verdict"] == "fail"]
    assert [(c["area"], c["subject"]) for c in failed] == [("aws", "ec2:DescribeInstances")]
    assert "statement ReadAsgAndInstances" in failed[0]["fix"]


# -- judge on hand-built facts --------------------------------------------------------------------

QUEUE_URL = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/haproxy-node-a"
IDENTITY = f"arn:aws:iam::{ACCOUNT}:role/haproxy"


def facts(
    *, policy: object = None, rules: tuple[Rule, ...] = (), hooks: tuple[Hook, ...] = ()
) -> AwsFacts:
    """A world where everything was read: one group, the queue with *policy*, *rules*, *hooks*."""
    attributes = {"QueueArn": QUEUE_ARN}
    if policy is not None:
        attributes["Policy"] = json.dumps(policy)
    return AwsFacts(
        credentials="iam-role",
        region=REGION,
        region_source="[aws] region",
        account=ACCOUNT,
        identity=IDENTITY,
        permissions={
            "autoscaling:DescribeAutoScalingGroups": None,
            "ec2:DescribeInstances": None,
            "autoscaling:DescribeLifecycleHooks": None,
        },
        groups={GROUP: True},
        hooks={GROUP: hooks},
        queue=QueueFacts(QUEUE_URL, attributes=attributes, rules=rules),
    )


def allow(principal: object, condition: object = None) -> dict[str, Any]:
    statement = {"Effect": "Allow", "Principal": principal, "Action": "SQS:*"}
    return statement if condition is None else {**statement, "Condition": condition}


GROUP_RULE = Rule(
    "asg",
    f"arn:aws:events:{REGION}:{ACCOUNT}:rule/asg",
    json.dumps(
        {"source": ["aws.autoscaling"], "detail": {"AutoScalingGroupName": [{"prefix": "web-"}]}}
    ),
    enabled=True,
)


def test_a_policy_open_to_anyone_is_a_warning() -> None:
    loaded = settings(QUEUE_URL)

    rows = judge(loaded, facts(policy={"Statement": allow("*")}, rules=(GROUP_RULE,)))

    open_row = row(rows, "queue", "policy senders")
    assert open_row.verdict is Verdict.WARN
    assert "anyone" in open_row.detail
    # Open to anyone admits the rule too, and a prefix pattern names the group.
    assert row(rows, "queue", "policy admits EventBridge rule asg").verdict is Verdict.OK
    assert row(rows, "queue", "events of group").verdict is Verdict.OK


@pytest.mark.parametrize(
    ("condition", "admitted"),
    [
        ({"ArnLike": {"aws:SourceArn": f"arn:aws:events:{REGION}:{ACCOUNT}:rule/*"}}, True),
        ({"StringEquals": {"aws:SourceAccount": ACCOUNT}}, True),
        ({"ArnEquals": {"aws:SourceArn": RULE_ARN}}, False),
        ({"StringEquals": {"aws:PrincipalOrgID": "o-1"}}, False),  # not understood: not counted
    ],
)
def test_the_policy_admits_a_rule_by_its_conditions(condition: object, admitted: bool) -> None:
    policy = {"Statement": [allow({"Service": ["events.amazonaws.com"]}, condition)]}

    rows = judge(settings(QUEUE_URL), facts(policy=policy, rules=(GROUP_RULE,)))

    verdict = row(rows, "queue", "policy admits EventBridge rule asg").verdict
    assert verdict is (Verdict.OK if admitted else Verdict.FAIL)
    assert row(rows, "queue", "policy senders").verdict is Verdict.OK


def test_a_disabled_rule_or_one_for_other_groups_sends_nothing() -> None:
    other = replace(
        GROUP_RULE,
        name="other",
        pattern=json.dumps(
            {"source": ["aws.autoscaling"], "detail": {"AutoScalingGroupName": ["batch-asg"]}}
        ),
    )
    disabled = replace(GROUP_RULE, name="off", enabled=False)

    rows = judge(
        settings(QUEUE_URL), facts(policy={"Statement": allow("*")}, rules=(other, disabled))
    )

    events = row(rows, "queue", "events of group")
    assert events.verdict is Verdict.FAIL
    assert "rule off targets it but is disabled" in events.detail


def test_an_unsubscribed_topic_is_named_with_the_command_that_subscribes_it() -> None:
    base = facts(policy={"Statement": allow("*")})
    assert base.queue is not None
    topic = Topic(TOPIC_ARN, (GROUP,), subscribed=False)

    rows = judge(settings(QUEUE_URL), replace(base, queue=replace(base.queue, topics=(topic,))))

    events = row(rows, "queue", "events of group")
    assert events.verdict is Verdict.FAIL
    assert f"its topic {TOPIC_ARN} has no subscription for this queue" in events.detail
    assert events.fix.startswith(f"aws sns subscribe --topic-arn {TOPIC_ARN} --protocol sqs")


def test_no_queue_configured_is_one_skipped_row() -> None:
    rows = judge(settings(), facts())

    queue = [r for r in rows if r.area == "queue"]
    assert [(r.subject, r.verdict) for r in queue] == [("[sqs] queue_url", Verdict.SKIP)]
    assert "every 60 s" in queue[0].detail


def test_an_identity_that_cannot_be_read() -> None:
    failure = Failure(
        "sts:GetCallerIdentity",
        Trouble.FAILED,
        "InvalidClientTokenId: The security token included in the request is invalid.",
        "check the AWS credentials",
    )

    rows = judge(settings(QUEUE_URL), AwsFacts("env", REGION, "AWS_REGION", identity_error=failure))

    assert row(rows, "aws", "account").fix == "check the AWS credentials"
    assert [r.subject for r in rows if r.verdict is Verdict.FAIL] == ["account"]


def test_no_region() -> None:
    rows = judge(settings(), AwsFacts("env", None))

    region = row(rows, "aws", "region")
    assert region.verdict is Verdict.FAIL
    assert "[aws] region" in region.fix
    assert row(rows, "aws", "account").verdict is Verdict.SKIP


def hook(name: str, transition: str = TERMINATING, timeout: int = 600) -> Hook:
    return Hook(name, transition, timeout, "CONTINUE")


def test_several_unnamed_hooks_complete_none() -> None:
    loaded = settings(QUEUE_URL, terminate_hook="", launch_hook="")
    hooks = (hook("a"), hook("b"))

    rows = judge(loaded, facts(policy={"Statement": allow("*")}, hooks=hooks))

    several = row(rows, "hooks", "terminate hook of 'web-asg' (backend 'api')")
    assert several.verdict is Verdict.FAIL
    assert "('a', 'b') and none named" in several.detail
    assert several.fix == "set terminate_hook = <the one this node completes> in backend 'api'"
    assert "none (optional" in row(rows, "hooks", "launch hook of 'web-asg' (backend 'api')").detail


def test_a_hook_on_the_wrong_transition() -> None:
    hooks = (hook(DRAIN_HOOK, LAUNCHING), hook(LAUNCH_HOOK, LAUNCHING))

    rows = judge(settings(QUEUE_URL), facts(hooks=hooks))

    wrong = row(rows, "hooks", "terminate hook of 'web-asg' (backend 'api')")
    assert wrong.verdict is Verdict.FAIL
    assert f"'{DRAIN_HOOK}' is on {LAUNCHING}" in wrong.detail


def test_a_drain_longer_than_the_hook_relies_on_heartbeats() -> None:
    hooks = (hook(DRAIN_HOOK, timeout=300), hook(LAUNCH_HOOK, LAUNCHING))

    rows = judge(settings(QUEUE_URL, drain_timeout=600), facts(hooks=hooks))

    timeout = row(rows, "hooks", "terminate hook of 'web-asg' (backend 'api'): timeout")
    assert timeout.verdict is Verdict.WARN
    assert "relies on heartbeats" in timeout.detail
    # 10 s to notice + a 600 s drain + 30 s margin, rounded up to the minute.
    assert "--heartbeat-timeout 660 " in timeout.fix


def test_hooks_not_used_is_one_skipped_row() -> None:
    loaded = settings(QUEUE_URL, complete_lifecycle_actions=False)

    rows = judge(loaded, facts())

    assert [(r.subject, r.verdict) for r in rows if r.area == "hooks"] == [
        ("lifecycle hooks", Verdict.SKIP)
    ]
    assert "autoscaling:DescribeLifecycleHooks" not in {r.subject for r in rows}
    assert "CompleteLifecycleAction" not in row(rows, "aws", "sqs:ReceiveMessage").subject
