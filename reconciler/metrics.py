"""
Metrics and health, served by ``reconciler.adapters.status_server``.

``Metrics`` owns a private Prometheus registry (so tests and several controllers in one process
never share counters) and the time of the last successful cycle, from which ``/healthz`` decides:
200 while that success is younger than ``healthy_intervals`` times ``resync_interval``, else 503
with the reason.

What a cycle reports is derived from its plan's rows: a server *changed* when its row says add,
remove, address, options, weight, or zone when the cycle adds it again in its other backup form
(``core.results.changed_rows``; warming and draining rows report progress); *desired* servers are
the group's serving instances; *actual* ones are the managed servers HAProxy has once the cycle is
applied (draining ones included); *drift* counts the rows that were not unchanged when the cycle
looked. A backend the cycle could not read keeps its last gauges.

A zone-routed backend's gauges come from the plan's ``ZoneStatus``: its servers per zone and
state, its mode, the cross-zone share of requests. Each cycle that reads the backend replaces
them: a zone left without servers loses its series, and a backend whose routing was turned off
loses them all.

``reconciler_haproxy_info`` follows the Prometheus convention for an info metric: a gauge that is
always 1, whose labels are the facts: the running HAProxy's version and the runtime commands that
matter to the controller among those its ``help`` lists (``HAProxyFeatures.capabilities``). It
has one series at a time, replaced when a cycle reads another version or other commands (after an
upgrade), and none until a cycle has read the runtime; a cycle that could not read it leaves the
last one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from reconciler.core.model import Change, CycleResult, HAProxyFeatures, ZoneMode, ZoneStatus
from reconciler.core.results import changed_rows


class CallCounts(Protocol):
    """What the AWS call counter reports per operation."""

    @property
    def calls(self) -> int:
        """Calls made."""
        ...

    @property
    def retries(self) -> int:
        """Attempts botocore added."""
        ...

    @property
    def errors(self) -> int:
        """Calls that failed."""
        ...


class Metrics:
    """Every metric the controller exports, plus the health verdict."""

    def __init__(
        self,
        *,
        stale_after: float,
        api_calls: Callable[[], Mapping[str, CallCounts]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """
        *stale_after*: seconds after the last successful cycle (or the start) when health turns
        bad; *api_calls* snapshots the AWS call counter at each scrape; *clock* is monotonic.

        Long because it declares every metric the controller exports, one statement each: the
        whole list reads in one place, as ``/metrics`` shows it.
        """
        self.registry = CollectorRegistry()
        self._stale_after = stale_after
        self._clock = clock
        self._started = clock()
        self._last_success: float | None = None
        self._last_error = ""
        self._lock = threading.Lock()
        r = self.registry
        self.cycles = Counter(
            "reconciler_cycles", "Reconcile cycles by result (ok, failed).", ["result"], registry=r
        )
        self.duration = Histogram(
            "reconciler_cycle_duration_seconds",
            "Wall time of one reconcile cycle.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.changes = Counter(
            "reconciler_changes",
            "Server changes made, by kind (add, remove, address, options, weight, zone).",
            ["kind"],
            registry=r,
        )
        self.commands = Counter(
            "reconciler_runtime_commands", "HAProxy runtime API commands sent.", registry=r
        )
        self.file_writes = Counter(
            "reconciler_config_writes", "Times the HAProxy config file was rewritten.", registry=r
        )
        self.reloads = Counter("reconciler_reloads", "HAProxy reloads run.", registry=r)
        self.runtime_read_errors = Counter(
            "reconciler_runtime_read_errors",
            "Cycles that left a backend alone because HAProxy's runtime API gave its servers "
            "incompletely (a cut, damaged or inconsistent dump) or out of date (an add found the "
            "server already there).",
            ["backend"],
            registry=r,
        )
        self.servers = Gauge(
            "reconciler_servers",
            "Managed servers per backend after the last cycle that could read it: desired "
            "(serving instances of the group) and actual (in HAProxy, draining ones included).",
            ["backend", "source"],
            registry=r,
        )
        self.drift = Gauge(
            "reconciler_drift_servers",
            "Managed servers that differed from their group when the last cycle that could read "
            "the backend looked (warm-ups and drains in progress included).",
            ["backend"],
            registry=r,
        )
        self.messages_received = Counter(
            "reconciler_sqs_messages_received",
            "SQS messages received, by kind.",
            ["kind"],
            registry=r,
        )
        self.messages_deleted = Counter(
            "reconciler_sqs_messages_deleted",
            "SQS messages deleted, by kind.",
            ["kind"],
            registry=r,
        )
        self.untrusted_warnings = Counter(
            "reconciler_untrusted_warnings",
            "Spot interruption warnings and rebalance recommendations not acted on, by reason: "
            "malformed, not_managed (the instance is in no managed group), not_spot.",
            ["reason"],
            registry=r,
        )
        self.aws_values_rejected = Counter(
            "reconciler_aws_values_rejected",
            "Instances left as they are because AWS returned a malformed value for them (an "
            "instance id or an address without its documented shape), per backend and cycle.",
            ["backend"],
            registry=r,
        )
        self.last_success = Gauge(
            "reconciler_last_success_timestamp_seconds",
            "Unix time of the last successful cycle.",
            registry=r,
        )
        self.haproxy_info = Gauge(
            "reconciler_haproxy_info",
            "The running HAProxy, always 1: its version and, comma-separated, the runtime "
            "commands its help lists among those the controller sends or can use.",
            ["version", "commands"],
            registry=r,
        )
        #: The labels of ``haproxy_info``'s one series, ``None`` before the runtime was read.
        self._haproxy_labels: tuple[str, str] | None = None
        self.warnings = Gauge(
            "reconciler_backend_warnings",
            "What the last cycle that could read the backend warned of (an instance type "
            "without a weight): one per warning.",
            ["backend"],
            registry=r,
        )
        self.zone_servers = Gauge(
            "reconciler_zone_servers",
            "Managed servers of a zone-routed backend per Availability Zone (unknown: no zone "
            "given) and state: healthy (taking requests from the load balancer) or unhealthy.",
            ["backend", "zone", "state"],
            registry=r,
        )
        self.zone_mode = Gauge(
            "reconciler_zone_mode",
            "Zone routing's mode per backend: 1 for the current one, 0 for the other (local: "
            "the other zones' servers are backups; spill: every zone's servers are active).",
            ["backend", "mode"],
            registry=r,
        )
        self.cross_zone_share = Gauge(
            "reconciler_cross_zone_share",
            "Share (0 to 1) of the requests HAProxy sent to servers outside its own zone since "
            "its worker started (show stat lbtot); absent before any request.",
            ["backend"],
            registry=r,
        )
        #: The ``zone_servers`` series each backend has, to remove those of zones gone since.
        self._zone_labels: dict[str, set[tuple[str, str, str]]] = {}
        if api_calls is not None:
            r.register(_ApiCallCollector(api_calls))

    def record_cycle(self, seconds: float, result: CycleResult | None, error: str) -> None:
        """
        Count one cycle that took *seconds*: failed when *error* is not empty; with its *result*
        (``None`` when it raised), also what it changed and the servers it saw.
        """
        self.cycles.labels("failed" if error else "ok").inc()
        self.duration.observe(seconds)
        if result is not None:
            self._record_result(result)
        with self._lock:
            self._last_error = error
            if not error:
                self._last_success = self._clock()
        if not error:
            self.last_success.set(time.time())

    def untrusted_warning(self, reason: str) -> None:
        """Count an interruption warning not acted on, and why."""
        self.untrusted_warnings.labels(reason).inc()

    def message_received(self, kind: str) -> None:
        """Count an SQS message of *kind* received."""
        self.messages_received.labels(kind).inc()

    def message_deleted(self, kind: str) -> None:
        """Count an SQS message of *kind* deleted."""
        self.messages_deleted.labels(kind).inc()

    def _record_result(self, result: CycleResult) -> None:
        """Count what *result* changed; set the server gauges of every backend it could read."""
        for _, row in changed_rows(result):
            self.changes.labels(row.change.value).inc()
        stale: tuple[str, ...] = ()
        if result.outcome is not None:
            self.commands.inc(result.outcome.commands)
            self.file_writes.inc(result.outcome.file_written)
            self.reloads.inc(result.outcome.reloaded)
            stale = result.outcome.stale_reads
        for backend_name in {*result.runtime_read_errors, *stale}:
            self.runtime_read_errors.labels(backend_name).inc()
        if result.haproxy is not None:
            self._haproxy_read(result.haproxy)
        for backend in result.plan.backends:
            if backend.rejected:
                self.aws_values_rejected.labels(backend.backend).inc(len(backend.rejected))
            if backend.refused:
                continue  # not read: what the gauges said last is still the best guess
            rows = backend.rows
            self.servers.labels(backend.backend, "desired").set(
                sum(r.change not in _NOT_DESIRED for r in rows)
            )
            self.servers.labels(backend.backend, "actual").set(
                sum(r.change is not Change.REMOVE for r in rows)
            )
            self.drift.labels(backend.backend).set(
                sum(r.change is not Change.UNCHANGED for r in rows)
            )
            self.warnings.labels(backend.backend).set(len(backend.warnings))
            self._zones_read(backend.backend, backend.zones)

    def _zones_read(self, backend: str, zones: ZoneStatus | None) -> None:
        """Set the zone gauges of *backend* from *zones*; remove them when routing is off."""
        labels = set()
        if zones is not None:
            for zone, count in zones.zones.items():
                unhealthy = count.servers - count.healthy
                for state, servers in (("healthy", count.healthy), ("unhealthy", unhealthy)):
                    self.zone_servers.labels(backend, zone, state).set(servers)
                    labels.add((backend, zone, state))
        for gone in self._zone_labels.get(backend, set()) - labels:
            self.zone_servers.remove(*gone)
        self._zone_labels[backend] = labels
        # ``remove`` leaves alone a series that was never set.
        for mode in ZoneMode:
            if zones is None:
                self.zone_mode.remove(backend, mode.value)
            else:
                self.zone_mode.labels(backend, mode.value).set(zones.mode is mode)
        if zones is None or zones.cross_zone_share is None:
            self.cross_zone_share.remove(backend)
        else:
            self.cross_zone_share.labels(backend).set(zones.cross_zone_share)

    def _haproxy_read(self, features: HAProxyFeatures) -> None:
        """Make *features* the one series of ``haproxy_info`` (unchanged: nothing to do)."""
        labels = (features.version, ",".join(features.capabilities))
        if labels == self._haproxy_labels:
            return
        self.haproxy_info.clear()
        self.haproxy_info.labels(*labels).set(1)
        self._haproxy_labels = labels

    def health(self) -> tuple[bool, str]:
        """Whether the controller is healthy, and why."""
        with self._lock:
            last, error = self._last_success, self._last_error
        now = self._clock()
        why = f"; last error: {error}" if error else ""
        if last is None:
            waited = now - self._started
            if waited <= self._stale_after:
                return True, f"starting: no successful cycle yet ({waited:.0f}s){why}"
            return False, f"no successful cycle in {waited:.0f}s since start{why}"
        age = now - last
        if age <= self._stale_after:
            return True, f"last successful cycle {age:.1f}s ago{why}"
        return False, f"last successful cycle {age:.0f}s ago (limit {self._stale_after:g}s){why}"

    def exposition(self) -> bytes:
        """The metrics in Prometheus text format."""
        return bytes(generate_latest(self.registry))


#: Rows of servers the group does not want serving.
_NOT_DESIRED = frozenset({Change.REMOVE, Change.DRAINING, Change.HELD})


class _ApiCallCollector(Collector):
    """Turns the AWS call counter's snapshot into counters at scrape time."""

    def __init__(self, snapshot: Callable[[], Mapping[str, CallCounts]]) -> None:
        """Read the counts through *snapshot* at each scrape."""
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        """The counters of the current snapshot."""
        calls = CounterMetricFamily(
            "reconciler_aws_api_calls", "AWS API calls by operation.", labels=["operation"]
        )
        retries = CounterMetricFamily(
            "reconciler_aws_api_retries", "AWS API retries by operation.", labels=["operation"]
        )
        errors = CounterMetricFamily(
            "reconciler_aws_api_errors", "Failed AWS API calls by operation.", labels=["operation"]
        )
        for operation, counts in sorted(self._snapshot().items()):
            calls.add_metric([operation], counts.calls)
            retries.add_metric([operation], counts.retries)
            errors.add_metric([operation], counts.errors)
        yield from (calls, retries, errors)
