"""
The status listener under clients that misbehave: one that connects and says nothing, one that
trickles its request a byte at a time, and more idle connections than it serves at once. Each is
dropped after the request timeout, the number of threads stays bounded, and ``/healthz`` keeps
answering the others. Then what ``/metrics`` says of zone routing and weight warnings.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from reconciler.adapters.status_server import StatusServer
from reconciler.core.model import (
    BackendPlan,
    CycleResult,
    Outcome,
    Plan,
    ZoneCount,
    ZoneMode,
    ZoneStatus,
)
from reconciler.metrics import Metrics


#: Short, so that the tests wait little; the daemon's default is in ``status_server``.
REQUEST_TIMEOUT = 0.3
MAX_CONNECTIONS = 4
#: How long a test waits for something that must happen, before it fails.
DEADLINE = 15.0


@pytest.fixture(name="server")
def _server() -> Iterator[StatusServer]:
    """A status listener on a free loopback port with a short request timeout and a low bound."""
    server = StatusServer(
        "127.0.0.1:0",
        Metrics(stale_after=60),
        request_timeout=REQUEST_TIMEOUT,
        max_connections=MAX_CONNECTIONS,
    )
    server.start()
    yield server
    server.stop()


def connect(server: StatusServer) -> socket.socket:
    """A TCP connection to the listener that has sent nothing yet."""
    host, _, port = server.address.rpartition(":")
    return socket.create_connection((host, int(port)), timeout=DEADLINE)


def healthz(server: StatusServer, method: str = "GET") -> int:
    """*method* /healthz (no proxy, waiting up to the deadline); the status code."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(f"http://{server.address}/healthz", method=method)
    with opener.open(request, timeout=DEADLINE) as reply:
        status = reply.status
        assert isinstance(status, int)
        return status


def closed_by_server(client: socket.socket) -> bool:
    """Wait (up to the deadline) for the server to close *client*'s connection."""
    try:
        return client.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_head_probes_health_like_get(server: StatusServer) -> None:
    """Load balancers often probe with HEAD: it answers as GET does, without a body."""
    assert healthz(server, "HEAD") == healthz(server) == 200


def test_silent_client_is_dropped_and_others_are_served(server: StatusServer) -> None:
    """A connection that sends nothing is closed after the timeout; /healthz answers meanwhile."""
    with connect(server) as silent:
        assert healthz(server) == 200
        assert closed_by_server(silent)


@dataclass
class Trickle:
    """Sends one more byte of a request every 50 ms until the server stops accepting them."""

    client: socket.socket
    sent: int = 0
    dropped: bool = False
    thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            try:
                self.client.sendall(b"X-Slow: yes\r\n"[self.sent % 13 : self.sent % 13 + 1])
            except OSError:
                self.dropped = True
                return
            self.sent += 1
            time.sleep(0.05)


def test_trickling_client_is_dropped_after_the_timeout(server: StatusServer) -> None:
    """
    A slowloris client (a byte every 50 ms, each well within the timeout) does not hold its
    connection: the request as a whole must arrive within the timeout.
    """
    with connect(server) as slow:
        trickle = Trickle(slow)
        assert healthz(server) == 200
        trickle.thread.join(DEADLINE + 1)
        assert trickle.dropped, f"still connected after {trickle.sent} bytes"


@dataclass
class ThreadPeak:
    """Samples how many threads the process runs, above a baseline, until stopped."""

    baseline: int = field(default_factory=threading.active_count)
    peak: int = 0
    stopped: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        # The sampler's own thread is part of the baseline.
        self.baseline += 1
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self.stopped.wait(0.005):
            self.peak = max(self.peak, threading.active_count() - self.baseline)


def test_idle_connections_beyond_the_bound_neither_add_threads_nor_stop_health(
    server: StatusServer,
) -> None:
    """
    More idle connections than the bound: the listener never serves more than the bound at once
    (the rest wait in the kernel's queue), the idle ones are dropped after the timeout, and
    /healthz, queued behind them, is answered.
    """
    peak = ThreadPeak()
    idle = [connect(server) for _ in range(MAX_CONNECTIONS + 5)]
    try:
        assert healthz(server) == 200
        assert all(closed_by_server(client) for client in idle)
    finally:
        peak.stopped.set()
        for client in idle:
            client.close()
    assert 1 <= peak.peak <= MAX_CONNECTIONS


def test_stop_returns_while_the_connections_are_all_taken(server: StatusServer) -> None:
    """Stopping does not wait for idle clients, and frees the port."""
    idle = [connect(server) for _ in range(MAX_CONNECTIONS + 2)]
    try:
        server.stop()
        host, _, port = server.address.rpartition(":")
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, int(port)))
    finally:
        for client in idle:
            client.close()


# -- zone routing and weight metrics ---------------------------------------------------------------

ZONED = ZoneStatus(
    "eu-west-1a",
    ZoneMode.LOCAL,
    {"eu-west-1a": ZoneCount(3, 2, 160), "eu-west-1b": ZoneCount(2, 2, 20)},
    needed=67.5,
    cross_zone_share=0.125,
)


def cycle(*backends: BackendPlan) -> CycleResult:
    """A successful cycle that planned *backends*."""
    return CycleResult(Plan(backends), Outcome())


def scrape(metrics: Metrics) -> list[str]:
    """The exposition's sample lines of the zone and warning metrics."""
    wanted = ("reconciler_zone_", "reconciler_cross_zone_share", "reconciler_backend_warnings")
    return sorted(
        line for line in metrics.exposition().decode().splitlines() if line.startswith(wanted)
    )


def test_zone_routed_backend_exports_servers_per_zone_and_state_mode_and_share() -> None:
    """Each zone's healthy and unhealthy servers, the mode as 1/0, the share, the warnings."""
    metrics = Metrics(stale_after=60)
    warned = ("instance type 'm5.large' has no WeightedCapacity in group 'api-asg'; ...",)
    metrics.record_cycle(
        0.1,
        cycle(
            BackendPlan("api", "api-asg", warnings=warned, zones=ZONED),
            BackendPlan("web", "web-asg"),
        ),
        "",
    )
    assert scrape(metrics) == [
        'reconciler_backend_warnings{backend="api"} 1.0',
        'reconciler_backend_warnings{backend="web"} 0.0',
        'reconciler_cross_zone_share{backend="api"} 0.125',
        'reconciler_zone_mode{backend="api",mode="local"} 1.0',
        'reconciler_zone_mode{backend="api",mode="spill"} 0.0',
        'reconciler_zone_servers{backend="api",state="healthy",zone="eu-west-1a"} 2.0',
        'reconciler_zone_servers{backend="api",state="healthy",zone="eu-west-1b"} 2.0',
        'reconciler_zone_servers{backend="api",state="unhealthy",zone="eu-west-1a"} 1.0',
        'reconciler_zone_servers{backend="api",state="unhealthy",zone="eu-west-1b"} 0.0',
    ]


def test_zone_series_follow_the_latest_read_and_outlive_an_unread_backend() -> None:
    """
    A zone left without servers and a share not known yet lose their series; a refused backend
    keeps what it had; a backend whose routing was turned off loses every zone series.
    """
    metrics = Metrics(stale_after=60)
    metrics.record_cycle(0.1, cycle(BackendPlan("api", "api-asg", zones=ZONED)), "")
    spilled = ZoneStatus(
        "eu-west-1a", ZoneMode.SPILL, {"eu-west-1a": ZoneCount(1, 0, 0)}, needed=0.0
    )
    metrics.record_cycle(0.1, cycle(BackendPlan("api", "api-asg", zones=spilled)), "")
    after_spill = [
        'reconciler_backend_warnings{backend="api"} 0.0',
        'reconciler_zone_mode{backend="api",mode="local"} 0.0',
        'reconciler_zone_mode{backend="api",mode="spill"} 1.0',
        'reconciler_zone_servers{backend="api",state="healthy",zone="eu-west-1a"} 0.0',
        'reconciler_zone_servers{backend="api",state="unhealthy",zone="eu-west-1a"} 1.0',
    ]
    assert scrape(metrics) == after_spill
    refused = BackendPlan("api", "api-asg", refused="throttled")
    metrics.record_cycle(0.1, cycle(refused), "api: throttled")
    assert scrape(metrics) == after_spill
    metrics.record_cycle(0.1, cycle(BackendPlan("api", "api-asg")), "")
    assert scrape(metrics) == ['reconciler_backend_warnings{backend="api"} 0.0']
