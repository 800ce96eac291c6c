"""
Real HAProxy processes and real HTTP backends, all on 127.0.0.0/8.

- ``HAProxyFactory``: ``factory(BackendSpec("api"))`` starts a real HAProxy in master-worker mode
  with an admin socket (``HAProxyProcess``), each in its own short temp dir; ``stop_all`` stops
  every process it started.
- ``HTTPBackends``: ``backends.start("127.0.1.4", name="i-1")`` serves ``hello from i-1`` on a free
  port of that address (``HTTPBackend``; HTTP/1.1, keep-alive, with
  ``HTTPBackends(keep_alive=True)``); ``stop_all`` stops every server. A backend's health path
  fails on demand (``healthy = False``) and recovers (``True``), and it counts the requests it
  answered (``requests``), health checks aside.
- ``wait_for`` polls a condition with a deadline, so callers never depend on how long HAProxy
  takes to check or reload; it raises ``HarnessError`` when the deadline passes.
- ``haproxy_matrix`` lists the HAProxy versions to compare (``HAProxyBinary``: path, version,
  ``haproxy-3.0`` label): the system's, then the ones ``.ci/haproxy-matrix`` built.

Everything stays on loopback: HTTP backends only bind 127.0.0.0/8 (or ``::1``), and
``HAProxyProcess`` refuses to start or reload a config whose ``bind`` or ``server`` lines name any
other address. Servers added at runtime are not checked: give them loopback addresses too.
"""

from __future__ import annotations

import contextlib
import csv
import http.client
import http.server
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from harness import HarnessError


#: Seconds any wait in this module gives HAProxy or a backend before it gives up.
DEADLINE = 10.0
#: A backend line making HAProxy's checks use the backends' ``/health`` endpoint.
HEALTH_CHECK = "option httpchk GET /health"
_POLL_INTERVAL = 0.02
_T = TypeVar("_T")


def wait_for(condition: Callable[[], _T | None], what: str, timeout: float = DEADLINE) -> _T:
    """Poll *condition* until it returns a true value and return it; fail after *timeout* s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise HarnessError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(_POLL_INTERVAL)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now at *host* (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((_loopback(host), 0))
        return int(probe.getsockname()[1])


def _loopback(host: str) -> str:
    """*host* when it is a loopback IP literal; the harness never touches any other address."""
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"{host!r} is not a loopback IP address; only 127.0.0.0/8 is used")
    return host


# -- HTTP backends ---------------------------------------------------------------------------------


class HTTPBackend:
    """
    One threaded HTTP server on a loopback address.

    ``GET /health`` answers 200, or 503 while ``healthy`` is false; ``GET /slow?seconds=N`` answers
    after N seconds; every other path answers 200 with ``hello from <name>``. HTTP/1.0 (each
    connection closed after one answer), or with *keep_alive* HTTP/1.1, whose connections stay
    open, so that HAProxy keeps idle connections to the server. ``requests`` counts the answers
    to other paths than ``/health``: the requests the load balancer sent it.
    """

    def __init__(
        self, host: str, port: int = 0, name: str | None = None, *, keep_alive: bool = False
    ) -> None:
        #: Flip to make HAProxy's health checks fail (``/health`` answers 503).
        self.healthy = True
        self._requests = 0
        self._count_lock = threading.Lock()
        handler = _KeepAliveHandler if keep_alive else _Handler
        self._server = _Server((_loopback(host), port), handler, self)
        self.host = host
        self.port = int(self._server.server_address[1])
        self.name = name or self.address
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            # The loop notices stop() only between polls; the default 0.5 s slows every teardown.
            kwargs={"poll_interval": _POLL_INTERVAL},
            name=f"http-{self.name}",
            daemon=True,
        )
        self._thread.start()

    @property
    def address(self) -> str:
        """``<host>:<port>``, as a ``server`` line wants it."""
        return f"{self.host}:{self.port}"

    @property
    def requests(self) -> int:
        """Requests answered so far, health checks aside."""
        with self._count_lock:
            return self._requests

    def count_request(self) -> None:
        """Count one request (the handler's threads call it)."""
        with self._count_lock:
            self._requests += 1

    def stop(self) -> None:
        """Stop listening; requests in flight finish in their own threads."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(DEADLINE)


class HTTPBackends:
    """The HTTP servers of one test or run (HTTP/1.1 with *keep_alive*); ``stop_all`` stops them."""

    def __init__(self, *, keep_alive: bool = False) -> None:
        self._keep_alive = keep_alive
        self._started: list[HTTPBackend] = []

    def start(
        self, host: str = "127.0.0.1", port: int = 0, *, name: str | None = None
    ) -> HTTPBackend:
        """Serve on *host*:*port* (a free port when 0) as *name* (default: the address)."""
        backend = HTTPBackend(host, port, name, keep_alive=self._keep_alive)
        self._started.append(backend)
        return backend

    def stop_all(self) -> None:
        """Stop every server started here that is still running."""
        while self._started:
            self._started.pop().stop()


class _Server(http.server.ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` that knows which ``HTTPBackend`` it serves."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[http.server.BaseHTTPRequestHandler],
        backend: HTTPBackend,
    ) -> None:
        self.backend = backend
        super().__init__(address, handler)

    def handle_error(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        """Stay quiet when the client went away (a client cut its session); report anything else."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class PlainTextHandler(http.server.BaseHTTPRequestHandler):
    """Answers in plain text and keeps the output quiet: the HTTP servers of the tests."""

    def _answer(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Keep the output quiet."""


class _Handler(PlainTextHandler):
    """The three behaviours of ``HTTPBackend``; HTTP/1.0, so HAProxy keeps no idle connection."""

    server: _Server

    def do_GET(self) -> None:
        """Answer by path."""
        backend = self.server.backend
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/health":
            self._answer(200 if backend.healthy else 503, "ok" if backend.healthy else "unhealthy")
            return
        if url.path == "/slow":
            seconds = float(urllib.parse.parse_qs(url.query).get("seconds", ["1"])[0])
            time.sleep(seconds)
        backend.count_request()
        self._answer(200, f"hello from {backend.name}")


class _KeepAliveHandler(_Handler):
    """``_Handler`` in HTTP/1.1: a connection stays open for the next request after an answer."""

    protocol_version = "HTTP/1.1"


# -- HAProxy binaries ------------------------------------------------------------------------------


#: Newline-separated paths of the HAProxy binaries tested beside the system's one (``make test``
#: sets it to what ``.ci/haproxy-matrix`` printed). Unset, the binaries that script built in
#: ``MATRIX_CACHE`` are used; set but empty, none.
MATRIX_ENV = "HAPROXY_MATRIX"
MATRIX_CACHE = Path(__file__).resolve().parent.parent / ".cache" / "haproxy"


@dataclass(frozen=True)
class HAProxyBinary:
    """An HAProxy executable and the version it reports."""

    path: str
    #: As ``haproxy -v`` prints it: ``2.6.12-1+deb12u4``, ``3.0.11-9e587df``.
    version: str

    @classmethod
    def of(cls, path: str) -> HAProxyBinary:
        """Ask *path* (``haproxy -v``) for its version."""
        try:
            done = subprocess.run(
                [path, "-v"], capture_output=True, text=True, timeout=DEADLINE, check=False
            )
        except OSError as exc:
            raise HarnessError(f"cannot run HAProxy binary {path}: {exc}") from None
        # "HAProxy version 3.0.11-9e587df 2025/07/16 - https://haproxy.org/"
        words = done.stdout.split(maxsplit=3)
        if done.returncode != 0 or words[:2] != ["HAProxy", "version"] or len(words) < 3:
            raise HarnessError(f"{path} -v does not name an HAProxy version: {done.stdout!r}")
        return cls(path, words[2])

    @property
    def branch(self) -> str:
        """The release branch: ``2.6``, ``3.0``."""
        return ".".join(self.version.split(".")[:2])

    @property
    def label(self) -> str:
        """``haproxy-<branch>``: how tests and benchmark rows name it."""
        return f"haproxy-{self.branch}"


def system_haproxy() -> str | None:
    """The ``haproxy`` on ``PATH``: the one users of this machine run, and every default."""
    return shutil.which("haproxy")


def haproxy_matrix(environ: Mapping[str, str] = os.environ) -> tuple[HAProxyBinary, ...]:
    """
    The HAProxy branches to compare: the system's first (when there is one), then those of
    ``HAPROXY_MATRIX`` (or, unset, of ``MATRIX_CACHE``); the first binary of each branch. A
    listed path that is not an HAProxy raises ``HarnessError``: a matrix must not shrink
    unnoticed.
    """
    listed = environ.get(MATRIX_ENV)
    if listed is None:
        extra = sorted(
            (str(path) for path in MATRIX_CACHE.glob("*/haproxy")),
            key=lambda path: [int(n) for n in re.findall(r"\d+", Path(path).parent.name)],
        )
    else:
        extra = [line.strip() for line in listed.splitlines() if line.strip()]
    system = system_haproxy()
    found: dict[str, HAProxyBinary] = {}
    for path in [system, *extra] if system else extra:
        binary = HAProxyBinary.of(path)
        found.setdefault(binary.branch, binary)
    return tuple(found.values())


# -- HAProxy ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackendSpec:
    """A ``backend`` section for ``basic_config``."""

    name: str
    balance: str = "roundrobin"
    #: Extra lines, e.g. ``HEALTH_CHECK`` or ``hash-type consistent``.
    lines: tuple[str, ...] = ()
    #: Static servers: everything after ``server``, e.g. ``"s1 127.0.0.1:8080 check"``.
    servers: tuple[str, ...] = ()


def basic_config(
    *backends: BackendSpec,
    admin_socket: Path,
    port: int,
    default_backend: str | None = None,
    global_lines: Sequence[str] = (),
) -> str:
    """
    A valid haproxy.cfg: an admin stats socket, HTTP defaults with short timeouts, a frontend on
    ``127.0.0.1:<port>`` sending to *default_backend* (the first backend by default), *backends*.
    """
    if not backends:
        raise ValueError("basic_config needs at least one backend")
    text = [
        "global",
        f"    stats socket {admin_socket} mode 600 level admin",
        *(f"    {line}" for line in global_lines),
        "",
        "defaults",
        "    mode http",
        "    timeout connect 1s",
        "    timeout client 10s",
        "    timeout server 10s",
        "",
        "frontend fe",
        f"    bind 127.0.0.1:{port}",
        f"    default_backend {default_backend or backends[0].name}",
    ]
    for backend in backends:
        text += [
            "",
            f"backend {backend.name}",
            f"    balance {backend.balance}",
            *(f"    {line}" for line in backend.lines),
            *(f"    server {server}" for server in backend.servers),
        ]
    return "\n".join(text) + "\n"


class HAProxyProcess:
    """
    A real HAProxy in master-worker mode, its files in *workdir*.

    The paths and the frontend port are fixed at construction, so a config naming them can be
    written before ``start``.
    """

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.config_path = workdir / "haproxy.cfg"
        self.socket_path = workdir / "admin.sock"
        self.master_socket_path = workdir / "master.sock"
        self.pid_path = workdir / "haproxy.pid"
        self.log_path = workdir / "haproxy.log"
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The frontend's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def basic_config(
        self,
        *backends: BackendSpec,
        default_backend: str | None = None,
        global_lines: Sequence[str] = (),
    ) -> str:
        """``basic_config`` with this process's admin socket and frontend port."""
        return basic_config(
            *backends,
            admin_socket=self.socket_path,
            port=self.port,
            default_backend=default_backend,
            global_lines=global_lines,
        )

    def start(self, config: str) -> None:
        """Write *config* and start HAProxy; return once the admin socket answers."""
        _require_loopback(config)
        self.config_path.write_text(config)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    self.binary,
                    "-W",
                    "-f",
                    str(self.config_path),
                    "-p",
                    str(self.pid_path),
                    "-S",
                    str(self.master_socket_path),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group, so stop() can reach workers the master left behind.
                start_new_session=True,
            )
        wait_for(self._worker_answers, f"HAProxy to start (log: {self.log_path})")

    def command(self, line: str) -> str:
        """Send *line* to the admin socket and return the raw reply."""
        return _converse(self.socket_path, line)

    def master(self, line: str) -> str:
        """Send *line* to the master CLI and return the raw reply."""
        # HAProxy 2.6 keeps a master CLI connection open after answering; `quit` closes it. The
        # master re-binds its socket when it starts and at every reload: refused for ~10 ms.
        return _retry_refused(lambda: _converse(self.master_socket_path, f"{line}; quit"))

    def worker_sessions(self, backend: str) -> dict[int, dict[str, int]]:
        """
        Worker PID → server → current sessions in *backend*, for the current worker and every
        old one still finishing requests after a reload (which the admin socket never reaches).
        """
        pids = re.findall(r"(?m)^(\d+)\s+worker\b", self.master("show proc"))
        found = {}
        for pid in pids:
            rows = csv.DictReader(self.master(f"@!{pid} show stat").lstrip("# ").splitlines())
            found[int(pid)] = {
                row["svname"]: int(row["scur"] or 0) for row in rows if row["pxname"] == backend
            }
        return found

    def worker_pid(self) -> int:
        """The PID of the worker answering the admin socket."""
        for row in self.command("show info").splitlines():
            if row.startswith("Pid:"):
                return int(row.split()[1])
        raise HarnessError("`show info` has no Pid line")

    def reload(self) -> None:
        """Reload through the master CLI (re-reading ``config_path``); wait for the new worker."""
        _require_loopback(self.config_path.read_text())
        old = self.worker_pid()
        self.master("reload")
        # Once a new worker answered, the old one has stopped accepting (verified on 2.6.12).
        wait_for(
            lambda: self._worker_answers() not in (None, old),
            f"the reloaded worker (log: {self.log_path})",
        )

    def get(self, path: str = "/", timeout: float = DEADLINE) -> tuple[int, str]:
        """Send ``GET <path>`` through the frontend on a new connection; status and body."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path, headers={"Connection": "close"})
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()

    def stop(self) -> None:
        """Stop the master, which stops its workers; kill whatever is left of the group."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            process.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    def _worker_answers(self) -> int | None:
        """The worker's PID, or ``None`` while the admin socket does not answer."""
        if self._process is not None and self._process.poll() is not None:
            log = self.log_path.read_text(errors="replace").strip()
            raise HarnessError(f"haproxy exited with {self._process.returncode}:\n{log}")
        try:
            return self.worker_pid()
        except (OSError, HarnessError):
            return None


class HAProxyFactory:
    """Starts HAProxy processes, each in its own short temp dir; ``stop_all`` stops them all."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self._created: list[HAProxyProcess] = []

    def __call__(
        self,
        *backends: BackendSpec,
        default_backend: str | None = None,
        global_lines: Sequence[str] = (),
    ) -> HAProxyProcess:
        """Start HAProxy with ``basic_config(*backends, ...)``."""
        process = self.create()
        process.start(
            process.basic_config(
                *backends, default_backend=default_backend, global_lines=global_lines
            )
        )
        return process

    def create(self) -> HAProxyProcess:
        """A process not started yet, for a config of the caller's own; stopped at teardown."""
        # Not a caller's temp dir: a UNIX socket path must stay under 108 bytes.
        process = HAProxyProcess(self.binary, Path(tempfile.mkdtemp(prefix="haproxy-")))
        self._created.append(process)
        return process

    def stop_all(self) -> None:
        """Stop every process and remove its directory."""
        while self._created:
            process = self._created.pop()
            process.stop()
            shutil.rmtree(process.workdir, ignore_errors=True)


def _converse(path: Path, line: str) -> str:
    """One non-interactive CLI exchange: send *line*, read until HAProxy closes."""
    chunks = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(DEADLINE)
        conn.connect(str(path))
        conn.sendall(line.encode() + b"\n")
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def _retry_refused(call: Callable[[], _T]) -> _T:
    """*call*, again while the socket refuses connections, until ``DEADLINE``."""
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            return call()
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(_POLL_INTERVAL)


def _require_loopback(config: str) -> None:
    """Refuse a config whose ``bind`` or ``server`` lines name anything but a loopback IP."""
    for line in config.splitlines():
        words = line.split()
        address = {"bind": 1, "server": 2}.get(words[0] if words else "")
        if address is not None and len(words) > address:
            word = words[address]
            _loopback(word.rpartition(":")[0] if ":" in word else word)
