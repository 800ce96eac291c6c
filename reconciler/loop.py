"""
The long-running controller: one loop that decides when to run a cycle, and nothing else.

A cycle runs when any of these comes due, whichever is first:

- a wake-up (an SQS message) arrived: at once, but never sooner than ``min_gap`` after the end of
  the previous cycle, so wake-ups during a cycle and just after it fold into one next cycle;
- the follow-up of an event-driven cycle (``follow_up_delay`` later): AWS is eventually
  consistent, and a notification can arrive before the change it announces is visible;
- ``poll_interval`` after a cycle that left warm-ups or drains in progress;
- ``resync_interval`` after the last cycle, whatever happened: lost messages are corrected here;
- after a failed cycle, a retry with capped exponential backoff and jitter (this replaces the
  other timers until a cycle succeeds).

What woke the cycle never changes what it does: every cycle reads everything again. Messages are
deleted only after a cycle that started after they arrived has succeeded for the group they name;
otherwise they reappear after their visibility timeout and wake the controller again.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from reconciler.errors import ReconcilerError
from reconciler.observability import CallCounts, Metrics
from reconciler.ports import Inbox
from reconciler.reconcile import CycleResult, Ports, run_cycle
from reconciler.settings import Settings
from reconciler.triggers import Wake, Wakeups


log = logging.getLogger(__name__)
#: The first retry after a failure waits about this long; each further failure doubles it.
FIRST_BACKOFF = 1.0


@dataclass
class _Timers:
    """The monotonic times at which a cycle is due, each ``None`` when not scheduled."""

    resync: float
    follow_up: float | None = None
    poll: float | None = None
    retry: float | None = None
    failures: int = 0
    last_end: float = field(default=float("-inf"))

    def next_due(self) -> float:
        if self.retry is not None:
            return self.retry
        return min(t for t in (self.resync, self.follow_up, self.poll) if t is not None)


class Controller:
    """Runs cycles on wake-ups and timers until stopped."""

    def __init__(
        self,
        settings: Settings,
        ports: Ports,
        wakeups: Wakeups,
        metrics: Metrics,
        *,
        inbox: Inbox | None = None,
        clock: Callable[[], float] = time.monotonic,
        cycle: Callable[[Settings, Ports], CycleResult] = run_cycle,
        api_calls: Callable[[], Mapping[str, CallCounts]] = dict,
    ) -> None:
        """
        *inbox* receives the deletions of messages whose cycle succeeded; *api_calls* snapshots
        the AWS call counter, for the per-cycle log line.
        """
        self._settings = settings
        self._ports = ports
        self._wakeups = wakeups
        self._metrics = metrics
        self._inbox = inbox
        self._clock = clock
        self._cycle = cycle
        self._api_calls = api_calls
        self._unacked: list[Wake] = []
        self.cycles = 0

    def run(self) -> None:
        """Loop until ``Wakeups.stop``; the first cycle runs at once."""
        config = self._settings.controller
        timers = _Timers(resync=self._clock())
        while True:
            woken = self._wakeups.wait(timers.next_due())
            if self._wakeups.stopping:
                break
            if woken:
                # Fold everything that arrives until the gap after the last cycle is over.
                self._wakeups.sleep_until(timers.last_end + config.min_gap)
                woken += self._wakeups.wait(self._clock())
            self._unacked.extend(woken)
            now = self._clock()
            if not woken and now < timers.next_due():
                continue
            if timers.retry is not None and now < timers.retry:
                continue  # backing off: the wake-ups wait for the retry
            trigger = self._trigger(woken, timers, now)
            self._run_one(trigger, timers, event=bool(woken))

    def _trigger(self, woken: Sequence[Wake], timers: _Timers, now: float) -> str:
        if woken:
            return "event"
        if timers.retry is not None:
            return "retry"
        if timers.poll is not None and now >= timers.poll:
            return "progress"
        if timers.follow_up is not None and now >= timers.follow_up:
            return "follow-up"
        return "resync"

    def _run_one(self, trigger: str, timers: _Timers, *, event: bool) -> None:
        config = self._settings.controller
        started = self._clock()
        calls_before = self._total_calls()
        result: CycleResult | None = None
        error = ""
        try:
            result = self._cycle(self._settings, self._ports)
        except ReconcilerError as exc:
            error = str(exc)
        except Exception as exc:
            log.exception("cycle crashed")
            error = f"unexpected {type(exc).__name__}: {exc}"
        end = self._clock()
        self.cycles += 1
        timers.last_end = end
        timers.resync = started + config.resync_interval
        if result is not None:
            error = "; ".join(result.errors)
            self._acknowledge(result, started)
        self._metrics.record_cycle(
            "ok" if not error else "failed", end - started, result.plan if result else None
        )
        self._log(trigger, end - started, result, error, self._total_calls() - calls_before)
        if error:
            self._metrics.failed(error)
            timers.failures += 1
            backoff = min(config.max_backoff, FIRST_BACKOFF * 2 ** (timers.failures - 1))
            timers.retry = end + backoff * random.uniform(0.5, 1.0)  # noqa: S311 - jitter
        else:
            self._metrics.succeeded()
            timers.failures = 0
            timers.retry = None
        timers.poll = end + config.poll_interval if result and result.pending else None
        if event:
            timers.follow_up = started + config.follow_up_delay
        elif trigger == "follow-up":
            timers.follow_up = None

    def _acknowledge(self, result: CycleResult, started: float) -> None:
        """Delete the messages that arrived before *started* whose groups were reconciled."""
        failed_groups = {b.asg for b in result.plan.backends if b.refused}
        apply_failed = bool(result.outcome and result.outcome.errors)
        done: list[Wake] = []
        kept: list[Wake] = []
        for wake in self._unacked:
            covered = not apply_failed and (
                wake.group not in failed_groups if wake.group else not failed_groups
            )
            (done if wake.at < started and covered else kept).append(wake)
        self._unacked = kept
        handles = [w.handle for w in done if w.handle]
        if not handles or self._inbox is None:
            return
        failed = set(self._inbox.delete(handles))
        for wake in done:
            if wake.handle and wake.handle not in failed:
                self._metrics.messages_deleted.labels(wake.kind).inc()

    def _total_calls(self) -> int:
        return sum(c.calls for c in self._api_calls().values())

    def _log(
        self, trigger: str, seconds: float, result: CycleResult | None, error: str, calls: int
    ) -> None:
        changes = 0
        pending = False
        if result is not None:
            changes = sum(
                r.change.value not in ("unchanged", "held")
                for b in result.plan.backends
                for r in b.rows
            )
            pending = result.pending
        fields = {
            "trigger": trigger,
            "duration_ms": round(seconds * 1000),
            "changes": changes,
            "pending": pending,
            "api_calls": calls,
            "cycle": self.cycles,
        }
        if error:
            log.warning("cycle failed: %s", error, extra={"fields": fields})
        else:
            log.info("cycle done", extra={"fields": fields})
