"""
The ``reconcile check`` report for people: per area its name, then one row per check
(``core.checks.Check``) with its mark, subject and detail, the fix under the detail; then a line
of totals. Pure: these
functions build renderables; ``cli`` prints them, and ``core.checks.to_json`` is the form for
scripts.

The mark says the verdict without colour (``✓`` ok, ``✗`` fail, ``!`` warning, ``-`` skipped) and
the totals line spells it out; colour only underlines it. Every string is text from outside
(paths, HAProxy's and AWS's words): it goes in as ``Text``, never parsed as markup, each line with
its control characters escaped. Areas head their rows rather than fill a column, and the detail
folds long words (paths), so the report reads at 80 columns.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from rich.cells import cell_len
from rich.console import Group as RenderGroup
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from reconciler.core.checks import Check, Verdict
from reconciler.logs import escaped


#: The mark and style of each verdict.
MARKS = {
    Verdict.OK: ("✓", "green"),
    Verdict.FAIL: ("✗", "bold red"),
    Verdict.WARN: ("!", "bold yellow"),
    Verdict.SKIP: ("-", "dim"),
}
#: The most columns the subjects take (``autoscaling:DescribeAutoScalingGroups`` fits), leaving
#: 40 of 80 to the detail; a longer subject folds.
SUBJECT_WIDTH = 38
#: The totals line's words (one, several), in its order.
_TOTALS = (
    (Verdict.FAIL, ("failed", "failed")),
    (Verdict.WARN, ("warning", "warnings")),
    (Verdict.SKIP, ("skipped", "skipped")),
    (Verdict.OK, ("ok", "ok")),
)


def table(checks: Sequence[Check]) -> RenderableType:
    """Per area its name, then its rows (mark, subject, detail and fix); then the totals line."""
    parts: list[RenderableType] = []
    # One width for every area, so that the details line up.
    widest = max((cell_len(escaped(check.subject)) for check in checks), default=1)
    width = min(SUBJECT_WIDTH, widest)
    for area, rows in itertools.groupby(checks, key=lambda check: check.area):
        grid = Table.grid(padding=(0, 1, 0, 0))
        grid.add_column(no_wrap=True)
        grid.add_column(overflow="fold", width=width)
        grid.add_column(overflow="fold")
        for check in rows:
            mark, style = MARKS[check.verdict]
            grid.add_row(Text(mark, style=style), Text(escaped(check.subject)), _detail(check))
        parts += [Text(escaped(area), style="bold"), grid]
    return RenderGroup(*parts, Text(), totals(checks))


def _detail(check: Check) -> Text:
    """The detail, one escaped line per line, then the fix (when there is one) under it."""
    text = Text("\n").join(Text(escaped(line)) for line in check.detail.splitlines())
    if check.fix:
        if check.detail:
            text.append("\n")
        text.append("fix: ", style="bold")
        text.append(escaped(check.fix))
    return text


def totals(checks: Sequence[Check]) -> Text:
    """ "check failed: 1 failed, 2 warnings, 0 skipped, 12 ok" (or "check passed: ...")."""
    counts = {verdict: sum(c.verdict is verdict for c in checks) for verdict in Verdict}
    failed = counts[Verdict.FAIL] > 0
    head = ("check failed: ", "bold red") if failed else ("check passed: ", "bold green")
    parts = Text(", ").join(
        Text(
            f"{counts[verdict]} {words[counts[verdict] != 1]}",
            style=MARKS[verdict][1] if counts[verdict] else "",
        )
        for verdict, words in _TOTALS
    )
    return Text.assemble(head, parts)
