"""
``python -m bench``: every benchmark in one run, tables on the terminal, JSON on disk.

    python -m bench                  # full size (make bench), several minutes
    python -m bench --quick          # everything tiny, for the smoke test
    python -m bench --only burst     # some benchmarks only (repeatable)
    python -m bench --show FILE      # the tables of a saved results file

Progress goes to stderr, the tables to stdout; the JSON goes to ``bench/results/`` (or ``--out``),
named after the date and the profile, and its path is printed last.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from bench import burst, convergence, cpu, scale, zones
from bench.profile import FULL, QUICK, Profile
from bench.stats import machine
from bench.world import MotoServer


RESULTS = Path(__file__).resolve().parent / "results"
#: 2: convergence and traffic hold one run per HAProxy version (``versions``), not one ``modes``.
#: 3: convergence adds the world of single events (``spread``); modes add ``served`` latencies,
#: ``cycle_cpu_ms``, and read pairs and CPU to their work. 4: scale measures the controller
#: process alone (``once_initial``, ``once_no_change``, ``daemon_cycle``). 5: ``zones`` (zone
#: routing). ``bench.report`` still shows the earlier versions.
SCHEMA_VERSION = 5
#: Columns of the tables when stdout is not a terminal.
PIPED_WIDTH = 110
#: In the order they run: the CPU-only one first, the ones that need moto after.
SECTIONS = ("cpu", "convergence", "burst", "scale", "zones")


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[1])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the smoke test)")
    parser.add_argument(
        "--only", action="append", choices=SECTIONS, help="run only this benchmark (repeatable)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for the JSON file")
    parser.add_argument("--show", type=Path, help="print the tables of a results file and exit")
    return parser.parse_args(argv)


def traffic(section: dict[str, Any], profile: Profile) -> dict[str, Any]:
    """Part 4, a view of the convergence runs: each version's modes' load counts and reloads."""
    versions = [
        {
            "haproxy": version["haproxy"],
            "label": version["label"],
            "paths": {
                key: {
                    "label": mode["label"],
                    "changes": mode["events"],
                    "reloads": mode["reloads"],
                    "sessions_at_maintenance": mode["sessions_at_maintenance"],
                    **mode["load"],
                }
                for key, mode in version["modes"].items()
            },
        }
        for version in section["versions"]
    ]
    return {"load_rate_per_second": profile.load_rate, "versions": versions}


def run(
    profile: Profile, sections: Sequence[str], err: Console, results: dict[str, Any]
) -> dict[str, Any]:
    """
    Run *sections* at *profile*'s sizes; the results document, *results*, filled section by
    section (so that a run that fails half-way still has what it measured).
    """
    started = time.monotonic()

    def log(message: str) -> None:
        err.print(f"[dim]{time.monotonic() - started:6.1f}s[/] {message}", highlight=False)

    results |= {
        "schema_version": SCHEMA_VERSION,
        "profile": profile.to_json(),
        "machine": machine(),
    }
    if "cpu" in sections:
        results["cpu"] = cpu.run(profile, log)
    if set(sections) - {"cpu"}:
        with (
            tempfile.TemporaryDirectory(prefix="bench-moto-") as directory,
            MotoServer(Path(directory)) as cloud,
        ):
            if "convergence" in sections:
                results["convergence"] = convergence.run(cloud, profile, log)
                results["traffic"] = traffic(results["convergence"], profile)
            if "burst" in sections:
                results["burst"] = burst.run(cloud, profile, log)
            if "scale" in sections:
                results["scale"] = scale.run(cloud, profile, log)
            if "zones" in sections:
                results["zones"] = zones.run(cloud, profile, log)
    results["duration_seconds"] = round(time.monotonic() - started, 1)
    # Others' work on a shared machine: compare with the load average at the start.
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return results


def save(results: dict[str, Any], directory: Path) -> Path:
    """Write *results* as ``bench-<date>-<profile>.json`` in *directory*; its path."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"bench-{stamp}-{results['profile']['name']}.json"
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Run, print, save; exit 0 (benchmarks judge nothing)."""
    # Local import: only --show and the end of a run need the table code.
    from bench import report  # noqa: PLC0415

    args = parse(argv)
    # Piped (make bench | tee), rich would fold the tables to 80 columns.
    out = Console(width=None if sys.stdout.isatty() else PIPED_WIDTH)
    if args.show is not None:
        out.print(report.tables(json.loads(args.show.read_text(encoding="utf-8"))))
        return 0
    profile = QUICK if args.quick else FULL
    sections = [s for s in SECTIONS if not args.only or s in args.only]
    err = Console(stderr=True)
    results: dict[str, Any] = {}
    try:
        run(profile, sections, err, results)
    except BaseException:
        # Minutes of measurements are not thrown away with the section that failed.
        if results:
            partial = save(results | {"incomplete": True}, args.out)
            err.print(f"the run failed; what it measured: {partial}", highlight=False)
        raise
    # Saved before the tables are built, so that a table that fails loses nothing.
    path = save(results, args.out)
    out.print(report.tables(results))
    out.print(f"results: {path} ({results['duration_seconds']} s)", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
