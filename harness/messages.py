"""
Message bodies as AWS sends them, for tests of the classifier and the receiver, and for the chaos
suite's forged deliveries.

Builders for each shape, with fixed sample values (group ``web-asg``, instances ``I1`` and ``I2``):
``envelope`` (SNS, raw delivery off), ``scaling`` and ``lifecycle`` (the Auto Scaling
notifications), ``eventbridge``; ``MALFORMED``: bodies in no known shape. The notifications a
``Stack``'s own group sends are ``harness.stack.asg_notification`` and ``spot_warning``.
"""

from __future__ import annotations

import json


ASG = "web-asg"
ASG_ARN = (
    "arn:aws:autoscaling:eu-west-1:123456789012:autoScalingGroup:"
    "2f1c7f3b-8d3a-4a8e-9b1e-5c6d7e8f9a0b:autoScalingGroupName/web-asg"
)
TOPIC_ARN = "arn:aws:sns:eu-west-1:123456789012:asg-notifications"
I1 = "i-0123456789abcdef0"
I2 = "i-0fedcba9876543210"
LAUNCH = "autoscaling:EC2_INSTANCE_LAUNCH"
LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"
SPOT = "EC2 Spot Instance Interruption Warning"
REBALANCE = "EC2 Instance Rebalance Recommendation"


def envelope(message: str, sns_type: str = "Notification", **extra: str) -> str:
    """An SNS envelope as SQS delivers it (raw delivery off), around *message*."""
    return json.dumps(
        {
            "Type": sns_type,
            "MessageId": "5e7b2c1d-4a3f-5b6e-8c9d-0a1b2c3d4e5f",
            "TopicArn": TOPIC_ARN,
            "Message": message,
            "Timestamp": "2026-03-02T10:15:42.447Z",
            "SignatureVersion": "1",
            "Signature": "EXAMPLE==",
            "SigningCertURL": "https://sns.eu-west-1.amazonaws.com/cert.pem",
            **extra,
        },
        indent=2,
    )


def scaling(**overrides: object) -> dict[str, object]:
    """An ASG launch notification (the ``Message`` of an SNS envelope), with *overrides*."""
    doc: dict[str, object] = {
        "Progress": 50,
        "AccountId": "123456789012",
        "AutoScalingGroupARN": ASG_ARN,
        "Service": "AWS Auto Scaling",
        "EC2InstanceId": I1,
        "StatusCode": "InProgress",
        "AutoScalingGroupName": ASG,
        "Event": LAUNCH,
    }
    doc.update(overrides)
    return {key: value for key, value in doc.items() if value is not None}


def lifecycle(**overrides: object) -> dict[str, object]:
    """A lifecycle hook notification, with *overrides* (``None`` removes a key)."""
    doc: dict[str, object] = {
        "Origin": "EC2",
        "LifecycleHookName": "haproxy-register",
        "Destination": "AutoScalingGroup",
        "AccountId": "123456789012",
        "LifecycleTransition": LAUNCHING,
        "AutoScalingGroupName": ASG,
        "Service": "AWS Auto Scaling",
        "EC2InstanceId": I1,
        "LifecycleActionToken": "71514b9d-6a40-4b26-8523-05e7ee35fa40",
    }
    doc.update(overrides)
    return {key: value for key, value in doc.items() if value is not None}


def eventbridge(source: str, detail_type: str, detail: dict[str, object], **extra: object) -> str:
    """An EventBridge event as an SQS target receives it."""
    event: dict[str, object] = {
        "version": "0",
        "id": "0d3f5a7c-9e1b-4d3f-a5c7-e9b1d3f5a7c9",
        "detail-type": detail_type,
        "source": source,
        "account": "123456789012",
        "time": "2026-03-02T10:15:42Z",
        "region": "eu-west-1",
        "resources": [],
        "detail": detail,
        **extra,
    }
    return json.dumps(event)


#: Bodies in no known shape: not JSON, JSON of another type, known envelopes holding nonsense.
MALFORMED = (
    "not json at all",
    "",
    "[1, 2, 3]",
    "[]",
    "null",
    '"a string"',
    "{",
    "[" * 50_000,
    '{"Type": "Notification", "TopicArn": "arn:x", "Message": "not json"}',
    '{"Type": "Notification", "TopicArn": "arn:x", "Message": "[1]"}',
    '{"Type": "Notification", "TopicArn": "arn:x", "Message": 42}',
    '{"Type": "Notification", "TopicArn": "arn:x"}',
    '{"Type": "Surprise", "TopicArn": "arn:x", "Message": "{}"}',
    '{"Event": "autoscaling:EC2_INSTANCE_LAUNCH", "AutoScalingGroupName": 7}',
    '{"detail-type": 1, "source": "aws.ec2", "detail": []}',
    "LifecycleTransition: autoscaling:EC2_INSTANCE_LAUNCHING\nAutoScalingGroupName: api-asg",
)
