"""
The status listener: ``/healthz`` and ``/metrics`` over HTTP, the only listener of the package;
``probe_health``, its client for the image's HEALTHCHECK; ``bind_error``, whether it could listen.

Both answers come from a ``Status`` (``reconciler.metrics.Metrics`` in the controller). A client
that says nothing or trickles bytes is dropped after a deadline, and at most a few connections are
served at once, so a flood of idle connections never stops ``/healthz`` from being answered.
"""

from __future__ import annotations

import functools
import io
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST


if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


log = logging.getLogger(__name__)


class Status(Protocol):
    """What the listener serves."""

    def health(self) -> tuple[bool, str]:
        """Healthy or not, and why."""
        ...

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        ...


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
        status: Status,
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
        # http.server makes a handler per request; the partial hands each one what it serves.
        handler = functools.partial(_Handler, status, request_timeout)
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


def bind_error(listen: str) -> OSError | None:
    """
    Why a ``StatusServer`` could not listen on *listen* now (``EADDRINUSE``: something listens
    there), or ``None`` when it could; the address is released at once. For ``reconcile check``.
    """
    host, _, port = listen.rpartition(":")
    try:
        # Bound the way StatusServer binds (SO_REUSEADDR), so the answers agree.
        server = ThreadingHTTPServer((host, int(port)), BaseHTTPRequestHandler)
    except OSError as exc:
        return exc
    server.server_close()
    return None


class _QuietServer(ThreadingHTTPServer):
    """
    Serves each connection in a daemon thread, at most *max_connections* at once; a failed
    request is logged, never printed.
    """

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: Callable[..., BaseHTTPRequestHandler],
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


class _Handler(BaseHTTPRequestHandler):
    """Answers the two paths (any query string ignored); everything else is 404."""

    def __init__(self, status: Status, request_timeout: float, *args: Any) -> None:
        """Serve one request (*args*: http.server's) from *status*, within *request_timeout*."""
        self._status = status
        self._request_timeout = request_timeout
        super().__init__(*args)

    def setup(self) -> None:
        """Read the request through a deadline (http.server's own input has none)."""
        super().setup()
        self.rfile.close()  # else the socket stays open until garbage collection
        deadline = time.monotonic() + self._request_timeout
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, deadline))

    def do_GET(self) -> None:
        """Serve one of the two paths."""
        path = urlsplit(self.path).path
        if path == "/healthz":
            ok, reason = self._status.health()
            self._reply(200 if ok else 503, (reason + "\n").encode(), "text/plain")
        elif path == "/metrics":
            self._reply(200, self._status.exposition(), CONTENT_TYPE_LATEST)
        else:
            self._reply(404, b"try /healthz or /metrics\n", "text/plain")

    def do_HEAD(self) -> None:
        """Load balancers often probe health with HEAD: GET's answer, without the body."""
        self.do_GET()

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        """Send a complete response, within the timeout."""
        self.connection.settimeout(self._request_timeout)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Scrapes every few seconds would drown the log; stay quiet."""
