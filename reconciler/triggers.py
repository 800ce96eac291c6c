"""
Wake-ups: what makes the controller run a cycle sooner than its resync timer.

``Wakeups`` is a thread-safe mailbox that folds any number of wake-ups into one: the controller
takes all pending ones at once, so a burst of messages costs one cycle, not one per message.
``SqsReceiver`` is the thread that long-polls the queue and posts a wake-up per message; a message
is only a trigger, and its receipt handle rides along so the controller can delete it after a
cycle that started after it arrived has succeeded.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from reconciler import messages
from reconciler.errors import ReconcilerError
from reconciler.ports import Inbox


log = logging.getLogger(__name__)
#: Waits after failed receives double up to this many seconds.
RECEIVE_MAX_BACKOFF = 30.0


@dataclass(frozen=True)
class Wake:
    """One reason to run a cycle."""

    #: Monotonic time it arrived.
    at: float
    #: The group it concerns; ``None`` for all or unknown.
    group: str | None = None
    #: The SQS receipt handle to delete after a successful cycle, if it came from the queue.
    handle: str | None = None
    kind: str = "signal"


class Wakeups:
    """A mailbox of wake-ups that the controller drains all at once."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._pending: list[Wake] = []
        self._stopping = False
        self._changed = threading.Condition()

    @property
    def stopping(self) -> bool:
        """True once ``stop`` was called."""
        return self._stopping

    def put(self, wake: Wake) -> None:
        """Post a wake-up."""
        with self._changed:
            self._pending.append(wake)
            self._changed.notify_all()

    def stop(self) -> None:
        """Wake the controller for good: it finishes what it does and returns."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()

    def wait(self, deadline: float) -> list[Wake]:
        """
        Block until a wake-up is pending, ``stop`` was called, or the monotonic *deadline*
        passed; return (and clear) every pending wake-up.
        """
        with self._changed:
            while not self._pending and not self._stopping:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            taken, self._pending = self._pending, []
            return taken

    def sleep_until(self, deadline: float) -> None:
        """Sleep until *deadline* unless stopped; wake-ups arriving meanwhile stay pending."""
        with self._changed:
            while not self._stopping:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return
                self._changed.wait(remaining)


class SqsReceiver:
    """Long-polls an inbox on a daemon thread and turns messages into wake-ups."""

    def __init__(
        self,
        inbox: Inbox,
        wakeups: Wakeups,
        *,
        on_message: Callable[[messages.Received], None] = lambda _: None,
        on_delete: Callable[[messages.Received], None] = lambda _: None,
    ) -> None:
        """*on_message* / *on_delete* observe every message received / deleted at once."""
        self._inbox = inbox
        self._wakeups = wakeups
        self._on_message = on_message
        self._on_delete = on_delete
        # Never joined: a 20 s long poll must not delay shutdown; close() makes it return empty.
        self._thread = threading.Thread(target=self._run, name="sqs-receiver", daemon=True)

    def start(self) -> None:
        """Start polling."""
        self._thread.start()

    def stop(self) -> None:
        """Stop polling; a poll in flight returns nothing and its messages come back later."""
        self._inbox.close()

    def _run(self) -> None:
        failures = 0
        while not self._wakeups.stopping:
            try:
                received = self._inbox.receive()
            except ReconcilerError as exc:
                failures += 1
                delay = min(RECEIVE_MAX_BACKOFF, 2.0 ** min(failures, 10)) * random.uniform(0.5, 1)  # noqa: S311 - jitter
                log.warning("receiving from SQS failed, retrying in %.1fs: %s", delay, exc)
                self._wakeups.sleep_until(time.monotonic() + delay)
                continue
            failures = 0
            self._handle(received)

    def _handle(self, received: list[messages.Received]) -> None:
        at_once = [m for m in received if m.trigger.delete_now]
        if at_once:
            failed = set(self._inbox.delete([m.receipt_handle for m in at_once]))
            for message in at_once:
                if message.receipt_handle not in failed:
                    self._on_delete(message)
        for message in received:
            self._on_message(message)
            if message.trigger.delete_now:
                continue
            self._wakeups.put(
                Wake(
                    at=message.received_at,
                    group=message.trigger.group,
                    handle=message.receipt_handle,
                    kind=message.trigger.kind.value,
                )
            )
