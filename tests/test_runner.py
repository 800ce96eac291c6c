"""
``reconcile --once`` behind the CLI (``runner.converge``) in virtual time, with stand-in cycles:
when it stops, what its report sums up, and how the cycle-level retry policy
(``reconciler.retry``) treats a cycle that raised. The real cycle runs in
``test_once_end_to_end.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from harness.fakes import FakeMembership, FakeStore
from reconciler.core.errors import PermanentError, TransientError
from reconciler.core.model import (
    AwsObservation,
    BackendPlan,
    Change,
    CycleResult,
    Deferral,
    Group,
    Outcome,
    Plan,
    Row,
)
from reconciler.core.results import RunReport, changed_rows, merge
from reconciler.core.settings import (
    AwsSettings,
    Binding,
    ControllerSettings,
    HAProxySettings,
    Settings,
)
from reconciler.ports import Ports
from reconciler.retry import FIRST_WAIT, ONCE_ATTEMPTS, ONCE_MAX_WAIT, Backoff, retrying
from reconciler.runner import converge


POLL = 0.5
SETTINGS = Settings(
    aws=AwsSettings(),
    haproxy=HAProxySettings(),
    backends=(Binding("api", "api-asg", 80),),
    controller=ControllerSettings(poll_interval=POLL),
)
PORTS = Ports(FakeMembership(), FakeStore(b""), None)


def row(server: str, change: Change, reason: str = "") -> Row:
    """A report row of server *server* (instance ``i-<server>``)."""
    return Row(server, f"i-{server}", "127.0.1.4:80", change, reason)


def cycle_result(*rows: Row, pending: bool = False, commands: int = 0) -> CycleResult:
    """A cycle of the ``api`` backend with *rows*, that ran *commands* runtime commands."""
    plan = Plan((BackendPlan("api", "api-asg", rows=rows, pending=pending),))
    return CycleResult(plan, Outcome(commands=commands))


@dataclass
class Clock:
    """Virtual time: sleeping moves it on, and every sleep is noted."""

    now: float = 0.0
    slept: list[float] = field(default_factory=list)

    def sleep(self, seconds: float) -> None:
        """Move the clock on by *seconds*."""
        self.slept.append(seconds)
        self.now += seconds


@dataclass
class Script:
    """Stands in for ``run_cycle``: the next of *outcomes* (a result, or an error to raise)."""

    outcomes: list[CycleResult | Exception]
    calls: int = 0
    #: The AWS read each cycle was given (``None``: it read AWS).
    given: list[AwsObservation | None] = field(default_factory=list)

    def __call__(
        self, settings: Settings, ports: Ports, *, dry_run: bool, aws: AwsObservation | None
    ) -> CycleResult:
        """Run one stand-in cycle."""
        outcome = self.outcomes[min(self.calls, len(self.outcomes) - 1)]
        self.calls += 1
        self.given.append(aws)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def run(
    *outcomes: CycleResult | Exception, limit: float = 60, dry_run: bool = False
) -> tuple[RunReport, Clock, Script]:
    """``converge`` over the scripted *outcomes* in virtual time; the report, clock and script."""
    clock, script = Clock(), Script(list(outcomes))
    report = converge(
        SETTINGS,
        PORTS,
        dry_run=dry_run,
        limit=limit,
        cycle=script,
        sleep=clock.sleep,
        clock=lambda: clock.now,
    )
    return report, clock, script


def test_runs_until_nothing_is_pending_and_sums_the_cycles() -> None:
    """Warm-ups in progress are polled every poll_interval; the report sums every cycle."""
    warming = cycle_result(row("a", Change.ADD, "added"), pending=True, commands=2)
    ready = cycle_result(row("a", Change.UNCHANGED, "ready"), commands=1)

    report, clock, script = run(warming, warming, ready)

    assert script.calls == 3
    assert clock.slept == [POLL, POLL]
    assert report.totals() == {"cycles": 3, "commands": 5, "file_writes": 0, "reloads": 0}
    assert report.errors == ()
    assert report.plan is not None
    (backend,) = report.plan.backends
    assert backend.rows == (row("a", Change.ADD, "ready"),)


def test_warm_ups_awaiting_haproxy_reuse_the_aws_read_a_quarter_check_apart() -> None:
    """
    Warm-ups that wait on HAProxy alone: the next cycles come a quarter of the check interval
    (``inter 2s`` by default, bounded by poll_interval) apart and plan with the first cycle's AWS
    read; a completed lifecycle action makes the next cycle read AWS again.
    """
    read = AwsObservation(groups={"api-asg": Group("api-asg", 0, ())})
    plan = Plan((BackendPlan("api", "api-asg", pending=True, awaits_haproxy=True),))
    warming = CycleResult(plan, Outcome(), aws=read)
    completed = replace(warming, outcome=Outcome(lifecycle_calls=1))
    ready = cycle_result()

    report, clock, script = run(warming, completed, warming, ready)

    assert script.given == [None, read, None, read]
    assert clock.slept == [POLL, POLL, POLL]
    assert report.cycles == 4


def test_dry_run_runs_one_cycle_whatever_is_pending() -> None:
    """A dry run plans once and stops, even with work pending."""
    report, clock, script = run(cycle_result(pending=True), dry_run=True)
    assert (script.calls, report.cycles, clock.slept) == (1, 1, [])


def test_gives_up_at_the_limit_and_says_so() -> None:
    """Still pending after *limit* seconds: the report ends with the error, nothing hangs."""
    report, _, script = run(cycle_result(pending=True), limit=1)
    assert script.calls == 3  # at 0, 0.5 and 1 s
    assert report.errors == (
        "not converged after 1s: warm-ups, drains or disagreeing AWS reads still in progress; "
        "run again later or raise --timeout",
    )


def test_a_transient_failure_is_retried_with_the_cycle_backoff() -> None:
    """Two cycles raise TransientError: tried again after 0.5-1 s, then 1-2 s; the third works."""
    flaky = TransientError("AWS throttled")

    report, clock, script = run(flaky, flaky, cycle_result())

    assert script.calls == ONCE_ATTEMPTS
    first, second = clock.slept
    assert FIRST_WAIT / 2 <= first <= FIRST_WAIT
    assert FIRST_WAIT <= second <= 2 * FIRST_WAIT
    assert (report.cycles, report.errors) == (1, ())


def test_a_transient_failure_that_lasts_ends_the_run_with_its_error() -> None:
    """After ONCE_ATTEMPTS tries the last error is the report's; no cycle completed."""
    report, clock, script = run(TransientError("AWS throttled"))
    assert script.calls == ONCE_ATTEMPTS
    assert len(clock.slept) == ONCE_ATTEMPTS - 1
    assert (report.plan, report.cycles, report.errors) == (None, 0, ("AWS throttled",))


def test_a_permanent_failure_is_not_retried() -> None:
    """Retrying a refused change at once would not help: the run ends with the error."""
    report, clock, script = run(cycle_result(pending=True), PermanentError("reload failed"))
    assert script.calls == 2
    assert clock.slept == [POLL]
    assert (report.cycles, report.errors) == (1, ("reload failed",))


def test_errors_are_reported_once_across_cycles() -> None:
    """A backend refused for the same reason in every cycle is one error."""
    refused = CycleResult(Plan((BackendPlan("api", "api-asg", refused="unreadable"),)), Outcome())
    report = RunReport().add(refused).add(refused)
    assert report.errors == ("api: unreadable",)
    assert report.failed("later").errors == ("api: unreadable", "later")


def test_merge_keeps_the_first_change_and_the_latest_reason() -> None:
    """An added server reads ``add`` after it warmed up; a server gone later keeps its row."""
    earlier = Plan(
        (BackendPlan("api", "api-asg", rows=(row("a", Change.ADD), row("b", Change.REMOVE))),)
    )
    later = Plan((BackendPlan("api", "api-asg", rows=(row("a", Change.UNCHANGED, "ready"),)),))
    (backend,) = merge(earlier, later).backends
    assert backend.rows == (row("a", Change.ADD, "ready"), row("b", Change.REMOVE))
    assert merge(None, later) == later


@pytest.mark.parametrize(
    ("failures", "factor", "seconds"),
    [(1, 1.0, 1), (2, 1.0, 2), (3, 1.0, 4), (3, 0.5, 2), (4, 1.0, ONCE_MAX_WAIT), (5000, 1.0, 5)],
)
def test_backoff_doubles_up_to_its_cap(failures: int, factor: float, seconds: float) -> None:
    """1, 2, 4 s... times the jitter factor, never above the cap, never overflowing."""
    assert Backoff(ONCE_MAX_WAIT).seconds(failures, factor) == seconds


def test_retrying_waits_through_the_backoff_it_is_given() -> None:
    """tenacity asks the policy for each wait; a success after a failure returns the value."""
    slept: list[float] = []
    outcomes: list[int | Exception] = [TransientError("briefly gone"), 7]

    def flaky() -> int:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    tries = retrying("reading failed", backoff=Backoff(8, jitter=lambda: 0.5), sleep=slept.append)
    assert tries(flaky) == 7
    assert slept == [0.5]


def test_a_deferred_delete_is_no_change() -> None:
    """
    A delete HAProxy postponed (idle connections, 2.6) changed nothing: its row is not counted as
    a removal, however many cycles retry it; the delete that succeeds is.
    """
    row = Row("api-i-1", "i-1", "127.0.1.1", Change.REMOVE, "not in the group")
    plan = Plan((BackendPlan("api", "asg", rows=(row,)),))
    deferred = Outcome(deferred=(Deferral("api", "api-i-1", "still has connections"),))
    assert list(changed_rows(CycleResult(plan, deferred))) == []
    assert list(changed_rows(CycleResult(plan, Outcome()))) == [("api", row)]
    assert str(deferred.deferred[0]) == "api/api-i-1: still has connections"
