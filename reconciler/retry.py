"""
The cycle-level retry policy: how long to wait after failures, the same for everything that
retries a whole cycle or poll.

Two levels retry, no more:

- **Call level**: botocore retries each AWS call in its ``standard`` mode, at most
  ``adapters.aws.clients.DEFAULT_MAX_ATTEMPTS`` (3) attempts, pinned whatever the environment
  says. It rides out a throttled or failed request within seconds; a call still failing after
  that fails its groups for the cycle (or raises, for the other adapters).
- **Cycle level** (here): capped exponential backoff with jitter. The first wait is
  ``FIRST_WAIT`` (1 s), each further consecutive failure doubles it, up to a cap; every wait is
  scaled by a random factor in 0.5-1 (``random_factor``), so controllers that failed together
  do not retry in step, and no wait exceeds its cap.

Who uses it, with which cap:

- ``reconcile --once`` (a cycle) and ``reconcile drift`` (its reads): what raised
  ``TransientError`` is tried ``ONCE_ATTEMPTS`` (3) times in all, the waits capped at
  ``ONCE_MAX_WAIT`` (5 s): 0.5-1 s, then 1-2 s. tenacity runs these tries (``retrying``). A
  cycle that completed but refused a backend (a read failed) is reported, not retried.
- the daemon (``loop.Schedule``): after a failed cycle (it raised, or failed for a group), the next
  cycle comes after the wait capped at ``[controller] max_backoff`` (60 s by default), and never
  later than the next resync; it never gives up.
- the SQS receiver (``wakeups.SqsReceiver``): after a failed poll, capped at ``RECEIVE_MAX_WAIT``
  (30 s); it never gives up either.

The daemon and the receiver wait on their wake-up mailbox (a message or a stop ends the wait
early), not in a sleep, so they take the wait from ``Backoff.seconds`` rather than run a
tenacity loop; it is the same computation tenacity calls.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_base

from reconciler.core.errors import TransientError


if TYPE_CHECKING:
    from tenacity import RetryCallState


log = logging.getLogger(__name__)
#: Seconds of the first wait, before jitter.
FIRST_WAIT = 1.0
#: ``--once`` and ``drift``: tries in all of a cycle (or read) that raises ``TransientError``.
ONCE_ATTEMPTS = 3
#: ``--once`` and ``drift``: the longest wait between two tries.
ONCE_MAX_WAIT = 5.0
#: The SQS receiver: the longest wait between two failed polls.
RECEIVE_MAX_WAIT = 30.0
#: The exponent stops growing here (2**30 s is decades), so that a long outage never
#: overflows a float.
_MAX_DOUBLINGS = 30


def random_factor() -> float:
    """The jitter: a random factor in 0.5-1 that scales a wait."""
    return random.uniform(0.5, 1.0)  # noqa: S311 - not crypto


class Backoff(wait_base):
    """Capped exponential backoff with jitter, as a tenacity wait strategy."""

    def __init__(self, cap: float, *, jitter: Callable[[], float] = random_factor) -> None:
        """Waits of at most *cap* seconds, each scaled by a factor (0.5-1) *jitter* draws."""
        self.cap = cap
        self._jitter = jitter

    def seconds(self, failures: int, factor: float) -> float:
        """The wait after *failures* consecutive failures, scaled by the jitter *factor*. Pure."""
        return min(self.cap, FIRST_WAIT * 2.0 ** min(failures - 1, _MAX_DOUBLINGS)) * factor

    def after(self, failures: int) -> float:
        """The wait after *failures* consecutive failures, with a jitter factor drawn now."""
        return self.seconds(failures, self._jitter())

    def __call__(self, retry_state: RetryCallState) -> float:
        """tenacity's question: the wait after the attempt that just failed."""
        return self.after(retry_state.attempt_number)


def retrying(
    what: str,
    *,
    backoff: Backoff | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Retrying:
    """
    A tenacity loop for ``--once`` and ``drift``: call it with a function and its arguments, and
    it tries up to ``ONCE_ATTEMPTS`` times while the function raises ``TransientError``, waiting
    per *backoff* (default: capped at ``ONCE_MAX_WAIT``) through *sleep*; the last error is
    raised as it was. Each retry is logged as *what* failed.
    """

    def log_retry(state: RetryCallState) -> None:
        waited = state.next_action.sleep if state.next_action else 0.0
        error = state.outcome.exception() if state.outcome else None
        log.warning("%s, retrying in %.1fs: %s", what, waited, error)

    return Retrying(
        retry=retry_if_exception_type(TransientError),
        stop=stop_after_attempt(ONCE_ATTEMPTS),
        wait=backoff or Backoff(ONCE_MAX_WAIT),
        before_sleep=log_retry,
        sleep=sleep,
        reraise=True,
    )
