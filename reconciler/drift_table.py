"""
The drift report for people (rich tables) and for scripts (JSON), and its exit code. Pure: these
functions build renderables and dictionaries; ``cli`` prints them.

Text from outside (group names, details, HAProxy's check status) is shown as text: in ``Text``
objects and segments, never parsed as markup, its control characters escaped.

Colour only underlines what the words already say: every verdict and summary is text, so the
report reads the same without colour. Whether escape codes are written at all is the console's
decision (none when the output is not a terminal); ``color_system`` adds ``NO_COLOR``, which on a
terminal would otherwise still get bold and dim.

Above the tables, one line says which HAProxy the report compared with and what its runtime API
offers the controller (``haproxy_line``); ``--json`` has it all in its ``haproxy`` object.

A backend with zone routing gets its zone line under its title (``core.drift.zone_summary``) and a
zone column; one that sets weights (or runs a server at another weight than its file line says) a
weight column; its warnings come before its summary line. Other backends' tables keep their
columns, so they read as before.

``to_json`` follows ``JSON_SCHEMA``; ``SCHEMA_VERSION`` changes whenever a field is removed or
changes meaning, never when one is added.
"""

from __future__ import annotations

import enum
import textwrap
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.console import Group as RenderGroup
from rich.segment import Segment
from rich.style import Style
from rich.text import Text

from reconciler.core.drift import (
    BackendDrift,
    CheckResult,
    DriftReport,
    DriftRow,
    RuntimeState,
    Status,
    Verdict,
    zone_reason,
    zone_summary,
)
from reconciler.core.model import HAProxyFeatures, ZoneMode, ZoneStatus
from reconciler.logs import escaped


SCHEMA_VERSION = 1
EXIT_IN_SYNC = 0
#: A backend could not be assessed (AWS or HAProxy unreadable, group missing, bad section).
EXIT_UNREADABLE = 1
EXIT_DRIFT = 3

_STYLES = {
    Verdict.MISSING: "bold red",
    Verdict.STALE: "bold red",
    Verdict.HELD: "bold yellow",
    Verdict.ADDRESS: "red",
    Verdict.RUNTIME_ONLY: "yellow",
    Verdict.FILE_ONLY: "yellow",
    Verdict.MAINT: "yellow",
    Verdict.ZONE: "yellow",
    Verdict.DRAINING: "magenta",
    Verdict.WARMING: "cyan",
    Verdict.WEIGHT: "yellow",
    Verdict.OUTDATED: "yellow",
    Verdict.DOWN: "red",
    Verdict.OK: "green",
    Verdict.EXCLUDED: "dim",
    Verdict.UNMANAGED: "dim",
}
_STATUS_STYLES = {
    Status.IN_SYNC: "green",
    Status.DRIFTED: "bold red",
    Status.HELD: "bold yellow",
    Status.REFUSED: "bold red",
}
_COLUMNS = (
    "verdict",
    "instance",
    "ASG",
    "EC2",
    "IP",
    "server",
    "file",
    "runtime",
    "check",
    "detail",
)
#: Shown before the detail, only in the tables of backends that use them (``_columns``).
_ZONE_COLUMN = "zone"
_WEIGHT_COLUMN = "weight"
_NONE = "-"
_GAP = "  "
#: The narrowest detail column worth a table; on a narrower console rows are stacked instead.
_MIN_LAST_WIDTH = 24


def color_system(environ: Mapping[str, str]) -> Literal["auto"] | None:
    """
    The ``color_system`` for a ``rich.console.Console``: none at all when ``NO_COLOR`` is set to
    anything but the empty string (https://no-color.org), else rich's own detection.
    """
    return None if environ.get("NO_COLOR") else "auto"


def exit_code(report: DriftReport) -> int:
    """1 when a backend could not be assessed, else 3 when one drifted, else 0."""
    if report.refused:
        return EXIT_UNREADABLE
    if report.drifted:
        return EXIT_DRIFT
    return EXIT_IN_SYNC


# -- tables ----------------------------------------------------------------------------------------


def tables(report: DriftReport) -> RenderableType:
    """
    The HAProxy compared with (when a socket is configured); per backend a title, a table and its
    summary line; then the overall summary.
    """
    parts: list[RenderableType] = []
    if report.runtime:
        parts.extend((haproxy_line(report.haproxy), Text()))
    for backend in report.backends:
        parts.append(Text(escaped(f"backend {backend.backend} ← {backend.asg}"), style="bold"))
        if backend.zones is not None:
            parts.append(Text(escaped(zone_summary(backend.zones))))
        if backend.rows:
            zone, weight = _columns(backend)
            cells = tuple(_cells(row, zone=zone, weight=weight) for row in backend.rows)
            parts.append(_Grid(_header(zone=zone, weight=weight), cells))
        parts.extend(Text(escaped(f"warning: {w}"), style="yellow") for w in backend.warnings)
        parts.extend((summary(backend), Text()))
    parts.append(overall(report))
    return RenderGroup(*parts)


def overall(report: DriftReport) -> Text:
    """The last line: in sync, or how many backends drifted or could not be assessed."""
    total = len(report.backends)
    if report.in_sync:
        return Text.assemble(("overall: in sync", "bold green"), f" ({_backends(total)})")
    tally = [
        (len(report.drifted), "drifted", "bold red"),
        (len(report.refused), "could not be assessed", "bold red"),
        (total - len(report.drifted) - len(report.refused), "in sync", "green"),
    ]
    shown = [Text(f"{n} {what}", style=style) for n, what, style in tally if n]
    return Text.assemble("overall: ", Text(", ").join(shown), f" (of {_backends(total)})")


def haproxy_line(features: HAProxyFeatures | None) -> Text:
    """
    "HAProxy 3.0.11-9e587df — runtime API: add/del server, wait; add server keywords: not listed
    by this version": the version; ``add server`` and ``del server`` and the newer commands, as
    ``help`` lists them (``HAProxyFeatures.capabilities``); the commands the controller sends
    that it does not list; a socket level too low to change servers; the ``add server`` keywords.
    """
    if features is None:
        return Text("HAProxy: runtime API not read (see the backends below)", style="bold red")
    listed = features.capabilities
    adds = [c for c in ("add server", "del server") if c in listed]
    offered = ["add/del server"] if len(adds) == 2 else adds
    offered += [c for c in listed if c in features.NEWER_COMMANDS]
    parts = [f"runtime API: {', '.join(offered)}"] if offered else []
    if features.missing_commands:
        parts.append(f"lacks {', '.join(features.missing_commands)}")
    if features.below_admin:
        parts.append(f"socket level {features.level} (changing servers needs admin)")
    keywords = features.server_keywords
    parts.append(
        "add server keywords: "
        + ("not listed by this version" if keywords is None else f"{len(keywords)} listed")
    )
    style = "bold" if features.can_change_servers else "bold red"
    return Text.assemble(
        (escaped(f"HAProxy {features.version}"), style), escaped(" — " + "; ".join(parts))
    )


def _backends(count: int) -> str:
    return f"{count} backend" if count == 1 else f"{count} backends"


def summary(backend: BackendDrift) -> Text:
    """One line: the backend's status, then how many rows have each verdict."""
    style = _STATUS_STYLES[backend.status]
    if backend.refused is not None:
        return Text.assemble(("REFUSED", style), escaped(f", not assessed: {backend.refused}"))
    counts = Text(", ").join(
        Text(f"{n} {verdict.value}", style=_STYLES[verdict])
        for verdict, n in backend.counts().items()
        if n
    )
    drifted = len(backend.drifted)
    if backend.held is not None:
        head = Text.assemble(("HELD", style), escaped(f": {backend.held}; "))
    elif drifted:
        head = Text.assemble((f"{drifted} drifted", style), ": ")
    else:
        head = Text.assemble(("in sync", style), ": ")
    return head + (counts or Text("no instance and no server"))


_Cell = tuple[str, str]


def _columns(backend: BackendDrift) -> tuple[bool, bool]:
    """
    Whether *backend*'s table has a zone column (zone routing is on) and a weight column (it
    sets weights, or a server's running weight is not its file line's).
    """
    weights = backend.weights or any(row.weight_runtime is not None for row in backend.rows)
    return backend.zones is not None, weights


def _header(*, zone: bool, weight: bool) -> tuple[str, ...]:
    """The column titles, with the zone and weight columns when asked for, before the detail."""
    extra = (_ZONE_COLUMN,) * zone + (_WEIGHT_COLUMN,) * weight
    return (*_COLUMNS[:-1], *extra, _COLUMNS[-1])


def _zone_cell(row: DriftRow) -> str:
    """The instance's zone, ``eu-west-1a (local)`` in the node's own; ``-`` without one."""
    zone = row.zone or _NONE
    return f"{zone} (local)" if row.local else zone


def _weight_cell(row: DriftRow) -> str:
    """
    The desired weight, with the runtime and file weights that differ from it: ``80``, ``80
    (runtime 10, file none)`` (the file line has no ``weight``); the runtime (else file) weight
    of a server no weight is desired for.
    """
    desired, running, written = row.weight_desired, row.weight_runtime, row.weight_file
    if desired is None:
        found = running if running is not None else written
        return _NONE if found is None else str(found)
    others = [f"runtime {running}"] if running is not None and running != desired else []
    if row.in_file and written != desired:
        others.append(f"file {'none' if written is None else written}")
    return f"{desired} ({', '.join(others)})" if others else str(desired)


def _cells(row: DriftRow, *, zone: bool = False, weight: bool = False) -> tuple[_Cell, ...]:
    asg = f"{row.lifecycle_state} {row.health_status}" if row.lifecycle_state else _NONE
    ec2 = (row.ec2_state or "not found") if row.lifecycle_state else _NONE
    running = row.runtime_state.value if row.runtime_state is not None else "not read"
    check = row.check_status or (row.check.value if row.check is not None else _NONE)
    texts = (
        row.instance_id or _NONE,
        asg,
        ec2,
        row.private_ip or _NONE,
        row.server or _NONE,
        "yes" if row.in_file else "no",
        running,
        check,
        *((_zone_cell(row),) if zone else ()),
        *((_weight_cell(row),) if weight else ()),
        row.detail,
    )
    return ((row.verdict.value, _STYLES[row.verdict]), *((escaped(text), "") for text in texts))


@dataclass(frozen=True)
class _Grid:
    """
    Rows of ``(text, style)`` cells in aligned columns under a bold header.

    rich's ``Table`` measures and wraps every cell through the full renderable machinery, about
    two seconds for 2,000 rows of ten cells; this lays the rows out in one pass over the cells.
    Only the last column wraps, into the width the others leave, so nothing is cropped. On a
    console too narrow for that (80 columns, the default when piped), each row is stacked
    instead: its *keys* first cells as columns, then the other cells as ``title value`` pairs
    and the last cell, wrapped beside them (under them when even that does not fit).
    """

    header: tuple[str, ...]
    rows: tuple[tuple[_Cell, ...], ...]
    keys: int = 2

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        """Every output line as segments, each line ended by ``Segment.line()``."""
        widths = [
            max([cell_len(title), *(cell_len(row[i][0]) for row in self.rows)])
            for i, title in enumerate(self.header[:-1])
        ]
        indent = _span(widths)
        if indent + _MIN_LAST_WIDTH <= options.max_width:
            lines = self._table(widths, options.max_width - indent)
        else:
            lines = self._stacked(widths[: self.keys], options.max_width)
        styles: dict[str, Style | None] = {"": None}
        for line in lines:
            for text, name in line:
                if name not in styles:
                    styles[name] = console.get_style(name)
                yield Segment(text, styles[name])
            yield Segment.line()

    def _table(self, widths: Sequence[int], room: int) -> Iterator[list[_Cell]]:
        indent = " " * _span(widths)
        yield [*_padded([(t, "bold") for t in self.header], widths), (self.header[-1], "bold")]
        last = min(room, max(cell_len(row[-1][0]) for row in self.rows))
        yield [*_padded([("─" * w, "") for w in widths], widths), ("─" * last, "")]
        for row in self.rows:
            text, style = row[-1]
            first, *rest = _wrap(text, room)
            yield [*_padded(row, widths), (first, style)]
            yield from ([(indent, ""), (part, style)] for part in rest)

    def _stacked(self, widths: Sequence[int], width: int) -> Iterator[list[_Cell]]:
        beside = width - _span(widths) >= _MIN_LAST_WIDTH
        # Very narrow: the key cells get a line of their own, the rest goes under them.
        indent = " " * (_span(widths) if beside else len(_GAP))
        room = max(width - len(indent), 1)
        titles = self.header[self.keys : -1]
        for row in self.rows:
            fields = [f"{t} {c[0]}" for t, c in zip(titles, row[self.keys : -1], strict=True)]
            lines = [*_pack(fields, room), *_wrap(row[-1][0], room)]
            keys = _padded(row, widths)
            if beside:
                yield [*keys, (lines.pop(0), "")]
            else:
                yield keys
            yield from ([(indent, ""), (line, "")] for line in lines)


def _span(widths: Sequence[int]) -> int:
    """The columns that cells of *widths*, each followed by a gap, take."""
    return sum(widths) + len(_GAP) * len(widths)


def _padded(cells: Sequence[_Cell], widths: Sequence[int]) -> list[_Cell]:
    """The first ``len(widths)`` cells, each padded to its width and followed by the gap."""
    return [
        (text + " " * (width - cell_len(text)) + _GAP, style)
        for (text, style), width in zip(cells, widths, strict=False)
    ]


def _pack(fields: Sequence[str], width: int) -> list[str]:
    """*fields* joined by commas in lines of at most *width* columns, never splitting a field."""
    lines = [fields[0]]
    last = len(fields) - 1
    for index, field in enumerate(fields[1:], start=1):
        # A line that more fields follow ends with a comma, which must fit too: a line filling
        # the width would have its comma cropped.
        comma = 0 if index == last else 1
        if cell_len(lines[-1]) + 2 + cell_len(field) + comma <= width:
            lines[-1] += f", {field}"
        else:
            lines[-1] += ","
            lines.append(field)
    return lines


def _wrap(text: str, width: int) -> list[str]:
    """*text* in lines of at most *width* columns; at least one line."""
    return (textwrap.wrap(text, width) or [""]) if cell_len(text) > width else [text]


# -- JSON ------------------------------------------------------------------------------------------


def to_json(report: DriftReport) -> dict[str, Any]:
    """The report as a JSON-ready dictionary following ``JSON_SCHEMA``."""
    by_status = dict.fromkeys(Status, 0)
    for backend in report.backends:
        by_status[backend.status] += 1
    return {
        "schema_version": SCHEMA_VERSION,
        "in_sync": report.in_sync,
        "runtime": report.runtime,
        "haproxy": _haproxy_json(report.haproxy),
        "summary": {
            "backends": len(report.backends),
            **{status.value: n for status, n in by_status.items()},
            "drift_rows": sum(len(b.drifted) for b in report.backends),
        },
        "backends": [_backend_json(b) for b in report.backends],
    }


def _haproxy_json(features: HAProxyFeatures | None) -> dict[str, Any] | None:
    if features is None:
        return None
    keywords = features.server_keywords
    return {
        "version": features.version,
        "commands": sorted(features.commands),
        "missing_commands": list(features.missing_commands),
        "server_keywords": None if keywords is None else sorted(keywords),
        "level": features.level,
    }


def _backend_json(backend: BackendDrift) -> dict[str, Any]:
    return {
        "backend": backend.backend,
        "asg": backend.asg,
        "status": backend.status.value,
        "refused": backend.refused,
        "held": backend.held,
        "summary": {
            "rows": len(backend.rows),
            "drift": len(backend.drifted),
            "verdicts": {verdict.value: n for verdict, n in backend.counts().items()},
        },
        "rows": [_row_json(row) for row in backend.rows],
        "warnings": list(backend.warnings),
        "weights": backend.weights,
        "zone_routing": None if backend.zones is None else _zones_json(backend.zones),
    }


def _zones_json(zones: ZoneStatus) -> dict[str, Any]:
    return {
        "node_zone": zones.node_zone,
        "mode": zones.mode.value,
        "reason": zone_reason(zones),
        "needed": zones.needed,
        "cross_zone_share": zones.cross_zone_share,
        "zones": [
            {
                "zone": zone,
                "local": zone == zones.node_zone,
                "servers": count.servers,
                "healthy": count.healthy,
                "healthy_capacity": count.healthy_capacity,
            }
            for zone, count in sorted(zones.zones.items())
        ],
    }


def _row_json(row: DriftRow) -> dict[str, Any]:
    return {
        "verdict": row.verdict.value,
        "drift": row.drift,
        "detail": row.detail,
        "server": row.server,
        "instance_id": row.instance_id,
        "lifecycle_state": row.lifecycle_state,
        "health_status": row.health_status,
        "ec2_state": row.ec2_state,
        "private_ip": row.private_ip,
        "in_file": row.in_file,
        "file_address": row.file_address,
        "runtime_state": row.runtime_state.value if row.runtime_state is not None else None,
        "runtime_address": row.runtime_address,
        "check": row.check.value if row.check is not None else None,
        "check_status": row.check_status,
        "zone": row.zone,
        "local": row.local,
        "weight_desired": row.weight_desired,
        "weight_runtime": row.weight_runtime,
        "weight_file": row.weight_file,
    }


def _enum(values: Iterable[enum.Enum], *, nullable: bool = False) -> dict[str, Any]:
    allowed: list[str | None] = [v.value for v in values]
    return {"enum": [*allowed, None] if nullable else allowed}


def _object(properties: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": list(properties),
        "properties": dict(properties),
        "additionalProperties": False,
    }


_TEXT_OR_NULL = {"type": ["string", "null"]}
_COUNT = {"type": "integer", "minimum": 0}
_WEIGHT_OR_NULL = {"type": ["integer", "null"], "minimum": 0, "maximum": 256}
_ZONE_ROUTING = _object(
    {
        "node_zone": {"type": "string"},
        "mode": _enum(ZoneMode),
        "reason": {"type": "string"},
        "needed": {"type": "number", "minimum": 0},
        "cross_zone_share": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "zones": {
            "type": "array",
            "items": _object(
                {
                    "zone": {"type": "string"},
                    "local": {"type": "boolean"},
                    "servers": _COUNT,
                    "healthy": _COUNT,
                    "healthy_capacity": _COUNT,
                }
            ),
        },
    }
)
_TEXTS = {"type": "array", "items": {"type": "string"}}

#: The JSON Schema (2020-12) of ``to_json``'s output. Every key is always present.
JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "reconcile drift --json",
    **_object(
        {
            "schema_version": {"const": SCHEMA_VERSION},
            "in_sync": {"type": "boolean"},
            "runtime": {"type": "boolean"},
            # ``null`` when the runtime was not read (no socket, or the read failed).
            "haproxy": {
                **_object(
                    {
                        "version": {"type": "string"},
                        "commands": _TEXTS,
                        "missing_commands": _TEXTS,
                        "server_keywords": {**_TEXTS, "type": ["array", "null"]},
                        "level": _TEXT_OR_NULL,
                    }
                ),
                "type": ["object", "null"],
            },
            "summary": _object(
                {"backends": _COUNT, **{s.value: _COUNT for s in Status}, "drift_rows": _COUNT}
            ),
            "backends": {
                "type": "array",
                "items": _object(
                    {
                        "backend": {"type": "string"},
                        "asg": {"type": "string"},
                        "status": _enum(Status),
                        "refused": _TEXT_OR_NULL,
                        "held": _TEXT_OR_NULL,
                        "summary": _object(
                            {
                                "rows": _COUNT,
                                "drift": _COUNT,
                                "verdicts": _object({v.value: _COUNT for v in Verdict}),
                            }
                        ),
                        "rows": {
                            "type": "array",
                            "items": _object(
                                {
                                    "verdict": _enum(Verdict),
                                    "drift": {"type": "boolean"},
                                    "detail": {"type": "string"},
                                    "server": _TEXT_OR_NULL,
                                    "instance_id": _TEXT_OR_NULL,
                                    "lifecycle_state": _TEXT_OR_NULL,
                                    "health_status": _TEXT_OR_NULL,
                                    "ec2_state": _TEXT_OR_NULL,
                                    "private_ip": _TEXT_OR_NULL,
                                    "in_file": {"type": "boolean"},
                                    "file_address": _TEXT_OR_NULL,
                                    "runtime_state": _enum(RuntimeState, nullable=True),
                                    "runtime_address": _TEXT_OR_NULL,
                                    "check": _enum(CheckResult, nullable=True),
                                    "check_status": _TEXT_OR_NULL,
                                    "zone": _TEXT_OR_NULL,
                                    "local": {"type": ["boolean", "null"]},
                                    "weight_desired": _WEIGHT_OR_NULL,
                                    "weight_runtime": _WEIGHT_OR_NULL,
                                    "weight_file": _WEIGHT_OR_NULL,
                                }
                            ),
                        },
                        "warnings": _TEXTS,
                        "weights": {"type": "boolean"},
                        # ``null`` when zone routing is off.
                        "zone_routing": {**_ZONE_ROUTING, "type": ["object", "null"]},
                    }
                ),
            },
        }
    ),
}
