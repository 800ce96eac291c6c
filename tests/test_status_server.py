"""
The status listener under clients that misbehave: one that connects and says nothing, one that
trickles its request a byte at a time, and more idle connections than it serves at once. Each is
dropped after the request timeout, the number of threads stays bounded, and ``/healthz`` keeps
answering the others.
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
