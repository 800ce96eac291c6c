"""
A fault-injecting proxy in front of a real HAProxy admin socket, for tests and the chaos suite.

``FaultyProxy(upstream)`` listens on a UNIX socket of its own (``proxy.path``, a short temp path);
point the controller's ``[haproxy] socket`` at it. Each connection carries one command line, as in
HAProxy's non-interactive mode: the proxy forwards the line to *upstream*, reads HAProxy's whole
reply and passes it back, changed by the fault chosen for that command::

    with FaultyProxy(haproxy.socket_path) as proxy:
        proxy.inject(r"^show servers state api", Truncate(lines=3))  # every matching command
        proxy.inject(r"^add server", Refuse("Already exists a server ..."), times=1)
        proxy.chaos(0.1, [Truncate(size=40), Close(), Trickle(0.2)])  # random, seeded

Faults (frozen values; each one names itself in ``proxy.log``):

- ``Truncate(size=N)`` / ``Truncate(lines=K)``: only the first N bytes / K lines, then close.
- ``Close(forward=False)``: close without a reply; with *forward*, HAProxy still runs the command.
- ``Garble(find=rb"re", replace=b"x")``: a regex substitution in the reply (``replace=b""`` with a
  line pattern removes rows: a consistent but out-of-date dump); without *find*, *count* random
  bytes are overwritten with random printable ones.
- ``Trickle(interval)``: the reply one byte every *interval* seconds.
- ``Slow(delay)``: the whole reply after *delay* seconds.
- ``Refuse(text)``: HAProxy's error *text* and its terminating empty line; nothing is forwarded.

The rules given to ``inject`` are tried first, in order; one with *times* expires after that many
uses. A command no rule matches gets, after ``chaos``, a fault drawn from its list with its
probability. Every random choice comes from one ``random.Random(seed)``, so a single-threaded run
replays exactly. ``clear`` removes every rule and the chaos mode.

``log`` lists ``(command, fault)`` for every command received (``fault`` is ``""`` when none
applied). Thread-safe: rules can change while connections are served. ``stop`` (or leaving the
``with`` block) closes the listener and every connection in progress, ends trickles and delays at
once, joins the threads and removes the socket's directory.
"""

from __future__ import annotations

import contextlib
import random
import re
import shutil
import socket
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType


#: Seconds the proxy waits for a client's command line or HAProxy's reply before giving up.
DEADLINE = 10.0
#: How often the accept loop checks for ``stop``.
_ACCEPT_POLL = 0.05


@dataclass(frozen=True)
class Truncate:
    """The first *size* bytes, or the first *lines* lines, of the reply; then the end."""

    size: int | None = None
    lines: int | None = None

    def cut(self, reply: bytes) -> bytes:
        """The part of *reply* that gets through."""
        if self.lines is not None:
            return b"".join(reply.splitlines(keepends=True)[: self.lines])
        return reply[: self.size]


@dataclass(frozen=True)
class Close:
    """No reply at all; with *forward*, HAProxy still receives (and runs) the command."""

    forward: bool = False


@dataclass(frozen=True)
class Garble:
    """*find* (a bytes regex) replaced by *replace*; without *find*, *count* random bytes."""

    find: bytes | None = None
    replace: bytes = b""
    count: int = 1

    def apply(self, reply: bytes, rng: random.Random) -> bytes:
        """*reply* garbled."""
        if self.find is not None:
            return re.sub(self.find, self.replace, reply)
        data = bytearray(reply)
        for _ in range(self.count if data else 0):
            data[rng.randrange(len(data))] = rng.randrange(0x21, 0x7F)
        return bytes(data)


@dataclass(frozen=True)
class Trickle:
    """The reply one byte every *interval* seconds."""

    interval: float


@dataclass(frozen=True)
class Slow:
    """The whole reply after *delay* seconds."""

    delay: float


@dataclass(frozen=True)
class Refuse:
    """HAProxy's error *text* instead of running the command."""

    text: str


Fault = Truncate | Close | Garble | Trickle | Slow | Refuse


@dataclass
class _Rule:
    pattern: re.Pattern[str]
    fault: Fault
    #: Uses left; ``None`` for unlimited.
    times: int | None


class FaultyProxy:
    """A UNIX socket at ``path`` that forwards to *upstream*, injecting faults."""

    def __init__(self, upstream: Path, *, seed: int = 0) -> None:
        """Listen at once (so ``path`` exists when this returns); serve after ``start``."""
        self.upstream = upstream
        self._directory = Path(tempfile.mkdtemp(prefix="faulty-"))
        self.path = self._directory / "proxy.sock"
        self._lock = threading.Lock()
        self._rng = random.Random(seed)  # noqa: S311 (replayable fault choices, no secret)
        self._rules: list[_Rule] = []
        self._chaos: tuple[float, tuple[Fault, ...], re.Pattern[str]] | None = None
        self._log: list[tuple[str, str]] = []
        self._stopping = threading.Event()
        self._clients: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(self.path))
        self._listener.listen()
        self._listener.settimeout(_ACCEPT_POLL)
        self._acceptor = threading.Thread(target=self._accept, name="faulty-proxy", daemon=True)

    # -- control -----------------------------------------------------------------------------------

    def start(self) -> FaultyProxy:
        """Serve connections in the background; return the proxy."""
        self._acceptor.start()
        return self

    def inject(self, pattern: str, fault: Fault, *, times: int | None = None) -> None:
        """Apply *fault* to commands matching *pattern* (``re.search``), *times* times or always."""
        with self._lock:
            self._rules.append(_Rule(re.compile(pattern), fault, times))

    def chaos(self, probability: float, faults: Sequence[Fault], pattern: str = "") -> None:
        """Give each command no rule matches (and *pattern* does) a random fault of *faults*."""
        with self._lock:
            self._chaos = (probability, tuple(faults), re.compile(pattern))

    def clear(self) -> None:
        """Remove every rule and the chaos mode: from now on, commands pass unchanged."""
        with self._lock:
            self._rules.clear()
            self._chaos = None

    @property
    def log(self) -> list[tuple[str, str]]:
        """``(command, fault)`` of every command received so far."""
        with self._lock:
            return list(self._log)

    def stop(self) -> None:
        """Close everything, end trickles and delays, join the threads, remove the socket."""
        self._stopping.set()
        if self._acceptor.is_alive():
            self._acceptor.join(DEADLINE)
        self._listener.close()
        with self._lock:
            clients, threads = list(self._clients), list(self._threads)
        for client in clients:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(DEADLINE)
        shutil.rmtree(self._directory, ignore_errors=True)

    def __enter__(self) -> FaultyProxy:
        """Start serving."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop."""
        self.stop()

    # -- serving -----------------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # the listener was closed
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            with self._lock:
                self._clients.add(client)
                self._threads = [t for t in self._threads if t.is_alive()]
                self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        try:
            with client:
                client.settimeout(DEADLINE)
                line = _read_line(client)
                fault = self._choose(line.decode(errors="replace").rstrip("\r\n"))
                self._answer(client, line, fault)
        except OSError:
            pass  # the client went away, or stop() cut the connection: nothing left to do
        finally:
            with self._lock:
                self._clients.discard(client)

    def _answer(self, client: socket.socket, line: bytes, fault: Fault | None) -> None:
        if isinstance(fault, Refuse):
            client.sendall(fault.text.encode() + b"\n\n")
            return
        if isinstance(fault, Close) and not fault.forward:
            return
        reply = _exchange(self.upstream, line)
        if isinstance(fault, Close):
            return
        if isinstance(fault, Truncate):
            reply = fault.cut(reply)
        elif isinstance(fault, Garble):
            with self._lock:
                reply = fault.apply(reply, self._rng)
        elif isinstance(fault, Slow) and self._stopping.wait(fault.delay):
            return
        if isinstance(fault, Trickle):
            for offset in range(len(reply)):
                if self._stopping.wait(fault.interval):
                    return
                client.sendall(reply[offset : offset + 1])
            return
        client.sendall(reply)

    def _choose(self, command: str) -> Fault | None:
        """The fault for *command* (the first live rule, else maybe a chaos one); log it."""
        with self._lock:
            fault = None
            for rule in self._rules:
                if rule.pattern.search(command) and rule.times != 0:
                    if rule.times is not None:
                        rule.times -= 1
                    fault = rule.fault
                    break
            else:
                if self._chaos is not None:
                    probability, faults, pattern = self._chaos
                    if pattern.search(command) and self._rng.random() < probability:
                        fault = self._rng.choice(faults)
            self._log.append((command, "" if fault is None else repr(fault)))
            return fault


def _read_line(client: socket.socket) -> bytes:
    """The client's command line, up to and including its newline (or all it sent)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = client.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _exchange(upstream: Path, line: bytes) -> bytes:
    """Send *line* to HAProxy and return its whole reply (empty when it cannot be reached)."""
    chunks = []
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(DEADLINE)
            conn.connect(str(upstream))
            conn.sendall(line)
            while chunk := conn.recv(65536):
                chunks.append(chunk)
    except OSError:
        return b""  # a HAProxy that is gone answers nothing, as its own socket would
    return b"".join(chunks)
