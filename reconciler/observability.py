"""
Metrics, health, and the small HTTP listener that serves them.

``Metrics`` owns a private Prometheus registry (so tests and several controllers in one process
never share counters) and the time of the last successful cycle, from which ``/healthz`` decides:
200 while that success is younger than ``healthy_intervals`` times ``resync_interval``, else 503
with the reason. ``StatusServer`` is the only HTTP listener of the package.

What a cycle reports is derived from its plan's rows: a server *changed* when its row says add,
remove, address or options (warming and draining rows report progress); *desired* servers are
the group's serving instances; *actual* ones are the managed servers HAProxy has once the cycle is
applied (draining ones included); *drift* counts the rows that were not unchanged when the cycle
looked. A backend the cycle could not read keeps its last gauges.
"""

from __future__ import annotations

import io
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from reconciler.model import Change, Row
from reconciler.reconcile import CycleResult


if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


log = logging.getLogger(__name__)


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


#: What a report row says about a server when the cycle changed it; the other changes report
#: progress (warming, draining) or nothing to do.
CHANGES = frozenset({Change.ADD, Change.REMOVE, Change.ADDRESS, Change.OPTIONS})


def changed_rows(result: CycleResult) -> Iterator[tuple[str, Row]]:
    """
    The report rows of the servers a cycle changed (or tried to: a failed cycle's attempts are
    included), each with its backend. A dry run changes nothing.
    """
    if result.outcome is None:
        return
    for backend in result.plan.backends:
        if backend.refused or backend.held:
            continue
        for row in backend.rows:
            if row.change in CHANGES:
                yield backend.backend, row


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
            "Server changes made, by kind (add, remove, address, options).",
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


#: Seconds a client has to send its whole request, and again to take the reply: a client that
#: connects and says nothing, or trickles bytes, must not hold a connection for long.
REQUEST_TIMEOUT = 5.0
#: Connections served at once; more wait in the kernel's queue until one is done (at the latest
#: after the request timeout), so a flood of idle connections neither adds threads nor stops
#: ``/healthz`` from being answered.
MAX_CONNECTIONS = 16


class StatusServer:
    """``/healthz`` and ``/metrics`` over HTTP, served from a daemon thread."""

    def __init__(
        self,
        listen: str,
        metrics: Metrics,
        *,
        request_timeout: float = REQUEST_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        """
        Bind *listen* (``host:port``, IPv4; port 0 picks a free one) at once, so a port in use
        shows at startup; raises ``OSError``. At most *max_connections* are served at once, each
        within *request_timeout* seconds to read the request and as many to send the reply.
        """
        host, _, port = listen.rpartition(":")
        handler = _handler_for(metrics, request_timeout)
        self._server = _QuietServer((host, int(port)), handler, max_connections)
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
        """Stop serving and release the port; connections being served are left to finish."""
        if self._thread.is_alive():  # shutdown() waits forever for a loop that never started
            self._server.shutdown()
        self._server.server_close()


def probe_health(listen: str, timeout: float) -> tuple[int, str]:
    """
    Ask the ``/healthz`` of a status server listening on *listen* (a wildcard host is asked on
    loopback); the status code and the body. Never through a proxy. Raises ``OSError``.
    """
    host, _, port = listen.rpartition(":")
    if host in ("", "0.0.0.0"):  # noqa: S104 - the address listened on, not one bound here
        host = "127.0.0.1"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    url = f"http://{host}:{port}/healthz"
    try:
        with opener.open(url, timeout=timeout) as reply:
            return int(reply.status), reply.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


class _QuietServer(ThreadingHTTPServer):
    """
    Serves each connection in a daemon thread, at most *max_connections* at once; a failed
    request is logged, never printed.
    """

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        max_connections: int,
    ) -> None:
        """Bind *address*; serve with *handler*."""
        self._max_connections = max_connections
        self._serving = 0
        self._closing = False
        self._slots = threading.Condition()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """
        Wait for a free slot, then serve in a new thread. Meanwhile, this loop accepts nothing
        more: further connections wait in the kernel's queue, not in threads.
        """
        with self._slots:
            self._slots.wait_for(lambda: self._closing or self._serving < self._max_connections)
            if self._closing:
                self.shutdown_request(request)
                return
            self._serving += 1
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve one connection, then free its slot."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def _release(self) -> None:
        with self._slots:
            self._serving -= 1
            self._slots.notify()

    def shutdown(self) -> None:
        """Stop the loop, also while it waits for a slot."""
        with self._slots:
            self._closing = True
            self._slots.notify_all()
        super().shutdown()

    def handle_error(self, request: object, client_address: object) -> None:  # noqa: ARG002
        """A scraper that hung up mid-reply: the default prints a traceback, breaking JSON logs."""
        log.debug("status request from %s failed", client_address, exc_info=True)


class _Connection(Protocol):
    """What ``_DeadlineReader`` needs of a socket."""

    def settimeout(self, value: float | None, /) -> None:
        """Bound the next blocking call."""

    def recv_into(self, buffer: WriteableBuffer, /) -> int:
        """Receive into *buffer*; 0 at the end."""
        ...


class _DeadlineReader(io.RawIOBase):
    """
    A connection's input that raises ``TimeoutError`` once *deadline* (monotonic) has passed,
    however the bytes trickle in: each receive may only wait for what is left of the time.
    """

    def __init__(self, connection: _Connection, deadline: float) -> None:
        """Read from *connection* until *deadline*."""
        super().__init__()
        self._connection = connection
        self._deadline = deadline

    def readable(self) -> bool:
        """Always: this is an input."""
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        """Receive what arrives before the deadline."""
        left = self._deadline - time.monotonic()
        if left <= 0:
            msg = "the request did not arrive in time"
            raise TimeoutError(msg)
        self._connection.settimeout(left)
        return self._connection.recv_into(buffer)


def _handler_for(metrics: Metrics, request_timeout: float) -> type[BaseHTTPRequestHandler]:
    """
    A request handler class bound to *metrics* and *request_timeout* (http.server instantiates
    it per request).
    """

    class Handler(BaseHTTPRequestHandler):
        """Answers the two paths (any query string ignored); everything else is 404."""

        def setup(self) -> None:
            """Read the request through a deadline (http.server's own input has none)."""
            super().setup()
            self.rfile.close()  # else the socket stays open until garbage collection
            deadline = time.monotonic() + request_timeout
            self.rfile = io.BufferedReader(_DeadlineReader(self.connection, deadline))

        def do_GET(self) -> None:
            """Serve one of the two paths."""
            path = urlsplit(self.path).path
            if path == "/healthz":
                ok, reason = metrics.health()
                self._reply(200 if ok else 503, (reason + "\n").encode(), "text/plain")
            elif path == "/metrics":
                self._reply(200, metrics.exposition(), CONTENT_TYPE_LATEST)
            else:
                self._reply(404, b"try /healthz or /metrics\n", "text/plain")

        def do_HEAD(self) -> None:
            """Load balancers often probe health with HEAD: GET's answer, without the body."""
            self.do_GET()

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            """Send a complete response, within the timeout."""
            self.connection.settimeout(request_timeout)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Scrapes every few seconds would drown the log; stay quiet."""

    return Handler
