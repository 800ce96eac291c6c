"""
What ``bench.chaos`` watches while it runs, and how it judges what it saw afterwards.

- ``ConfigWatcher`` copies every version of ``haproxy.cfg`` as it appears (the stdlib has no
  inotify: a thread polls the file's inode, size and mtime every few milliseconds; the controller
  replaces the file by rename, so each version is a new inode and is read whole).
  ``check_versions`` then runs ``haproxy -c`` on each copy and compares its bytes outside the
  managed ``server`` lines with the original's.
- ``Ledger`` stands in for ``HAProxyProcess.get`` in the load generator: it paces the requests,
  numbers each one (``req=<n>`` in the query string, which HAProxy's access log repeats) and
  records how it ended, so every failed request can be matched with the log line saying which
  server it went to and how it ended (``access_log``).
- ``worker_sessions`` reads, through the master CLI, the current sessions of every server in
  every HAProxy worker, old workers still finishing requests after a reload included: what the
  controller's admin socket (the newest worker only) cannot see.
- ``ServingWatch`` samples, from a thread, the group's truth (the harness's AWS reads, which no
  fault touches), the file and ``show servers state`` of the real admin socket, and records every
  moment a serving instance's server was missing from the file or not taking requests.
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import itertools
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from harness.haproxy import DEADLINE, HAProxyProcess


#: How often the watcher looks at the file; the controller writes at most a few times a second.
WATCH_INTERVAL = 0.005
#: The access log line ``bench.chaos`` configures: status, termination state, backend, server,
#: request line. Only requests through the frontend log; HAProxy's own messages never match.
LOG_FORMAT = "chaos %ST %tsc %b %s %{+Q}r"
_LOG_LINE = re.compile(
    r"^chaos (?P<status>-?\d+) (?P<term>\S+) (?P<backend>\S+) (?P<server>\S+) "
    r'"[^"]*[?&]req=(?P<n>\d+)'
)
#: Keywords that open a section of haproxy.cfg.
_SECTIONS = frozenset(
    b"global defaults frontend backend listen peers resolvers userlist cache program "
    b"http-errors ring mailers".split()
)
_T = TypeVar("_T")


# -- config versions -------------------------------------------------------------------------------


class ConfigWatcher:
    """Keeps a copy of every version of a file, from a polling thread."""

    def __init__(self, path: Path, interval: float = WATCH_INTERVAL) -> None:
        """Watch *path*; its current content is the first version."""
        self._path = path
        self._interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="config-watch", daemon=True)
        self._seen: tuple[int, int, int] | None = None
        #: Every distinct content in the order it appeared (a version equal to the one before it,
        #: read twice because the file was replaced between a poll and a read, is kept once).
        self.versions: list[bytes] = []
        self._look()

    def start(self) -> None:
        """Start polling."""
        self._thread.start()

    def stop(self) -> None:
        """Take a last look, then stop."""
        self._stopped.set()
        self._thread.join(DEADLINE)
        self._look()

    def _run(self) -> None:
        """The watcher thread."""
        while not self._stopped.wait(self._interval):
            self._look()

    def _look(self) -> None:
        """Copy the file if it is not the one seen last (by inode, size and mtime)."""
        try:
            status = self._path.stat()
            key = (status.st_ino, status.st_size, status.st_mtime_ns)
            if key == self._seen:
                return
            data = self._path.read_bytes()
        except FileNotFoundError:
            return  # never happens with a rename; a user's editor might delete first
        self._seen = key
        if not self.versions or data != self.versions[-1]:
            self.versions.append(data)


@dataclass(frozen=True)
class VersionProblem:
    """What is wrong with one version of the file."""

    #: Its position among the versions (0: the original).
    index: int
    problem: str


def check_versions(
    versions: Sequence[bytes],
    binary: str,
    directory: Path,
    *,
    backend: str,
    prefix: str,
) -> tuple[list[VersionProblem], list[VersionProblem]]:
    """
    Write each of *versions* to *directory* and judge it: the versions ``haproxy -c -f`` rejects,
    and the versions whose bytes outside the managed server lines (``server <prefix>i-...`` in
    *backend*) differ from the first version's.
    """
    directory.mkdir(parents=True, exist_ok=True)
    original = outside_managed(versions[0], backend, prefix)
    invalid: list[VersionProblem] = []
    altered: list[VersionProblem] = []
    verdicts: dict[bytes, str | None] = {}
    for index, data in enumerate(versions):
        copy = directory / f"{index:04d}.cfg"
        copy.write_bytes(data)
        digest = hashlib.sha256(data).digest()
        if digest not in verdicts:
            verdicts[digest] = _rejection(binary, copy)
        if verdicts[digest] is not None:
            invalid.append(VersionProblem(index, f"{copy}: {verdicts[digest]}"))
        if outside_managed(data, backend, prefix) != original:
            altered.append(VersionProblem(index, f"{copy}: {_first_difference(versions[0], data)}"))
    return invalid, altered


def outside_managed(data: bytes, backend: str, prefix: str) -> bytes:
    """*data* without the managed ``server`` lines of section *backend*, every other byte kept."""
    return b"".join(_split_managed(data, backend, prefix)[0])


def managed_servers(data: bytes, backend: str, prefix: str) -> set[str]:
    """The names of the managed ``server`` lines (``<prefix>i-...``) of section *backend*."""
    return {line.split()[1].decode() for line in _split_managed(data, backend, prefix)[1]}


def _split_managed(data: bytes, backend: str, prefix: str) -> tuple[list[bytes], list[bytes]]:
    """The lines of *data* outside the managed ``server`` lines of *backend*, and those lines."""
    managed = re.compile(rb"[ \t]*server[ \t]+" + re.escape(prefix.encode()) + rb"i-[0-9a-f]+\s")
    kept, servers = [], []
    section: list[bytes] = []
    for line in data.splitlines(keepends=True):
        words = line.split()
        if words and words[0] in _SECTIONS:
            section = words[:2]
        if section == [b"backend", backend.encode()] and managed.match(line):
            servers.append(line)
        else:
            kept.append(line)
    return kept, servers


def _rejection(binary: str, path: Path) -> str | None:
    """``haproxy -c -f`` *path*'s complaint, or ``None`` when it accepts the file."""
    done = subprocess.run(
        [binary, "-c", "-f", str(path)], capture_output=True, text=True, check=False, timeout=60
    )
    if done.returncode == 0:
        return None
    lines = (done.stdout + done.stderr).splitlines()
    return " / ".join(line for line in lines if not line.startswith("[NOTICE]"))[:500]


def _first_difference(before: bytes, after: bytes) -> str:
    """Where two versions first differ, as the line numbers and the two lines."""
    pairs = itertools.zip_longest(before.splitlines(), after.splitlines(), fillvalue=b"<none>")
    for number, (old, new) in enumerate(pairs, 1):
        if old != new:
            return f"line {number}: {old!r} became {new!r}"
    return "line ends differ"


# -- requests --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One request sent through HAProxy and how it ended (status 0: no HTTP answer at all)."""

    number: int
    path: str
    started: float
    ended: float
    status: int
    detail: str


class Ledger:
    """``HAProxyProcess.get`` for ``Load``: paced, numbered, every request recorded."""

    def __init__(self, haproxy: HAProxyProcess, pause: float) -> None:
        """Send through *haproxy*; wait *pause* seconds before each request."""
        self._haproxy = haproxy
        self._pause = pause
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        self._requests: list[Request] = []

    def get(self, path: str, timeout: float = DEADLINE) -> tuple[int, str]:
        """``HAProxyProcess.get`` of *path* with ``req=<n>`` added; failures are re-raised."""
        time.sleep(self._pause)
        number = next(self._numbers)
        numbered = f"{path}{'&' if '?' in path else '?'}req={number}"
        started = time.monotonic()
        status, detail = 0, ""
        try:
            status, detail = self._haproxy.get(numbered, timeout)
        except (OSError, http.client.HTTPException) as exc:
            detail = repr(exc)
            raise
        finally:
            request = Request(number, path, started, time.monotonic(), status, detail)
            with self._lock:
                self._requests.append(request)
        return status, detail

    def requests(self) -> list[Request]:
        """Every request so far."""
        with self._lock:
            return list(self._requests)


@dataclass(frozen=True)
class LogRecord:
    """What HAProxy's access log says about one request."""

    status: int
    #: Termination state (``----`` for a clean end; ``SC``, ``sD``, ``K``... see HAProxy's doc).
    term: str
    backend: str
    server: str


def access_log(path: Path) -> dict[int, LogRecord]:
    """The access log lines in HAProxy's log file *path*, by request number."""
    records = {}
    for line in path.read_text(errors="replace").splitlines():
        match = _LOG_LINE.match(line)
        if match:
            records[int(match["n"])] = LogRecord(
                int(match["status"]), match["term"], match["backend"], match["server"]
            )
    return records


# -- serving instances -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Departure:
    """In one sample, a serving instance whose server the file or the runtime did not keep."""

    #: The sample's number (consecutive numbers make one episode) and when it began (monotonic).
    sample: int
    time: float
    #: The server's name (``<prefix>i-...``, or a hand-written one).
    server: str
    problem: str


class ServingWatch:
    """
    Checks, from a polling thread, that a serving instance never leaves the file or the runtime.

    Each sample reads the instances that serve (InService and Healthy in the group, running in
    EC2) before and after reading the file and ``show servers state``; only an instance serving
    in both reads counts, so a change the controller reacted to between them is never blamed on
    it. A server is held to it once it was seen established (a line in the file and admin state
    0: taking requests), which leaves a new instance its warm-up. Then, while its instance
    serves, a sample with no line in the file, no server in the runtime or a non-zero admin state
    (drain, maintenance) is a departure. The *hand_written* servers' admin state must stay 0 in
    every sample.
    """

    def __init__(
        self,
        serving: Callable[[], set[str]],
        haproxy: HAProxyProcess,
        *,
        backend: str,
        prefix: str,
        hand_written: Sequence[str],
        interval: float,
    ) -> None:
        """Sample every *interval* seconds; *serving* gives the ids of the serving instances."""
        self._serving = serving
        self._haproxy = haproxy
        self._backend = backend
        self._prefix = prefix
        self._hand_written = hand_written
        self._interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serving-watch", daemon=True)
        self._established: set[str] = set()
        #: Samples taken, and those HAProxy could not be read for (mid-reload), by why.
        self.samples = 0
        self.unreadable: Counter[str] = Counter()
        self.departures: list[Departure] = []

    @property
    def established(self) -> int:
        """Servers seen established so far (each held to the invariant from then on)."""
        return len(self._established)

    def start(self) -> None:
        """Start sampling."""
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling."""
        self._stopped.set()
        self._thread.join(DEADLINE)

    def _run(self) -> None:
        """The watch thread."""
        while not self._stopped.wait(self._interval):
            self._sample()

    def _sample(self) -> None:
        """One sample: every departure in it recorded, newly established servers noted."""
        started = time.monotonic()
        before = self._serving()
        try:
            reply = retrying(lambda: self._haproxy.command(f"show servers state {self._backend}"))
        except OSError as exc:
            self.unreadable[type(exc).__name__] += 1
            return
        data = self._haproxy.config_path.read_bytes()
        serving = {f"{self._prefix}{i}" for i in before & self._serving()}
        runtime = servers_state(reply)
        if runtime is None:
            self.unreadable["incomplete reply"] += 1
            return
        self.samples += 1
        in_file = managed_servers(data, self._backend, self._prefix)
        for name in sorted(serving & self._established):
            problem = _departure(name in in_file, runtime.get(name))
            if problem:
                self.departures.append(Departure(self.samples, started, name, problem))
        for name in self._hand_written:
            if runtime.get(name, 0) != 0:
                problem = f"admin state {runtime[name]} (a command changed a hand-written server)"
                self.departures.append(Departure(self.samples, started, name, problem))
        self._established |= {n for n in serving & in_file if runtime.get(n) == 0}


def _departure(in_file: bool, admin_state: int | None) -> str | None:
    """What is wrong with an established server, or ``None``."""
    problems = []
    if not in_file:
        problems.append("no line in the file")
    if admin_state is None:
        problems.append("no server in the runtime")
    elif admin_state:
        problems.append(f"admin state {admin_state} in the runtime (drain or maintenance)")
    return ", ".join(problems) or None


def servers_state(reply: str) -> dict[str, int] | None:
    """
    Server name → admin state, from a ``show servers state <backend>`` *reply*; ``None`` unless
    the reply is whole (version line, header, rows as wide as the header, the closing empty
    line): the harness must not mistake a cut reply for a departure either.
    """
    lines = reply.split("\n")
    if len(lines) < 4 or lines[0] != "1" or not lines[1].startswith("# ") or lines[-2:] != ["", ""]:
        return None
    columns = lines[1][2:].split()
    rows = [line.split() for line in lines[2:-2]]
    if any(len(row) != len(columns) for row in rows):
        return None
    named = [dict(zip(columns, row, strict=True)) for row in rows]
    return {row["srv_name"]: int(row["srv_admin_state"]) for row in named}


# -- HAProxy workers -------------------------------------------------------------------------------


def worker_sessions(haproxy: HAProxyProcess, backend: str) -> dict[int, dict[str, int]] | None:
    """
    Worker PID → server → current sessions in *backend*, for the current worker and every old one
    still finishing requests; ``None`` when the master CLI could not be read.
    """
    try:
        processes = _master(haproxy, "show proc")
        pids = [int(pid) for pid in re.findall(r"(?m)^(\d+)\s+worker\b", processes)]
        found = {}
        for pid in pids:
            stat = _master(haproxy, f"@!{pid} show stat")
            rows = csv.DictReader(stat.lstrip("# ").splitlines())
            found[pid] = {
                row["svname"]: int(row["scur"] or 0) for row in rows if row["pxname"] == backend
            }
    except OSError:
        return None
    return found


def _master(haproxy: HAProxyProcess, line: str) -> str:
    """
    One master CLI command. HAProxy 2.6 keeps a non-interactive master CLI connection open after
    answering (``HAProxyProcess.master`` then waits for its deadline): ``quit`` closes it.
    """
    return retrying(lambda: haproxy.master(f"{line}; quit"))


def retrying(read: Callable[[], _T], seconds: float = 1.0) -> _T:
    """
    *read*, tried again for up to *seconds* while HAProxy refuses connections: its sockets are
    re-bound at each reload (the master CLI's for about 10 ms after a start or a reload, too).
    """
    deadline = time.monotonic() + seconds
    while True:
        try:
            return read()
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
