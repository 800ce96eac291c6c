"""
Reports of what a cycle decided and did: rich tables for people, JSON for scripts. Pure: these
functions build renderables and dictionaries; ``cli`` prints them.

Every string from outside (group names, reasons, HAProxy's and AWS's words) goes into a table as
a ``Text``, never as a ``str``, which rich would parse as markup, and with its control characters
escaped, which a terminal would obey.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Group as RenderGroup
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from reconciler.core.model import BackendPlan, Change, Plan, Row
from reconciler.logs import escaped


_STYLES = {
    Change.ADD: "green",
    Change.REMOVE: "red",
    Change.ADDRESS: "yellow",
    Change.OPTIONS: "yellow",
    Change.WARMING: "cyan",
    Change.DRAINING: "magenta",
    Change.UNCHANGED: "dim",
    Change.HELD: "bold yellow",
}
#: Rows sort by what matters most to a reader: changes first, unchanged last.
_ORDER = {change: index for index, change in enumerate(_STYLES)}


def merge(earlier: Plan | None, later: Plan) -> Plan:
    """
    Fold a later cycle's plan into an earlier one, for a report of several cycles (``--once``
    waits for warm-ups and drains): a server keeps the change it first had and the latest reason,
    and a server gone from the later plan keeps its last row.
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
        rows=tuple(rows.values()),
    )


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
        caption=Text(escaped(_summary(backend))),
        title_justify="left",
        caption_justify="left",
    )
    table.add_column("change", no_wrap=True)
    table.add_column("instance", no_wrap=True)
    table.add_column("address", no_wrap=True)
    table.add_column("reason", overflow="fold", min_width=24)
    for row in sorted_rows(backend.rows):
        style = _STYLES[row.change]
        table.add_row(
            Text(row.change.value, style=style),
            Text(escaped(row.instance_id)),
            Text(escaped(row.address)),
            Text(escaped(row.reason)),
        )
    return table


def _summary(backend: BackendPlan) -> str:
    if backend.refused:
        return f"REFUSED, nothing changed: {backend.refused}"
    if backend.held:
        return f"HELD: {backend.held}"
    tally = counts(backend)
    shown = ", ".join(f"{n} {kind}" for kind, n in tally.items() if n)
    return shown or "no managed servers"


def sorted_rows(rows: Iterable[Row]) -> list[Row]:
    """Rows in report order: by change kind (changes first), then instance id."""
    return sorted(rows, key=lambda r: (_ORDER[r.change], r.instance_id, r.server))


def plan_json(plan: Plan, *, errors: Sequence[str] = (), **extra: Any) -> dict[str, Any]:
    """The report as a JSON-ready dictionary (see the README for the schema)."""
    return {
        **extra,
        "ok": not errors,
        "errors": list(errors),
        "backends": [
            {
                "backend": b.backend,
                "asg": b.asg,
                "refused": b.refused,
                "held": b.held,
                "pending": b.pending,
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
