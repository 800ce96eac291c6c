"""
What cycles did, read across cycles. Pure.

``changed_rows`` picks the servers one cycle changed (for the metrics and the log line);
``merge`` folds the plans of several cycles into one report, and ``RunReport`` sums a whole
``reconcile --once`` run (which repeats cycles while warm-ups and drains are in progress).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

from reconciler.core.model import BackendPlan, Change, CycleResult, Outcome, Plan, Row, StepKind


#: What a report row says about a server when the cycle changed it; the other changes report
#: progress (warming, draining) or nothing to do.
CHANGES = frozenset(
    {Change.ADD, Change.REMOVE, Change.ADDRESS, Change.OPTIONS, Change.WEIGHT, Change.ZONE}
)


def changed_rows(result: CycleResult) -> Iterator[tuple[str, Row]]:
    """
    The report rows of the servers a cycle changed (or tried to: a failed cycle's attempts are
    included), each with its backend. A dry run changes nothing, and neither does a delete HAProxy
    postponed: a server kept for its connections is counted once, when it goes.
    """
    if result.outcome is None:
        return
    postponed = {(d.backend, d.server) for d in result.outcome.deferred}
    for backend in result.plan.backends:
        if backend.refused or backend.held:
            continue
        readded: set[str] | None = None
        for row in backend.rows:
            if row.change not in CHANGES or (backend.backend, row.server) in postponed:
                continue
            if row.change is Change.ZONE:
                # A server waiting to change its form has a zone row too: the change is the
                # cycle that adds it again in the new form.
                if readded is None:
                    readded = {s.server for s in backend.steps if s.kind is StepKind.ADD}
                if row.server not in readded:
                    continue
            yield backend.backend, row


def merge(earlier: Plan | None, later: Plan) -> Plan:
    """
    Fold a later cycle's plan into an earlier one, for a report of several cycles: a server keeps
    the change it first had and the latest reason, and a server gone from the later plan keeps
    its last row.
    """
    if earlier is None:
        return later
    before = {b.backend: b for b in earlier.backends}
    return Plan(tuple(_merge_backend(before.get(b.backend), b) for b in later.backends))


def _merge_backend(earlier: BackendPlan | None, later: BackendPlan) -> BackendPlan:
    if earlier is None or later.refused or later.held:
        return later
    old = {row.server: row for row in earlier.rows}
    rows: dict[str, Row] = dict(old)
    for row in later.rows:
        first = old.get(row.server)
        keep = first is not None and row.change in (Change.UNCHANGED, Change.WARMING, Change.ADD)
        change = first.change if keep and first is not None else row.change
        rows[row.server] = Row(row.server, row.instance_id, row.address, change, row.reason)
    return BackendPlan(
        backend=later.backend,
        asg=later.asg,
        steps=later.steps,
        lines=later.lines,
        pending=later.pending,
        awaits_haproxy=later.awaits_haproxy,
        rereads_aws=later.rereads_aws,
        rows=tuple(rows.values()),
        warnings=later.warnings,
        watches_health=later.watches_health,
        zones=later.zones,
    )


@dataclass(frozen=True)
class RunReport:
    """The sum of the cycles of one ``--once`` run: their folded plan, errors and counts."""

    #: ``None`` until a cycle completed.
    plan: Plan | None = None
    #: Every error once, in the order first met.
    errors: tuple[str, ...] = ()
    cycles: int = 0
    commands: int = 0
    file_writes: int = 0
    reloads: int = 0

    def add(self, result: CycleResult) -> RunReport:
        """This report with one more completed cycle."""
        errors = list(self.errors)
        errors.extend(e for e in result.errors if e not in errors)
        outcome = result.outcome or Outcome()  # a dry run did nothing
        return replace(
            self,
            plan=merge(self.plan, result.plan),
            errors=tuple(errors),
            cycles=self.cycles + 1,
            commands=self.commands + outcome.commands,
            file_writes=self.file_writes + outcome.file_written,
            reloads=self.reloads + outcome.reloaded,
        )

    def failed(self, error: str) -> RunReport:
        """This report with the error that ended the run."""
        return replace(self, errors=(*self.errors, error))

    def totals(self) -> dict[str, int]:
        """The counts, by the names the JSON report gives them."""
        return {
            "cycles": self.cycles,
            "commands": self.commands,
            "file_writes": self.file_writes,
            "reloads": self.reloads,
        }
