"""
The trigger queue: long-poll receive and batch delete. The only module that talks to SQS.

A message is a wake-up, never an instruction: ``receive`` classifies each body
(``reconciler.core.messages``) so the caller can log it, pick the groups to reconcile and delete
harmless ones at once; everything else is deleted only after a cycle that started after
``Received.received_at`` has succeeded. A message that is never deleted comes back after the
visibility timeout, which is how a failed cycle is retried and why losing track of one is harmless.

Shutdown: a long poll holds the calling thread for up to 20 seconds and botocore cannot cut a
request short, so the controller calls ``receive`` from a daemon thread that it never joins on the
way out. On SIGTERM it calls ``close()`` and exits at once; the interpreter does not wait for
daemon threads. ``close()`` makes the abandoned poll return nothing, even if messages arrive
before it ends, and makes later ``receive`` calls return at once without calling AWS, so no
message is half handled: whatever the last poll took stays in flight and reappears after the
visibility timeout for the next controller. ``delete`` keeps working after ``close()``, so a
cycle that finished during shutdown can still acknowledge its messages.

Errors: throttling, 5xx replies, connection problems and unparsable replies raise
``TransientError`` (botocore's standard retries have already been spent); a missing queue, a
refused permission and bad credentials raise ``ConfigError`` saying what to fix; any other
refusal raises ``PermanentError``. A batch entry that fails is returned, never raised.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from botocore.exceptions import (
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.parsers import ResponseParserError

from reconciler.adapters.aws.classify import Cause, error_codes, explain
from reconciler.core import messages
from reconciler.core.errors import ConfigError, PermanentError, ReconcilerError, TransientError


if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import (
        DeleteMessageBatchRequestEntryTypeDef,
        MessageTypeDef,
        ReceiveMessageRequestTypeDef,
    )

    from reconciler.adapters.aws.clients import AwsClients

log = logging.getLogger(__name__)

#: SQS limits: ``WaitTimeSeconds`` 0-20, ``MaxNumberOfMessages`` 1-10, batch entries 1-10,
#: ``VisibilityTimeout`` 0-43200.
MAX_WAIT_SECONDS = 20
MAX_MESSAGES = 10
MAX_BATCH_ENTRIES = 10
MAX_VISIBILITY_TIMEOUT = 43200
#: How much of an unclassifiable body goes into the log line.
BODY_LOG_CHARS = 200

RECEIVE = "sqs:ReceiveMessage"
DELETE = "sqs:DeleteMessage"

# SQS answers with the legacy code in ``Error.Code`` and the modelled one in
# ``Error.QueryErrorCode``; ``error_codes`` returns both.
MISSING_QUEUE_CODES = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})


class SqsInbox:
    """The SQS queue whose messages wake the controller."""

    def __init__(
        self,
        clients: AwsClients,
        queue_url: str,
        *,
        wait_seconds: int = MAX_WAIT_SECONDS,
        max_messages: int = MAX_MESSAGES,
        visibility_timeout: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """
        Read *queue_url* through ``clients.client("sqs")``. *wait_seconds* is the default long
        poll, *visibility_timeout* overrides the queue's (``None`` keeps it), and *clock* stamps
        ``Received.received_at`` (it must be the clock the controller starts cycles by).
        """
        if not 0 <= wait_seconds <= MAX_WAIT_SECONDS:
            msg = f"wait_seconds must be 0-{MAX_WAIT_SECONDS}, not {wait_seconds}"
            raise ValueError(msg)
        if not 1 <= max_messages <= MAX_MESSAGES:
            msg = f"max_messages must be 1-{MAX_MESSAGES}, not {max_messages}"
            raise ValueError(msg)
        if visibility_timeout is not None and not 0 <= visibility_timeout <= MAX_VISIBILITY_TIMEOUT:
            msg = f"visibility_timeout must be 0-{MAX_VISIBILITY_TIMEOUT}, not {visibility_timeout}"
            raise ValueError(msg)
        self.queue_url = queue_url
        self._sqs = clients.client("sqs")
        self._region = clients.region
        self._wait_seconds = wait_seconds
        self._max_messages = max_messages
        self._visibility_timeout = visibility_timeout
        self._clock = clock
        self._closed = threading.Event()

    def receive(self, wait_seconds: int | None = None) -> list[messages.Received]:
        """
        Wait up to *wait_seconds* (default: the inbox's; clamped to 0-20) for messages and return
        them classified, each logged once. Empty after ``close()``.
        """
        if self._closed.is_set():
            return []
        wait = self._wait_seconds if wait_seconds is None else wait_seconds
        request: ReceiveMessageRequestTypeDef = {
            "QueueUrl": self.queue_url,
            "MaxNumberOfMessages": self._max_messages,
            "WaitTimeSeconds": max(0, min(wait, MAX_WAIT_SECONDS)),
            "MessageSystemAttributeNames": ["ApproximateReceiveCount", "SentTimestamp"],
        }
        if self._visibility_timeout is not None:
            request["VisibilityTimeout"] = self._visibility_timeout
        try:
            reply = self._sqs.receive_message(**request)
        except _AWS_FAILURES as exc:
            raise self._failure(RECEIVE, exc) from exc
        received_at = self._clock()
        taken = reply.get("Messages", [])
        if self._closed.is_set():
            # The caller has moved on; these reappear after the visibility timeout.
            log.debug("inbox closed; leaving %d received message(s) in flight", len(taken))
            return []
        found = [_received(message, received_at) for message in taken]
        for item in found:
            log.info("message received", extra={"fields": _log_fields(item)})
        return found

    def delete(self, handles: Sequence[str]) -> list[str]:
        """
        Delete the messages of *handles* (``DeleteMessageBatch``, 10 per call) and return the
        handles SQS refused, each logged; a call that fails as a whole raises.
        """
        failed: list[str] = []
        unique = list(dict.fromkeys(handles))
        for start in range(0, len(unique), MAX_BATCH_ENTRIES):
            batch = unique[start : start + MAX_BATCH_ENTRIES]
            # Ids only need to be distinct within one call; they map a failure back to its handle.
            chunk = {str(index): handle for index, handle in enumerate(batch)}
            entries: list[DeleteMessageBatchRequestEntryTypeDef] = [
                {"Id": entry_id, "ReceiptHandle": handle} for entry_id, handle in chunk.items()
            ]
            try:
                reply = self._sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except _AWS_FAILURES as exc:
                raise self._failure(DELETE, exc) from exc
            for entry in reply.get("Failed", []):
                handle = chunk.get(entry["Id"], entry["Id"])
                log.warning(
                    "message not deleted; it will come back after the visibility timeout",
                    extra={
                        "fields": {
                            "code": entry.get("Code", ""),
                            "reason": entry.get("Message", ""),
                            "receipt_handle": handle,
                        }
                    },
                )
                failed.append(handle)
        return failed

    def close(self) -> None:
        """Stop receiving: a poll in flight returns nothing, later ones return at once."""
        self._closed.set()

    def _failure(self, action: str, exc: Exception) -> ReconcilerError:
        """The taxonomy error for a failed SQS call, with what to do about it."""
        queue = f"SQS queue {self.queue_url}"
        if error_codes(exc) & MISSING_QUEUE_CODES:
            return ConfigError(
                [f"{queue}: no such queue in {self._region}; check the queue URL and region"]
            )
        found = explain(action, exc, again="will retry")
        if found.cause in (Cause.ACCESS, Cause.CREDENTIALS):
            return ConfigError([f"{queue}: {found.what}; {found.advice}"])
        if found.cause is Cause.OTHER and isinstance(exc, ClientError):
            return PermanentError(f"{action} on {queue} refused ({found.what})")
        # Also what botocore raises when it cannot fetch credentials (instance role, SSO):
        # usually a passing fault of the credential source.
        return TransientError(f"{action} on {queue} failed ({found.what}); {found.advice}")


#: What an SQS call raises that is about AWS or the network rather than about our code.
_AWS_FAILURES = (
    ClientError,
    BotoConnectionError,
    HTTPClientError,
    ResponseParserError,
    NoCredentialsError,
    PartialCredentialsError,
    CredentialRetrievalError,
)


def _received(message: MessageTypeDef, received_at: float) -> messages.Received:
    body = message.get("Body", "")
    attributes = message.get("Attributes", {})
    sent = attributes.get("SentTimestamp", "")
    count = attributes.get("ApproximateReceiveCount", "")
    return messages.Received(
        message_id=message.get("MessageId", ""),
        receipt_handle=message.get("ReceiptHandle", ""),
        body=body,
        trigger=messages.classify(body),
        received_at=received_at,
        receive_count=int(count) if count.isdigit() else 0,
        sent_at=int(sent) / 1000 if sent.isdigit() else None,
    )


def _log_fields(item: messages.Received) -> dict[str, str]:
    out = {"message_id": item.message_id, **messages.fields(item.trigger)}
    out["receive_count"] = str(item.receive_count)
    if item.trigger.kind in (messages.Kind.NOT_JSON, messages.Kind.UNKNOWN_JSON):
        # Nothing else says what arrived; a prefix is enough to find the producer.
        out["body"] = item.body[:BODY_LOG_CHARS]
    return out
