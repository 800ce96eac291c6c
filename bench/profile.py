"""
How big each benchmark runs: ``FULL`` for ``make bench``, ``QUICK`` for the smoke test.

Every size lives here, so the two runs differ in sizes only, never in what they measure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Profile:
    """The sizes of one run."""

    name: str
    # -- convergence latency and traffic during change --
    #: Scale-out events, and as many scale-in events, per compared mode.
    events: int
    #: Seconds between two events, drawn uniformly in this range (the same draws for every mode).
    event_gap: tuple[float, float]
    #: Instances in the group before the first event: enough that a scale-in always finds a
    #: serving instance at once, even while the polling mode takes 10 s to serve new ones (a
    #: scale-in that had to wait would fall in step with the polling timer).
    base_size: int
    #: The resync interval of the controller in pure polling mode.
    polling_interval: float
    #: Samples of the floor (the two Describe calls alone).
    floor_samples: int
    #: Requests per second the load generator sends through HAProxy meanwhile.
    load_rate: float
    #: Seconds to wait, after the last event, for every event to show in HAProxy.
    settle: float
    #: Scale-outs, and as many scale-ins, per mode in the world of single events (check
    #: ``inter 250ms``, the controller against the naive script).
    spread_events: int
    #: Seconds between two single events: longer than any cycle an event causes (its follow-up
    #: included), so that each one is handled, and paid for, alone.
    spread_gap: tuple[float, float]
    #: Seconds without a new cycle after which a controller counts as idle, its work done (the
    #: convergence and burst benchmarks): longer than the gap between an event's cycle and its
    #: follow-up (3 s before issue 12) in ``make bench``.
    quiet: float
    # -- bursts --
    #: Instances launched, and as many terminated: twice this many notifications.
    burst_instances: int
    burst_repeats: int
    # -- scale --
    #: Group sizes, each with how many no-change cycles of the daemon are measured after its
    #: first (and two ``--once`` runs). Every cycle at 5,000 waits about 30 s for moto.
    scale: tuple[tuple[int, int], ...]
    # -- zone routing --
    #: Instances in each of the three zones.
    zone_per_zone: int
    #: Seconds of load per measured share (halves of it around a failure).
    zone_seconds: float
    #: Partial losses (and recoveries) timed in a row.
    zone_repeats: int
    # -- CPU micro-benchmark --
    #: Servers in the backend, one run per size, reported side by side.
    cpu_sizes: tuple[int, ...]
    cpu_repeats: int

    def to_json(self) -> dict[str, Any]:
        """The sizes as a JSON object."""
        return asdict(self)


FULL = Profile(
    name="full",
    events=50,
    event_gap=(0.3, 0.7),
    base_size=16,
    polling_interval=5.0,
    floor_samples=100,
    load_rate=200.0,
    settle=30.0,
    spread_events=15,
    spread_gap=(3.5, 4.5),
    quiet=4.5,
    burst_instances=100,
    burst_repeats=3,
    scale=((1000, 3), (5000, 2)),
    zone_per_zone=3,
    zone_seconds=10.0,
    zone_repeats=5,
    cpu_sizes=(1_000, 10_000),
    cpu_repeats=9,
)

QUICK = Profile(
    name="quick",
    events=3,
    event_gap=(0.2, 0.4),
    base_size=4,
    polling_interval=1.0,
    floor_samples=10,
    load_rate=50.0,
    settle=15.0,
    spread_events=2,
    spread_gap=(0.6, 0.9),
    quiet=1.0,
    burst_instances=5,
    burst_repeats=1,
    scale=((20, 1),),
    zone_per_zone=2,
    zone_seconds=1.0,
    zone_repeats=1,
    cpu_sizes=(50, 500),
    cpu_repeats=2,
)
