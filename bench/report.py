"""
The results on the terminal: one table per benchmark, built from the results JSON alone (so a saved
file can be shown again with ``python -m bench --show FILE``).

Times are in seconds unless a column says ms. A repeated figure shows as ``median (min-max)``.
The convergence and traffic tables hold one set of rows per HAProxy version, and table 1c lists
the figures in which a version differs from the first (the system's). Tables 1d (single events,
checks every 250 ms) and 1e (CPU) need a file of schema 3 or later; older ones show without them,
and without the columns they did not record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from rich.console import Group
from rich.table import Table


def tables(results: Mapping[str, Any]) -> Group:
    """Every table the results have data for, in the issue's order."""
    return Group(*_tables(results))


def _tables(results: Mapping[str, Any]) -> Iterator[Table]:
    machine = results.get("machine", {})
    if "convergence" in results:
        runs = versions(results["convergence"], machine)
        yield convergence(results["convergence"]["floor"], runs)
        yield work(runs)
        if len(runs) > 1:
            yield differences(runs)
        if "spread" in results["convergence"]:
            yield single_events(results["convergence"]["spread"])
        if any("cpu_ms" in mode["work"] for _, mode in modes(results["convergence"])):
            yield handler_cpu(results["convergence"])
    if "burst" in results:
        yield burst(results["burst"])
    if "scale" in results:
        yield scale(results["scale"])
    if "cpu" in results:
        yield cpu(results["cpu"])
    if "traffic" in results:
        yield traffic(versions(results["traffic"], machine))
    if "zones" in results:
        yield zones(results["zones"])


def versions(section: Mapping[str, Any], machine: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """
    The runs of a convergence or traffic section, one per HAProxy version. A schema 1 file
    (the oldest results) holds a single unnamed run, on the HAProxy its machine
    record names.
    """
    if "versions" in section:
        return list(section["versions"])
    return [{"haproxy": machine.get("haproxy"), **section}]


def release(run: Mapping[str, Any]) -> str:
    """The run's HAProxy as upstream numbers it: ``2.6.12``, ``3.0.11``."""
    return str(run.get("haproxy") or "?").split("-")[0]


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


def convergence(floor: Mapping[str, Any], runs: Sequence[Mapping[str, Any]]) -> Table:
    """Part 1: latency percentiles per mode, the floor first, then each HAProxy version's."""
    table = Table(
        title="1. Convergence latency from the SNS notification, ms: p50 / p95 / p99",
        caption="out: scale-out until UP; in: scale-in until out of rotation, until gone",
    )
    for name in ("mode", "HAProxy", "out → UP", "in → out of rotation", "in → gone", "events"):
        table.add_column(name, justify="left" if name == "mode" else "right")
    alone = latency(floor)
    table.add_row("floor: the 2 Describe calls", "-", alone, alone, alone, str(floor["count"]))
    for run in runs:
        table.add_section()
        for mode in run["modes"].values():
            done = mode["events"] - mode["unfinished"]
            table.add_row(
                mode["label"],
                release(run),
                latency(mode["scale_out"]),
                latency(mode["scale_in_out_of_rotation"]),
                latency(mode["scale_in"]),
                f"{done}/{mode['events']}",
            )
    return table


def work(runs: Sequence[Mapping[str, Any]]) -> Table:
    """Part 1's cost: what each mode did to handle the events, on each HAProxy version."""
    table = Table(
        title="1b. Work done for those events",
        caption="AWS read pairs: in all (per event), as in table 1d",
    )
    columns = (
        "mode",
        "HAProxy",
        "cycles",
        "messages",
        "AWS calls",
        "read pairs",
        "queue calls",
        "reloads",
        "runtime cmds",
    )
    for name in columns:
        table.add_column(name, justify="left" if name == "mode" else "right")
    for run in runs:
        table.add_section()
        for mode in run["modes"].values():
            done = mode["work"]
            table.add_row(
                mode["label"],
                release(run),
                *(
                    str(done[key]) if key in done else "-"
                    for key in ("cycles", "messages", "aws_read_calls")
                ),
                per_event(mode, "aws_read_pairs"),
                str(done["queue_calls"]) if "queue_calls" in done else "-",
                str(mode["reloads"]),
                str(done["runtime_commands"]) if "runtime_commands" in done else "-",
            )
    return table


def per_event(mode: Mapping[str, Any], key: str, fmt: str = "{:.2f}") -> str:
    """A work count of *mode* with its share per event: ``108 (1.08)``; ``-`` when not counted."""
    value = mode["work"].get(key)
    if value is None:
        return "-"
    return f"{value} ({fmt.format(value / mode['events'])})" if mode["events"] else str(value)


def modes(section: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every mode of a convergence section: the world it ran in, and its figures."""
    options = section.get("server_options", "check inter 100ms")
    for run in section.get("versions", []):
        for mode in run["modes"].values():
            yield f"{_check(options)}, {release(run)}", mode
    if "spread" in section:
        spread_run = section["spread"]
        for mode in spread_run["modes"].values():
            yield f"{_check(spread_run['server_options'])} single, {release(spread_run)}", mode


def _check(options: str) -> str:
    """The check interval of *options*: ``inter 250ms``."""
    words = options.split()
    if "inter" not in words:
        return options
    at = words.index("inter")
    return " ".join(words[at : at + 2])


def single_events(section: Mapping[str, Any]) -> Table:
    """Issue 12's headline: single events, the controller and the naive script in one run."""
    low, high = section["event_gap"]
    table = Table(
        title=f"1d. Single events ({low:g}-{high:g} s apart), servers checked "
        f"{_check(section['server_options'])}, HAProxy {release(section)}: "
        "ms p50 / p95 / p99",
        caption="served: a scale-out's server UP, a scale-in's out of rotation; read pairs: "
        "DescribeAutoScalingGroups + DescribeInstances (the script's one DescribeInstances), "
        "in all (per event); failed: requests through HAProxy meanwhile",
    )
    columns = (
        "mode",
        "event → served",
        "out → UP",
        "in → out of rotation",
        "AWS read pairs",
        "reloads",
        "failed",
        "events",
    )
    for name in columns:
        table.add_column(name, justify="left" if name == "mode" else "right")
    for mode in section["modes"].values():
        table.add_row(
            mode["label"],
            latency(mode["served"]),
            latency(mode["scale_out"]),
            latency(mode["scale_in_out_of_rotation"]),
            per_event(mode, "aws_read_pairs"),
            str(mode["reloads"]),
            str(mode["load"]["failed"]),
            f"{mode['events'] - mode['unfinished']}/{mode['events']}",
        )
    return table


def handler_cpu(section: Mapping[str, Any]) -> Table:
    """The CPU each mode's handler used for its events, and per controller cycle."""
    table = Table(
        title="1e. CPU of the handlers during the events, ms",
        caption="process: user + system of the handler and the children it waited for "
        "(haproxy -c, reloads), in all (per event); cycle: cpu_ms of the controller's log lines",
    )
    columns = (
        "mode",
        "world",
        "process CPU",
        "cycles",
        "reading AWS",
        "cycle p50 / p95 / max",
        "cycles' total",
    )
    for name in columns:
        table.add_column(name, justify="left" if name in ("mode", "world") else "right")
    for world, mode in modes(section):
        cycles = mode.get("cycle_cpu_ms")
        table.add_row(
            mode["label"],
            world,
            per_event(mode, "cpu_ms", "{:.0f}"),
            str(mode["work"].get("cycles", "-")),
            str(mode["work"].get("cycles_reading_aws", "-")),
            "-" if not cycles else " / ".join(f"{cycles[k]:.1f}" for k in ("p50", "p95", "max")),
            "-" if not cycles else f"{cycles['total']:.0f}",
        )
    return table


def _p50_ms(dist: Mapping[str, Any]) -> float | None:
    return dist["p50"] * 1000 if dist["count"] else None


#: The figures table 1c compares: label, how a mode gives it, and the smallest difference that
#: counts, absolute and relative to the first version's figure. Latencies vary from run to run;
#: counts that depend on timing (events coalesced into one cycle or reload, a session in flight at
#: the wrong moment) by a few; failed requests and unfinished events must match exactly.
DIFFERENCES: tuple[tuple[str, Callable[[Mapping[str, Any]], float | None], float, float], ...] = (
    ("out → UP, p50 ms", lambda mode: _p50_ms(mode["scale_out"]), 50, 0.25),
    (
        "in → out of rotation, p50 ms",
        lambda mode: _p50_ms(mode["scale_in_out_of_rotation"]),
        50,
        0.25,
    ),
    ("in → gone, p50 ms", lambda mode: _p50_ms(mode["scale_in"]), 50, 0.25),
    ("events unfinished", lambda mode: mode["unfinished"], 1, 0),
    ("failed requests", lambda mode: mode["load"]["failed"], 1, 0),
    ("sessions in flight at maint", lambda mode: mode["sessions_at_maintenance"], 2, 0.1),
    ("HAProxy reloads", lambda mode: mode["reloads"], 2, 0.1),
    ("runtime commands", lambda mode: mode["work"].get("runtime_commands"), 2, 0.1),
    ("cycles", lambda mode: mode["work"].get("cycles"), 2, 0.1),
    ("AWS read pairs", lambda mode: mode["work"].get("aws_read_pairs"), 2, 0.1),
)


def differences(runs: Sequence[Mapping[str, Any]]) -> Table:
    """Part 1's figures in which a later HAProxy version differs from the first one."""
    first, *others = runs
    table = Table(
        title=f"1c. Where HAProxy {', '.join(release(r) for r in others)} differs from "
        f"{release(first)}",
        caption="latency p50 apart by 50 ms and 25 % or more; failed requests and unfinished "
        "events apart at all; other counts by 2 and 10 % or more",
    )
    for name in ("mode", "figure", *(release(run) for run in runs)):
        table.add_column(name, justify="left" if name in ("mode", "figure") else "right")
    for key, mode in first["modes"].items():
        for label, figure, least, relative in DIFFERENCES:
            values = [figure(run["modes"][key]) for run in runs]
            base = values[0]
            if base is None or not any(
                value is not None and abs(value - base) >= max(least, relative * base)
                for value in values[1:]
            ):
                continue
            table.add_row(mode["label"], label, *("-" if v is None else f"{v:.0f}" for v in values))
    if not table.rows:
        table.add_row("-", "no figure differs beyond those margins", *("" for _ in runs))
    return table


def traffic(runs: Sequence[Mapping[str, Any]]) -> Table:
    """Part 4: failed requests while the group scales in and out, on each HAProxy version."""
    table = Table(title="4. Traffic during change: requests through HAProxy while the group scales")
    columns = (
        "mode",
        "HAProxy",
        "changes",
        "requests",
        "failed",
        "failures by kind",
        "reloads",
        "at maint",
    )
    for name in columns:
        table.add_column(name, justify="left" if name in ("mode", "failures by kind") else "right")
    for run in runs:
        table.add_section()
        for path in run["paths"].values():
            kinds = ", ".join(f"{k} {n}" for k, n in path["failure_kinds"].items()) or "-"
            table.add_row(
                path["label"],
                release(run),
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
    ("AWS read pairs", "aws_read_pairs", "{:.0f}"),
    ("queue calls (SQS)", "queue_calls", "{:.0f}"),
    ("HAProxy reloads", "reloads", "{:.0f}"),
    ("runtime commands", "runtime_commands", "{:.0f}"),
    ("handler CPU, ms", "cpu_ms", "{:.0f}"),
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


#: The rows of the scale table: label, run, field, format.
SCALE_ROWS = (
    ("--once, every server added: wall", "once_initial", "wall_seconds", "{:.1f}"),
    ("  CPU", "once_initial", "cpu_seconds", "{:.2f}"),
    ("  peak RSS (MiB)", "once_initial", "peak_rss_mb", "{:.0f}"),
    ("--once, no change: wall", "once_no_change", "wall_seconds", "{:.1f}"),
    ("  CPU", "once_no_change", "cpu_seconds", "{:.2f}"),
    ("  peak RSS (MiB)", "once_no_change", "peak_rss_mb", "{:.0f}"),
    ("daemon, no-change cycle: wall", "daemon_cycle", "wall_seconds", "{:.1f}"),
    ("  CPU", "daemon_cycle", "cpu_seconds", "{:.2f}"),
    ("  RSS idle, after it (MiB)", "daemon_cycle", "idle_rss_mb", "{:.0f}"),
    ("  RSS peak during it (MiB)", "daemon_cycle", "peak_rss_mb", "{:.0f}"),
    ("  AWS calls", "daemon_cycle", "aws_calls", "{:.0f}"),
)


def scale(section: Mapping[str, Any]) -> Table:
    """Part 3: the controller process alone at each size (older files, measured in-process: -)."""
    sizes = section["sizes"]
    table = Table(
        title="3. Scale: the controller process alone (seconds, CPU = user + system)",
        caption="median (min-max); wall time is mostly moto answering DescribeInstances",
    )
    table.add_column("")
    for size, kinds in sizes.items():
        cycles = kinds.get("daemon_cycle", {}).get("cpu_seconds", {}).get("runs", [])
        table.add_column(f"{size} instances ({len(cycles)} cycles)", justify="right")
    for label, run, key, fmt in SCALE_ROWS:
        table.add_row(label, *(spread(k.get(run, {}).get(key, {}), fmt) for k in sizes.values()))
    return table


def cpu(section: Mapping[str, Any]) -> Table:
    """Part 3's micro-benchmark."""
    # Result files from before the sizes hold one size, at the top level, timed in wall time.
    sizes = section.get("sizes", {"": section})
    table = Table(
        title="3b. CPU only: parse + plan + render of one backend (ms)",
        caption=f"median (min-max); {'CPU' if 'sizes' in section else 'wall'} time",
    )
    stages = ("parse", "plan", "render", "total")
    table.add_column("servers", justify="right")
    for name in stages:
        table.add_column(name, justify="right")
    for size in sizes.values():
        in_ms = [
            {k: v * 1000 for k, v in size[f"{n}_seconds"].items() if k != "runs"} for n in stages
        ]
        table.add_row(f"{size['servers']:,}", *(spread(values, "{:.1f}") for values in in_ms))
    return table


#: The failovers of the zones table: key, label.
FAILOVER_ROWS = (
    ("checks_fail", "every server fails its checks"),
    ("servers_stop", "every server stops"),
    ("servers_stop_observed", "every server stops, observe layer4"),
)


def zones(section: Mapping[str, Any]) -> Table:
    """Part 5: zone routing in a three-zone world under load."""
    node = section["node_zone"]
    others = [zone for zone in section["cross_zone"]["off"]["by_zone"] if zone != node]
    table = Table(
        title=f"5. Zone routing: {section['per_zone']} instances in each of 3 zones, the node in "
        f"{node}, {section['load_rate_per_second']:g} requests/s",
        caption=f"servers: {section['server_options']}; spill: median of "
        f"{len(section['spill']['seconds_to_spill']['runs'])} runs (min-max)",
    )
    table.add_column("")
    table.add_column("requests", justify="right")
    table.add_column("failed", justify="right")
    table.add_column("cross-zone share", justify="right")
    table.add_column(f"share {node} / {' / '.join(others)}", justify="right")
    table.add_column("reloads", justify="right")
    for key, label in (("off", "zone_routing off, healthy"), ("on", "zone_routing on, healthy")):
        run = section["cross_zone"][key]
        table.add_row(
            label,
            str(run["requests"]),
            str(run["failed"]),
            f"{run['cross_zone_share']:.3f}",
            _shares(run["by_zone"]),
            str(run["reloads"]),
        )
    for key, label in FAILOVER_ROWS:
        run = section["failover"][key]
        table.add_row(
            f"{node}: {label}, DOWN after {run['seconds_to_down']:.2f} s; share after",
            str(run["requests"]),
            str(run["failed"]),
            "",
            _shares(run["by_zone_after"]),
            str(run["reloads"]),
        )
    spill = section["spill"]
    shares = {zone: fig["median"] for zone, fig in spill["by_zone"].items()}
    table.add_row(
        f"{node} below the threshold: spilled (expected {_shares(spill['expected_by_zone'])})",
        str(spill["requests"]),
        str(spill["failed"]),
        "",
        _shares(shares),
        str(spill["reloads"]),
    )
    for label, key in (
        ("  s until HAProxy marks the servers DOWN", "seconds_to_down"),
        ("  s until the other zones are active (spill)", "seconds_to_spill"),
        ("  of which the controller, after DOWN", "spill_after_down"),
        (f"  s after recovery until {node} alone serves", "seconds_to_return"),
    ):
        table.add_row(label, "", "", "", spread(spill[key]), "")
    return table


def _shares(by_zone: Mapping[str, float | None]) -> str:
    """Each zone's share, in zone order: ``0.143 / 0.429 / 0.429``."""
    return " / ".join("-" if share is None else f"{share:.3f}" for share in by_zone.values())
