"""
The long-running controller: one loop that decides when to run a cycle, and nothing else.

A cycle runs when any of these comes due, whichever is first:

- a wake-up (an SQS message) arrived: at once, but never sooner than ``min_gap`` after the end of
  the previous cycle that read AWS, so wake-ups during a cycle and just after it fold into one
  next cycle;
- a follow-up, while a message says something that no cycle's read has shown yet (the launched
  instance serving, the terminated one gone: ``core.claims``): AWS is eventually consistent, and
  a notification can arrive before the change it announces is visible. The first comes
  ``follow_up_delay`` after the cycle that did not see it, each next one twice as long after the
  previous, until a read shows it or the message is ``resync_interval`` old (the resync covers it
  then); ``follow_up_delay = 0`` turns them off. A message whose change the first cycle already
  sees, or that says nothing such (test notifications, errors, Spot warnings), costs none;
- a progress poll while warm-ups, drains or postponed deletions wait on HAProxy, and once after a
  cycle that sent runtime commands: a quarter of the servers' check interval after the cycle
  started, or a quarter of the time the polls have found nothing to do, whichever is longer, at
  most ``poll_interval`` (``core.progress``); and never sooner than the cycle's own CPU time
  after it ended, so polling a large backend keeps the controller busy half the time at most.
  Counted from the start: a cycle that added a server goes on to write the file (``haproxy -c``
  included), and a first check that passed meanwhile is seen right after it, not a quarter
  interval later. While a backend routes by zone, the polls never stop, nor grow rarer than a
  quarter of its check interval (at most ``poll_interval``): its health checks decide where the
  node's requests go, and a zone that fails spills within one poll;
- ``poll_interval`` after a cycle whose AWS reads disagreed about an instance;
- ``resync_interval`` after the start of the last cycle that read AWS, whatever happened: lost
  messages are corrected here, and it bounds every other wait, the backoff included;
- after a failed cycle, a retry after the cycle-level backoff of ``reconciler.retry``
  (exponential with jitter, at most ``max_backoff``).

A progress poll reads HAProxy and the file only, and plans with the AWS observation of the last
cycle that read AWS: what it waits for (a check to pass, sessions to end) only HAProxy can tell,
and the AWS read already decided the step. Every other cycle reads AWS too, and so does a
progress poll once that observation cannot be reused: it is as old as a resync, or a cycle since
completed lifecycle actions (AWS changed by our hand: the cached ``Pending:Wait`` would complete
the launch again and again). A read that failed for some groups is reused all the same: they
stay refused until the retry reads them, whose backoff the polls must neither defeat nor
stretch (a refusal a poll only inherited is no new failure). A progress poll neither takes the
wake-ups waiting nor deletes messages: only a cycle that read AWS covers what a message may
concern. A restarted controller starts with a full cycle and resumes from HAProxy's state.

While backing off, a wake-up runs a cycle sooner only if it may concern a group that the failed
cycle did succeed for (a message naming no group may concern any): one broken group (deleted, or
denied to us) must not delay the others, while a flood of messages must not hammer an AWS that is
throttling every call. A cycle that could plan no backend at all failed as a whole.

What woke the cycle never changes what it does: every cycle reads everything again (a progress
poll: everything but AWS). The one thing no API can tell is remembered instead: the instances
that a Spot interruption warning or a rebalance recommendation named in the last
``INTERRUPTION_MEMORY`` seconds are passed to every cycle, which drains them in the backends that
ask for it if they are Spot instances of the group. A warning that is malformed, or that the
first cycle reading AWS refutes (the instance is in no managed group, or is no Spot instance), is
logged once as untrusted, counted, and forgotten.

A message is deleted once a cycle that read AWS and started after it arrived has covered what it
could concern: for a message naming a group, a cycle that succeeded for that group; for one
naming no group (plain text, EC2 events, Spot warnings, unknown JSON), any cycle that did not fail
as a whole. An EC2 event's instance may belong to a group that failed; the message is deleted all
the same, because it carries nothing the retry needs: the failed group is retried by the backoff
whatever the queue holds, and every retry reads every group. Keeping it would hold every such
message for as long as one group is broken. Messages not covered reappear after their visibility
timeout and wake the controller again.

``Schedule`` is the pure part (when is the next cycle due, why, and whether it reads AWS);
``Controller`` is the shell that waits, runs cycles, deletes messages, and reports.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from reconciler.core import claims, progress
from reconciler.core.errors import ReconcilerError
from reconciler.core.model import AwsObservation, Change, CycleResult, Row, StepKind, Verdicts
from reconciler.core.results import changed_rows
from reconciler.core.settings import ControllerSettings, Settings
from reconciler.cycle import run_cycle
from reconciler.ports import Inbox, Ports
from reconciler.retry import Backoff, random_factor
from reconciler.wakeups import Wake, WakeSource


log = logging.getLogger(__name__)
#: AWS operations of this service are the queue's, made by the receiver thread and the
#: acknowledgements; the cycle's own calls are everything else.
QUEUE_SERVICE = "sqs:"
EVENT = "event"
RETRY = "retry"
PROGRESS = "progress"
FOLLOW_UP = "follow-up"
RESYNC = "resync"
#: Seconds an interruption warning counts: the interruption follows two minutes after a Spot
#: warning, and by then the group has replaced the instance. A rebalance recommendation has no
#: deadline; an instance still there after this long serves again.
INTERRUPTION_MEMORY = 600.0
#: Why an interruption warning is not trusted: the metric's label, and the log line's reason.
MALFORMED = "malformed"
_REFUTED = {
    "not_managed": "the instance is in no managed group",
    "not_spot": "DescribeInstances says the instance is no Spot instance",
}


class Cycle(Protocol):
    """What runs one cycle: ``run_cycle``, or a stand-in in tests."""

    def __call__(
        self,
        settings: Settings,
        ports: Ports,
        *,
        interrupted: frozenset[str],
        aws: AwsObservation | None,
    ) -> CycleResult:
        """
        Observe, plan and apply once, draining the *interrupted* instances where wanted; read
        AWS unless given *aws*.
        """
        ...


class CycleMetrics(Protocol):
    """What the loop reports to: ``reconciler.metrics.Metrics`` in the controller."""

    def record_cycle(self, seconds: float, result: CycleResult | None, error: str) -> None:
        """Count a cycle that took *seconds*; *result* is ``None`` when it raised *error*."""
        ...

    def untrusted_warning(self, reason: str) -> None:
        """Count an interruption warning not acted on, and why (``MALFORMED``...)."""
        ...

    def message_deleted(self, kind: str) -> None:
        """Count a message of *kind* deleted after the cycle that covered it."""
        ...


class CallCount(Protocol):
    """What the loop reads of the AWS call counter's figures for one operation."""

    @property
    def calls(self) -> int:
        """Calls made so far."""
        ...


def succeeded_for(failing: frozenset[str] | None, group: str | None) -> bool:
    """
    Whether a cycle that failed for the groups *failing* (``None``: failed as a whole) covered
    what a message naming *group* could concern (``None``: it names no group, so any group).
    """
    if failing is None:
        return False
    return group is None or group not in failing


def failing_groups(result: CycleResult | None) -> frozenset[str] | None:
    """The groups a cycle failed for; ``None`` when it failed as a whole or cannot tell."""
    if result is None:
        return None
    if result.outcome is not None and result.outcome.errors:
        return None  # apply errors are not tied to a group
    refused = result.plan.refused
    if refused and len(refused) == len(result.plan.backends):
        return None  # it could act on nothing it read
    return frozenset(b.asg for b in refused)


@dataclass(frozen=True)
class Watch:
    """A message's claim that no read has shown yet: followed up until one does."""

    claim: claims.Claim
    #: When its message arrived (monotonic).
    since: float
    #: Reads that did not show it so far.
    misses: int = 0
    #: When its next follow-up is due; ``None`` until a read of its group succeeds.
    due: float | None = None


@dataclass(frozen=True)
class Ran:
    """What the loop tells the schedule about one cycle that ran."""

    started: float
    ended: float
    #: The groups it failed for (``None``: it failed as a whole).
    failing: frozenset[str] | None
    #: It was to read AWS (not a progress poll that reused an earlier read).
    read_aws: bool = True
    #: The AWS observation it planned from; ``None`` when it raised.
    aws: AwsObservation | None = None
    #: Progress polls may reuse ``aws``: no lifecycle action was completed since it was read.
    #: (A read with errors is reused too: its groups stay refused until the retry reads them,
    #: while polls of the other backends must not read an AWS that is failing.)
    reusable: bool = False
    #: Seconds after its start until HAProxy is looked at again; ``None``: nothing waits on it.
    progress: float | None = None
    #: Seconds of CPU it took: the next poll comes at least as long after it ended.
    cpu: float = 0.0
    #: AWS's reads disagreed about an instance: read AWS again after ``poll_interval``.
    reread: bool = False
    #: The claims of the messages this cycle was the first to see.
    claims: tuple[Watch, ...] = ()


#: Follow-ups double their wait at most this many times (the resync bounds them long before).
_MAX_DOUBLINGS = 32


@dataclass(frozen=True)
class Schedule:
    """When cycles are due (monotonic times; ``None``: not scheduled), and what they read. Pure."""

    resync: float
    #: The next progress poll: HAProxy only.
    poll: float | None = None
    #: The next read of AWS for reads that disagreed.
    reread: float | None = None
    #: Set while backing off after failed cycles.
    retry: float | None = None
    #: Consecutive failed cycles.
    failures: int = 0
    #: The groups the last cycle failed for (``None``: it failed as a whole).
    failing: frozenset[str] | None = frozenset()
    #: When the last cycle that read AWS ended.
    last_end: float = float("-inf")
    #: The AWS observation progress polls may plan with; ``None``: the next cycle reads AWS.
    aws: AwsObservation | None = None
    #: The claims of messages not seen yet.
    watches: tuple[Watch, ...] = ()

    @property
    def follow_up(self) -> float | None:
        """When the next follow-up is due."""
        return min((w.due for w in self.watches if w.due is not None), default=None)

    def next_cycle(self, waiting: Iterable[Wake], min_gap: float) -> tuple[float, str]:
        """
        When the next cycle is due and what triggers it, given the wake-ups that arrived since
        the last cycle that read AWS started.
        """
        timers: list[tuple[float | None, str]] = []
        if any(succeeded_for(self.failing, wake.group) for wake in waiting):
            timers.append((self.last_end + min_gap, EVENT))
        timers += [
            (self.retry, RETRY),
            (self.reread, PROGRESS),
            (self.poll, PROGRESS),
            (self.follow_up, FOLLOW_UP),
            (self.resync, RESYNC),
        ]
        # On a tie the earlier entry wins: an event before any timer.
        return min(((t, name) for t, name in timers if t is not None), key=lambda due: due[0])

    def reuse(self, trigger: str, now: float) -> AwsObservation | None:
        """
        The AWS observation a cycle due to *trigger* and starting at *now* plans with instead of
        reading AWS: only a progress poll's, while no cycle that must read AWS is due; else
        ``None``.
        """
        if trigger != PROGRESS or self.aws is None:
            return None
        reading = (self.retry, self.reread, self.follow_up, self.resync)
        if min(t for t in reading if t is not None) <= now:
            return None
        return self.aws

    def after_cycle(self, config: ControllerSettings, ran: Ran, jitter: float) -> Schedule:
        """The schedule after the cycle *ran*; *jitter* scales a backoff (0.5-1)."""
        failures, retry, failing = self.failures, self.retry, self.failing
        # A poll that reads no AWS and fails for nothing new says nothing of the groups.
        if ran.read_aws or ran.failing != frozenset():
            failures = 0 if ran.failing == frozenset() else self.failures + 1
            retry = None
            if failures:
                retry = ran.ended + Backoff(config.max_backoff).seconds(failures, jitter)
            failing = ran.failing
        watches = (*self.watches, *ran.claims)
        reread = self.reread
        if ran.read_aws:
            watches = _followed(watches, ran, config)
            reread = ran.ended + config.poll_interval if ran.reread else None
        return replace(
            self,
            resync=ran.started + config.resync_interval if ran.read_aws else self.resync,
            poll=None
            if ran.progress is None
            else max(ran.started + ran.progress, ran.ended + ran.cpu),
            reread=reread,
            retry=retry,
            failures=failures,
            failing=failing,
            last_end=ran.ended if ran.read_aws else self.last_end,
            aws=ran.aws if ran.reusable else None,
            watches=watches,
        )


def _followed(watches: Iterable[Watch], ran: Ran, config: ControllerSettings) -> tuple[Watch, ...]:
    """
    The *watches* still unseen after a cycle that read AWS, each with its next follow-up; those
    of groups it failed for wait for the retry, which reads them again.
    """
    kept = []
    for watch in watches:
        if ran.started - watch.since >= config.resync_interval or config.follow_up_delay == 0:
            continue
        if ran.aws is None or not succeeded_for(ran.failing, watch.claim.group):
            kept.append(replace(watch, due=None))
        elif not claims.seen(watch.claim, ran.aws):
            misses = watch.misses + 1
            wait = config.follow_up_delay * 2.0 ** min(misses - 1, _MAX_DOUBLINGS)
            kept.append(replace(watch, misses=misses, due=ran.started + wait))
    return tuple(kept)


class Controller:
    """Runs cycles on wake-ups and timers until stopped."""

    def __init__(
        self,
        settings: Settings,
        ports: Ports,
        wakeups: WakeSource,
        metrics: CycleMetrics,
        *,
        inbox: Inbox | None = None,
        clock: Callable[[], float] = time.monotonic,
        cycle: Cycle = run_cycle,
        api_calls: Callable[[], Mapping[str, CallCount]] = dict,
        jitter: Callable[[], float] = random_factor,
        cpu_clock: Callable[[], float] = time.thread_time,
    ) -> None:
        """
        *inbox* receives the deletions of messages whose cycle succeeded; *clock* must be the
        clock that stamps the wake-ups; *api_calls* snapshots the AWS call counter and
        *cpu_clock* this thread's CPU time, for the per-cycle log line; *jitter* scales each
        backoff (a factor in 0.5-1).

        Long because it declares the controller's whole state, one attribute each.
        """
        self._settings = settings
        self._ports = ports
        self._wakeups = wakeups
        self._metrics = metrics
        self._inbox = inbox
        self._clock = clock
        self._cycle = cycle
        self._api_calls = api_calls
        self._jitter = jitter
        self._cpu_clock = cpu_clock
        #: Wake-ups that arrived since the last cycle that read AWS started.
        self._waiting: list[Wake] = []
        #: Messages not deleted yet, by message id: only the latest receipt is sure to delete.
        self._unacked: dict[str, Wake] = {}
        #: Instances named by an interruption warning, and until when that counts.
        self._interrupted: dict[str, float] = {}
        #: The warnings about instances in ``_interrupted`` that no cycle has judged yet.
        self._unjudged: dict[str, list[Wake]] = {}
        #: Since when the cycles waiting on HAProxy have found nothing to do (``None``: not so).
        self._idle_since: float | None = None
        #: The last cycle logged at INFO found nothing to do (see ``_log``).
        self._resting = False
        self.cycles = 0

    def run(self) -> None:
        """Loop until the wake source stops; the first cycle runs at once."""
        config = self._settings.controller
        schedule = Schedule(resync=self._clock())
        while not self._wakeups.stopping:
            due, trigger = schedule.next_cycle(self._waiting, config.min_gap)
            if self._clock() < due:
                # Returns early for each batch of wake-ups, which may bring the cycle forward.
                self._take(self._wakeups.wait(due))
                continue
            schedule = self._run_one(schedule, trigger)

    def _take(self, wakes: Sequence[Wake]) -> None:
        """Note wake-ups that arrived: they wait for a cycle, messages also for deletion."""
        self._waiting.extend(wakes)
        for wake in wakes:
            key = wake.message_id or wake.handle
            # A message back after its visibility timeout was reported and remembered already.
            again = key is not None and key in self._unacked
            if key is not None and wake.handle:
                self._unacked[key] = wake
            if again:
                continue
            if wake.untrusted:
                self._distrust(wake, MALFORMED, wake.untrusted)
            if wake.interrupted:
                instance = wake.interrupted
                if instance not in self._interrupted or instance in self._unjudged:
                    self._unjudged.setdefault(instance, []).append(wake)
                until = max(wake.at + INTERRUPTION_MEMORY, self._interrupted.get(instance, 0))
                self._interrupted[instance] = until

    def _run_one(self, schedule: Schedule, trigger: str) -> Schedule:
        """
        Run a cycle; after one that read AWS, settle the warnings and delete the messages it
        covered; report it; return the next schedule.
        """
        started = self._clock()
        reused = schedule.reuse(trigger, started)
        seen: list[Wake] = []
        if reused is None:  # only a cycle that reads AWS covers what the messages concern
            seen, self._waiting = self._waiting, []
        self._interrupted = {i: t for i, t in self._interrupted.items() if t > started}
        self._unjudged = {i: w for i, w in self._unjudged.items() if i in self._interrupted}
        calls_before, cpu_before = self._cycle_calls(), self._cpu_clock()
        result, error = self._attempt(reused)
        ended, cpu = self._clock(), self._cpu_clock() - cpu_before
        self.cycles += 1
        ran = self._ran(result, started, ended, reused is None, seen, cpu)
        deleted = 0
        if ran.read_aws:
            if result is not None:
                self._judge(result.interruptions)
            deleted = self._acknowledge(ran.failing, started)
        self._metrics.record_cycle(ended - started, result, error)
        fields: dict[str, object] = {
            "aws_read": ran.read_aws,
            "duration_ms": round((ended - started) * 1000),
            "cpu_ms": round(cpu * 1000, 1),
            "api_calls": self._cycle_calls() - calls_before,
            "wakeups": len(seen),
            "deleted": deleted,
        }
        self._log(trigger, result, error, fields)
        return schedule.after_cycle(self._settings.controller, ran, self._jitter())

    def _ran(
        self,
        result: CycleResult | None,
        started: float,
        ended: float,
        read_aws: bool,
        seen: Sequence[Wake],
        cpu: float,
    ) -> Ran:
        """What the schedule needs to know of a cycle that took *cpu* seconds of CPU."""
        watches = tuple(Watch(w.claim, w.at) for w in seen if w.claim is not None)
        if result is None:
            return Ran(started, ended, None, read_aws, claims=watches)
        delay = self._progress_delay(result, started, ended)
        failing = failing_groups(result)
        if not read_aws and failing is not None:
            failing -= result.aws.errors.keys()  # refused for the reused read: no new failure
        return Ran(
            started,
            ended,
            failing,
            read_aws,
            result.aws,
            reusable=not result.changed_aws,
            progress=delay,
            cpu=cpu,
            reread=result.rereads_aws,
            claims=watches,
        )

    def _progress_delay(self, result: CycleResult, started: float, ended: float) -> float | None:
        """
        Seconds until HAProxy is looked at again after a cycle that ran from *started* to
        *ended*, ``None`` when nothing waits on it; the looks that found nothing to do since the
        last one that did make it longer.
        """
        watched = progress.watched(result)
        busy = result.outcome is not None and result.outcome.commands > 0
        if not watched or busy:
            self._idle_since = None
        elif self._idle_since is None:
            self._idle_since = started
        waited = 0.0 if self._idle_since is None else ended - self._idle_since
        return progress.next_look(self._settings, result, waited)

    def _attempt(self, aws: AwsObservation | None) -> tuple[CycleResult | None, str]:
        """
        Run one cycle, reading AWS unless given *aws*; its result (``None`` if it raised) and its
        errors as one line.
        """
        try:
            result = self._cycle(
                self._settings, self._ports, interrupted=frozenset(self._interrupted), aws=aws
            )
        except ReconcilerError as exc:
            return None, str(exc)
        # A bug in one cycle must not end the controller: the next cycle starts afresh.
        except Exception as exc:
            log.exception("cycle crashed")
            return None, f"unexpected {type(exc).__name__}: {exc}"
        return result, "; ".join(result.errors)

    def _judge(self, verdicts: Verdicts) -> None:
        """
        Settle the warnings a cycle could judge. A warning is judged once: an instance found to
        be a Spot instance of a group may leave that group later (EC2 reclaimed it), which does
        not make the warning untrusted after the fact.
        """
        for instance in verdicts.verified:
            self._unjudged.pop(instance, None)
        refuted = (("not_managed", verdicts.unmanaged), ("not_spot", verdicts.not_spot))
        for reason, instances in refuted:
            for instance in instances & self._unjudged.keys():
                for wake in self._unjudged.pop(instance):
                    self._distrust(wake, reason, _REFUTED[reason])
                del self._interrupted[instance]

    def _distrust(self, wake: Wake, reason: str, why: str) -> None:
        """Report an interruption warning that changes nothing; the message is kept as a wake-up."""
        self._metrics.untrusted_warning(reason)
        log.warning(
            "untrusted interruption warning",
            extra={
                "fields": {
                    "message_id": wake.message_id or "-",
                    "kind": wake.kind,
                    "instance": wake.instance or "-",
                    "reason": why,
                }
            },
        )

    def _acknowledge(self, failing: frozenset[str] | None, started: float) -> int:
        """Delete the messages that arrived before *started* and that the cycle covered."""
        done = [
            (key, wake)
            for key, wake in self._unacked.items()
            if wake.at <= started and succeeded_for(failing, wake.group)
        ]
        for key, _ in done:
            # Forgotten whether or not the deletion works: one that failed comes back with a
            # new receipt after its visibility timeout, and is taken again then.
            del self._unacked[key]
        if not done or self._inbox is None:
            return 0
        handles = [wake.handle for _, wake in done if wake.handle]
        try:
            failed = set(self._inbox.delete(handles))
        except ReconcilerError as exc:
            log.warning("deleting %d message(s) failed; they will come back: %s", len(done), exc)
            return 0
        deleted = [wake for _, wake in done if wake.handle not in failed]
        for wake in deleted:
            self._metrics.message_deleted(wake.kind)
        return len(deleted)

    def _cycle_calls(self) -> int:
        """AWS calls made so far, the queue's left out."""
        return sum(
            counts.calls
            for operation, counts in self._api_calls().items()
            if not operation.startswith(QUEUE_SERVICE)
        )

    def _log(
        self, trigger: str, result: CycleResult | None, error: str, fields: dict[str, object]
    ) -> None:
        """
        One line per changed server and per finished warm-up, then the cycle's summary line with
        *fields*.
        """
        changed = list(changed_rows(result)) if result is not None else []
        for backend, row in changed:
            log.info("server %s", row.change.value, extra={"fields": _row_fields(backend, row)})
        # Not a change (the server was added cycles before), but the moment it takes requests.
        for backend, row in _warmed_up(result) if result is not None else ():
            log.info("warm-up done", extra={"fields": _row_fields(backend, row)})
        summary: dict[str, object] = {
            "cycle": self.cycles,
            "trigger": trigger,
            "result": "failed" if error else "ok",
            **fields,
            "changes": len(changed),
            "commands": result.outcome.commands if result and result.outcome else 0,
            "pending": bool(result and result.pending),
        }
        if error:
            summary["error"] = error
            log.warning("cycle failed", extra={"fields": summary})
            self._resting = False
            return
        # Zone routing watches HAProxy's health several times a second for as long as it runs:
        # after the first poll that found nothing to do, the next ones would bury the log.
        resting = not changed and not summary["commands"] and not summary["pending"]
        quiet = resting and self._resting and trigger == PROGRESS
        self._resting = resting
        log.log(logging.DEBUG if quiet else logging.INFO, "cycle done", extra={"fields": summary})


def _warmed_up(result: CycleResult) -> Iterator[tuple[str, Row]]:
    """
    The rows of the servers whose warm-up the cycle ended (their check passed, and the cycle
    made them ready), each with its backend; none for a dry run.
    """
    if result.outcome is None:
        return
    for backend in result.plan.backends:
        ready = {step.server for step in backend.steps if step.kind is StepKind.READY}
        for row in backend.rows:
            if row.change is Change.WARMING and row.server in ready:
                yield backend.backend, row


def _row_fields(backend: str, row: Row) -> dict[str, object]:
    """A server line's fields: where the server is, and what happened to it and why."""
    return {
        "backend": backend,
        "server": row.server,
        "instance": row.instance_id,
        "address": row.address,
        "change": row.change.value,
        "reason": row.reason,
    }
