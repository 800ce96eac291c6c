"""
The controller loop in virtual time: when cycles run (wake-ups, coalescing, follow-up, progress,
resync, backoff), which messages are deleted, what is reported; plus the wake-up mailbox, the SQS
receiver thread, the metrics and the status listener. Cycles are stand-ins that return scripted
results; the real cycle runs in ``test_daemon_end_to_end.py``.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.fakes import FakeInbox, FakeMembership, FakeStore, received
from harness.messages import I1, I2, REBALANCE, SPOT, envelope, eventbridge, scaling
from reconciler.adapters.status_server import StatusServer
from reconciler.core.claims import Claim, Expect
from reconciler.core.errors import PermanentError, TransientError
from reconciler.core.model import (
    AwsObservation,
    BackendPlan,
    Change,
    CycleResult,
    Group,
    HAProxyFeatures,
    Instance,
    Outcome,
    Plan,
    Row,
    Verdicts,
)
from reconciler.core.settings import (
    AwsSettings,
    Binding,
    ControllerSettings,
    HAProxySettings,
    Settings,
)
from reconciler.loop import Controller, Ran, Schedule, Watch
from reconciler.metrics import Metrics
from reconciler.ports import Ports
from reconciler.retry import RECEIVE_MAX_WAIT, Backoff
from reconciler.wakeups import SqsReceiver, Wake, Wakeups, wake_of
from tests.support.corpus import corpus_body


GROUP = "api-asg"
OTHER = "web-asg"
CONFIG = ControllerSettings(
    resync_interval=60, min_gap=0.25, follow_up_delay=3, max_backoff=8, poll_interval=0.5
)
#: Virtual seconds one stand-in cycle takes.
CYCLE_SECONDS = 0.05

# -- virtual time ----------------------------------------------------------------------------------


@dataclass
class Script:
    """
    Virtual time for the controller: a wait returns at once, moving the clock to its deadline or
    to the next scripted wake-up; the controller stops once the clock reaches *end*.
    """

    end: float
    now: float = 0.0
    waits: int = 0
    arrivals: list[Wake] = field(default_factory=list)

    def clock(self) -> float:
        """The virtual monotonic clock."""
        return self.now

    @property
    def stopping(self) -> bool:
        """True once the script is over."""
        return self.now >= self.end

    def arrive(self, at: float, group: str | None = GROUP, handle: str | None = None) -> Wake:
        """Script a wake-up arriving at *at* (a message when it has a *handle*)."""
        wake = Wake(at=at, group=group, handle=handle, kind="scaling", message_id=handle)
        self.arrivals.append(wake)
        self.arrivals.sort(key=lambda w: w.at)
        return wake

    def wait(self, deadline: float) -> list[Wake]:
        """Jump to the next arrival or *deadline*, whichever is first; return what arrived."""
        self.waits += 1
        upcoming = self.arrivals[0].at if self.arrivals else math.inf
        self.now = max(self.now, min(deadline, upcoming, self.end))
        taken = [w for w in self.arrivals if w.at <= self.now]
        self.arrivals = self.arrivals[len(taken) :]
        return taken


def ok() -> CycleResult:
    """A cycle that succeeded and changed nothing."""
    return CycleResult(Plan((BackendPlan("api", GROUP, rows=()),)), Outcome())


def refused(*groups: str) -> CycleResult:
    """A cycle that could not read *groups*, and read the other group unless it is among them."""
    backends = [BackendPlan(g, g, refused=f"{g} unreadable") for g in groups]
    if OTHER not in groups:
        backends.append(BackendPlan("web", OTHER, rows=()))
    return CycleResult(Plan(tuple(backends)), Outcome())


def pending() -> CycleResult:
    """A cycle that left a warm-up in progress (servers without a check option: ``inter 2s``)."""
    warming = BackendPlan("api", GROUP, pending=True, awaits_haproxy=True)
    return CycleResult(Plan((warming,)), Outcome())


def serving(instance_id: str) -> Instance:
    """An InService, Healthy, running instance of the group."""
    return Instance(instance_id, "InService", "Healthy", "running", "127.0.1.4")


def reading(*instances: Instance) -> CycleResult:
    """A cycle that succeeded and changed nothing, whose AWS read found *instances* in the group."""
    group = Group(GROUP, len(instances), instances)
    return replace(ok(), aws=AwsObservation(groups={GROUP: group}))


def launched(at: float) -> Wake:
    """A launch notification for ``I1`` arriving at *at*."""
    claim = Claim(Expect.SERVES, I1, GROUP)
    return Wake(at=at, group=GROUP, handle=f"launch-{at}", kind="scaling", claim=claim)


#: Server options with a check every 100 ms.
FAST_CHECK = ("check", "inter", "100ms")
SLOW_CHECK = ("check", "inter", "400ms")

Result = CycleResult | Exception


@dataclass
class Cycles:
    """
    Stands in for ``run_cycle``: takes ``CYCLE_SECONDS`` of virtual time and returns what
    *result* says for the cycle's start time (or raises it).
    """

    script: Script
    result: Callable[[float], Result] = lambda _: ok()
    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    #: Wake-ups to script while a cycle runs: (cycle number, offset into it, handle).
    during: list[tuple[int, float, str]] = field(default_factory=list)
    #: The interrupted instances each cycle was given.
    interrupted: list[frozenset[str]] = field(default_factory=list)
    #: Whether each cycle read AWS (was given no earlier observation).
    read_aws: list[bool] = field(default_factory=list)

    def __call__(
        self,
        settings: Settings,
        ports: Ports,
        *,
        interrupted: frozenset[str],
        aws: AwsObservation | None,
    ) -> CycleResult:
        """Run one stand-in cycle."""
        start = self.script.now
        self.starts.append(start)
        self.interrupted.append(interrupted)
        self.read_aws.append(aws is None)
        for number, offset, handle in self.during:
            if number == len(self.starts):
                self.script.arrive(start + offset, handle=handle)
        self.script.now += CYCLE_SECONDS
        self.ends.append(self.script.now)
        outcome = self.result(start)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def settings(config: ControllerSettings = CONFIG, options: tuple[str, ...] = ()) -> Settings:
    """Settings with two backends with server *options*, and the given controller timings."""
    return Settings(
        aws=AwsSettings(),
        haproxy=HAProxySettings(),
        backends=(
            Binding("api", GROUP, 80, server_options=options),
            Binding("web", OTHER, 80, server_options=options),
        ),
        controller=config,
    )


@dataclass
class Run:
    """One controller run in virtual time, and what it did."""

    script: Script
    cycles: Cycles
    inbox: FakeInbox
    metrics: Metrics
    controller: Controller


def run(
    end: float,
    *,
    result: Callable[[float], Result] = lambda _: ok(),
    arrivals: tuple[tuple[float, str | None, str | None], ...] = (),
    during: tuple[tuple[int, float, str], ...] = (),
    config: ControllerSettings = CONFIG,
    jitter: float = 1.0,
    inbox: FakeInbox | None = None,
    api_calls: Callable[[], dict[str, object]] = dict,
    wakes: tuple[Wake, ...] = (),
    options: tuple[str, ...] = (),
) -> Run:
    """
    Run a controller until virtual time *end*, with wake-ups (time, group, handle) and *wakes*
    arriving as scripted; fail if it waited much more often than it ran cycles (a busy loop).
    """
    script = Script(end)
    for at, group, handle in arrivals:
        script.arrive(at, group, handle)
    script.arrivals = sorted([*script.arrivals, *wakes], key=lambda w: w.at)
    cycles = Cycles(script, result, during=list(during))
    inbox = inbox or FakeInbox()
    metrics = Metrics(stale_after=3 * config.resync_interval, clock=script.clock)
    controller = Controller(
        settings(config, options),
        Ports(FakeMembership(), FakeStore(b""), None),
        script,
        metrics,
        inbox=inbox,
        clock=script.clock,
        cycle=cycles,
        api_calls=api_calls,  # type: ignore[arg-type]
        jitter=lambda: jitter,
        cpu_clock=lambda: 0.0,
    )
    controller.run()
    assert script.waits <= 2 * (len(cycles.starts) + len(arrivals) + len(wakes) + len(during)) + 2
    return Run(script, cycles, inbox, metrics, controller)


def gaps(times: list[float]) -> list[float]:
    """The differences between consecutive *times*, rounded to milliseconds."""
    return [round(b - a, 3) for a, b in itertools.pairwise(times)]


def retries(done: Run) -> list[float]:
    """How long the controller waited after each cycle ended before it started the next."""
    pairs = zip(done.cycles.ends, done.cycles.starts[1:], strict=False)
    return [round(start - end, 3) for end, start in pairs]


# -- when cycles run -------------------------------------------------------------------------------


def test_idle_controller_runs_at_once_then_every_resync_interval() -> None:
    """Nothing happens for ten minutes: a cycle at start, then one per minute, and no spinning."""
    done = run(600)
    assert done.cycles.starts == [pytest.approx(60 * n) for n in range(10)]


def test_wakeup_runs_a_cycle_at_once_and_no_follow_up_when_it_saw_the_change() -> None:
    """
    A launch notification at t=10 runs a cycle right then; the read shows the instance serving,
    so nothing is left to look for: no follow-up, the next cycle is the resync.
    """
    done = run(80, wakes=(launched(10),), result=lambda _: reading(serving(I1)))
    assert done.cycles.starts == [0, 10, 70]


def test_follow_ups_back_off_until_a_read_shows_the_change() -> None:
    """
    The launch is not visible yet (eventual consistency): follow-ups 3, 6 and 12 s after each
    cycle that missed it (``follow_up_delay`` doubling), until one sees the instance serving.
    """
    done = run(
        100,
        wakes=(launched(10),),
        result=lambda t: reading(serving(I1)) if t >= 30 else reading(),
    )
    assert done.cycles.starts == [0, 10, 13, 19, 31, 91]
    assert all(done.cycles.read_aws)


def test_follow_ups_stop_after_a_resync_interval() -> None:
    """A change never seen: follow-ups until the message is ``resync_interval`` old, no more."""
    config = replace(CONFIG, resync_interval=20)
    done = run(60, wakes=(launched(10),), result=lambda _: reading(), config=config)
    assert done.cycles.starts == [0, 10, 13, 19, 31, 51]


def test_burst_folds_into_few_cycles_each_min_gap_apart() -> None:
    """A message every 10 ms for one second: the first runs at once, the rest fold per gap."""
    burst = tuple((5 + n / 100, GROUP, f"m{n}") for n in range(100))
    done = run(20, arrivals=burst)
    during = [s for s in done.cycles.starts if 5 <= s <= 6.5]
    assert during[0] == 5
    assert len(during) <= 1 + math.ceil(1 / (CONFIG.min_gap + CYCLE_SECONDS))
    for end, start in zip(done.cycles.ends, done.cycles.starts[1:], strict=False):
        if start >= 5:
            assert start - end >= CONFIG.min_gap - 1e-9
    assert sorted(done.inbox.deleted) == sorted(f"m{n}" for n in range(100))


def test_wakeups_during_a_cycle_fold_into_one_next_cycle() -> None:
    """Three messages that arrive while a cycle runs cost one more cycle, min_gap after it."""
    during = ((2, 0.01, "a"), (2, 0.02, "b"), (2, 0.03, "c"))
    done = run(10, arrivals=((1, GROUP, "first"),), during=during)
    assert done.cycles.starts[:3] == [0, 1, pytest.approx(1 + CYCLE_SECONDS + CONFIG.min_gap)]
    assert done.inbox.deleted == ["first", "a", "b", "c"]


def test_progress_polls_read_haproxy_only_until_a_read_of_aws_is_due() -> None:
    """
    A warm-up in progress after the resync at t=0: progress polls reuse that cycle's AWS read;
    the follow-up due meanwhile, and the resync, read AWS again.
    """
    watch = Watch(Claim(Expect.SERVES, I1, GROUP), since=0, misses=1, due=2)
    schedule = Schedule(resync=60, poll=1.5, aws=AwsObservation(), watches=(watch,))
    assert schedule.next_cycle([], CONFIG.min_gap) == (1.5, "progress")
    assert schedule.reuse("progress", 1.5) == AwsObservation()
    assert schedule.reuse("progress", 2) is None  # the follow-up is due: this cycle is it
    assert schedule.reuse("follow-up", 2) is None
    assert replace(schedule, aws=None).reuse("progress", 1.5) is None
    polled = schedule.after_cycle(CONFIG, Ran(1.5, 1.6, frozenset(), read_aws=False), 1)
    assert (polled.resync, polled.follow_up, polled.last_end) == (60, 2, -math.inf)
    assert polled.aws is None  # a poll that raised, or changed AWS: the next cycle reads it


def test_progress_polls_come_a_quarter_check_interval_apart_and_read_no_aws() -> None:
    """
    Warm-ups of servers checked every 400 ms, each poll making a server ready: HAProxy is looked
    at 100 ms after each cycle started, with the AWS read of the first cycle, until nothing is
    pending.
    """
    busy = replace(pending(), outcome=Outcome(commands=1))
    done = run(30, result=lambda t: busy if t < 0.55 else ok(), options=SLOW_CHECK)
    assert gaps(done.cycles.starts)[:5] == [pytest.approx(0.1)] * 5
    assert done.cycles.read_aws[:6] == [True, False, False, False, False, False]


def test_a_poll_due_during_a_cycle_comes_right_after_it() -> None:
    """
    Servers checked every 100 ms: a quarter interval (25 ms) after a cycle started falls within
    the 50 ms cycle (which went on to write the file), so HAProxy is looked at again as soon as
    it ends: a check that passed meanwhile is not seen a quarter interval late.
    """
    busy = replace(pending(), outcome=Outcome(commands=1))
    done = run(30, result=lambda t: busy if t < 0.3 else ok(), options=FAST_CHECK)
    assert gaps(done.cycles.starts)[:5] == [CYCLE_SECONDS] * 5


def test_progress_polls_get_rarer_while_they_find_nothing_to_do() -> None:
    """
    A check that never passes: the polls come a quarter of the time waited apart once that is
    longer than a quarter check interval, up to ``poll_interval``; none reads AWS.
    """
    done = run(10, result=lambda _: pending(), options=SLOW_CHECK)
    waits = gaps(done.cycles.starts)
    assert waits[0] == pytest.approx(0.1)
    assert waits == sorted(waits)
    assert waits[-1] == pytest.approx(CONFIG.poll_interval)
    assert done.cycles.read_aws == [True] + [False] * len(waits)


def test_progress_polls_leave_messages_to_the_next_cycle_that_reads_aws() -> None:
    """
    A message arrives during warm-up polls: the polls neither take nor delete it; the event
    cycle, ``min_gap`` after the last cycle that read AWS, reads AWS and deletes it.
    """
    inbox = FakeInbox()
    deleted_before: list[list[str]] = []

    def result(start: float) -> Result:
        deleted_before.append(list(inbox.deleted))
        return pending() if start < 0.5 else ok()

    done = run(1, result=result, arrivals=((0.1, GROUP, "h"),), inbox=inbox, options=FAST_CHECK)
    event = done.cycles.read_aws.index(True, 1)
    assert event > 1
    assert done.cycles.starts[event] >= 0.3  # min_gap after the first cycle ended
    assert (deleted_before[event], deleted_before[event + 1]) == ([], ["h"])


def test_progress_polls_neither_read_a_failing_aws_nor_stretch_its_backoff() -> None:
    """
    The read failed for one group while the other backend warms up: polls of HAProxy reuse the
    read (the failed group stays refused) and leave the retry where the backoff put it.
    """
    errors = AwsObservation(errors={OTHER: "throttled"})
    warming = BackendPlan("api", GROUP, pending=True, awaits_haproxy=True)
    broken = BackendPlan("web", OTHER, refused="throttled")
    outage = CycleResult(Plan((warming, broken)), Outcome(commands=1), aws=errors)
    done = run(1.5, result=lambda t: outage if t < 1 else ok(), options=FAST_CHECK)
    retry = done.cycles.read_aws.index(True, 1)
    assert retry > 5
    assert done.cycles.starts[retry] == pytest.approx(1.05)  # 1 s after the first cycle ended
    failed_polls = [start for start in done.cycles.starts[:retry] if start < 1]
    assert done.metrics.cycles.labels("failed")._value.get() == len(failed_polls)


def test_lifecycle_actions_completed_make_the_next_cycle_read_aws() -> None:
    """A progress poll that completed a launch changed AWS: the next cycle reads it again."""
    completed = replace(pending(), outcome=Outcome(lifecycle_calls=1))
    done = run(1, result=lambda t: completed if 0.12 < t < 0.17 else pending(), options=FAST_CHECK)
    assert done.cycles.read_aws[:5] == [True, False, False, False, True]


def test_disagreeing_reads_are_read_again_after_poll_interval() -> None:
    """An instance AWS's reads disagree about: AWS is read again every ``poll_interval``."""
    doubt = BackendPlan("api", GROUP, pending=True, rereads_aws=True)
    done = run(2, result=lambda t: CycleResult(Plan((doubt,)), Outcome()) if t < 1 else ok())
    assert gaps(done.cycles.starts) == [0.55, 0.55]
    assert all(done.cycles.read_aws)


def test_failed_event_cycle_is_followed_by_its_retry_only() -> None:
    """The cycle a message woke failed for its group: the retry re-reads, no follow-up is due."""
    done = run(4, arrivals=((1, GROUP, None),), result=lambda t: refused(GROUP) if t == 1 else ok())
    assert done.cycles.starts == [0, 1, pytest.approx(2.05)]


def test_zero_follow_up_delay_turns_the_follow_up_off() -> None:
    """With ``follow_up_delay = 0`` a message costs exactly one cycle."""
    config = ControllerSettings(resync_interval=60, follow_up_delay=0)
    done = run(30, arrivals=((10, GROUP, None),), config=config)
    assert done.cycles.starts == [0, 10]


def test_progress_is_polled_while_warm_ups_are_pending() -> None:
    """Pending work is looked at every poll_interval after each cycle starts, then polling stops."""
    done = run(30, result=lambda t: pending() if t < 1.5 else ok())
    assert gaps(done.cycles.starts) == [0.5, 0.5, 0.5]


def test_progress_is_polled_steadily_while_a_backend_routes_by_zone() -> None:
    """
    Nothing pending, but a backend's zone routing follows HAProxy's health checks: a poll every
    quarter check interval (400 ms servers), never rarer, none of them reading AWS.
    """
    routing = CycleResult(Plan((BackendPlan("api", GROUP, watches_health=True),)), Outcome())
    done = run(10, result=lambda _: routing, options=SLOW_CHECK)
    waits = gaps(done.cycles.starts)
    assert len(waits) > 90
    assert waits == [pytest.approx(0.1)] * len(waits)
    assert done.cycles.read_aws == [True] + [False] * len(waits)


@pytest.mark.usefixtures("logged")
def test_polls_that_keep_finding_nothing_are_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    """
    A zone-routed backend is polled several times a second for as long as it runs: the first poll
    that finds nothing to do is logged (the controller rests), the next ones are not, until a
    cycle acts again.
    """
    routing = CycleResult(Plan((BackendPlan("api", GROUP, watches_health=True),)), Outcome())
    acting = replace(routing, outcome=Outcome(commands=2))
    done = run(2, result=lambda t: acting if 0.95 <= t < 1.05 else routing, options=SLOW_CHECK)
    logged = [fields(r) for r in caplog.records if r.getMessage() == "cycle done"]
    assert len(done.cycles.starts) > 15
    assert [(f["trigger"], f["commands"]) for f in logged] == [
        ("resync", 0),
        ("progress", 2),
        ("progress", 0),
    ]


def test_failures_back_off_exponentially_up_to_the_cap() -> None:
    """Every cycle fails: retries after 1, 2, 4, 8, 8 s (no jitter), measured from each end."""
    done = run(40, result=lambda _: refused(GROUP))
    assert retries(done)[:6] == [1, 2, 4, 8, 8, 8]


def test_jitter_shortens_each_backoff() -> None:
    """A jitter factor of one half halves every wait."""
    done = run(20, result=lambda _: refused(GROUP), jitter=0.5)
    assert retries(done)[:5] == [0.5, 1, 2, 4, 4]


def test_resync_interval_bounds_the_backoff() -> None:
    """A cap above the resync interval never delays a cycle beyond that interval."""
    config = ControllerSettings(resync_interval=5, max_backoff=60)
    done = run(100, result=lambda _: refused(GROUP), config=config)
    assert max(gaps(done.cycles.starts)) <= 5


def test_success_ends_the_backoff() -> None:
    """After the outage the controller is back to its resync rhythm."""
    done = run(200, result=lambda t: refused(GROUP) if t < 10 else ok())
    after = [s for s in done.cycles.starts if s >= 10]
    assert gaps(after) == [60, 60, 60]


def test_backoff_never_overflows() -> None:
    """Days of failures: the wait stays at the cap instead of overflowing a float."""
    assert Backoff(60).seconds(1, 1.0) == 1
    assert Backoff(60).seconds(5000, 1.0) == 60
    assert Backoff(RECEIVE_MAX_WAIT).seconds(5000, 0.5) == RECEIVE_MAX_WAIT / 2


def test_while_backing_off_only_wakeups_for_the_broken_group_wait() -> None:
    """
    One group is broken: a message for the other group runs at once, and so does a message for
    no group (it may concern the other group: a Spot warning cannot wait a minute), while a
    message for the broken group waits for the retry.
    """
    arrivals = ((10.0, OTHER, "other"), (10.5, GROUP, "broken"), (11.0, None, "any"))
    done = run(12, result=lambda _: refused(GROUP), arrivals=arrivals)
    assert 10.0 in done.cycles.starts
    assert 11.0 in done.cycles.starts
    assert not [s for s in done.cycles.starts if 10.0 < s < 11.0 or 11.0 < s < 12]
    assert done.inbox.deleted == ["other", "any"]


def test_while_every_group_fails_no_wakeup_runs_a_cycle_early() -> None:
    """A cycle that could read no group failed as a whole: every message waits for the retry."""
    arrivals = ((10.0, OTHER, "other"), (10.6, None, "any"))
    done = run(12, result=lambda _: refused(GROUP, OTHER), arrivals=arrivals)
    assert not [s for s in done.cycles.starts if 10.0 <= s < 12]
    assert done.inbox.deleted == []


def test_schedule_during_a_total_outage_ignores_every_wakeup() -> None:
    """After a cycle that failed as a whole, no wake-up brings the retry forward."""
    failed = Schedule(resync=0).after_cycle(CONFIG, Ran(0, 1, None), 1)
    waiting = [Wake(at=1.5, group=OTHER), Wake(at=1.6)]
    assert failed.next_cycle(waiting, CONFIG.min_gap) == (2, "retry")


def test_interruption_warnings_reach_every_cycle_for_ten_minutes() -> None:
    """
    A Spot warning for i-1 wakes a cycle that is told to drain i-1, as is every cycle for the
    next ten minutes; a second warning for i-2 adds to it; then both are forgotten.
    """
    script = Script(1300)
    script.arrivals = [
        Wake(at=10, handle="s1", kind="spot_warning", message_id="s1", interrupted="i-1"),
        Wake(at=100, handle="s2", kind="rebalance", message_id="s2", interrupted="i-2"),
    ]
    cycles = Cycles(script)
    Controller(
        settings(),
        Ports(FakeMembership(), FakeStore(b""), None),
        script,
        Metrics(stale_after=180, clock=script.clock),
        clock=script.clock,
        cycle=cycles,
    ).run()
    for start, given in zip(cycles.starts, cycles.interrupted, strict=True):
        expected = {"i-1"} if 10 <= start < 610 else set()
        expected |= {"i-2"} if 100 <= start < 700 else set()
        assert given == expected, start
    assert cycles.starts[-1] > 700


def untrusted(record: logging.LogRecord) -> bool:
    """Whether *record* is the line that reports an untrusted interruption warning."""
    return record.getMessage() == "untrusted interruption warning"


def distrusted(done: Run, reason: str) -> float:
    """How many interruption warnings the controller distrusted for *reason*."""
    return float(done.metrics.untrusted_warnings.labels(reason)._value.get())


@pytest.mark.usefixtures("logged")
def test_malformed_warning_is_logged_counted_deleted_and_drains_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """
    A warning from another source, and one whose instance id is garbled: each is logged once as
    untrusted (message id, instance, reason; never the body), counted, deleted like any message,
    and no cycle is told to drain anything.
    """
    forged = eventbridge("custom.forger", SPOT, {"instance-id": I2})
    garbled = eventbridge("aws.ec2", SPOT, {"instance-id": f"{I2}\nset server api/x state drain"})
    done = run(30, wakes=(message(forged, "forged", 1), message(garbled, "garbled", 2)))
    assert set().union(*done.cycles.interrupted) == set()
    assert done.inbox.deleted == ["forged", "garbled"]
    assert distrusted(done, "malformed") == 2
    lines = [fields(r) for r in caplog.records if untrusted(r)]
    assert [(f["message_id"], f["instance"]) for f in lines] == [
        ("id-forged", I2),
        ("id-garbled", "-"),
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records if untrusted(r))
    assert "source" in str(lines[0]["reason"])
    assert "0d3f5a7c" not in caplog.text  # the event id of the bodies: no body is logged
    assert all(str(value).isprintable() for line in lines for value in line.values())


def test_malformed_warning_that_comes_back_is_reported_once() -> None:
    """
    Cycles fail as a whole, so the malformed warning returns with a new receipt: it is counted
    once, and deleted with its latest receipt once a cycle runs.
    """
    garbled = eventbridge("aws.ec2", SPOT, {"instance-id": "i-1"})
    first = message(garbled, "h1", 1)
    again = replace(first, at=4, handle="h2")
    done = run(
        10,
        wakes=(first, again),
        result=lambda t: TransientError("AWS is unreachable") if t < 4.5 else ok(),
    )
    assert distrusted(done, "malformed") == 1
    assert done.inbox.deleted == ["h2"]


@pytest.mark.usefixtures("logged")
def test_warning_the_cycle_refutes_is_logged_once_and_forgotten(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """
    Well-formed warnings for an on-demand instance and for one in no managed group: the first
    cycle cannot judge them yet (a group was unreadable) and is told about them; the next one
    refutes them. Each is then logged and counted once, deleted, and no later cycle hears of it.
    """
    wakes = (
        message(eventbridge("aws.ec2", SPOT, {"instance-id": I2}), "on-demand", 10),
        message(eventbridge("aws.ec2", REBALANCE, {"instance-id": I1}), "elsewhere", 10),
    )
    refuted = Verdicts(not_spot=frozenset({I2}), unmanaged=frozenset({I1}))
    done = run(
        200, wakes=wakes, result=lambda t: ok() if t < 11 else replace(ok(), interruptions=refuted)
    )
    # A warning claims nothing a read could show: no follow-up, the resync judges them.
    assert done.cycles.starts[1:3] == [10, 70]
    assert done.cycles.interrupted[1:3] == [{I1, I2}] * 2
    assert len(done.cycles.starts) > 3
    assert not any(done.cycles.interrupted[3:])
    assert sorted(done.inbox.deleted) == ["elsewhere", "on-demand"]
    assert (distrusted(done, "not_spot"), distrusted(done, "not_managed")) == (1, 1)
    lines = [fields(r) for r in caplog.records if untrusted(r)]
    assert sorted((f["message_id"], f["instance"], f["kind"]) for f in lines) == [
        ("id-elsewhere", I1, "rebalance"),
        ("id-on-demand", I2, "spot_warning"),
    ]


@pytest.mark.usefixtures("logged")
def test_verified_warning_is_never_judged_again(caplog: pytest.LogCaptureFixture) -> None:
    """
    A cycle finds the warned instance is a Spot instance of a managed group; later it has left
    the group (EC2 reclaimed it): that is no reason to distrust the warning after the fact.
    """
    verified = Verdicts(verified=frozenset({I2}))
    left = Verdicts(unmanaged=frozenset({I2}))
    done = run(
        200,
        wakes=(message(eventbridge("aws.ec2", SPOT, {"instance-id": I2}), "spot", 10),),
        result=lambda t: replace(ok(), interruptions=verified if t < 11 else left),
    )
    after = [i for s, i in zip(done.cycles.starts, done.cycles.interrupted, strict=True) if s >= 10]
    assert len(after) > 3
    assert all(i == {I2} for i in after)
    assert not [r for r in caplog.records if untrusted(r)]
    assert distrusted(done, "not_managed") == 0


# -- which messages are deleted --------------------------------------------------------------------


def test_message_is_deleted_after_the_cycle_it_woke_succeeded() -> None:
    """The cycle that started after the message arrived succeeded: the message is deleted."""
    done = run(5, arrivals=((1, GROUP, "h1"),))
    assert done.inbox.deleted == ["h1"]
    assert done.metrics.messages_deleted.labels("scaling")._value.get() == 1


def test_message_arriving_during_a_cycle_waits_for_the_next_one() -> None:
    """A cycle that started before a message arrived never deletes it; the next one does."""
    deleted_after: list[list[str]] = []
    inbox = FakeInbox()

    def result(start: float) -> Result:
        deleted_after.append(list(inbox.deleted))
        return ok()

    done = run(5, result=result, during=((1, 0.01, "late"),), inbox=inbox)
    assert deleted_after[:2] == [[], []]
    assert done.inbox.deleted == ["late"]


def test_failed_cycle_keeps_its_messages_for_the_retry() -> None:
    """The cycle the message woke fails: nothing is deleted until the retry succeeds."""
    inbox = FakeInbox()
    seen: list[list[str]] = []

    def result(start: float) -> Result:
        seen.append(list(inbox.deleted))
        return refused(GROUP) if 1 <= start < 2 else ok()

    done = run(5, result=result, arrivals=((1, GROUP, "h1"),), inbox=inbox)
    assert done.cycles.starts[:3] == [0, 1, pytest.approx(2.05)]
    assert seen[:3] == [[], [], []]
    assert done.inbox.deleted == ["h1"]


def test_redelivered_message_is_deleted_once_with_its_latest_receipt() -> None:
    """Two receipts of one message: only the newer handle is sent to SQS."""
    script = Script(10)
    script.arrivals = [
        Wake(at=1, group=GROUP, handle="old", kind="scaling", message_id="m"),
        Wake(at=4, group=GROUP, handle="new", kind="scaling", message_id="m"),
    ]
    cycles = Cycles(script, lambda t: refused(GROUP) if t < 4 else ok())
    inbox = FakeInbox()
    Controller(
        settings(),
        Ports(FakeMembership(), FakeStore(b""), None),
        script,
        Metrics(stale_after=180, clock=script.clock),
        inbox=inbox,
        clock=script.clock,
        cycle=cycles,
        jitter=lambda: 1.0,
    ).run()
    assert inbox.deleted == ["new"]


def message(body: str, handle: str, at: float) -> Wake:
    """The wake-up the receiver posts for an SQS message with *body*, received at *at*."""
    return wake_of(received(body, handle, at=at))


def test_a_broken_group_holds_only_the_messages_that_name_it() -> None:
    """
    One group is refused in every cycle, the other is fine: a plain-text body, an EC2 event and
    the healthy group's notification are deleted after the one cycle that follows them; only
    the notification naming the broken group stays, and still does after many retries.
    """
    wakes = (
        message("hello, reconciler", "text", 1),
        message(corpus_body("eventbridge-ec2-state-change-running.json"), "ec2", 1),
        message(envelope(json.dumps(scaling(AutoScalingGroupName=OTHER))), "healthy", 1),
        message(envelope(json.dumps(scaling(AutoScalingGroupName=GROUP))), "broken", 1),
    )
    inbox = FakeInbox()
    deleted_after: list[list[str]] = []

    def result(start: float) -> Result:
        deleted_after.append(list(inbox.deleted))
        return refused(GROUP)

    done = run(60, result=result, wakes=wakes, inbox=inbox)
    first = next(n for n, start in enumerate(done.cycles.starts) if start >= 1)
    assert deleted_after[first + 1] == ["text", "ec2", "healthy"]
    assert done.inbox.deleted == ["text", "ec2", "healthy"]
    assert len(done.cycles.starts) > 5
    kinds = done.metrics.messages_deleted
    assert (
        kinds.labels("not_json")._value.get(),
        kinds.labels("eventbridge_ec2")._value.get(),
    ) == (
        1,
        1,
    )


@pytest.mark.parametrize(
    "outcome",
    [
        pytest.param(lambda: refused(GROUP, OTHER), id="no-group-read"),
        pytest.param(lambda: TransientError("AWS is unreachable"), id="raised"),
        pytest.param(
            lambda: CycleResult(ok().plan, Outcome(errors=("reload failed",))), id="apply-error"
        ),
    ],
)
def test_a_cycle_that_failed_as_a_whole_deletes_no_message(outcome: Callable[[], Result]) -> None:
    """
    A cycle that read no group, raised, or failed to apply covers nothing: messages naming no
    group stay, like those naming one.
    """
    wakes = (message("hello", "text", 1), message(envelope(json.dumps(scaling())), "named", 1))
    done = run(30, result=lambda _: outcome(), wakes=wakes)
    assert done.inbox.deleted == []


def test_failing_deletion_does_not_stop_the_controller() -> None:
    """SQS refuses the deletion: logged, the loop goes on, the message will come back."""
    inbox = FakeInbox(delete_error=TransientError("SQS is down"))
    done = run(200, arrivals=((1, GROUP, "h1"),), inbox=inbox)
    assert len(done.cycles.starts) >= 4
    assert done.metrics.messages_deleted.labels("scaling")._value.get() == 0


def test_refused_deletion_is_not_counted() -> None:
    """A handle SQS refuses in the batch is not counted as deleted."""
    inbox = FakeInbox(refuse={"bad"})
    done = run(5, arrivals=((1, GROUP, "good"), (1, GROUP, "bad")), inbox=inbox)
    assert done.inbox.deleted == ["good"]
    assert done.metrics.messages_deleted.labels("scaling")._value.get() == 1


def test_crashing_cycle_is_a_failed_cycle_and_the_loop_goes_on() -> None:
    """A bug in a cycle, or an error it raises, is a failed cycle that is retried, never fatal."""
    outcomes = iter([RuntimeError("bug"), PermanentError("refused")])
    done = run(5, result=lambda _: next(outcomes, ok()))
    assert done.cycles.starts[:3] == [0, pytest.approx(1.05), pytest.approx(3.1)]
    assert done.metrics.cycles.labels("failed")._value.get() == 2
    assert done.metrics.cycles.labels("ok")._value.get() == 1


# -- what a cycle reports --------------------------------------------------------------------------


def changed() -> CycleResult:
    """A cycle that added one server, removed one, and has one draining and one unchanged."""
    rows = (
        Row("api-i-1", "i-1", "127.0.1.4:80", Change.ADD, "InService; added"),
        Row("api-i-2", "i-2", "127.0.1.5:80", Change.REMOVE, "not in the group; deleted"),
        Row("api-i-3", "i-3", "127.0.1.6:80", Change.DRAINING, "terminated; draining"),
        Row("api-i-4", "i-4", "127.0.1.7:80", Change.UNCHANGED, "InService"),
    )
    plan = Plan((BackendPlan("api", GROUP, rows=rows, pending=True, awaits_haproxy=True),))
    return CycleResult(plan, Outcome(commands=5, file_written=True))


@pytest.fixture(name="logged")
def _logged(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Capture the package's INFO records, even after a test in this process ran ``logs.setup``."""
    logger = logging.getLogger("reconciler")
    # logs.setup stops propagation to the root logger, where caplog listens.
    monkeypatch.setattr(logger, "propagate", True)
    monkeypatch.setattr(logger, "handlers", [])
    with caplog.at_level(logging.INFO, logger="reconciler"):
        yield


@pytest.mark.usefixtures("logged")
def test_one_summary_log_line_per_cycle(caplog: pytest.LogCaptureFixture) -> None:
    """
    Each cycle logs one summary with its trigger, result, duration, CPU time, changes, whether it
    read AWS and its AWS calls (the queue's own calls left out), and one line per changed server.
    """
    counts: dict[str, object] = {}

    def result(start: float) -> Result:
        counts["autoscaling:DescribeAutoScalingGroups"] = CallCountsStub(calls=int(start) + 1)
        counts["sqs:ReceiveMessage"] = CallCountsStub(calls=100 * (int(start) + 1))
        return changed() if start == 1 else refused(GROUP) if start > 1 else ok()

    run(2.5, result=result, arrivals=((1, GROUP, "h1"),), api_calls=lambda: counts)
    summaries = [
        r for r in caplog.records if r.name == "reconciler.loop" and "trigger" in fields(r)
    ]
    assert [fields(r)["trigger"] for r in summaries] == ["resync", "event", "progress"]
    event = fields(summaries[1])
    assert event["result"] == "ok"
    assert event["changes"] == 2
    assert event["commands"] == 5
    assert event["pending"] is True
    assert event["wakeups"] == 1
    assert event["deleted"] == 1
    assert event["api_calls"] == 1
    assert event["duration_ms"] == round(CYCLE_SECONDS * 1000)
    assert event["cpu_ms"] == 0
    assert [fields(r)["aws_read"] for r in summaries] == [True, True, False]
    failed = fields(summaries[2])
    assert failed["result"] == "failed"
    assert failed["error"] == "api-asg: api-asg unreadable"
    servers = [fields(r) for r in caplog.records if fields(r).get("server")]
    assert [(s["server"], s["change"]) for s in servers] == [
        ("api-i-1", "add"),
        ("api-i-2", "remove"),
    ]
    json.dumps([fields(r) for r in caplog.records])  # every field serialises


@dataclass(frozen=True)
class CallCountsStub:
    """One operation's counts, as the AWS call counter reports them."""

    calls: int = 0
    retries: int = 0
    errors: int = 0


def fields(record: logging.LogRecord) -> dict[str, object]:
    """The structured fields of a log record."""
    return dict(getattr(record, "fields", {}))


def test_metrics_follow_the_cycles() -> None:
    """Changes, commands, writes, servers desired vs actual, drift and results are counted."""
    done = run(2.5, result=lambda t: changed() if t == 1 else ok(), arrivals=((1, GROUP, "h"),))
    text = done.metrics.exposition().decode()
    assert 'reconciler_changes_total{kind="add"} 1.0' in text
    assert 'reconciler_changes_total{kind="remove"} 1.0' in text
    assert "reconciler_runtime_commands_total 5.0" in text
    assert "reconciler_config_writes_total 1.0" in text
    assert 'reconciler_cycles_total{result="ok"} 3.0' in text
    # The last cycle (a progress poll of the stand-in) saw an empty backend again.
    assert 'reconciler_servers{backend="api",source="desired"} 0.0' in text
    metrics = Metrics(stale_after=10)
    metrics.record_cycle(0.1, changed(), "")
    text = metrics.exposition().decode()
    assert 'reconciler_servers{backend="api",source="desired"} 2.0' in text
    assert 'reconciler_servers{backend="api",source="actual"} 3.0' in text
    assert 'reconciler_drift_servers{backend="api"} 3.0' in text
    metrics.record_cycle(0.1, refused("api"), "api: unreadable")
    text = metrics.exposition().decode()
    assert 'reconciler_drift_servers{backend="api"} 3.0' in text  # unread: kept
    assert 'reconciler_cycles_total{result="failed"} 1.0' in text


def test_health_turns_bad_when_successes_stop_and_says_why() -> None:
    """200 while starting and while the last success is young; 503 with the error after."""
    now = [0.0]
    metrics = Metrics(stale_after=10, clock=lambda: now[0])
    assert metrics.health()[0]
    now[0] = 11
    assert metrics.health() == (False, "no successful cycle in 11s since start")
    metrics.record_cycle(0.1, ok(), "")
    assert metrics.health() == (True, "last successful cycle 0.0s ago")
    now[0] = 15
    metrics.record_cycle(0.1, None, "AWS is down")
    assert metrics.health() == (True, "last successful cycle 4.0s ago; last error: AWS is down")
    now[0] = 30
    healthy, reason = metrics.health()
    assert not healthy
    assert reason == "last successful cycle 19s ago (limit 10s); last error: AWS is down"


@pytest.fixture(name="status")
def _status() -> Iterator[tuple[str, Metrics]]:
    """A status listener on a free loopback port, with fresh metrics."""
    metrics = Metrics(stale_after=10)
    server = StatusServer("127.0.0.1:0", metrics)
    server.start()
    yield f"http://{server.address}", metrics
    server.stop()


def fetch(url: str) -> tuple[int, str]:
    """GET *url* without any proxy; the status and the body."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_status_server_answers_health_and_metrics(status: tuple[str, Metrics]) -> None:
    """/healthz says why, /metrics has the counters, a query string is ignored, others 404."""
    url, metrics = status
    metrics.record_cycle(0.1, ok(), "")
    code, body = fetch(f"{url}/healthz?verbose=1")
    assert code == 200
    assert body.startswith("last successful cycle")
    code, body = fetch(f"{url}/metrics")
    assert code == 200
    assert 'reconciler_cycles_total{result="ok"} 1.0' in body
    assert fetch(f"{url}/")[0] == 404


def test_status_server_reports_unhealthy_with_503() -> None:
    """A controller whose cycles fail for too long answers 503 with the reason."""
    now = [0.0]
    metrics = Metrics(stale_after=1, clock=lambda: now[0])
    metrics.record_cycle(0.1, None, "throttled")
    now[0] = 5
    server = StatusServer("127.0.0.1:0", metrics)
    server.start()
    try:
        code, body = fetch(f"http://{server.address}/healthz")
    finally:
        server.stop()
    assert code == 503
    assert "last error: throttled" in body


def test_status_server_stops_even_if_never_started() -> None:
    """Stopping a listener that never served returns at once and frees the port."""
    StatusServer("127.0.0.1:0", Metrics(stale_after=1)).stop()


# -- the mailbox and the receiver thread -----------------------------------------------------------


def test_wakeups_wait_returns_on_put_stop_or_deadline() -> None:
    """A put from another thread, a stop, or the deadline ends a wait; wake-ups come in batches."""
    wakeups = Wakeups()
    clock = wakeups._clock
    assert wakeups.wait(clock() + 0.01) == []
    timer = threading.Timer(0.05, wakeups.put, args=(Wake(at=1), Wake(at=2)))
    timer.start()
    assert [w.at for w in wakeups.wait(clock() + 30)] == [1, 2]
    threading.Timer(0.05, wakeups.stop).start()
    assert wakeups.wait(clock() + 30) == []
    assert wakeups.stopping
    timer.join()


def test_controller_returns_promptly_when_stopped() -> None:
    """``stop`` during a long wait ends ``run`` after the cycle in progress."""
    wakeups = Wakeups()
    controller = Controller(
        settings(),
        Ports(FakeMembership(), FakeStore(b""), None),
        wakeups,
        Metrics(stale_after=180),
        cycle=lambda *_, **__: ok(),
    )
    thread = threading.Thread(target=controller.run)
    thread.start()
    wakeups.put(Wake(at=0))
    wakeups.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert 1 <= controller.cycles <= 2


@dataclass
class Receiving:
    """A receiver thread (not started) on a fake inbox, and what it posted and reported."""

    inbox: FakeInbox = field(default_factory=FakeInbox)
    wakeups: Wakeups = field(default_factory=Wakeups)
    received: list[str] = field(default_factory=list)
    deleted_at_once: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        """Build the receiver, with tiny backoffs."""
        self.receiver = SqsReceiver(
            self.inbox,
            self.wakeups,
            on_message=lambda m: self.received.append(m.receipt_handle),
            on_delete=lambda m: self.deleted_at_once.append(m.receipt_handle),
            jitter=lambda: 0.001,
        )

    def wakes(self, count: int) -> list[Wake]:
        """Wait (at most 10 s) until *count* wake-ups were posted; return them."""
        found: list[Wake] = []
        deadline = self.wakeups._clock() + 10
        while len(found) < count and self.wakeups._clock() < deadline:
            found += self.wakeups.wait(deadline)
        return found


@pytest.fixture(name="receiving")
def _receiving() -> Iterator[Receiving]:
    """A receiver on a fake inbox; the test scripts the inbox, then starts it."""
    state = Receiving()
    yield state
    state.receiver.stop()
    state.wakeups.stop()


LAUNCH_BODY = envelope(json.dumps(scaling(AutoScalingGroupName=GROUP)))


def test_receiver_posts_wakeups_and_deletes_harmless_messages_at_once(
    receiving: Receiving,
) -> None:
    """A launch wakes the controller with its group and receipt; a test notification is deleted."""
    test_note = corpus_body("sns-test-notification.json")
    receiving.inbox.script.append([received(LAUNCH_BODY, "h1"), received(test_note, "h2")])
    receiving.receiver.start()
    (wake,) = receiving.wakes(1)
    assert (wake.group, wake.handle, wake.kind, wake.message_id) == (
        GROUP,
        "h1",
        "scaling",
        "id-h1",
    )
    assert receiving.inbox.deleted == ["h2"]
    assert receiving.deleted_at_once == ["h2"]
    assert receiving.received == ["h1", "h2"]


def test_receiver_passes_on_the_instance_of_an_interruption_warning(
    receiving: Receiving,
) -> None:
    """A Spot interruption warning names no group, but the instance EC2 is about to take."""
    warning = corpus_body("eventbridge-ec2-spot-interruption-warning.json")
    receiving.inbox.script.append([received(warning, "h1"), received(LAUNCH_BODY, "h2")])
    receiving.receiver.start()
    spot, launch = receiving.wakes(2)
    assert (spot.group, spot.kind, spot.interrupted) == (None, "spot_warning", I2)
    assert launch.interrupted is None


def test_receiver_outlives_errors_and_bugs(receiving: Receiving) -> None:
    """A failed receive, an unexpected exception and a failed deletion: it keeps polling."""
    test_note = corpus_body("sns-test-notification.json")
    receiving.inbox.delete_error = TransientError("SQS is down")
    receiving.inbox.script += [
        TransientError("throttled"),
        RuntimeError("a bug"),
        [received(test_note, "harmless")],
        [received(LAUNCH_BODY, "h1")],
    ]
    receiving.receiver.start()
    (wake,) = receiving.wakes(1)
    assert wake.handle == "h1"
    assert receiving.deleted_at_once == []
    assert receiving.received == ["harmless", "h1"]


def test_stopped_receiver_ends_even_while_the_controller_runs(receiving: Receiving) -> None:
    """``stop`` ends the thread by itself: a closed inbox answers at once and must not spin."""
    receiving.receiver.start()
    receiving.receiver.stop()
    receiving.receiver._thread.join(10)
    assert not receiving.receiver._thread.is_alive()
    assert not receiving.wakeups.stopping


def haproxy_info(metrics: Metrics) -> list[tuple[dict[str, str], float]]:
    """The series of ``reconciler_haproxy_info``: labels and value."""
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for sample in family.samples
        if sample.name == "reconciler_haproxy_info"
    ]


def test_haproxy_info_is_one_series_naming_the_running_haproxy() -> None:
    """
    An info gauge: 1, labelled with the version and the commands that matter to the controller;
    none before HAProxy was read, one series at a time, replaced after an upgrade and kept through
    cycles that did not read HAProxy. The loop passes it on from each cycle's result.
    """
    required = ",".join(HAProxyFeatures.REQUIRED_COMMANDS)
    older = HAProxyFeatures("2.6.12-1+deb12u4", frozenset({*required.split(","), "help"}))
    newer = HAProxyFeatures("3.0.11-9e587df", frozenset({*older.commands, "wait"}))
    metrics = Metrics(stale_after=10)
    assert haproxy_info(metrics) == []
    metrics.record_cycle(0.1, replace(ok(), haproxy=older), "")
    assert haproxy_info(metrics) == [({"version": older.version, "commands": required}, 1.0)]
    metrics.record_cycle(0.1, ok(), "")
    metrics.record_cycle(0.1, None, "HAProxy unreachable")
    assert haproxy_info(metrics) == [({"version": older.version, "commands": required}, 1.0)]
    metrics.record_cycle(0.1, replace(ok(), haproxy=newer), "")
    upgraded = {"version": newer.version, "commands": f"{required},wait"}
    assert haproxy_info(metrics) == [(upgraded, 1.0)]
    done = run(1, result=lambda _: replace(ok(), haproxy=newer))
    assert haproxy_info(done.metrics) == [(upgraded, 1.0)]
