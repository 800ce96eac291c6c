"""Message classification: every real sample, hand-built shapes, logging fields, and no crashes."""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.messages import (
    ASG,
    ASG_ARN,
    I1,
    I2,
    LAUNCH,
    LAUNCHING,
    REBALANCE,
    SPOT,
    TOPIC_ARN,
    envelope,
    eventbridge,
    lifecycle,
    scaling,
)
from reconciler.core import messages
from reconciler.core.messages import Delivery, Kind, Trigger
from tests.support.corpus import CORPUS, corpus_body


LAUNCH_ERROR = "autoscaling:EC2_INSTANCE_LAUNCH_ERROR"
TERMINATE = "autoscaling:EC2_INSTANCE_TERMINATE"
TERMINATE_ERROR = "autoscaling:EC2_INSTANCE_TERMINATE_ERROR"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"
TEST = "autoscaling:TEST_NOTIFICATION"


class Summary(NamedTuple):
    """The fields of a Trigger that the corpus table pins."""

    kind: Kind
    delivery: Delivery
    group: str | None
    instance: str | None
    event: str
    delete_now: bool


def summary(trigger: Trigger) -> Summary:
    """The pinned fields of *trigger*."""
    return Summary(
        trigger.kind,
        trigger.delivery,
        trigger.group,
        trigger.instance_id,
        trigger.event,
        trigger.delete_now,
    )


EXPECTED = {
    "sns-launch.json": Summary(Kind.SCALING, Delivery.SNS, ASG, I1, LAUNCH, False),
    "sns-launch-raw.json": Summary(Kind.SCALING, Delivery.RAW, ASG, I1, LAUNCH, False),
    "sns-launch-error.json": Summary(Kind.SCALING, Delivery.SNS, ASG, None, LAUNCH_ERROR, False),
    "sns-launch-error-raw.json": Summary(
        Kind.SCALING, Delivery.RAW, ASG, None, LAUNCH_ERROR, False
    ),
    "sns-terminate.json": Summary(Kind.SCALING, Delivery.SNS, ASG, I1, TERMINATE, False),
    "sns-terminate-raw.json": Summary(Kind.SCALING, Delivery.RAW, ASG, I1, TERMINATE, False),
    "sns-terminate-error.json": Summary(
        Kind.SCALING, Delivery.SNS, ASG, I2, TERMINATE_ERROR, False
    ),
    "sns-terminate-error-raw.json": Summary(
        Kind.SCALING, Delivery.RAW, ASG, I2, TERMINATE_ERROR, False
    ),
    "sns-test-notification.json": Summary(Kind.TEST, Delivery.SNS, ASG, None, TEST, True),
    "sns-test-notification-raw.json": Summary(Kind.TEST, Delivery.RAW, ASG, None, TEST, True),
    "sns-subscription-confirmation.json": Summary(
        Kind.SUBSCRIPTION, Delivery.SNS, None, None, "SubscriptionConfirmation", True
    ),
    "lifecycle-launching-sqs.json": Summary(
        Kind.LIFECYCLE, Delivery.RAW, ASG, I1, LAUNCHING, False
    ),
    "lifecycle-launching-sns.json": Summary(
        Kind.LIFECYCLE, Delivery.SNS, ASG, I1, LAUNCHING, False
    ),
    "lifecycle-launching-from-warmpool-sqs.json": Summary(
        Kind.LIFECYCLE, Delivery.RAW, ASG, I2, LAUNCHING, False
    ),
    "lifecycle-terminating-sqs.json": Summary(
        Kind.LIFECYCLE, Delivery.RAW, ASG, I1, TERMINATING, False
    ),
    "lifecycle-terminating-sns.json": Summary(
        Kind.LIFECYCLE, Delivery.SNS, ASG, I1, TERMINATING, False
    ),
    "lifecycle-terminating-sns-raw.json": Summary(
        Kind.LIFECYCLE, Delivery.RAW, ASG, I1, TERMINATING, False
    ),
    "lifecycle-test-notification-sqs.json": Summary(Kind.TEST, Delivery.RAW, ASG, None, TEST, True),
    "lifecycle-test-notification-sns.json": Summary(Kind.TEST, Delivery.SNS, ASG, None, TEST, True),
    "eventbridge-launch-successful.json": Summary(
        Kind.EVENTBRIDGE_ASG,
        Delivery.EVENTBRIDGE,
        ASG,
        I1,
        "EC2 Instance Launch Successful",
        False,
    ),
    "eventbridge-launch-unsuccessful.json": Summary(
        Kind.EVENTBRIDGE_ASG,
        Delivery.EVENTBRIDGE,
        ASG,
        I2,
        "EC2 Instance Launch Unsuccessful",
        False,
    ),
    "eventbridge-terminate-successful.json": Summary(
        Kind.EVENTBRIDGE_ASG,
        Delivery.EVENTBRIDGE,
        ASG,
        I1,
        "EC2 Instance Terminate Successful",
        False,
    ),
    "eventbridge-terminate-unsuccessful.json": Summary(
        Kind.EVENTBRIDGE_ASG,
        Delivery.EVENTBRIDGE,
        ASG,
        I2,
        "EC2 Instance Terminate Unsuccessful",
        False,
    ),
    "eventbridge-launch-lifecycle-action.json": Summary(
        Kind.LIFECYCLE, Delivery.EVENTBRIDGE, ASG, I1, LAUNCHING, False
    ),
    "eventbridge-terminate-lifecycle-action.json": Summary(
        Kind.LIFECYCLE, Delivery.EVENTBRIDGE, ASG, I1, TERMINATING, False
    ),
    "eventbridge-via-sns-launch-successful.json": Summary(
        Kind.EVENTBRIDGE_ASG,
        Delivery.EVENTBRIDGE_VIA_SNS,
        ASG,
        I1,
        "EC2 Instance Launch Successful",
        False,
    ),
    "eventbridge-ec2-state-change-pending.json": Summary(
        Kind.EVENTBRIDGE_EC2, Delivery.EVENTBRIDGE, None, I1, "pending", False
    ),
    "eventbridge-ec2-state-change-running.json": Summary(
        Kind.EVENTBRIDGE_EC2, Delivery.EVENTBRIDGE, None, I1, "running", False
    ),
    "eventbridge-ec2-state-change-shutting-down.json": Summary(
        Kind.EVENTBRIDGE_EC2, Delivery.EVENTBRIDGE, None, I1, "shutting-down", False
    ),
    "eventbridge-ec2-state-change-terminated.json": Summary(
        Kind.EVENTBRIDGE_EC2, Delivery.EVENTBRIDGE, None, I1, "terminated", False
    ),
    "eventbridge-ec2-spot-interruption-warning.json": Summary(
        Kind.SPOT_WARNING,
        Delivery.EVENTBRIDGE,
        None,
        I2,
        "EC2 Spot Instance Interruption Warning",
        False,
    ),
    "eventbridge-ec2-rebalance-recommendation.json": Summary(
        Kind.REBALANCE,
        Delivery.EVENTBRIDGE,
        None,
        I2,
        "EC2 Instance Rebalance Recommendation",
        False,
    ),
}


def corpus_body_or_none(name: str) -> str | None:
    """The SQS body stored in corpus file *name*, or ``None`` when the corpus is absent."""
    path = CORPUS / name
    return path.read_text(encoding="utf-8") if path.is_file() else None


# -- corpus ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"), [pytest.param(n, e, id=n) for n, e in EXPECTED.items()]
)
def test_corpus_sample_is_classified(name: str, expected: Summary) -> None:
    """Each real message body gives the expected kind, delivery, group, instance and event."""
    assert summary(messages.classify(corpus_body(name))) == expected


def test_every_corpus_file_has_an_expectation() -> None:
    """A sample added to the corpus without an entry above fails instead of going untested."""
    if not CORPUS.is_dir():
        pytest.skip(f"message corpus not found at {CORPUS}")
    assert {path.name for path in CORPUS.glob("*.json")} == set(EXPECTED)


@pytest.mark.parametrize(
    ("name", "hook", "token", "origin", "destination"),
    [
        pytest.param(
            "lifecycle-launching-sns.json",
            "haproxy-register",
            "71514b9d-6a40-4b26-8523-05e7ee35fa40",
            "EC2",
            "AutoScalingGroup",
            id="launching-sns",
        ),
        pytest.param(
            "lifecycle-terminating-sqs.json",
            "haproxy-drain",
            "c9f2cd07-a390-4a22-913e-16df11021521",
            "AutoScalingGroup",
            "EC2",
            id="terminating-sqs",
        ),
        pytest.param(
            "lifecycle-launching-from-warmpool-sqs.json",
            "haproxy-register",
            "2e4f6a8c-0b1d-4f3a-9c5e-7d9f1b3d5e7a",
            "WarmPool",
            "AutoScalingGroup",
            id="warm-pool",
        ),
        pytest.param(
            "eventbridge-terminate-lifecycle-action.json",
            "haproxy-drain",
            "c9f2cd07-a390-4a22-913e-16df11021521",
            "AutoScalingGroup",
            "EC2",
            id="eventbridge",
        ),
    ],
)
def test_corpus_lifecycle_action_fields(
    name: str, hook: str, token: str, origin: str, destination: str
) -> None:
    """Lifecycle samples carry what CompleteLifecycleAction needs, and where the instance goes."""
    trigger = messages.classify(corpus_body(name))
    assert (trigger.hook_name, trigger.token) == (hook, token)
    assert (trigger.origin, trigger.destination) == (origin, destination)
    assert trigger.transition == trigger.event


def test_corpus_subscription_confirmation_keeps_the_link() -> None:
    """The confirmation link is kept for the log line, since a person has to visit it."""
    trigger = messages.classify(corpus_body("sns-subscription-confirmation.json"))
    assert trigger.subscribe_url is not None
    assert trigger.subscribe_url.startswith("https://sns.eu-west-1.amazonaws.com/?Action=Confirm")


# -- hand-built shapes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            envelope(
                "You have chosen to subscribe to the topic.\nTo confirm, visit the SubscribeURL.",
                "SubscriptionConfirmation",
                SubscribeURL="https://sns.example/confirm",
            ),
            Summary(Kind.SUBSCRIPTION, Delivery.SNS, None, None, "SubscriptionConfirmation", True),
            id="subscription-confirmation",
        ),
        pytest.param(
            envelope("You have unsubscribed.", "UnsubscribeConfirmation"),
            Summary(Kind.SUBSCRIPTION, Delivery.SNS, None, None, "UnsubscribeConfirmation", True),
            id="unsubscribe-confirmation",
        ),
        pytest.param(
            envelope(json.dumps(scaling()), "SomethingNew"),
            Summary(Kind.UNKNOWN_JSON, Delivery.SNS, None, None, "SomethingNew", True),
            id="other-sns-type-is-deleted",
        ),
        pytest.param(
            envelope(
                eventbridge(
                    "aws.autoscaling",
                    "EC2 Instance Terminate Successful",
                    {"AutoScalingGroupName": ASG, "EC2InstanceId": I2},
                )
            ),
            Summary(
                Kind.EVENTBRIDGE_ASG,
                Delivery.EVENTBRIDGE_VIA_SNS,
                ASG,
                I2,
                "EC2 Instance Terminate Successful",
                False,
            ),
            id="eventbridge-via-sns",
        ),
        pytest.param(
            envelope(
                eventbridge("aws.ec2", "EC2 Instance State-change Notification", {"state": "x"})
            ),
            Summary(Kind.EVENTBRIDGE_EC2, Delivery.EVENTBRIDGE_VIA_SNS, None, None, "x", False),
            id="eventbridge-ec2-via-sns",
        ),
        pytest.param(
            json.dumps(lifecycle(Origin="WarmPool", EC2InstanceId=I2)),
            Summary(Kind.LIFECYCLE, Delivery.RAW, ASG, I2, LAUNCHING, False),
            id="warm-pool-origin",
        ),
        pytest.param(
            "wake up, please",
            Summary(Kind.NOT_JSON, Delivery.RAW, None, None, "", False),
            id="not-json",
        ),
        pytest.param(
            "",
            Summary(Kind.NOT_JSON, Delivery.RAW, None, None, "", False),
            id="empty-body",
        ),
        pytest.param(
            json.dumps([scaling()]),
            Summary(Kind.UNKNOWN_JSON, Delivery.RAW, None, None, "", False),
            id="json-array",
        ),
        pytest.param(
            "null",
            Summary(Kind.UNKNOWN_JSON, Delivery.RAW, None, None, "", False),
            id="json-null",
        ),
        pytest.param(
            envelope("Scale-out of web-asg done"),
            Summary(Kind.NOT_JSON, Delivery.SNS, None, None, "", False),
            id="envelope-with-text-message",
        ),
        pytest.param(
            envelope("[1, 2]"),
            Summary(Kind.UNKNOWN_JSON, Delivery.SNS, None, None, "", False),
            id="envelope-with-array-message",
        ),
        pytest.param(
            json.dumps({"Type": "Notification", "TopicArn": TOPIC_ARN, "Message": {"a": 1}}),
            Summary(Kind.UNKNOWN_JSON, Delivery.SNS, None, None, "", False),
            id="envelope-with-object-message",
        ),
        pytest.param(
            envelope(json.dumps(scaling(Event=LAUNCH_ERROR, EC2InstanceId=""))),
            Summary(Kind.SCALING, Delivery.SNS, ASG, None, LAUNCH_ERROR, False),
            id="empty-instance-id",
        ),
        pytest.param(
            json.dumps(scaling(AutoScalingGroupName=None)),
            Summary(Kind.SCALING, Delivery.RAW, ASG, I1, LAUNCH, False),
            id="asg-arn-only",
        ),
        pytest.param(
            json.dumps(scaling(AutoScalingGroupName="", AutoScalingGroupARN="arn:aws:nothing")),
            Summary(Kind.SCALING, Delivery.RAW, None, I1, LAUNCH, False),
            id="no-usable-group",
        ),
        pytest.param(
            json.dumps(scaling(Event="autoscaling:SOMETHING_ELSE")),
            Summary(
                Kind.UNKNOWN_JSON, Delivery.RAW, None, None, "autoscaling:SOMETHING_ELSE", False
            ),
            id="unknown-asg-event",
        ),
        pytest.param(
            json.dumps({"Type": "Notification", "Message": json.dumps(scaling())}),
            Summary(Kind.UNKNOWN_JSON, Delivery.RAW, None, None, "", False),
            id="type-without-topic-is-no-envelope",
        ),
        pytest.param(
            eventbridge(
                "aws.autoscaling",
                "EC2 Auto Scaling Instance Refresh Started",
                {},
                resources=["arn:aws:ec2:eu-west-1:1:instance/i-1", ASG_ARN],
            ),
            Summary(
                Kind.EVENTBRIDGE_ASG,
                Delivery.EVENTBRIDGE,
                ASG,
                None,
                "EC2 Auto Scaling Instance Refresh Started",
                False,
            ),
            id="eventbridge-group-from-resources",
        ),
        pytest.param(
            eventbridge("aws.ec2", "EBS Volume Notification", {"instance-id": I1}),
            Summary(
                Kind.UNKNOWN_JSON,
                Delivery.EVENTBRIDGE,
                None,
                None,
                "EBS Volume Notification",
                False,
            ),
            id="eventbridge-other-ec2-event",
        ),
        pytest.param(
            eventbridge("my.app", "Deployed", {"AutoScalingGroupName": ASG}),
            Summary(Kind.UNKNOWN_JSON, Delivery.EVENTBRIDGE, None, None, "Deployed", False),
            id="eventbridge-other-source",
        ),
        pytest.param(
            eventbridge("aws.ec2", "EC2 Instance State-change Notification", {}),
            Summary(
                Kind.EVENTBRIDGE_EC2,
                Delivery.EVENTBRIDGE,
                None,
                None,
                "EC2 Instance State-change Notification",
                False,
            ),
            id="eventbridge-state-change-without-state",
        ),
        pytest.param(
            json.dumps(
                {"detail-type": "x", "source": "aws.autoscaling", "detail": "not an object"}
            ),
            Summary(Kind.EVENTBRIDGE_ASG, Delivery.EVENTBRIDGE, None, None, "x", False),
            id="eventbridge-detail-not-an-object",
        ),
    ],
)
def test_hand_built_shape(body: str, expected: Summary) -> None:
    """Shapes missing from the corpus, including malformed ones, classify as documented."""
    assert summary(messages.classify(body)) == expected


@pytest.mark.parametrize(
    ("subject", "message", "kind"),
    [
        pytest.param(
            'Auto Scaling: test notification for group "web-asg"',
            scaling(),
            Kind.SCALING,
            id="test-subject-launch-message",
        ),
        pytest.param(
            'Auto Scaling: launch for group "web-asg"',
            scaling(Event=TEST, EC2InstanceId=None),
            Kind.TEST,
            id="launch-subject-test-message",
        ),
    ],
)
def test_subject_never_decides(subject: str, message: dict[str, object], kind: Kind) -> None:
    """The SNS Subject is informational: the payload's keys alone decide the kind."""
    assert messages.classify(envelope(json.dumps(message), Subject=subject)).kind is kind


def test_lifecycle_in_key_value_lines() -> None:
    """A lifecycle notification in the documented "Key: Value" e-mail format is understood."""
    text = "\n".join(f"{key}: {value}" for key, value in lifecycle().items())
    trigger = messages.classify(envelope(text))
    assert summary(trigger) == Summary(Kind.LIFECYCLE, Delivery.SNS, ASG, I1, LAUNCHING, False)
    assert trigger.hook_name == "haproxy-register"
    assert trigger.token == lifecycle()["LifecycleActionToken"]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("Service: AWS Auto Scaling\nTime: now", id="no-transition"),
        pytest.param("LifecycleTransition: x\nthis line is prose", id="prose-line"),
        pytest.param("LifecycleTransition:", id="empty-transition"),
    ],
)
def test_key_value_fallback_is_strict(text: str) -> None:
    """Text that is not a complete lifecycle notification in "Key: Value" lines stays not JSON."""
    assert messages.classify(envelope(text)).kind is Kind.NOT_JSON


def test_lifecycle_without_origin_or_destination() -> None:
    """Older lifecycle payloads lack Origin and Destination; both are then None."""
    trigger = messages.classify(json.dumps(lifecycle(Origin=None, Destination=None)))
    assert trigger.kind is Kind.LIFECYCLE
    assert (trigger.origin, trigger.destination) == (None, None)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("[" * 100_000, id="deeply-nested"),
        pytest.param("1" * 5000, id="over-long-integer"),
        pytest.param('{"Type": [], "TopicArn": {}}', id="unhashable-type"),
        pytest.param('{"Event": ["x"], "LifecycleTransition": 3}', id="wrongly-typed-values"),
        pytest.param("\x00\ud800", id="control-and-surrogate"),
    ],
)
def test_hostile_bodies_do_not_raise(body: str) -> None:
    """Bodies that break naive parsers classify without raising."""
    assert isinstance(messages.classify(body), Trigger)


# -- interruption warnings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        pytest.param(
            corpus_body_or_none("eventbridge-ec2-spot-interruption-warning.json"),
            Kind.SPOT_WARNING,
            id="spot-corpus",
        ),
        pytest.param(
            eventbridge("aws.ec2", REBALANCE, {"instance-id": I2}), Kind.REBALANCE, id="rebalance"
        ),
        pytest.param(
            envelope(eventbridge("aws.ec2", SPOT, {"instance-id": I2})),
            Kind.SPOT_WARNING,
            id="spot-via-sns",
        ),
        pytest.param(
            eventbridge("aws.ec2", SPOT, {"instance-id": "i-0fedcba9"}),
            Kind.SPOT_WARNING,
            id="short-id",
        ),
    ],
)
def test_well_formed_warning_names_its_instance(body: str | None, kind: Kind) -> None:
    """From ``aws.ec2``, with the exact detail-type and an instance id: the instance is named."""
    if body is None:
        pytest.skip(f"message corpus not found at {CORPUS}")
    trigger = messages.classify(body)
    assert trigger.kind is kind
    assert trigger.untrusted is None
    assert trigger.interrupted == trigger.instance_id
    assert trigger.interrupted in (I2, "i-0fedcba9")


@pytest.mark.parametrize(
    ("body", "instance", "problem"),
    [
        pytest.param(
            eventbridge("custom.forger", SPOT, {"instance-id": I2}), I2, "source", id="other-source"
        ),
        pytest.param(
            eventbridge("aws.autoscaling", SPOT, {"instance-id": I2}, resources=[ASG_ARN]),
            I2,
            "source",
            id="autoscaling-source",
        ),
        pytest.param(
            envelope(eventbridge("my.app", REBALANCE, {"instance-id": I2})),
            I2,
            "source",
            id="other-source-via-sns",
        ),
        pytest.param(eventbridge("aws.ec2", SPOT, {}), None, "instance-id", id="no-instance"),
        pytest.param(
            eventbridge("aws.ec2", SPOT, {"instance-id": 42}), None, "instance-id", id="not-text"
        ),
        pytest.param(
            eventbridge("aws.ec2", REBALANCE, {"instance-id": "i-1"}),
            None,
            "instance-id",
            id="too-short",
        ),
        pytest.param(
            eventbridge("aws.ec2", SPOT, {"instance-id": I2.upper().replace("I-", "i-")}),
            None,
            "instance-id",
            id="upper-case-hex",
        ),
        pytest.param(
            eventbridge("aws.ec2", SPOT, {"instance-id": I2 + "0"}),
            None,
            "instance-id",
            id="eighteen-digits",
        ),
        pytest.param(
            eventbridge("aws.ec2", SPOT, {"instance-id": f"{I1}\nset server api/x state drain"}),
            None,
            "instance-id",
            id="newline-command",
        ),
        pytest.param(
            eventbridge("aws.ec2", SPOT, {"instance-id": " " + I2}),
            None,
            "instance-id",
            id="leading-space",
        ),
        pytest.param(
            eventbridge("aws.ec2", SPOT, "not an object"), None, "instance-id", id="detail-text"
        ),
    ],
)
def test_malformed_warning_names_no_instance_to_drain(
    body: str, instance: str | None, problem: str
) -> None:
    """
    A body that claims to be a warning but comes from another source or names no valid instance
    id is still a warning to log, but untrusted: nothing to drain, and its reason says why,
    quoting the claim without any control character.
    """
    trigger = messages.classify(body)
    assert trigger.kind in messages.INTERRUPTIONS
    assert trigger.interrupted is None
    assert trigger.instance_id == instance
    assert trigger.untrusted is not None
    assert problem in trigger.untrusted
    assert trigger.untrusted.isprintable()
    assert len(trigger.untrusted) < 120
    assert messages.fields(trigger)["untrusted"] == trigger.untrusted


@pytest.mark.parametrize(
    "detail_type",
    ["EC2 Spot Instance Interruption warning", "EC2 Spot Instance Interruption Warning ", "Spot"],
)
def test_near_miss_detail_type_is_no_warning(detail_type: str) -> None:
    """Only the exact detail-types are warnings; anything close is an unknown event."""
    trigger = messages.classify(eventbridge("aws.ec2", detail_type, {"instance-id": I2}))
    assert trigger.kind is Kind.UNKNOWN_JSON
    assert trigger.interrupted is None


def test_untrusted_claim_is_cut_short() -> None:
    """A huge forged instance id is quoted only in part."""
    trigger = messages.classify(eventbridge("aws.ec2", SPOT, {"instance-id": "i-" + "0" * 100_000}))
    assert trigger.untrusted is not None
    assert len(trigger.untrusted) < 120


# -- logging ---------------------------------------------------------------------------------------


def test_fields_show_optional_values_only_when_set() -> None:
    """Hook, origin, destination and the confirmation link appear only when the message had them."""
    plain = messages.fields(Trigger(Kind.NOT_JSON, Delivery.RAW))
    assert plain == {
        "kind": "not_json",
        "delivery": "raw",
        "group": "-",
        "instance": "-",
        "event": "-",
    }
    hook = messages.fields(messages.classify(json.dumps(lifecycle(Origin="WarmPool"))))
    assert hook["hook"] == "haproxy-register"
    assert (hook["origin"], hook["destination"]) == ("WarmPool", "AutoScalingGroup")
    assert "token" not in hook
    confirmation = envelope("text", "SubscriptionConfirmation", SubscribeURL="https://x/confirm")
    assert messages.fields(messages.classify(confirmation))["subscribe_url"] == "https://x/confirm"


# -- properties ------------------------------------------------------------------------------------


def assert_well_formed(trigger: Trigger) -> None:
    """Invariants every classification keeps, whatever the input."""
    assert trigger.group is None or trigger.group
    assert trigger.instance_id is None or trigger.instance_id
    if trigger.delete_now:
        assert trigger.kind in (Kind.TEST, Kind.SUBSCRIPTION, Kind.UNKNOWN_JSON)
    if trigger.kind is Kind.LIFECYCLE:
        assert trigger.transition == trigger.event
    if trigger.interrupted is not None:
        assert trigger.kind in messages.INTERRUPTIONS
        assert trigger.untrusted is None
        assert re.fullmatch(r"i-([0-9a-f]{8}|[0-9a-f]{17})", trigger.interrupted)
    assert trigger.untrusted is None or trigger.untrusted.isprintable()
    assert messages.fields(trigger)


JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
REAL_KEYS = (
    "Type",
    "TopicArn",
    "Subject",
    "Message",
    "SubscribeURL",
    "Event",
    "LifecycleTransition",
    "LifecycleHookName",
    "LifecycleActionToken",
    "Origin",
    "Destination",
    "AutoScalingGroupName",
    "AutoScalingGroupARN",
    "EC2InstanceId",
    "version",
    "detail-type",
    "source",
    "detail",
    "resources",
    "instance-id",
    "state",
)
REAL_VALUES = st.sampled_from(
    [
        "Notification",
        "SubscriptionConfirmation",
        "UnsubscribeConfirmation",
        TOPIC_ARN,
        TEST,
        LAUNCH,
        LAUNCH_ERROR,
        LAUNCHING,
        TERMINATING,
        "aws.autoscaling",
        "aws.ec2",
        "EC2 Instance State-change Notification",
        "EC2 Spot Instance Interruption Warning",
        "EC2 Instance Rebalance Recommendation",
        "EC2 Instance Launch Successful",
        ASG,
        ASG_ARN,
        ":autoScalingGroupName/",
        I1,
        "",
        "WarmPool",
    ]
)
REAL_DOCS = st.recursive(
    st.dictionaries(st.sampled_from(REAL_KEYS), REAL_VALUES | JSON_SCALARS),
    lambda inner: st.dictionaries(
        st.sampled_from(REAL_KEYS),
        REAL_VALUES | JSON_SCALARS | inner | inner.map(json.dumps) | st.lists(REAL_VALUES | inner),
    ),
    max_leaves=25,
)

# Both keys must be present to reach the EventBridge branch, which random subsets rarely give.
EVENTBRIDGE_DOCS = st.fixed_dictionaries(
    {
        "detail-type": st.sampled_from(
            [
                "EC2 Instance State-change Notification",
                "EC2 Spot Instance Interruption Warning",
                "EC2 Instance Rebalance Recommendation",
                "EC2 Instance-launch Lifecycle Action",
            ]
        )
        | JSON_SCALARS,
        "source": st.sampled_from(["aws.autoscaling", "aws.ec2"]) | JSON_SCALARS,
    },
    optional={"detail": REAL_DOCS | JSON_VALUES, "resources": st.lists(REAL_VALUES) | JSON_VALUES},
)


@given(st.text())
def test_arbitrary_text_never_raises(body: str) -> None:
    """Any text classifies without raising."""
    assert_well_formed(messages.classify(body))


@given(JSON_VALUES)
def test_arbitrary_json_never_raises(value: Any) -> None:
    """Any JSON value classifies without raising."""
    assert_well_formed(messages.classify(json.dumps(value)))


@given(REAL_DOCS | EVENTBRIDGE_DOCS)
def test_random_mixes_of_real_keys_never_raise(doc: dict[str, Any]) -> None:
    """Objects made of the keys the classifier reads, with real and odd values, never raise."""
    assert_well_formed(messages.classify(json.dumps(doc)))
    assert_well_formed(messages.classify(envelope(json.dumps(doc))))


@given(st.dictionaries(st.sampled_from(REAL_KEYS), REAL_VALUES | st.text(max_size=30)))
def test_random_key_value_lines_never_raise(pairs: dict[str, str]) -> None:
    """Any "Key: Value" text classifies without raising."""
    text = "\n".join(f"{key}: {value}" for key, value in pairs.items())
    assert_well_formed(messages.classify(envelope(text)))
