"""
Reports of what a run's cycles decided and did (``core.results.RunReport``): rich tables for
people, JSON for scripts. Pure: these functions build renderables, lines and dictionaries; ``cli``
prints them.

Every string from outside (group names, reasons, HAProxy's and AWS's words) goes into a table as
a ``Text``, never as a ``str``, which rich would parse as markup, and with its control characters
escaped, which a terminal would obey.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.console import Group as RenderGroup
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from reconciler.core.model import BackendPlan, Change, Plan, Row
from reconciler.core.results import RunReport
from reconciler.logs import escaped


_STYLES = {
    Change.ADD: "green",
    Change.REMOVE: "red",
    Change.ADDRESS: "yellow",
    Change.OPTIONS: "yellow",
    Change.ZONE: "yellow",
    Change.WEIGHT: "yellow",
    Change.WARMING: "cyan",
    Change.DRAINING: "magenta",
    Change.UNCHANGED: "dim",
    Change.HELD: "bold yellow",
}
#: Rows sort by what matters most to a reader: changes first, unchanged last.
_ORDER = {change: index for index, change in enumerate(_STYLES)}
#: What 80 columns (a pipe's width) leave the reason beside the widest other cells ("unchanged",
#: an instance id, "255.255.255.255:65535") and the borders: any wider and rich crops the table's
#: right edge instead of wrapping the reason. The same arithmetic keeps the server's name, which
#: is the prefix and the instance id, out of the table: it is in ``--json``.
_REASON_MIN_WIDTH = 18


def counts(backend: BackendPlan) -> dict[str, int]:
    """How many servers of each change kind a backend plan has."""
    result = {change.value: 0 for change in Change}
    for row in backend.rows:
        result[row.change.value] += 1
    return result


def plan_tables(plan: Plan, *, title: str = "") -> RenderableType:
    """One table per backend, rows sorted by change then instance id."""
    parts: list[RenderableType] = []
    if title:
        parts.append(Text(escaped(title), style="bold"))
    parts.extend(_backend_table(b) for b in plan.backends)
    return RenderGroup(*parts)


def _backend_table(backend: BackendPlan) -> RenderableType:
    table = Table(
        title=Text(escaped(f"backend {backend.backend} ← group {backend.asg}")),
        caption=Text("\n").join(Text(escaped(line)) for line in _summary(backend)),
        title_justify="left",
        caption_justify="left",
    )
    table.add_column("change", no_wrap=True)
    table.add_column("instance", no_wrap=True)
    table.add_column("address", no_wrap=True)
    table.add_column("reason", overflow="fold", min_width=_REASON_MIN_WIDTH)
    for row in sorted_rows(backend.rows):
        style = _STYLES[row.change]
        table.add_row(
            Text(row.change.value, style=style),
            Text(escaped(row.instance_id)),
            Text(escaped(row.address)),
            Text(escaped(row.reason)),
        )
    return table


def _summary(backend: BackendPlan) -> list[str]:
    """
    The caption's lines: the tally (or why nothing was done), then the warnings. (Zone routing's
    status is the drift report's: a plan's was read before its cycle acted.)
    """
    if backend.refused:
        return [f"REFUSED, nothing changed: {backend.refused}"]
    if backend.held:
        head = f"HELD: {backend.held}"
    else:
        tally = counts(backend)
        head = ", ".join(f"{n} {kind}" for kind, n in tally.items() if n) or "no managed servers"
    return [head, *(f"warning: {warning}" for warning in backend.warnings)]


def sorted_rows(rows: Iterable[Row]) -> list[Row]:
    """Rows in report order: by change kind (changes first), then instance id."""
    return sorted(rows, key=lambda r: (_ORDER[r.change], r.instance_id, r.server))


def totals_line(report: RunReport) -> str:
    """What a run did, in one line."""
    return (
        f"{report.cycles} cycle(s), {report.commands} runtime command(s), "
        f"{report.file_writes} file write(s), {report.reloads} reload(s)"
    )


def report_json(report: RunReport, *, dry_run: bool) -> dict[str, Any]:
    """The report of a run as a JSON-ready dictionary (docs/reports.md has the schema)."""
    plan = report.plan or Plan(())
    return {
        "dry_run": dry_run,
        **report.totals(),
        "ok": not report.errors,
        "errors": list(report.errors),
        "backends": [
            {
                "backend": b.backend,
                "asg": b.asg,
                "refused": b.refused,
                "held": b.held,
                "pending": b.pending,
                "warnings": list(b.warnings),
                "counts": counts(b),
                "servers": [
                    {
                        "server": r.server,
                        "instance_id": r.instance_id,
                        "address": r.address,
                        "change": r.change.value,
                        "reason": r.reason,
                    }
                    for r in sorted_rows(b.rows)
                ],
            }
            for b in plan.backends
        ],
    }
