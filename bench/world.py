"""
Where the benchmarks run: an AWS account played by moto, real HAProxy processes, HTTP servers on
the instances' loopback addresses and the real ``reconcile`` command, all on 127.0.0.0/8.

The parts are the ``harness`` the test suite uses too, with two differences that matter for
numbers:

- moto runs as a child process (``python -m moto.server``), not in a thread of this process, so
  the emulator's CPU never competes with the measuring thread for this interpreter's lock, and a
  cycle's own CPU time (``time.process_time`` of the process that runs it) excludes the emulator's;
- instances get one HTTP server per address, not per id: moto hands a terminated instance's address
  to the next launch, and the old server may still be answering (see ``InstanceServers``).
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from harness.haproxy import (
    BackendSpec,
    HAProxyFactory,
    HAProxyProcess,
    HTTPBackend,
    HTTPBackends,
    free_port,
    system_haproxy,
    wait_for,
)
from harness.moto import Cloud, use_moto_only
from harness.stack import BACKEND, GROUP, HAND_WRITTEN, SERVER_PREFIX, Daemons, Stack


#: Seconds moto or HAProxy's master may take to start answering.
START_DEADLINE = 30.0
#: What HAProxy's master logs once per reload it carries out (2.6 and 3.0), whatever triggered it.
RELOAD_LINE = "Reloading HAProxy"
#: ``show stat`` statuses of a server that takes new requests: ``UP``, ``UP 1/2`` (up, not
#: confirmed by its checks: a new server of a reloaded config, or one whose last check failed)
#: and ``no check``.
_SERVING = re.compile(r"^(UP\b|no check$)")
#: What HAProxy (2.6 and 3.0) logs when a server is put in maintenance through the runtime API.
_MAINTENANCE_SESSIONS = re.compile(r"going DOWN for maintenance\..* (\d+) sessions active")


class MotoServer:
    """moto in server mode as a child process on 127.0.0.1; its log goes to *directory*."""

    def __init__(self, directory: Path) -> None:
        """Prepare to start in *directory*; nothing runs before ``__enter__``."""
        self._log = directory / "moto.log"
        self._process: subprocess.Popen[bytes] | None = None
        self.endpoint = ""

    def __enter__(self) -> Cloud:
        """Start the server, point this process's AWS settings at it, return its ``Cloud``."""
        port = free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        use_moto_only(self.endpoint)
        cloud = Cloud(self.endpoint)
        wait_for(lambda: self._answers(cloud), f"moto on {self.endpoint}", START_DEADLINE)
        return cloud

    def __exit__(self, *exc_info: object) -> None:
        """Stop the server."""
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _answers(self, cloud: Cloud) -> bool:
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(f"moto exited with {self._process.returncode}; see {self._log}")
        try:
            cloud.reset()
        except OSError:
            return False
        return True


class Lab:
    """
    The parts of one scenario in a fresh temp dir, on an emptied moto account: HAProxy processes,
    HTTP servers and controllers, every one stopped (and the dir removed) on the way out.
    """

    def __init__(self, cloud: Cloud, binary: str | None = None) -> None:
        """Use *cloud* and HAProxy *binary* (the system's by default); nothing starts yet."""
        self.cloud = cloud
        binary = binary or system_haproxy()
        if binary is None:
            raise RuntimeError("haproxy is not on PATH: `make bench` installs it")
        self.haproxies = HAProxyFactory(binary)
        self.backends = HTTPBackends()
        # Short (/tmp/bench-xxxxxxxx): UNIX socket paths must stay under 108 bytes.
        self.directory = Path(tempfile.mkdtemp(prefix="bench-"))
        self.daemons = Daemons(self.directory)
        #: Called first on the way out, newest first: what a scenario started on its own.
        self.cleanups: list[Callable[[], None]] = []

    def __enter__(self) -> Lab:
        """Empty the moto account."""
        self.cloud.reset()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """
        Stop controllers, then HAProxy, then the HTTP servers; remove the directory, unless a
        failure is on its way out: its logs (controllers, HAProxy, the naive script) tell why.
        """
        while self.cleanups:
            self.cleanups.pop()()
        self.daemons.stop_all()
        self.haproxies.stop_all()
        self.backends.stop_all()
        if exc_info[0] is None:
            shutil.rmtree(self.directory, ignore_errors=True)
        else:
            print(f"bench: the logs of the failed scenario: {self.directory}", file=sys.stderr)

    def stack(self, size: int, *backend_lines: str, max_size: int | None = None) -> Stack:
        """
        Group ``api-asg`` with *size* instances (at most *max_size*) and no HTTP servers, and
        ``haproxy_stack(*backend_lines)``.
        """
        self.cloud.create_group(GROUP, size, max_size=max_size)
        return self.haproxy_stack(*backend_lines)

    def haproxy_stack(self, *backend_lines: str) -> Stack:
        """
        A started HAProxy whose ``api`` backend has *backend_lines* and the hand-written backup
        server, and the settings file, for the group ``api-asg`` (made by the caller).
        """
        haproxy = self.haproxies(BackendSpec(BACKEND, lines=backend_lines, servers=(HAND_WRITTEN,)))
        wait_master(haproxy)
        return Stack(
            self.cloud, haproxy, self.backends, self.directory / "reconciler.toml", free_port()
        )


class InstanceServers:
    """
    The instances' HTTP servers, one per address.

    moto gives a terminated instance's address to the next instance it launches, while the old
    server may still answer (the benchmarks let an instance's server live on after termination,
    as a terminate lifecycle hook would, so that failed requests measure how HAProxy is changed,
    not dead machines). The new instance is then served by the same server.
    """

    def __init__(self, stack: Stack) -> None:
        """Serve *stack*'s instances on its port; take over the servers it already started."""
        self._stack = stack
        self._by_address: dict[str, HTTPBackend] = {s.host: s for s in stack.servers.values()}

    def serve(self, instances: Mapping[str, str]) -> None:
        """Make every instance id → address of *instances* answer."""
        for instance_id, address in instances.items():
            if address not in self._by_address:
                self._by_address[address] = self._stack.backends.start(
                    address, self._stack.port, name=instance_id
                )


def wait_master(haproxy: HAProxyProcess) -> None:
    """
    Wait until HAProxy's master answers its CLI. ``HAProxyProcess.start`` returns once the worker
    answers; a ``kill -USR2`` sent before the master is ready is lost (seen on 2.6.12).
    """
    wait_for(lambda: _master_answers(haproxy), "HAProxy's master", START_DEADLINE)


def _master_answers(haproxy: HAProxyProcess) -> bool:
    try:
        # `quit` makes the master close the connection, so the exchange ends at once.
        haproxy.master("quit")
    except OSError:
        return False
    return True


def reloads(haproxy: HAProxyProcess) -> int:
    """How many reloads HAProxy's master has carried out since it started (from its log)."""
    return haproxy.log_path.read_text(errors="replace").count(RELOAD_LINE)


def sessions_at_maintenance(haproxy: HAProxyProcess) -> int:
    """
    Sessions that were in flight when a server was put in maintenance, summed from the log:
    the controller cuts them at once when the server's instance is gone.
    """
    log = haproxy.log_path.read_text(errors="replace")
    return sum(int(n) for n in _MAINTENANCE_SESSIONS.findall(log))


def reload_command(haproxy: HAProxyProcess) -> str:
    """A reload the way systemd's unit does it: ``SIGUSR2`` to the master."""
    return f'kill -USR2 "$(cat {haproxy.pid_path})"'


def server_states(haproxy: HAProxyProcess) -> dict[str, str] | None:
    """
    Instance id → ``show stat`` status of the managed servers of the ``api`` backend; ``None``
    when the admin socket does not answer whole (between two workers during a reload).
    """
    try:
        reply = haproxy.command("show stat")
    except OSError:
        return None
    states = {}
    for row in csv.DictReader(reply.lstrip("# ").splitlines()):
        name, status = row.get("svname"), row.get("status")
        if name is None or status is None:
            return None  # cut short
        if row.get("pxname") == BACKEND and name.startswith(SERVER_PREFIX):
            states[name.removeprefix(SERVER_PREFIX)] = status
    return states


def serving(states: Mapping[str, str]) -> set[str]:
    """The instances of *states* whose server takes new requests."""
    return {instance for instance, status in states.items() if _SERVING.match(status)}


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set environment variables (for the children started meanwhile), then restore them."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def process_cpu_ms(pid: int) -> int:
    """
    CPU milliseconds (user and system) process *pid* has used so far, with those of the children
    it waited for: the naive script's ``haproxy -c`` and reload commands are its work too.
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # utime, stime, cutime and cstime are the 14th to 17th fields; two were before the ")".
    ticks = sum(int(field) for field in fields[11:15])
    return round(ticks * 1000 / os.sysconf("SC_CLK_TCK"))


def sleep_until(deadline: float) -> None:
    """Sleep until the monotonic *deadline* (at once when it has passed)."""
    time.sleep(max(0.0, deadline - time.monotonic()))
