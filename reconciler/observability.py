"""
Metrics, health, and the small HTTP listener that serves them.

``Metrics`` owns a private Prometheus registry (so tests and several controllers in one process
never share counters) and the time of the last successful cycle, from which ``/healthz`` decides:
200 while that success is younger than ``healthy_intervals`` times ``resync_interval``, else 503
with the reason. ``StatusServer`` is the only HTTP listener of the package.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from reconciler.model import Change, Plan


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
        """*stale_after*: seconds after the last successful cycle when health turns bad."""
        self.registry = CollectorRegistry()
        self._stale_after = stale_after
        self._clock = clock
        self._started = clock()
        self._last_success: float | None = None
        self._last_error = ""
        self._lock = threading.Lock()
        r = self.registry
        self.cycles = Counter(
            "reconciler_cycles", "Reconcile cycles by result.", ["result"], registry=r
        )
        self.duration = Histogram(
            "reconciler_cycle_duration_seconds",
            "Wall time of one reconcile cycle.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.changes = Counter(
            "reconciler_changes", "Server changes applied, by kind.", ["kind"], registry=r
        )
        self.servers = Gauge(
            "reconciler_servers",
            "Managed servers per backend: desired (InService) and actual (in HAProxy).",
            ["backend", "source"],
            registry=r,
        )
        self.drift = Gauge(
            "reconciler_drift_servers",
            "Managed servers of a backend that differ from their group after the last cycle.",
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
        self.last_success = Gauge(
            "reconciler_last_success_timestamp_seconds",
            "Unix time of the last successful cycle.",
            registry=r,
        )
        if api_calls is not None:
            r.register(_ApiCallCollector(api_calls))

    def record_cycle(self, result: str, seconds: float, plan: Plan | None) -> None:
        """Count one cycle; with its *plan*, also the changes, server counts and drift."""
        self.cycles.labels(result).inc()
        self.duration.observe(seconds)
        if plan is None:
            return
        for backend in plan.backends:
            if backend.refused:
                continue
            desired = actual = drifted = 0
            for row in backend.rows:
                if row.change is not Change.UNCHANGED:
                    self.changes.labels(row.change.value).inc()
                    drifted += 1
                desired += row.change is not Change.REMOVE and row.change is not Change.DRAINING
                actual += row.change is not Change.ADD and row.change is not Change.WARMING
            self.servers.labels(backend.backend, "desired").set(desired)
            self.servers.labels(backend.backend, "actual").set(actual)
            self.drift.labels(backend.backend).set(drifted)

    def succeeded(self) -> None:
        """A cycle succeeded now."""
        with self._lock:
            self._last_success = self._clock()
            self._last_error = ""
        self.last_success.set(time.time())

    def failed(self, reason: str) -> None:
        """A cycle failed; *reason* shows in ``/healthz`` until the next success."""
        with self._lock:
            self._last_error = reason

    def health(self) -> tuple[bool, str]:
        """Whether the controller is healthy, and why."""
        with self._lock:
            last, error = self._last_success, self._last_error
        now = self._clock()
        if last is None:
            waited = now - self._started
            if waited < self._stale_after:
                return True, f"starting: no cycle finished yet ({waited:.0f}s)"
            why = f"; last error: {error}" if error else ""
            return False, f"no successful cycle in {waited:.0f}s since start{why}"
        age = now - last
        if age <= self._stale_after:
            return True, f"last successful cycle {age:.1f}s ago"
        why = f"; last error: {error}" if error else ""
        return False, f"last successful cycle {age:.0f}s ago (limit {self._stale_after:g}s){why}"

    def exposition(self) -> bytes:
        """The metrics in Prometheus text format."""
        return bytes(generate_latest(self.registry))


class _ApiCallCollector(Collector):
    """Turns the AWS call counter's snapshot into counters at scrape time."""

    def __init__(self, snapshot: Callable[[], Mapping[str, CallCounts]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
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


class StatusServer:
    """``/healthz`` and ``/metrics`` over HTTP, served from a daemon thread."""

    def __init__(self, listen: str, metrics: Metrics) -> None:
        """Bind *listen* (``host:port``; port 0 picks a free one) at once, so errors show early."""
        host, _, port = listen.rpartition(":")
        handler = _handler_for(metrics)
        self._server = ThreadingHTTPServer((host.strip("[]"), int(port)), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="status-server", daemon=True
        )

    @property
    def address(self) -> str:
        """``host:port`` actually bound."""
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> None:
        """Serve in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()


def _handler_for(metrics: Metrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        """Answers the two paths; everything else is 404."""

        def do_GET(self) -> None:
            if self.path == "/healthz":
                ok, reason = metrics.health()
                self._reply(200 if ok else 503, (reason + "\n").encode(), "text/plain")
            elif self.path == "/metrics":
                self._reply(200, metrics.exposition(), "text/plain; version=0.0.4")
            else:
                self._reply(404, b"try /healthz or /metrics\n", "text/plain")

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Scrapes every few seconds would drown the log; stay quiet."""

    return Handler
