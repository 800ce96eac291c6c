"""
Wake-ups: what makes the controller run a cycle sooner than its resync timer.

``Wakeups`` is a thread-safe mailbox that folds any number of wake-ups into one: the controller
takes all pending ones at once, so a burst of messages costs one cycle, not one per message.
``SqsReceiver`` is the thread that long-polls the queue and posts a wake-up per message; a message
is only a trigger, and its receipt handle rides along so the controller can delete it after a
cycle that started after it arrived has succeeded.

The receiver thread never dies: whatever a poll or an early deletion raises is logged and the
thread polls again after the cycle-level backoff of ``reconciler.retry`` (capped at
``RECEIVE_MAX_WAIT``). A dead receiver would silently degrade the controller to resync-only,
which no health check would notice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from reconciler.core import claims, messages
from reconciler.core.errors import ReconcilerError
from reconciler.ports import Inbox
from reconciler.retry import RECEIVE_MAX_WAIT, Backoff, random_factor


log = logging.getLogger(__name__)


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
    #: The SQS message id: a message received again replaces its earlier receipt.
    message_id: str | None = None
    #: The instance a well-formed Spot interruption warning or rebalance recommendation names
    #: (``messages.Trigger.interrupted``): cycles drain it if it is a Spot instance of theirs.
    interrupted: str | None = None
    #: Why a message that claims to be such a warning is not one as given; for the log.
    untrusted: str | None = None
    #: The instance the message names, if any; for the log.
    instance: str | None = None
    #: What the message says has changed (``claims.of``): while the cycles' reads do not show
    #: it yet, follow-up cycles look again.
    claim: claims.Claim | None = None


def wake_of(message: messages.Received) -> Wake:
    """The wake-up for a message taken from the queue."""
    trigger = message.trigger
    return Wake(
        at=message.received_at,
        group=trigger.group,
        handle=message.receipt_handle,
        kind=trigger.kind.value,
        message_id=message.message_id,
        interrupted=trigger.interrupted,
        untrusted=trigger.untrusted,
        instance=trigger.instance_id,
        claim=claims.of(trigger),
    )


class WakeSource(Protocol):
    """What the controller waits on: ``Wakeups``, or a scripted stand-in in tests."""

    @property
    def stopping(self) -> bool:
        """True once the controller should return."""
        ...

    def wait(self, deadline: float) -> list[Wake]:
        """Block until a wake-up is pending, stop, or *deadline*; return the pending ones."""
        ...


class Wakeups:
    """A mailbox of wake-ups that the controller drains all at once."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        """*clock* must be the clock the deadlines passed to ``wait`` are measured by."""
        self._clock = clock
        self._pending: list[Wake] = []
        self._stopping = False
        # Reentrant: stop() runs from a signal handler, which may interrupt the main thread
        # while it holds this lock inside wait().
        self._changed = threading.Condition(threading.RLock())

    @property
    def stopping(self) -> bool:
        """True once ``stop`` was called."""
        return self._stopping

    def put(self, *wakes: Wake) -> None:
        """Post wake-ups, all in one go so the controller wakes once for a batch."""
        with self._changed:
            self._pending.extend(wakes)
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
        jitter: Callable[[], float] = random_factor,
    ) -> None:
        """
        *on_message* / *on_delete* observe every message received / deleted at once; *jitter*
        scales each backoff wait (a factor in 0.5-1).
        """
        self._inbox = inbox
        self._wakeups = wakeups
        self._on_message = on_message
        self._on_delete = on_delete
        self._backoff = Backoff(RECEIVE_MAX_WAIT, jitter=jitter)
        self._stopped = threading.Event()
        # Never joined: a 20 s long poll must not delay shutdown; close() makes it return empty.
        self._thread = threading.Thread(target=self._run, name="sqs-receiver", daemon=True)

    def start(self) -> None:
        """Start polling."""
        self._thread.start()

    def stop(self) -> None:
        """Stop polling; a poll in flight returns nothing and its messages come back later."""
        # Both: a closed inbox returns at once, so the loop must not poll it again.
        self._stopped.set()
        self._inbox.close()

    def _run(self) -> None:
        """Poll until stopped."""
        failures = 0
        while not self._stopped.is_set() and not self._wakeups.stopping:
            try:
                self._handle(self._inbox.receive())
            except ReconcilerError as exc:
                failures += 1
                self._back_off(failures, "receiving from SQS failed", exc)
            # The thread must outlive bugs too: it is the controller's only source of wake-ups.
            except Exception as exc:
                failures += 1
                log.exception("the SQS receiver failed unexpectedly")
                self._back_off(failures, "the SQS receiver failed", exc)
            else:
                failures = 0

    def _back_off(self, failures: int, what: str, exc: Exception) -> None:
        """Log *what* failed and wait before the next poll, unless stopped meanwhile."""
        delay = self._backoff.after(failures)
        log.warning("%s, retrying in %.1fs: %s", what, delay, exc)
        self._wakeups.sleep_until(time.monotonic() + delay)

    def _handle(self, received: Sequence[messages.Received]) -> None:
        """Report every message, post wake-ups, then delete the messages that need no cycle."""
        for message in received:
            self._on_message(message)
        wakes = [wake_of(message) for message in received if not message.trigger.delete_now]
        if wakes:  # an empty poll must not wake the controller for nothing
            self._wakeups.put(*wakes)
        at_once = [m for m in received if m.trigger.delete_now]
        if at_once:
            self._delete_at_once(at_once)

    def _delete_at_once(self, harmless: Sequence[messages.Received]) -> None:
        """Delete messages that need no cycle; on failure they come back and are tried again."""
        try:
            failed = set(self._inbox.delete([m.receipt_handle for m in harmless]))
        except ReconcilerError as exc:
            log.warning("deleting %d harmless message(s) failed: %s", len(harmless), exc)
            return
        for message in harmless:
            if message.receipt_handle not in failed:
                self._on_delete(message)
