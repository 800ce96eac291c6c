"""
What an SQS message body says, as far as the controller cares.

A message is only a wake-up: whatever it says, the next cycle re-reads AWS. ``classify`` turns a
body into a ``Trigger`` for three uses only: one log line per message (``fields`` / ``describe``),
the choice of Auto Scaling groups to reconcile (``scope``), and whether the message can be deleted
at once (``Trigger.delete_now``). Lifecycle messages also carry what ``CompleteLifecycleAction``
needs, for when the controller completes hooks.

The one claim no API can check in advance is a Spot interruption warning (or rebalance
recommendation): it names an instance to drain. Only the exact shape EC2 sends names one
(``Trigger.interrupted``); any other body with such a ``detail-type`` is an untrusted claim
(``Trigger.untrusted`` says why), logged and otherwise ignored. Even a well-formed warning is
acted on only for an instance that DescribeInstances calls a Spot instance of a managed group.

Every shape that can reach the queue is handled (see the AWS notes, "Classification rule"): ASG
notifications through SNS with and without raw delivery, lifecycle hooks aimed at SQS or SNS,
EventBridge events direct or through SNS, SNS subscription confirmations, and anything else a
person or another producer sends. Classification looks at the payload's keys only, never at the
SNS ``Subject``, and never raises: an unexpected body is a wake-up for every group.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.core.model import is_instance_id


TEST_EVENT = "autoscaling:TEST_NOTIFICATION"
SCALING_EVENT_PREFIX = "autoscaling:EC2_INSTANCE_"
_ARN_GROUP_MARK = ":autoScalingGroupName/"
_SUBSCRIPTION_TYPES = frozenset({"SubscriptionConfirmation", "UnsubscribeConfirmation"})
# The PutLifecycleHook reference documents an e-mail-like "Key: Value" format for SNS targets.
_KEY_VALUE_LINE = re.compile(r"([A-Za-z][A-Za-z0-9]*):[ \t]*(.*)")
# A value that a log reader splits correctly without quotes.
_BARE_VALUE = re.compile(r"[!#-<>-~]+")
#: The only source of real interruption warnings.
EC2_SOURCE = "aws.ec2"
#: Characters of an untrusted value quoted in a log line; a forged body may be megabytes long.
_SHOWN = 40


class Kind(enum.Enum):
    """What a message is about."""

    #: An ASG ``autoscaling:EC2_INSTANCE_*`` notification (launch, terminate, or their errors).
    SCALING = "scaling"
    #: A lifecycle hook action (direct, through SNS, or an EventBridge lifecycle event).
    LIFECYCLE = "lifecycle"
    #: Any other EventBridge event from ``aws.autoscaling``.
    EVENTBRIDGE_ASG = "eventbridge_asg"
    #: An EventBridge EC2 instance state-change notification.
    EVENTBRIDGE_EC2 = "eventbridge_ec2"
    SPOT_WARNING = "spot_warning"
    REBALANCE = "rebalance"
    #: ``autoscaling:TEST_NOTIFICATION``, sent when a notification target is configured.
    TEST = "test"
    #: An SNS subscription or unsubscription confirmation.
    SUBSCRIPTION = "subscription"
    #: JSON in no known shape.
    UNKNOWN_JSON = "unknown_json"
    #: The payload (after unwrapping any SNS envelope) is not JSON.
    NOT_JSON = "not_json"


#: Messages saying that EC2 is about to take an instance away.
INTERRUPTIONS = frozenset({Kind.SPOT_WARNING, Kind.REBALANCE})
_INTERRUPTION_TYPES = {
    "EC2 Spot Instance Interruption Warning": Kind.SPOT_WARNING,
    "EC2 Instance Rebalance Recommendation": Kind.REBALANCE,
}


class Delivery(enum.Enum):
    """How a message reached the queue."""

    #: The body is the notification itself: a hook aimed at SQS, or SNS with raw delivery.
    RAW = "raw"
    #: Inside an SNS envelope (``Type`` + ``TopicArn``).
    SNS = "sns"
    #: An EventBridge event delivered straight to the queue.
    EVENTBRIDGE = "eventbridge"
    #: An EventBridge event inside an SNS envelope.
    EVENTBRIDGE_VIA_SNS = "eventbridge_via_sns"


@dataclass(frozen=True)
class Trigger:
    """
    One classified message. Only *group*, *delete_now* and a well-formed warning's instance
    (``interrupted``) may influence what a cycle does.
    """

    kind: Kind
    delivery: Delivery
    #: The ASG ``Event``, the ``LifecycleTransition``, the EventBridge ``detail-type``, the EC2
    #: state, or the SNS ``Type`` of a non-notification; empty when the message names none.
    event: str = ""
    #: The Auto Scaling group the message names, or ``None`` when it names none.
    group: str | None = None
    instance_id: str | None = None
    #: Acknowledge at once (test notifications, SNS confirmations); otherwise only after a cycle
    #: that started after the message arrived has succeeded.
    delete_now: bool = False
    hook_name: str | None = None
    token: str | None = None
    transition: str | None = None
    #: ``EC2``, ``AutoScalingGroup`` or ``WarmPool``; absent in older payloads.
    origin: str | None = None
    destination: str | None = None
    #: A SubscriptionConfirmation's confirmation link: logged for a person, never visited.
    subscribe_url: str | None = None
    #: Why a message that claims to be an interruption warning is not one as given (another
    #: source, no valid instance id); ``None`` for every other message.
    untrusted: str | None = None

    @property
    def interrupted(self) -> str | None:
        """
        The instance a well-formed interruption warning names: the only message content a
        cycle acts on, and only once DescribeInstances confirms it is a Spot instance of a
        managed group.
        """
        if self.kind in INTERRUPTIONS and self.untrusted is None:
            return self.instance_id
        return None


@dataclass(frozen=True)
class Received:
    """One message taken from the queue, with its classification."""

    message_id: str
    #: What deletes the message; only the latest receipt's handle is sure to.
    receipt_handle: str
    body: str
    trigger: Trigger
    #: The receiver's monotonic clock just after the receive call returned. The message was in
    #: the queue before then, so a cycle that starts later saw the state that produced it.
    received_at: float
    #: ``ApproximateReceiveCount``: above 1 the message came back after a failed cycle.
    receive_count: int
    #: ``SentTimestamp`` in seconds since the epoch, ``None`` when the queue did not give it.
    sent_at: float | None


class _Undecodable(enum.Enum):
    """Marks text that is neither JSON nor the lifecycle "Key: Value" format."""

    TEXT = enum.auto()


def classify(body: str) -> Trigger:
    """Classify one SQS message *body*; never raises."""
    doc = _decode(body)
    if doc is _Undecodable.TEXT:
        return Trigger(Kind.NOT_JSON, Delivery.RAW)
    if not isinstance(doc, dict):
        return Trigger(Kind.UNKNOWN_JSON, Delivery.RAW)
    if "Type" in doc and "TopicArn" in doc:
        return _envelope(doc)
    return _payload(doc, via_sns=False)


def fields(trigger: Trigger) -> dict[str, str]:
    """The trigger as structured log fields; optional ones appear only when set."""
    out = {
        "kind": trigger.kind.value,
        "delivery": trigger.delivery.value,
        "group": trigger.group or "-",
        "instance": trigger.instance_id or "-",
        "event": trigger.event or "-",
    }
    optional = {
        "hook": trigger.hook_name,
        "origin": trigger.origin,
        "destination": trigger.destination,
        "subscribe_url": trigger.subscribe_url,
        "untrusted": trigger.untrusted,
    }
    out.update({key: value for key, value in optional.items() if value is not None})
    return out


# -- shapes ----------------------------------------------------------------------------------------


def _envelope(doc: Mapping[str, Any]) -> Trigger:
    sns_type = _text(doc, "Type") or ""
    if sns_type != "Notification":
        # Confirmations are not errors and carry no event; anything else SNS may add later is
        # deleted too, or it would come back forever.
        return Trigger(
            Kind.SUBSCRIPTION if sns_type in _SUBSCRIPTION_TYPES else Kind.UNKNOWN_JSON,
            Delivery.SNS,
            event=sns_type,
            delete_now=True,
            subscribe_url=_text(doc, "SubscribeURL"),
        )
    message = doc.get("Message")
    inner = _decode(message) if isinstance(message, str) else None
    if inner is _Undecodable.TEXT:
        return Trigger(Kind.NOT_JSON, Delivery.SNS)
    if not isinstance(inner, dict):
        return Trigger(Kind.UNKNOWN_JSON, Delivery.SNS)
    return _payload(inner, via_sns=True)


def _payload(doc: Mapping[str, Any], *, via_sns: bool) -> Trigger:
    if "detail-type" in doc and "source" in doc:
        return _eventbridge(doc, Delivery.EVENTBRIDGE_VIA_SNS if via_sns else Delivery.EVENTBRIDGE)
    delivery = Delivery.SNS if via_sns else Delivery.RAW
    event = _text(doc, "Event") or ""
    group = _text(doc, "AutoScalingGroupName") or _group_of_arn(_text(doc, "AutoScalingGroupARN"))
    if event == TEST_EVENT:
        return Trigger(Kind.TEST, delivery, event, group=group, delete_now=True)
    if _text(doc, "LifecycleTransition"):
        return _lifecycle(doc, delivery, group)
    if event.startswith(SCALING_EVENT_PREFIX):
        return Trigger(
            Kind.SCALING, delivery, event, group=group, instance_id=_text(doc, "EC2InstanceId")
        )
    return Trigger(Kind.UNKNOWN_JSON, delivery, event)


def _eventbridge(doc: Mapping[str, Any], delivery: Delivery) -> Trigger:
    source = doc["source"]
    detail_type = _text(doc, "detail-type") or ""
    raw_detail = doc.get("detail")
    detail: Mapping[str, Any] = raw_detail if isinstance(raw_detail, dict) else {}
    interruption = _INTERRUPTION_TYPES.get(detail_type)
    if interruption is not None:
        return _interruption(interruption, delivery, detail_type, source, detail.get("instance-id"))
    if source == "aws.autoscaling":
        group = _text(detail, "AutoScalingGroupName") or _group_of_resources(doc.get("resources"))
        if _text(detail, "LifecycleTransition"):
            return _lifecycle(detail, delivery, group)
        return Trigger(
            Kind.EVENTBRIDGE_ASG,
            delivery,
            detail_type,
            group=group,
            instance_id=_text(detail, "EC2InstanceId"),
        )
    if source == EC2_SOURCE and detail_type == "EC2 Instance State-change Notification":
        event = _text(detail, "state") or detail_type
        return Trigger(
            Kind.EVENTBRIDGE_EC2, delivery, event, instance_id=_text(detail, "instance-id")
        )
    return Trigger(Kind.UNKNOWN_JSON, delivery, detail_type)


def _interruption(
    kind: Kind, delivery: Delivery, detail_type: str, source: object, instance: object
) -> Trigger:
    """
    A Spot interruption warning or rebalance recommendation. Anyone who can send to the queue
    can write one, so only the exact shape EC2 sends names an instance to drain; anything else
    is kept as an untrusted claim, to log.
    """
    valid = instance if isinstance(instance, str) and is_instance_id(instance) else None
    untrusted = None
    if source != EC2_SOURCE:
        untrusted = f"source {_shown(source)} is not {EC2_SOURCE}"
    elif valid is None:
        untrusted = f"detail instance-id {_shown(instance)} is not an EC2 instance id"
    return Trigger(kind, delivery, detail_type, instance_id=valid, untrusted=untrusted)


def _lifecycle(doc: Mapping[str, Any], delivery: Delivery, group: str | None) -> Trigger:
    transition = _text(doc, "LifecycleTransition")
    return Trigger(
        Kind.LIFECYCLE,
        delivery,
        transition or "",
        group=group,
        instance_id=_text(doc, "EC2InstanceId"),
        hook_name=_text(doc, "LifecycleHookName"),
        token=_text(doc, "LifecycleActionToken"),
        transition=transition,
        origin=_text(doc, "Origin"),
        destination=_text(doc, "Destination"),
    )


# -- helpers ---------------------------------------------------------------------------------------


def _decode(text: str) -> object:
    try:
        return json.loads(text)
    # RecursionError: deeply nested arrays; ValueError: bad JSON or an over-long integer.
    except (ValueError, RecursionError):
        return _key_values(text)


def _key_values(text: str) -> dict[str, str] | _Undecodable:
    """A lifecycle notification in ``Key: Value`` lines, else ``_Undecodable.TEXT``."""
    pairs: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        match = _KEY_VALUE_LINE.fullmatch(line.strip())
        if match is None:
            return _Undecodable.TEXT
        pairs[match[1]] = match[2]
    # Only the documented lifecycle format is accepted: free text that happens to contain
    # colons stays "not JSON".
    return pairs if pairs.get("LifecycleTransition") else _Undecodable.TEXT


def _text(doc: Mapping[str, Any], key: str) -> str | None:
    """A non-empty string value; ``None`` for anything else (``EC2InstanceId: ""`` included)."""
    value = doc.get(key)
    return value if isinstance(value, str) and value else None


def _group_of_arn(arn: str | None) -> str | None:
    """``arn:aws:autoscaling:<region>:<account>:autoScalingGroup:<uuid>:autoScalingGroupName/<name>``."""
    if arn is None:
        return None
    _, mark, name = arn.partition(_ARN_GROUP_MARK)
    return name if mark and name else None


def _group_of_resources(resources: object) -> str | None:
    if not isinstance(resources, list):
        return None
    names = (_group_of_arn(arn) for arn in resources if isinstance(arn, str))
    return next((name for name in names if name), None)


def _shown(value: object) -> str:
    """An untrusted JSON value for a log line: as JSON (ASCII, escaped), cut short."""
    text = "absent" if value is None else json.dumps(value)
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}..."
