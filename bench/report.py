"""
The results on the terminal: one table per benchmark, built from the results JSON alone (so a saved
file can be shown again with ``python -m bench --show FILE``).

Times are in seconds unless a column says ms. A repeated figure shows as ``median (min-max)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from rich.console import Group
from rich.table import Table


def tables(results: Mapping[str, Any]) -> Group:
    """Every table the results have data for, in the issue's order."""
    return Group(*_tables(results))


def _tables(results: Mapping[str, Any]) -> Iterator[Table]:
    if "convergence" in results:
        yield convergence(results["convergence"])
        yield work(results["convergence"])
    if "burst" in results:
        yield burst(results["burst"])
    if "scale" in results:
        yield scale(results["scale"])
    if "cpu" in results:
        yield cpu(results["cpu"])
    if "traffic" in results:
        yield traffic(results["traffic"])


def seconds(value: float | None) -> str:
    """A duration in seconds, to the millisecond."""
    return "-" if value is None else f"{value:.3f}"


def spread(fig: Mapping[str, Any], fmt: str = "{:.3f}") -> str:
    """A repeated figure: ``median (min-max)``, or the value alone when the runs agree."""
    if fig.get("median") is None:
        return "-"
    median, low, high = (fmt.format(fig[k]) for k in ("median", "min", "max"))
    return median if low == high else f"{median} ({low}-{high})"


def count(fig: Mapping[str, Any]) -> str:
    """A repeated count."""
    return spread(fig, "{:.0f}")


def latency(dist: Mapping[str, Any]) -> str:
    """p50 / p95 / p99 of a latency distribution, in ms."""
    if not dist["count"]:
        return "-"
    return " / ".join(f"{dist[p] * 1000:.0f}" for p in ("p50", "p95", "p99"))


def convergence(section: Mapping[str, Any]) -> Table:
    """Part 1: latency percentiles per mode, the floor first."""
    table = Table(
        title="1. Convergence latency from the SNS notification, ms: p50 / p95 / p99",
        caption="out: scale-out until UP; in: scale-in until out of rotation, until gone",
    )
    for name in ("mode", "out → UP", "in → out of rotation", "in → gone", "events"):
        table.add_column(name, justify="left" if name == "mode" else "right")
    floor = latency(section["floor"])
    table.add_row(
        "floor: the 2 Describe calls", floor, floor, floor, str(section["floor"]["count"])
    )
    for mode in section["modes"].values():
        done = mode["events"] - mode["unfinished"]
        table.add_row(
            mode["label"],
            latency(mode["scale_out"]),
            latency(mode["scale_in_out_of_rotation"]),
            latency(mode["scale_in"]),
            f"{done}/{mode['events']}",
        )
    return table


def work(section: Mapping[str, Any]) -> Table:
    """Part 1's cost: what each mode did to handle the events."""
    table = Table(title="1b. Work done for those events")
    columns = (
        "mode",
        "cycles",
        "messages",
        "AWS read calls",
        "queue calls",
        "HAProxy reloads",
        "runtime commands",
    )
    for name in columns:
        table.add_column(name, justify="left" if name == "mode" else "right")
    for mode in section["modes"].values():
        done = mode["work"]
        table.add_row(
            mode["label"],
            *(
                str(done[key]) if key in done else "-"
                for key in ("cycles", "messages", "aws_read_calls", "queue_calls")
            ),
            str(mode["reloads"]),
            str(done["runtime_commands"]) if "runtime_commands" in done else "-",
        )
    return table


def traffic(section: Mapping[str, Any]) -> Table:
    """Part 4: failed requests while the group scales in and out."""
    table = Table(title="4. Traffic during change: requests through HAProxy while the group scales")
    columns = ("mode", "changes", "requests", "failed", "failures by kind", "reloads", "at maint")
    for name in columns:
        table.add_column(name, justify="left" if name in ("mode", "failures by kind") else "right")
    for path in section["paths"].values():
        kinds = ", ".join(f"{k} {n}" for k, n in path["failure_kinds"].items()) or "-"
        table.add_row(
            path["label"],
            str(path["changes"]),
            str(path["requests"]),
            str(path["failed"]),
            kinds,
            str(path["reloads"]),
            str(path["sessions_at_maintenance"]),
        )
    table.caption = (
        "at maint: sessions in flight when a server was put in maintenance; the controller cuts "
        "them when the server's instance is gone"
    )
    return table


#: The rows of the burst table: label, field, format.
BURST_ROWS = (
    ("published in (s)", "published_seconds", "{:.2f}"),
    ("converged after (s)", "converged_seconds", "{:.2f}"),
    ("  after the last publication", "converged_after_last_publication_seconds", "{:.2f}"),
    ("cycles run", "cycles", "{:.0f}"),
    ("messages handled", "messages", "{:.0f}"),
    ("AWS read calls", "aws_read_calls", "{:.0f}"),
    ("queue calls (SQS)", "queue_calls", "{:.0f}"),
    ("HAProxy reloads", "reloads", "{:.0f}"),
    ("runtime commands", "runtime_commands", "{:.0f}"),
    ("servers wrong when idle", "wrong_servers_when_idle", "{:.0f}"),
)


def burst(section: Mapping[str, Any]) -> Table:
    """Part 2: what a burst of notifications costs each handler."""
    table = Table(
        title=f"2. Bursts: {section['notifications']} notifications at once",
        caption=f"median of {section['repeats']} runs (min-max); times: the runs that converged",
    )
    handlers = list(section["handlers"].values())
    table.add_column("")
    for handler in handlers:
        table.add_column(handler["label"], justify="right")
    for label, key, fmt in BURST_ROWS:
        table.add_row(label, *(spread(h[key], fmt) if key in h else "-" for h in handlers))
    runs = section["repeats"]
    table.add_row("runs converged", *(f"{h['converged_runs']}/{runs}" for h in handlers))
    return table


#: The rows of the scale table: label, field, format.
SCALE_ROWS = (
    ("wall", "wall_seconds", "{:.2f}"),
    ("AWS reads", "aws_reads_seconds", "{:.2f}"),
    ("  our CPU (botocore)", "aws_reads_our_cpu_seconds", "{:.2f}"),
    ("  waiting (moto)", "aws_reads_waiting_seconds", "{:.2f}"),
    ("HAProxy reads", "haproxy_reads_seconds", "{:.3f}"),
    ("parse + plan + render", "planning_seconds", "{:.3f}"),
    ("file (write, haproxy -c)", "file_seconds", "{:.3f}"),
    ("runtime commands", "runtime_commands_seconds", "{:.3f}"),
    ("  commands sent", "runtime_commands", "{:.0f}"),
    ("AWS calls", "aws_calls", "{:.0f}"),
    ("memory before (MiB)", "memory_before_mb", "{:.0f}"),
    ("peak during the cycle", "peak_memory_mb", "{:.0f}"),
)


def scale(section: Mapping[str, Any]) -> Table:
    """Part 3: one cycle at each size, split."""
    table = Table(
        title="3. Scale: one cycle, split (seconds)",
        caption=f"median (min-max); change: {section['churn_per_change_cycle']:.0%} of the group "
        "replaced before the cycle",
    )
    table.add_column("")
    cycles = [
        (f"{size} {kind} x{cycle['runs']}", cycle)
        for size, kinds in section["sizes"].items()
        for kind, cycle in kinds.items()
    ]
    for title, _ in cycles:
        table.add_column(title, justify="right")
    for label, key, fmt in SCALE_ROWS:
        table.add_row(label, *(spread(cycle[key], fmt) for _, cycle in cycles))
    return table


def cpu(section: Mapping[str, Any]) -> Table:
    """Part 3's micro-benchmark."""
    table = Table(
        title=f"3b. CPU only: parse + plan + render, {section['servers']} servers (ms)",
        caption="median (min-max)",
    )
    stages = ("parse", "plan", "render", "total")
    for name in stages:
        table.add_column(name, justify="right")
    in_ms = [
        {k: v * 1000 for k, v in section[f"{n}_seconds"].items() if k != "runs"} for n in stages
    ]
    table.add_row(*(spread(values, "{:.0f}") for values in in_ms))
    return table
