"""
Summaries of measurements, and the facts about the machine that every result file records.

Two shapes of figure, both plain dicts so they go to JSON as they are:

- ``distribution``: many samples of one thing (one latency per scale event): count, p50, p95, p99,
  min, max, mean. Percentiles interpolate linearly between the two nearest ranks, so p99 of 50
  samples lies between the two largest: say so when quoting it.
- ``figure``: the same measurement repeated (one burst, one cycle): the median of the runs, its
  spread as min and max, and every run, so nothing is hidden behind the median.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.haproxy import HAProxyBinary, system_haproxy


#: Packages whose versions change what the numbers mean.
PACKAGES = ("moto", "boto3", "botocore")


def quantile(ordered: Sequence[float], q: float) -> float:
    """The *q* quantile (0-1) of the sorted, non-empty *ordered*, linearly interpolated."""
    position = q * (len(ordered) - 1)
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def distribution(samples: Sequence[float], digits: int = 4) -> dict[str, Any]:
    """Count, p50, p95, p99, min, max and mean of *samples*; ``None`` values when there are none."""
    if not samples:
        return dict.fromkeys(("p50", "p95", "p99", "min", "max", "mean"), None) | {"count": 0}
    ordered = sorted(samples)
    points = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
    summary = {name: quantile(ordered, q) for name, q in points}
    summary |= {"min": ordered[0], "max": ordered[-1], "mean": statistics.fmean(ordered)}
    return {"count": len(ordered)} | {k: round(v, digits) for k, v in summary.items()}


def figure(runs: Sequence[float], digits: int = 4) -> dict[str, Any]:
    """The median of repeated *runs*, with its spread (min, max) and every run."""
    values = [round(float(run), digits) for run in runs]
    if not values:
        return {"median": None, "min": None, "max": None, "runs": []}
    return {
        "median": round(statistics.median(values), digits),
        "min": min(values),
        "max": max(values),
        "runs": values,
    }


def machine() -> dict[str, Any]:
    """What ran the benchmark: CPUs, Python, HAProxy and emulator versions, the load, the date."""
    versions: dict[str, str | None] = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "haproxy": _haproxy_version(),
        **versions,
        # Others' work on a shared machine shows up here, and in every number after it.
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _cpu_model() -> str | None:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or None
    for line in text.splitlines():
        if line.lower().startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or None


def _haproxy_version() -> str | None:
    binary = system_haproxy()
    return None if binary is None else HAProxyBinary.of(binary).version
