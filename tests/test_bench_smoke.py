"""
``python -m bench --quick`` runs every benchmark end to end, tiny, and writes results of the shape
``make bench`` writes. Nothing here judges a number: benchmarks are not timed tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from harness.haproxy import haproxy_matrix


ROOT = Path(__file__).resolve().parent.parent
#: The quick run takes well under a minute; this only stops a hung one (others' work on a
#: small machine can slow it several times over).
TIMEOUT = 300
DISTRIBUTION = {"count", "p50", "p95", "p99", "min", "max", "mean"}
FIGURE = {"median", "min", "max", "runs"}


def is_distribution(value: Any, *, count: int) -> bool:
    """A latency distribution over at least *count* samples, every statistic a number."""
    return (
        isinstance(value, Mapping)
        and set(value) == DISTRIBUTION
        and value["count"] >= count
        and all(isinstance(value[k], float | int) for k in DISTRIBUTION)
    )


def is_figure(value: Any) -> bool:
    """A repeated measurement: its median, spread and runs, all numbers."""
    return (
        isinstance(value, Mapping)
        and set(value) == FIGURE
        and len(value["runs"]) >= 1
        and all(isinstance(v, float | int) for v in [value["median"], value["min"], *value["runs"]])
    )


@pytest.fixture(scope="module", name="run")
def _run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Any]:
    """One quick run for the whole module: its process and its results file."""
    out = tmp_path_factory.mktemp("bench-results")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    files = sorted(out.glob("bench-*-quick.json"))
    results = json.loads(files[0].read_text()) if files else None
    return done, results


def test_quick_run_succeeds_and_prints_every_table(
    run: tuple[subprocess.CompletedProcess[str], Any],
) -> None:
    """Exit 0, one results file, a table for each part of the issue."""
    done, results = run
    assert done.returncode == 0, done.stderr[-3000:]
    assert results is not None, done.stdout[-2000:]
    titles = (
        "Convergence latency",
        "Single events",
        "CPU of the handlers",
        "Bursts",
        "Scale",
        "CPU only",
        "Traffic during change",
    )
    for title in titles:
        assert title in done.stdout
    assert ("differs from" in done.stdout) == (len(haproxy_matrix()) > 1)


def test_results_record_the_machine(run: tuple[subprocess.CompletedProcess[str], Any]) -> None:
    """CPU count and model, Python, HAProxy and moto versions, and the date."""
    machine = run[1]["machine"]
    assert isinstance(machine["cpu_count"], int)
    for key in ("cpu_model", "python", "haproxy", "moto", "date"):
        assert isinstance(machine[key], str)
        assert machine[key]
    assert run[1]["profile"]["name"] == "quick"


def test_convergence_and_traffic_shape(run: tuple[subprocess.CompletedProcess[str], Any]) -> None:
    """
    The floor, then every mode on each HAProxy version of the matrix: latency distributions of
    both directions, load counts.
    """
    results = run[1]
    events = results["profile"]["events"]
    convergence = results["convergence"]
    assert is_distribution(convergence["floor"], count=1)
    labels = [binary.label for binary in haproxy_matrix()]
    assert [version["label"] for version in convergence["versions"]] == labels
    assert [version["label"] for version in results["traffic"]["versions"]] == labels
    for version, view in zip(convergence["versions"], results["traffic"]["versions"], strict=True):
        assert set(version["modes"]) == {"event", "event_first_check", "polling", "naive", "reload"}
        for mode in version["modes"].values():
            assert mode["events"] == 2 * events
            for direction in ("scale_out", "scale_in"):
                assert is_distribution(mode[direction], count=1), mode
            assert isinstance(mode["reloads"], int)
        assert set(view["paths"]) == set(version["modes"])
        for path in view["paths"].values():
            assert path["requests"] > 0
            assert isinstance(path["failed"], int)


def has_work_counts(mode: Mapping[str, Any], *, controller: bool) -> bool:
    """Read pairs and process CPU counted; a controller's cycles' CPU from its log lines."""
    work = mode["work"]
    if not all(isinstance(work[key], int) for key in ("aws_read_pairs", "cpu_ms")):
        return False
    if not controller:
        return mode["cycle_cpu_ms"] is None
    cycles = mode["cycle_cpu_ms"]
    per_cycle = {key: value for key, value in cycles.items() if key != "total"}
    return is_distribution(per_cycle, count=1) and isinstance(cycles["total"], float | int)


def test_single_events_shape(run: tuple[subprocess.CompletedProcess[str], Any]) -> None:
    """
    The world of single events, checks every 250 ms, on the first HAProxy: the controller and
    the naive script, each event's time until served, and what each event cost.
    """
    results = run[1]
    spread = results["convergence"]["spread"]
    assert "inter 250ms" in spread["server_options"]
    assert spread["label"] == haproxy_matrix()[0].label
    assert set(spread["modes"]) == {"event", "event_first_check", "naive"}
    for key, mode in spread["modes"].items():
        assert mode["events"] == 2 * results["profile"]["spread_events"]
        for latency in ("served", "scale_out", "scale_in_out_of_rotation"):
            assert is_distribution(mode[latency], count=1), (latency, mode)
        assert has_work_counts(mode, controller=key != "naive"), mode
    for version in results["convergence"]["versions"]:
        for key, mode in version["modes"].items():
            assert has_work_counts(mode, controller=key != "naive"), mode


@pytest.mark.parametrize(
    "saved", sorted((ROOT / "bench" / "results").glob("*.json")), ids=lambda path: path.name
)
def test_show_reads_every_saved_results_file(saved: Path) -> None:
    """
    ``--show`` prints the tables of every results file in ``bench/results``, older schemas (the
    README quoted a schema 1 file) without the figures they did not record.
    """
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--show", str(saved)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    convergence = json.loads(saved.read_text()).get("convergence", {})
    assert ("Convergence latency" in done.stdout) == bool(convergence)
    assert ("Single events" in done.stdout) == ("spread" in convergence)


def test_burst_shape(run: tuple[subprocess.CompletedProcess[str], Any]) -> None:
    """Both handlers: publication, convergence, reloads and AWS calls as repeated figures."""
    burst = run[1]["burst"]
    assert burst["notifications"] == 2 * run[1]["profile"]["burst_instances"]
    assert set(burst["handlers"]) == {"event", "naive"}
    for handler in burst["handlers"].values():
        for key in (
            "published_seconds",
            "reloads",
            "aws_read_calls",
            "aws_read_pairs",
            "queue_calls",
            "cpu_ms",
        ):
            assert is_figure(handler[key]), (key, handler)
    assert is_figure(burst["handlers"]["event"]["cycles"])
    assert is_figure(burst["handlers"]["naive"]["messages"])


def test_scale_and_cpu_shape(run: tuple[subprocess.CompletedProcess[str], Any]) -> None:
    """Each size's cycles split into their parts; the micro-benchmark's stages."""
    results = run[1]
    sizes = results["scale"]["sizes"]
    assert set(sizes) == {str(size) for size, _ in results["profile"]["scale"]}
    runs_measured = ("once_initial", "once_no_change", "daemon_cycle")
    for runs in sizes.values():
        assert set(runs) == set(runs_measured)
        for measured in runs_measured:
            for part in ("wall_seconds", "cpu_seconds", "peak_rss_mb"):
                assert is_figure(runs[measured][part]), (measured, part, runs[measured])
        assert is_figure(runs["daemon_cycle"]["idle_rss_mb"])
        assert is_figure(runs["daemon_cycle"]["aws_calls"])
    for stage in ("parse_seconds", "plan_seconds", "render_seconds", "total_seconds"):
        assert is_figure(results["cpu"][stage])


def test_zones_shape(run: tuple[subprocess.CompletedProcess[str], Any]) -> None:
    """
    The three-zone world: each zone's share with zone routing off and on, both failovers, the
    partial loss's times; the figures a healthy run must show (no failure, no reload, nothing
    cross-zone while zone a is healthy, every zone used with routing off).
    """
    done, results = run
    assert "Zone routing" in done.stdout
    zones = results["zones"]
    off, on = zones["cross_zone"]["off"], zones["cross_zone"]["on"]
    assert all(share for share in off["by_zone"].values())
    assert on["cross_zone_share"] == 0
    for path in (off, on, *zones["failover"].values()):
        assert path["requests"] > 0
        assert path["reloads"] == 0
    assert zones["failover"]["checks_fail"]["failed"] == 0
    assert zones["failover"]["checks_fail"]["by_zone_after"][zones["node_zone"]] == 0
    spill = zones["spill"]
    for key in ("seconds_to_down", "seconds_to_spill", "spill_after_down", "seconds_to_return"):
        assert is_figure(spill[key]), (key, spill)
    assert spill["failed"] == 0
