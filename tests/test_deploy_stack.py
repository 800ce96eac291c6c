"""
The CloudFormation stack of ``deploy/aws`` (one HAProxy node) as a user deploys it: CreateStack
into the moto server, what it made, and the controller run with the settings the stack prints
(``ConfigLines`` pasted as printed, ``BackendLines`` in the backend), woken by events that go
through the stack's own EventBridge rule into its queue.

moto applies no transform, so the template is handed over after ``AWS::LanguageExtensions`` has
been applied by cfn-lint's implementation of it, the one ``make lint`` validates the template
with (it expands ``Fn::ForEach`` from the list parameter's default, which is set to the groups
deployed). moto's CloudFormation has no ``AWS::AutoScaling::LifecycleHook``,
``AWS::SQS::QueuePolicy`` or ``AWS::SNS::Subscription`` and skips them (``NOT_CREATED_BY_MOTO``,
asserted, so a moto that learns one of them fails here and the README note is updated). What
those resources say is checked on the template instead: the queue policy admits exactly the
producers that target the queue; the hooks carry the names ``BackendLines`` gives the
controller, which then completes them once the test has created them with the hook resources'
own properties (``PutLifecycleHook`` takes the same names), as CloudFormation would.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from cfnlint.decode import decode
from cfnlint.template import Template
from cfnlint.template.transforms import Transform

from harness.haproxy import (
    HEALTH_CHECK,
    BackendSpec,
    HAProxyFactory,
    HTTPBackends,
    free_port,
    wait_for,
)
from harness.lifecycle import calls, released_after_drain, witness_haproxy
from harness.moto import MOTO_KEY, REGION, TERMINATING, Cloud
from harness.stack import (
    BACKEND,
    CHECK_TIMEOUT,
    GROUP,
    HAND_WRITTEN,
    Daemons,
    Stack,
    Value,
)
from tests.support.daemon import DEADLINE, controller


pytestmark = [
    pytest.mark.integration,
    # moto warns (from its server thread) at each resource type it skips; asserted below instead.
    pytest.mark.filterwarnings("ignore:Tried to parse AWS:UserWarning"),
]

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "deploy" / "aws" / "reconciler-node.yaml"
NODE = "node-a"
#: A second group this node serves, and one it does not.
OTHER_GROUP = "web-asg"
STRANGER = "batch-asg"
NOT_CREATED_BY_MOTO = frozenset(
    {"AWS::AutoScaling::LifecycleHook", "AWS::SQS::QueuePolicy", "AWS::SNS::Subscription"}
)
OIDC_PROVIDER = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/EX1"
#: The queue's own ARN as the template writes it.
QUEUE_ARN = {"Fn::GetAtt": ["Queue", "Arn"]}


# -- the template, expanded and deployed -----------------------------------------------------------


def template() -> dict[str, Any]:
    """The template as cfn-lint reads it: short tags (``!Sub``) in their long form."""
    body, problems = decode(str(TEMPLATE))
    assert not problems, problems
    assert body is not None
    return dict(body)


def expanded(groups: Sequence[str]) -> dict[str, Any]:
    """The template after ``AWS::LanguageExtensions``, as CloudFormation expands it for *groups*."""
    body = template()
    body["Parameters"]["GroupNames"]["Default"] = ",".join(groups)
    lint = Template(str(TEMPLATE), body, [REGION])
    problems = Transform().transform(lint)
    assert not problems, problems
    result = dict(lint.template)
    del result["Transform"]
    return result


@dataclass(frozen=True)
class Deployed:
    """A stack moto has created."""

    #: What moto was given: the expanded template, and the parameters.
    body: dict[str, Any]
    parameters: dict[str, str]
    outputs: dict[str, str]
    #: Logical id → (type, physical id) of each resource moto created.
    created: dict[str, tuple[str, str]]

    def values(self) -> dict[str, str]:
        """Every parameter's value: given, or else its default."""
        return {
            name: str(declared.get("Default", ""))
            for name, declared in self.body["Parameters"].items()
        } | self.parameters

    def skipped(self) -> dict[str, str]:
        """Logical id → type of each resource the template declares and moto did not create."""
        parameters = self.values()
        declared = self.body["Conditions"]
        conditions = {name: holds(declared[name], parameters, declared) for name in declared}
        return {
            logical: resource["Type"]
            for logical, resource in self.body["Resources"].items()
            if logical not in self.created and conditions.get(resource.get("Condition"), True)
        }


def holds(
    condition: Mapping[str, Any], parameters: Mapping[str, str], declared: Mapping[str, Any]
) -> bool:
    """
    Whether a condition holds: ``Fn::Equals``, ``Fn::Not``, ``Fn::And`` and ``Condition`` (the
    name of one of *declared*), all the template uses.
    """
    ((function, arguments),) = condition.items()
    if function == "Condition":
        return holds(declared[arguments], parameters, declared)
    if function in {"Fn::Not", "Fn::And"}:
        each = [holds(argument, parameters, declared) for argument in arguments]
        return not each[0] if function == "Fn::Not" else all(each)
    assert function == "Fn::Equals", function
    left, right = (resolved(argument, parameters) for argument in arguments)
    return bool(left == right)


def client(cloud: Cloud, service: str) -> Any:
    """A boto3 client of *service* talking to the moto server only."""
    session = boto3.session.Session(
        aws_access_key_id=MOTO_KEY, aws_secret_access_key=MOTO_KEY, region_name=cloud.region
    )
    return session.client(service, endpoint_url=cloud.endpoint, config=Config(proxies={}))


def deploy(cloud: Cloud, groups: Sequence[str], **parameters: str) -> Deployed:
    """CreateStack ``haproxy-<NodeName>`` for *groups*, wait for CREATE_COMPLETE."""
    body = expanded(groups)
    values = {"NodeName": NODE, "GroupNames": ",".join(groups), **parameters}
    name = f"haproxy-{values['NodeName']}"
    cloudformation = client(cloud, "cloudformation")
    cloudformation.create_stack(
        StackName=name,
        TemplateBody=json.dumps(body),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in values.items()],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
    )
    waiter = cloudformation.get_waiter("stack_create_complete")
    waiter.wait(StackName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 20})
    (stack,) = cloudformation.describe_stacks(StackName=name)["Stacks"]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    resources = cloudformation.describe_stack_resources(StackName=name)["StackResources"]
    return Deployed(
        body=body,
        parameters=values,
        outputs={o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]},
        # moto lists the resources it skipped too, without a logical id.
        created={
            r["LogicalResourceId"]: (r["ResourceType"], r["PhysicalResourceId"])
            for r in resources
            if "LogicalResourceId" in r
        },
    )


def resolved(value: Any, parameters: Mapping[str, str]) -> Any:
    """*value* with the ``Ref`` and ``Fn::Sub`` of parameters replaced (all a hook uses)."""
    if isinstance(value, dict) and set(value) == {"Ref"}:
        return parameters[value["Ref"]]
    if isinstance(value, dict) and set(value) == {"Fn::Sub"}:
        return re.sub(r"\$\{(\w+)\}", lambda m: parameters[m[1]], value["Fn::Sub"])
    return value


def hooks(deployed: Deployed, group: str) -> dict[str, dict[str, Any]]:
    """Transition → the properties of *group*'s lifecycle hook of that transition, resolved."""
    parameters = deployed.values()
    found = [
        {key: resolved(value, parameters) for key, value in resource["Properties"].items()}
        for resource in deployed.body["Resources"].values()
        if resource["Type"] == "AWS::AutoScaling::LifecycleHook"
    ]
    return {h["LifecycleTransition"]: h for h in found if h["AutoScalingGroupName"] == group}


def put_event(cloud: Cloud, source: str, detail_type: str, detail: Mapping[str, Any]) -> None:
    """Send an event to the default bus, as AWS does (moto accepts ``aws.*`` sources)."""
    entry = {"Source": source, "DetailType": detail_type, "Detail": json.dumps(detail)}
    reply = client(cloud, "events").put_events(Entries=[entry])
    assert reply["FailedEntryCount"] == 0, reply


def drained(cloud: Cloud, queue_url: str) -> list[dict[str, Any]]:
    """Every message in the queue (parsed), deleted."""
    bodies = []
    while True:
        reply = cloud.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
        messages = reply.get("Messages", [])
        if not messages:
            return bodies
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            cloud.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def statements(document: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Sid → statement of a policy document."""
    return {s["Sid"]: s for s in document["Statement"]}


def actions(statement: Mapping[str, Any]) -> frozenset[str]:
    """A statement's actions, one or a list."""
    action = statement["Action"]
    return frozenset([action] if isinstance(action, str) else action)


def granted(cloud: Cloud, outputs: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Sid → statement of the stack's policies (ControllerPolicyArn, PreflightPolicyArn)."""
    iam = client(cloud, "iam")
    found = {}
    for output in ("ControllerPolicyArn", "PreflightPolicyArn"):
        if output in outputs:
            arn = outputs[output]
            version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
            document = iam.get_policy_version(PolicyArn=arn, VersionId=version)
            found.update(statements(document["PolicyVersion"]["Document"]))
    return found


# -- what the stack creates ------------------------------------------------------------------------


def test_stack_creates_the_queue_rules_topic_policy_and_role(cloud: Cloud) -> None:
    """Every part moto can create, as the controller and the README need it."""
    deployed = deploy(cloud, [GROUP, OTHER_GROUP], SnsTopic="true")
    out = deployed.outputs

    assert deployed.skipped() == {
        "QueuePolicy": "AWS::SQS::QueuePolicy",
        "TopicSubscription": "AWS::SNS::Subscription",
        **{
            f"{kind}Hook{re.sub('[^0-9a-zA-Z]', '', group)}": "AWS::AutoScaling::LifecycleHook"
            for kind in ("Launch", "Terminate")
            for group in (GROUP, OTHER_GROUP)
        },
    }
    assert set(deployed.skipped().values()) == NOT_CREATED_BY_MOTO

    queue = cloud.sqs.get_queue_attributes(QueueUrl=out["QueueUrl"], AttributeNames=["All"])
    dead = cloud.sqs.get_queue_attributes(
        QueueUrl=out["DeadLetterQueueUrl"], AttributeNames=["All"]
    )
    attributes, dead_attributes = queue["Attributes"], dead["Attributes"]
    assert attributes["QueueArn"] == out["QueueArn"]
    assert out["QueueArn"].endswith(f":haproxy-{NODE}")
    assert json.loads(attributes["RedrivePolicy"]) == {
        "deadLetterTargetArn": dead_attributes["QueueArn"],
        "maxReceiveCount": 10,
    }
    assert int(dead_attributes["MessageRetentionPeriod"]) > int(
        attributes["MessageRetentionPeriod"]
    )

    events = client(cloud, "events")
    rules = {
        rule["Name"]: rule for rule in events.list_rules(NamePrefix=f"haproxy-{NODE}")["Rules"]
    }
    assert json.loads(rules[f"haproxy-{NODE}-asg"]["EventPattern"])["detail"] == {
        "AutoScalingGroupName": [GROUP, OTHER_GROUP]
    }
    assert json.loads(rules[f"haproxy-{NODE}-ec2"]["EventPattern"])["detail-type"] == [
        "EC2 Spot Instance Interruption Warning",
        "EC2 Instance Rebalance Recommendation",
    ]
    for name in rules:
        targets = events.list_targets_by_rule(Rule=name)["Targets"]
        assert [t["Arn"] for t in targets] == [out["QueueArn"]]
    assert events.list_rule_names_by_target(TargetArn=out["QueueArn"])["RuleNames"] == sorted(rules)

    assert cloud.sns.get_topic_attributes(TopicArn=out["TopicArn"])["Attributes"]
    for name in (GROUP, OTHER_GROUP):
        assert name in out["NotificationCommand"].split("; do")[0]
    assert f"--topic-arn {out['TopicArn']} " in out["NotificationCommand"]

    iam = client(cloud, "iam")
    role_name = out["ControllerRoleArn"].rsplit("/", 1)[1]
    attached = iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"]
    assert {p["PolicyArn"] for p in attached} == {
        out["ControllerPolicyArn"],
        out["PreflightPolicyArn"],
    }
    trust = iam.get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"] == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ]
    profile = iam.get_instance_profile(InstanceProfileName=out["InstanceProfileName"])
    assert [r["RoleName"] for r in profile["InstanceProfile"]["Roles"]] == [role_name]

    policy = granted(cloud, out)
    assert policy["ConsumeTriggerQueue"]["Resource"] == out["QueueArn"]
    assert policy["CompleteHooksOnOwnAsgOnly"]["Resource"] == [
        f"arn:*:autoscaling:*:*:autoScalingGroup:*:autoScalingGroupName/{name}"
        for name in (GROUP, OTHER_GROUP)
    ]
    region_only = {"StringEquals": {"aws:RequestedRegion": REGION}}
    for sid in ("ReadAsgAndInstances", "ReadHooks", "CompleteHooksOnOwnAsgOnly", "Preflight"):
        assert policy[sid]["Condition"] == region_only, sid


def test_settings_lines_name_the_queue_and_the_hooks(cloud: Cloud) -> None:
    """ConfigLines and BackendLines are TOML naming what the stack made, hooks included."""
    deployed = deploy(cloud, [GROUP, OTHER_GROUP], HeartbeatTimeout="600")
    out = deployed.outputs

    assert tomllib.loads(out["ConfigLines"]) == {
        "aws": {"region": REGION},
        "sqs": {"queue_url": out["QueueUrl"]},
    }
    backend = tomllib.loads(out["BackendLines"])
    assert backend["complete_lifecycle_actions"] is True
    for name in (GROUP, OTHER_GROUP):
        made = hooks(deployed, name)
        assert made.keys() == {"autoscaling:EC2_INSTANCE_LAUNCHING", TERMINATING}
        assert (
            made["autoscaling:EC2_INSTANCE_LAUNCHING"]["LifecycleHookName"]
            == (backend["launch_hook"])
        )
        assert made[TERMINATING]["LifecycleHookName"] == backend["terminate_hook"]
        for hook in made.values():
            assert (hook["DefaultResult"], hook["HeartbeatTimeout"]) == ("CONTINUE", "600")


def test_rules_deliver_only_the_groups_events_and_spot_warnings(cloud: Cloud) -> None:
    """Through moto's EventBridge: the groups' events and Spot warnings arrive, nothing else."""
    out = deploy(cloud, [GROUP, OTHER_GROUP]).outputs
    launch = "EC2 Instance Launch Successful"
    for group in (GROUP, STRANGER):
        put_event(cloud, "aws.autoscaling", launch, {"AutoScalingGroupName": group})
    put_event(
        cloud,
        "aws.autoscaling",
        "EC2 Instance-terminate Lifecycle Action",
        {"AutoScalingGroupName": OTHER_GROUP, "LifecycleTransition": TERMINATING},
    )
    for detail_type in (
        "EC2 Spot Instance Interruption Warning",
        "EC2 Instance State-change Notification",
    ):
        put_event(cloud, "aws.ec2", detail_type, {"instance-id": "i-0123456789abcdef0"})

    arrived = sorted(
        (event["detail-type"], event["detail"].get("AutoScalingGroupName", ""))
        for event in drained(cloud, out["QueueUrl"])
    )

    assert arrived == [
        ("EC2 Instance Launch Successful", GROUP),
        ("EC2 Instance-terminate Lifecycle Action", OTHER_GROUP),
        ("EC2 Spot Instance Interruption Warning", ""),
    ]


def test_kubernetes_role_shared_by_two_nodes(cloud: Cloud) -> None:
    """
    With an OIDC provider: a role for that service account, no instance profile (and the Spot
    rule and Preflight policy switched off). A second node's stack attaches its policy to that
    same role, as a StatefulSet's pods share one service account.
    """
    first = deploy(
        cloud,
        [GROUP],
        OidcProviderArn=OIDC_PROVIDER,
        SpotEvents="false",
        PreflightPermissions="false",
    )
    role_name = first.outputs["ControllerRoleName"]
    second = deploy(cloud, [GROUP], NodeName="node-b", ExistingRoleName=role_name)

    assert set(first.skipped().values()) == NOT_CREATED_BY_MOTO - {"AWS::SNS::Subscription"}
    assert {kind for kind, _ in first.created.values()} == {
        "AWS::SQS::Queue",
        "AWS::Events::Rule",
        "AWS::IAM::ManagedPolicy",
        "AWS::IAM::Role",
    }
    assert {"AWS::IAM::Role", "AWS::IAM::InstanceProfile"}.isdisjoint(
        kind for kind, _ in second.created.values()
    )
    absent = {"InstanceProfileName", "PreflightPolicyArn", "TopicArn", "NotificationCommand"}
    assert absent.isdisjoint(first.outputs)
    assert {"ControllerRoleArn", "ControllerRoleName"}.isdisjoint(second.outputs)
    iam = client(cloud, "iam")
    role = iam.get_role(RoleName=role_name)["Role"]
    assert role["Arn"] == first.outputs["ControllerRoleArn"]
    issuer = OIDC_PROVIDER.split("oidc-provider/")[1]
    assert role["AssumeRolePolicyDocument"]["Statement"] == [
        {
            "Effect": "Allow",
            "Principal": {"Federated": OIDC_PROVIDER},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {
                "StringEquals": {
                    f"{issuer}:sub": "system:serviceaccount:default:haproxy-asg-reconciler",
                    f"{issuer}:aud": "sts.amazonaws.com",
                }
            },
        }
    ]
    attached = iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"]
    assert {p["PolicyArn"] for p in attached} == {
        first.outputs["ControllerPolicyArn"],
        second.outputs["ControllerPolicyArn"],
        second.outputs["PreflightPolicyArn"],
    }
    assert "Preflight" not in granted(cloud, first.outputs)


# -- what moto cannot create, checked on the template ----------------------------------------------


def unwrapped(value: Any) -> tuple[str | None, Any]:
    """``(condition, value)`` of ``Fn::If [condition, value, AWS::NoValue]``; ``(None, value)``."""
    if isinstance(value, dict) and set(value) == {"Fn::If"}:
        condition, then, otherwise = value["Fn::If"]
        assert otherwise == {"Ref": "AWS::NoValue"}
        return condition, then
    return None, value


def source_arns(statement: Mapping[str, Any], condition: str | None) -> set[tuple[str | None, str]]:
    """``(condition, ARN as JSON)`` of each ``aws:SourceArn`` of *statement* (under *condition*)."""
    (arns,) = [test["aws:SourceArn"] for test in statement["Condition"].values()]
    listed = [unwrapped(arn) for arn in (arns if isinstance(arns, list) else [arns])]
    return {(condition or own, json.dumps(arn)) for own, arn in listed}


def test_queue_policy_admits_exactly_the_producers_that_target_the_queue() -> None:
    """
    Each rule targeting the queue and the topic subscribed to it is admitted by an Allow on its
    ``aws:SourceArn`` under the same condition as the producer itself, and excepted from the
    Deny, which has no other exception.
    """
    resources = {k: v for k, v in template()["Resources"].items() if isinstance(v, dict)}
    producers = {
        (resource.get("Condition"), json.dumps({"Fn::GetAtt": [logical, "Arn"]}))
        for logical, resource in resources.items()
        if resource["Type"] == "AWS::Events::Rule"
        and QUEUE_ARN in [t["Arn"] for t in resource["Properties"]["Targets"]]
    } | {
        (resource.get("Condition"), json.dumps(resource["Properties"]["TopicArn"]))
        for resource in resources.values()
        if resource["Type"] == "AWS::SNS::Subscription"
        and resource["Properties"]["Endpoint"] == QUEUE_ARN
    }
    policy = resources["QueuePolicy"]["Properties"]
    assert policy["Queues"] == [{"Ref": "Queue"}]
    allowed, denied = set(), set()
    for condition, statement in map(unwrapped, policy["PolicyDocument"]["Statement"]):
        assert (statement["Action"], statement["Resource"]) == ("sqs:SendMessage", QUEUE_ARN)
        if statement["Effect"] == "Allow":
            assert list(statement["Condition"]) == ["ArnEquals"]
            assert list(statement["Principal"]) == ["Service"]
            allowed |= source_arns(statement, condition)
        else:
            assert list(statement["Condition"]) == ["ArnNotEquals"]
            assert statement["Principal"] == "*"
            denied |= source_arns(statement, condition)
    assert allowed == producers
    assert denied == producers


def test_hooks_complete_without_a_notification_target() -> None:
    """The hooks' events reach the queue through the rule: no target, no role to pass."""
    (loop,) = [v for k, v in template()["Resources"].items() if k.startswith("Fn::ForEach::")]
    _, collection, bodies = loop
    assert collection == {"Ref": "GroupNames"}
    for resource in bodies.values():
        assert resource["Properties"]["DefaultResult"] == "CONTINUE"
        assert {"NotificationTargetARN", "RoleARN"}.isdisjoint(resource["Properties"])


def readme_statements() -> dict[str, frozenset[str]]:
    """Sid → actions of every statement in the README's "IAM policy" section."""
    text = (ROOT / "README.md").read_text()
    section = re.search(r"(?ms)^#+ IAM policy$(.*?)^#", text)
    assert section, "README has no IAM policy section"
    found: dict[str, frozenset[str]] = {}
    for block in re.findall(r"(?s)```json\n(.*?)```", section[1]):
        doc = json.loads(block)
        listed = doc.get("Statement", [doc]) if isinstance(doc, dict) else doc
        found.update({s["Sid"]: actions(s) for s in listed})
    return found


def test_policy_grants_exactly_the_readme_actions(cloud: Cloud) -> None:
    """
    The stack's policy and README "IAM policy" cannot drift apart: the same statements with the
    same actions, save the optional Preflight statement, compared when the README lists it.
    """
    out = deploy(cloud, [GROUP]).outputs
    stack = {sid: actions(s) for sid, s in granted(cloud, out).items()}
    readme = readme_statements()

    assert set(readme) <= set(stack)
    assert set(stack) - set(readme) <= {"Preflight"}
    assert {sid: stack[sid] for sid in readme} == readme


# -- the controller with the stack's settings ------------------------------------------------------


class Pasted(Stack):
    """The usual stack, whose settings file ends with the stack's ConfigLines as printed."""

    pasted = ""

    def write_settings(
        self, backend: Mapping[str, Value] | None = None, **sections: Mapping[str, Value]
    ) -> None:
        """The usual settings, then the pasted lines."""
        super().write_settings(backend, **sections)
        with self.settings.open("a") as file:
            file.write(f"\n{self.pasted}")


@pytest.fixture(name="pasted")
def _pasted(
    cloud: Cloud, haproxy_factory: HAProxyFactory, http_backends: HTTPBackends, tmp_path: Path
) -> Pasted:
    """Two InService instances serving, HAProxy with only a hand-written backup server."""
    cloud.create_group(GROUP, 2)
    haproxy = haproxy_factory(
        BackendSpec(BACKEND, lines=(HEALTH_CHECK, CHECK_TIMEOUT), servers=(HAND_WRITTEN,))
    )
    stack = Pasted(cloud, haproxy, http_backends, tmp_path / "reconciler.toml", free_port())
    stack.serve_instances()
    return stack


def test_controller_converges_with_the_stack_settings(pasted: Pasted, daemons: Daemons) -> None:
    """
    Deploy for the stack's group, paste the settings lines, start the controller (no periodic
    resync: only the queue wakes it). A launch event through the rule gets the new instance
    served; a terminate lifecycle action through the rule drains the instance, then completes
    this node's terminate hook.
    """
    cloud = pasted.cloud
    deployed = deploy(cloud, [GROUP])
    for hook in hooks(deployed, GROUP).values():
        cloud.put_lifecycle_hook(
            GROUP,
            hook["LifecycleHookName"],
            hook["LifecycleTransition"],
            heartbeat_timeout=int(hook["HeartbeatTimeout"]),
        )
    witness_haproxy(pasted)
    pasted.pasted = deployed.outputs["ConfigLines"]
    backend = tomllib.loads(deployed.outputs["BackendLines"])
    daemons.start(pasted, backend, controller=controller())
    wait_for(pasted.converged, "the first convergence", DEADLINE)

    (new,) = pasted.scale_to(3)
    detail = {"AutoScalingGroupName": GROUP, "EC2InstanceId": new}
    put_event(cloud, "aws.autoscaling", "EC2 Instance Launch Successful", detail)
    wait_for(lambda: new in pasted.serving(), f"{new} served", DEADLINE)

    leaving = sorted(pasted.servers)[0]
    cloud.begin_scale_in(GROUP, [leaving])
    action = {
        "AutoScalingGroupName": GROUP,
        "EC2InstanceId": leaving,
        "LifecycleHookName": backend["terminate_hook"],
        "LifecycleTransition": TERMINATING,
        "LifecycleActionToken": "71514b9d-6a40-4b26-8523-05e7ee35fa40",
        "Origin": "AutoScalingGroup",
        "Destination": "EC2",
    }
    put_event(cloud, "aws.autoscaling", "EC2 Instance-terminate Lifecycle Action", action)
    wait_for(lambda: calls(cloud), "the terminate hook's completion", DEADLINE)

    (call,) = calls(cloud)
    assert (call["group"], call["hook"], call["instance_id"], call["result"]) == (
        GROUP,
        backend["terminate_hook"],
        leaving,
        "CONTINUE",
    )
    assert released_after_drain(call)
    wait_for(pasted.converged, "convergence after the scale-in", DEADLINE)
    assert leaving not in pasted.states()
