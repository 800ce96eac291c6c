"""
A hand-written ``Inbox`` for tests of the controller and the receiver thread: receives are
scripted, deletions are recorded, failures are injected. The real ``SqsInbox`` is tested against
the moto server in ``test_sqs_inbox.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from reconciler.core import messages
from reconciler.core.messages import Received


#: Seconds an empty scripted poll blocks, standing in for the long poll.
EMPTY_POLL = 0.01


def received(body: str, handle: str, *, at: float = 0.0, message_id: str | None = None) -> Received:
    """A message as the inbox hands it out: *body* classified, received at *at*."""
    return Received(
        message_id=message_id or f"id-{handle}",
        receipt_handle=handle,
        body=body,
        trigger=messages.classify(body),
        received_at=at,
        receive_count=1,
        sent_at=None,
    )


@dataclass
class FakeInbox:
    """
    Each ``receive`` hands out the next scripted batch (or raises it, if it is an exception);
    once the script is used up, polls come back empty after ``EMPTY_POLL``. ``delete`` records
    the handles, refuses those in *refuse*, and raises *delete_error* while it is set.
    """

    script: list[Sequence[Received] | Exception] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    delete_error: Exception | None = None
    deleted: list[str] = field(default_factory=list)
    receives: int = 0
    closed: threading.Event = field(default_factory=threading.Event)

    def receive(self, wait_seconds: int | None = None) -> list[Received]:
        """The next scripted batch; empty after ``close`` or when the script is used up."""
        self.receives += 1
        if self.closed.is_set():
            return []
        if not self.script:
            self.closed.wait(EMPTY_POLL)
            return []
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return list(step)

    def delete(self, handles: Sequence[str]) -> list[str]:
        """Record *handles*; return those refused."""
        if self.delete_error is not None:
            raise self.delete_error
        self.deleted.extend(h for h in handles if h not in self.refuse)
        return [h for h in handles if h in self.refuse]

    def close(self) -> None:
        """Make polls return empty at once."""
        self.closed.set()
