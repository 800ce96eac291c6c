"""The SQS inbox against a moto server on loopback: receive, SNS delivery, delete, errors, close."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from harness.messages import ASG, I1, LAUNCH, scaling
from harness.moto import UNIMPLEMENTED, Cloud
from reconciler.adapters.aws.clients import AwsClients, CallCounts
from reconciler.adapters.aws.inbox import SqsInbox
from reconciler.core.errors import ConfigError, PermanentError, ReconcilerError, TransientError
from reconciler.core.messages import Delivery, Kind, Received


pytestmark = pytest.mark.integration

RECEIVE = "sqs:ReceiveMessage"
DELETE_BATCH = "sqs:DeleteMessageBatch"


@pytest.fixture
def clients(cloud: Cloud) -> AwsClients:
    """Clients without botocore retries, so each injected fault reaches the inbox."""
    return AwsClients(max_attempts=1)


@pytest.fixture
def queue_url(cloud: Cloud) -> str:
    """An empty standard queue."""
    return cloud.sqs.create_queue(QueueName="reconciler-triggers")["QueueUrl"]


@pytest.fixture
def inbox(clients: AwsClients, queue_url: str) -> Iterator[SqsInbox]:
    """An inbox on the queue with a short default poll."""
    inbox = SqsInbox(clients, queue_url, wait_seconds=1)
    yield inbox
    inbox.close()


def receive_all(inbox: SqsInbox, count: int) -> list[Received]:
    """Receive until *count* messages arrived (SQS may hand out fewer per call) or 10 polls."""
    found: list[Received] = []
    for _ in range(10):
        found += inbox.receive()
        if len(found) >= count:
            break
    return found


def queue_depth(cloud: Cloud, queue_url: str) -> tuple[int, int]:
    """Messages (visible, in flight) in the queue."""
    attributes = cloud.sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


def counts(clients: AwsClients, action: str) -> CallCounts:
    """What the call counter saw of *action* so far."""
    return clients.calls.snapshot().get(action, CallCounts())


# -- receiving -------------------------------------------------------------------------------------


def test_receive_returns_sent_bodies_classified(
    cloud: Cloud, clients: AwsClients, queue_url: str
) -> None:
    """Each sent body comes back once with its id, handle, attributes and classification."""
    ticks = iter([100.0, 200.0])
    inbox = SqsInbox(clients, queue_url, wait_seconds=1, clock=lambda: next(ticks))
    bodies = {
        json.dumps(scaling()): Kind.SCALING,
        "please reconcile": Kind.NOT_JSON,
        json.dumps({"hello": "world"}): Kind.UNKNOWN_JSON,
    }
    sent = {cloud.sqs.send_message(QueueUrl=queue_url, MessageBody=b)["MessageId"] for b in bodies}
    before = time.time()

    found = receive_all(inbox, len(bodies))

    assert {item.message_id for item in found} == sent
    assert {item.body: item.trigger.kind for item in found} == bodies
    assert all(item.receipt_handle for item in found)
    assert {item.receive_count for item in found} == {1}
    assert all(
        item.sent_at is not None and before - 60 < item.sent_at <= time.time() for item in found
    )
    assert {item.received_at for item in found} <= {100.0, 200.0}
    (launch,) = [item.trigger for item in found if item.trigger.kind is Kind.SCALING]
    assert (launch.group, launch.instance_id, launch.event) == (ASG, I1, LAUNCH)


def test_long_poll_waits_for_a_message_and_wakes_on_arrival(
    cloud: Cloud, inbox: SqsInbox, queue_url: str
) -> None:
    """An empty queue holds the call; a message sent meanwhile ends it well before the wait."""
    started = time.monotonic()
    assert inbox.receive(wait_seconds=1) == []
    assert time.monotonic() - started >= 0.9

    later = threading.Timer(
        0.5, cloud.sqs.send_message, kwargs={"QueueUrl": queue_url, "MessageBody": "x"}
    )
    later.start()
    started = time.monotonic()
    found = inbox.receive(wait_seconds=20)
    later.join()

    assert [item.body for item in found] == ["x"]
    assert time.monotonic() - started < 10


def test_visibility_timeout_override_and_receive_count(
    cloud: Cloud, clients: AwsClients, queue_url: str
) -> None:
    """With visibility 0 an undeleted message is visible again at once, its count grown."""
    inbox = SqsInbox(clients, queue_url, wait_seconds=1, visibility_timeout=0)
    cloud.sqs.send_message(QueueUrl=queue_url, MessageBody="again")

    first = receive_all(inbox, 1)
    second = receive_all(inbox, 1)

    assert [item.receive_count for item in first + second] == [1, 2]
    assert first[0].message_id == second[0].message_id


def test_sns_envelope_and_raw_delivery_are_both_scaling_notifications(
    cloud: Cloud, clients: AwsClients
) -> None:
    """SNS delivers the classic envelope or, with RawMessageDelivery, the bare ASG JSON."""
    topic = cloud.sns.create_topic(Name="asg-notifications")["TopicArn"]
    queues = {}
    for raw_delivery in ("false", "true"):
        url = cloud.sqs.create_queue(QueueName=f"raw-{raw_delivery}")["QueueUrl"]
        arn = cloud.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        cloud.sns.subscribe(
            TopicArn=topic,
            Protocol="sqs",
            Endpoint=arn["Attributes"]["QueueArn"],
            Attributes={"RawMessageDelivery": raw_delivery},
        )
        queues[raw_delivery] = url
    cloud.sns.publish(
        TopicArn=topic,
        Message=json.dumps(scaling()),
        Subject=f'Auto Scaling: launch for group "{ASG}"',
    )

    envelope = receive_all(SqsInbox(clients, queues["false"], wait_seconds=1), 1)
    raw = receive_all(SqsInbox(clients, queues["true"], wait_seconds=1), 1)

    assert json.loads(envelope[0].body)["Type"] == "Notification"
    assert json.loads(raw[0].body) == scaling()
    for item, delivery in ((envelope[0], Delivery.SNS), (raw[0], Delivery.RAW)):
        trigger = item.trigger
        assert (trigger.kind, trigger.delivery, trigger.group) == (Kind.SCALING, delivery, ASG)
        assert (trigger.instance_id, trigger.event) == (I1, LAUNCH)


# -- deleting --------------------------------------------------------------------------------------


def test_delete_in_batches_of_ten_empties_the_queue(
    cloud: Cloud, clients: AwsClients, inbox: SqsInbox, queue_url: str
) -> None:
    """23 messages take three DeleteMessageBatch calls and leave nothing behind."""
    for start in range(0, 23, 10):
        entries = [
            {"Id": str(i), "MessageBody": f"m{i}"} for i in range(start, min(start + 10, 23))
        ]
        cloud.sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)  # type: ignore[arg-type]
    found = receive_all(inbox, 23)
    assert len(found) == 23

    failed = inbox.delete([item.receipt_handle for item in found])

    assert failed == []
    assert counts(clients, DELETE_BATCH).calls == 3
    assert queue_depth(cloud, queue_url) == (0, 0)


def test_delete_of_nothing_calls_nothing(clients: AwsClients, inbox: SqsInbox) -> None:
    """No handle, no call."""
    assert inbox.delete([]) == []
    assert counts(clients, DELETE_BATCH).calls == 0


def test_failed_entry_is_returned_not_raised(
    cloud: Cloud, inbox: SqsInbox, queue_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A bogus handle comes back (and is logged) while the good one in the batch is deleted."""
    cloud.sqs.send_message(QueueUrl=queue_url, MessageBody="x")
    (item,) = receive_all(inbox, 1)

    with caplog.at_level(logging.WARNING, logger="reconciler.adapters.aws.inbox"):
        failed = inbox.delete([item.receipt_handle, "bogus", item.receipt_handle])

    assert failed == ["bogus"]
    assert queue_depth(cloud, queue_url) == (0, 0)
    (record,) = caplog.records
    assert record.fields["receipt_handle"] == "bogus"  # type: ignore[attr-defined]
    assert record.fields["code"] == "ReceiptHandleIsInvalid"  # type: ignore[attr-defined]


# -- errors ----------------------------------------------------------------------------------------


def test_missing_queue_says_what_to_fix(clients: AwsClients, queue_url: str) -> None:
    """A queue URL that names no queue is a configuration error naming the URL, on both calls."""
    missing = queue_url.rsplit("/", 1)[0] + "/no-such-queue"
    inbox = SqsInbox(clients, missing, wait_seconds=0)

    with pytest.raises(ConfigError, match="no such queue") as received:
        inbox.receive()
    with pytest.raises(ConfigError, match="no such queue"):
        inbox.delete(["handle"])

    assert missing in str(received.value)
    assert "check the queue URL" in str(received.value)


@pytest.mark.parametrize(
    ("code", "status", "error", "says"),
    [
        pytest.param("AccessDenied", 403, ConfigError, "allow sqs:ReceiveMessage", id="denied"),
        pytest.param("QueueDoesNotExist", 400, ConfigError, "no such queue", id="modelled-code"),
        pytest.param(
            "AWS.SimpleQueueService.NonExistentQueue",
            400,
            ConfigError,
            "no such queue",
            id="legacy-code",
        ),
        pytest.param("KmsAccessDenied", 400, ConfigError, "allow kms:Decrypt", id="kms-denied"),
        pytest.param(
            "InvalidClientTokenId", 403, ConfigError, "check the AWS credentials", id="bad-keys"
        ),
        pytest.param("RequestThrottled", 403, TransientError, "will retry", id="throttled"),
        pytest.param("OverLimit", 403, TransientError, "will retry", id="in-flight-limit"),
        pytest.param("InternalError", 500, TransientError, "will retry", id="server-error"),
        pytest.param(UNIMPLEMENTED, 500, TransientError, "will retry", id="html-reply"),
        pytest.param("InvalidParameterValue", 400, PermanentError, "refused", id="refused"),
    ],
)
def test_receive_errors_map_to_the_taxonomy(
    cloud: Cloud,
    inbox: SqsInbox,
    code: str,
    status: int,
    error: type[ReconcilerError],
    says: str,
) -> None:
    """Each kind of failure raises the error type that decides what the controller does next."""
    cloud.fail("ReceiveMessage", code, 1, status=status)

    with pytest.raises(error, match=says):
        inbox.receive()

    assert inbox.receive(wait_seconds=0) == []


def test_unreachable_endpoint_is_transient(
    clients: AwsClients, queue_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused connection is worth retrying and the message says where to look."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port}")
    inbox = SqsInbox(AwsClients(max_attempts=1), queue_url, wait_seconds=0)

    with pytest.raises(TransientError, match="AWS_ENDPOINT_URL"):
        inbox.receive()


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"wait_seconds": 21}, id="wait"),
        pytest.param({"wait_seconds": -1}, id="negative-wait"),
        pytest.param({"max_messages": 0}, id="no-messages"),
        pytest.param({"max_messages": 11}, id="too-many-messages"),
        pytest.param({"visibility_timeout": 43201}, id="visibility"),
    ],
)
def test_out_of_range_options_are_refused(clients: AwsClients, options: dict[str, int]) -> None:
    """Values SQS would reject fail when the inbox is built, not on the first poll."""
    with pytest.raises(ValueError, match="must be"):
        SqsInbox(clients, "http://127.0.0.1/q", **options)  # type: ignore[arg-type]


# -- shutdown --------------------------------------------------------------------------------------


def test_close_abandons_a_poll_in_flight(cloud: Cloud, clients: AwsClients, queue_url: str) -> None:
    """
    After close() the poll in flight returns nothing, even if a message arrives, and the message
    stays in flight for the next controller; later polls return at once; delete still works.
    """
    inbox = SqsInbox(clients, queue_url, wait_seconds=20)
    results: list[list[Received]] = []
    poller = threading.Thread(target=lambda: results.append(inbox.receive()), daemon=True)
    poller.start()
    deadline = time.monotonic() + 5
    while counts(clients, RECEIVE).calls == 0 and time.monotonic() < deadline:
        time.sleep(0.01)

    inbox.close()
    cloud.sqs.send_message(QueueUrl=queue_url, MessageBody="too late")
    poller.join(timeout=10)

    assert not poller.is_alive()
    assert results == [[]]
    assert queue_depth(cloud, queue_url) == (0, 1)
    started = time.monotonic()
    assert inbox.receive() == []
    assert time.monotonic() - started < 0.1
    assert counts(clients, RECEIVE).calls == 1
    assert inbox.delete(["bogus"]) == ["bogus"]
