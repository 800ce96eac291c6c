"""
The HAProxy runtime API over its UNIX stats socket: the only module that opens a socket.

Every command uses a connection of its own in non-interactive mode: connect, send one line, read
until HAProxy closes the connection. One deadline covers all of that, so a peer that trickles its
reply a byte at a time cannot hold a cycle longer than ``timeout``. Several commands on one line
(``a; b``) are not used: on 2.6 a dump command that follows another one on the same line returns
nothing, so the replies could not be split reliably.

Each word reaches HAProxy as one argument: ``\\``, ``;`` and spaces are escaped, and a word with a
control character is refused before anything is sent (HAProxy ends a command at a newline, so
such a word could smuggle in a second command).

Replies to changes are classified by their text, never by a severity level: the success of each
command is one known sentence (or silence), and anything else is HAProxy refusing it, reported
verbatim in a ``PermanentError``. Two refusals of ``add server`` are ``TransientError`` instead:
the name, or the id, is taken, so the read that planned the add was out of date. Even silence
comes with a newline, so a connection closed without any reply leaves the outcome unknown: a
``TransientError``, like an unreachable or too slow socket.

Reads are complete or not used. A backend's servers come from two dumps, ``show stat`` (counters)
and ``show servers state`` (states and ids); each must be framed as HAProxy 2.6 frames a whole
dump (``show servers state``: the version line ``1``, a ``#`` header with the needed columns, rows
of exactly the header's width; ``show stat``: a ``#`` CSV header, rows of its width; both end with
an empty line, which a connection cut mid-dump never delivers), and the two must name the same
servers with the same ids. A pair that fails a check was cut (a worker stopping during a reload
closes the connection mid-dump), damaged, or changed while it was read (a server added or deleted
between the two dumps): it is read again at once, and after ``READ_ATTEMPTS`` failures the backend
is reported in ``RuntimeObservation.errors`` so the planner leaves it alone for the cycle.

The parsers are pure and parse by column name, so they can be tested on recorded replies and keep
working when a later HAProxy appends columns.
"""

from __future__ import annotations

import csv
import dataclasses
import re
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from reconciler.core.errors import PermanentError, TransientError
from reconciler.core.model import RuntimeObservation, RuntimeServer, ServerLine


#: Seconds one command may take, from connecting to the end of its reply.
DEFAULT_TIMEOUT = 10.0
#: The least time a command gets: HAProxy answers within milliseconds, so only a stuck or
#: trickling socket comes near it, and a run with ``--timeout 0`` still has time for one cycle.
MIN_TIMEOUT = 1.0
#: Reads of a backend's two dumps before it is reported incomplete: a reply cut during a reload,
#: or a server added between the two dumps, comes out whole on the next read.
READ_ATTEMPTS = 3

# Success replies (HAProxy 2.6). A command not listed succeeds silently.
_ADDED = ("New server registered.",)
_DELETED = ("Server deleted.",)
_ADDRESS_SET = ("IP changed from", "no need to change the addr")
_SILENT: tuple[str, ...] = ()
# `add server` refusals that mean the read was out of date: the name, or the explicit id, is taken.
_TAKEN = re.compile(r"Already exists a server with the same name|'id' : custom id \d+ already used")

_PERMISSION_DENIED = "Permission denied"
# The whole replies of `show servers state <name>` and `show stat <name> 4 -1` for a name HAProxy
# has no backend of (the latter lists no server for a frontend of that name).
_UNKNOWN_BACKEND = ("Can't find backend.\n\n", "No such proxy.\n\n")
# Every complete dump ends with an empty line.
_END = "\n\n"
_STATE_VERSION = "1"
_STATE_COLUMNS = frozenset(
    {
        "be_name",
        "srv_id",
        "srv_name",
        "srv_addr",
        "srv_op_state",
        "srv_admin_state",
        "srv_time_since_last_change",
        "srv_check_result",
        "srv_check_state",
        "srv_port",
    }
)
_STAT_COLUMNS = frozenset(
    {"pxname", "svname", "sid", "type", "qcur", "scur", "idle_conn_cur", "status", "check_status"}
)
# `show stat` row type of a server (0 frontend, 1 backend, 2 server, 3 listener).
_STAT_TYPE_SERVER = "2"
# A word must reach HAProxy as one argument and never end the command early.
_SPECIAL = re.compile(r"([\\; ])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Characters of a row quoted in an error message.
_SHOWN = 80
_T = TypeVar("_T")


class IncompleteReadError(TransientError):
    """A dump that is cut, damaged, or inconsistent with its pair: read it again."""


class DisabledBackendError(IncompleteReadError):
    """A backend HAProxy runs ``disabled``: reading again changes nothing until someone acts."""


@dataclass(frozen=True)
class ServerStats:
    """The ``show stat`` columns of one server; the names are ``RuntimeServer``'s fields."""

    server_id: int
    sessions: int
    queued: int
    idle_connections: int
    status: str
    check_status: str


class RuntimeSocket:
    """
    ``reconciler.ports.RuntimeApi`` over the stats socket at *path* (``level admin``); each
    command must be answered in full within *timeout* seconds.
    """

    def __init__(self, path: Path, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._path = path
        self._timeout = timeout

    def read_servers(self, backends: Sequence[str]) -> RuntimeObservation:
        """
        The servers of each of *backends* HAProxy knows (an unknown name is left out), or for a
        backend whose dumps never came out complete and consistent, the reason in ``errors``.

        Two small commands per backend rather than one dump of every proxy: their cost follows
        the servers asked for, whatever else the HAProxy runs.
        """
        found: dict[str, tuple[RuntimeServer, ...]] = {}
        errors: dict[str, str] = {}
        for backend in dict.fromkeys(backends):
            try:
                servers = self._read_backend(backend)
            except IncompleteReadError as exc:
                errors[backend] = str(exc)
                continue
            if servers is not None:
                found[backend] = servers
        # After the servers: a reload in between then shows as a young worker (the cautious
        # reading), never as an old worker's uptime beside the new worker's servers.
        return RuntimeObservation(backends=found, errors=errors, worker_uptime=self._uptime())

    def _read_backend(self, backend: str) -> tuple[RuntimeServer, ...] | None:
        """Both dumps of *backend*, joined; read again while they are cut or disagree."""
        for _ in range(READ_ATTEMPTS):
            stat = self._send(stat_command(backend))
            state = self._send(state_command(backend))
            try:
                return backend_servers(backend, state, stat)
            except DisabledBackendError:
                raise
            except IncompleteReadError as exc:
                problem = str(exc)
        raise IncompleteReadError(
            f"{problem} (read {READ_ATTEMPTS} times); nothing in this backend changes until a "
            "read is complete"
        )

    def _uptime(self) -> float:
        """``Uptime_sec`` of ``show info``: how long the answering worker has run."""
        for _ in range(READ_ATTEMPTS):
            uptime = uptime_of(self._send(("show", "info")))
            if uptime is not None:
                return uptime
        # Without it a young worker could pass for an old one: fail the whole read.
        raise IncompleteReadError(
            "HAProxy's reply to `show info` was cut or had no `Uptime_sec` line (read "
            f"{READ_ATTEMPTS} times)"
        )

    def add_server(self, backend: str, line: ServerLine) -> None:
        """``add server <backend>/<name> <addr>:<port> [id <n>] <options>``."""
        name, *rest = line.words()
        command = ("add", "server", f"{backend}/{name}", *rest)
        reply = self._answer(command)
        if _TAKEN.match(reply):
            raise TransientError(
                f"{' '.join(command)} refused by HAProxy: {reply} (the servers read before were "
                "out of date; the backend is read again before anything else changes)"
            )
        self._check(command, reply, _ADDED)

    def enable_health(self, backend: str, server: str) -> None:
        """``enable health <backend>/<server>``."""
        self._change(("enable", "health", f"{backend}/{server}"), _SILENT)

    def set_state(self, backend: str, server: str, state: str) -> None:
        """``set server <backend>/<server> state <state>``."""
        self._change(("set", "server", f"{backend}/{server}", "state", state), _SILENT)

    def set_address(self, backend: str, server: str, address: str, port: int) -> None:
        """``set server <backend>/<server> addr <address> port <port>``."""
        command = ("set", "server", f"{backend}/{server}", "addr", address, "port", str(port))
        self._change(command, _ADDRESS_SET)

    def shutdown_sessions(self, backend: str, server: str) -> None:
        """``shutdown sessions server <backend>/<server>``."""
        self._change(("shutdown", "sessions", "server", f"{backend}/{server}"), _SILENT)

    def delete_server(self, backend: str, server: str) -> None:
        """``del server <backend>/<server>``."""
        self._change(("del", "server", f"{backend}/{server}"), _DELETED)

    def _change(self, words: Sequence[str], success: tuple[str, ...]) -> None:
        self._check(words, self._answer(words), success)

    def _answer(self, words: Sequence[str]) -> str:
        """The reply to a change, stripped; even silence comes with a newline."""
        reply = self._send(words)
        if not reply:
            raise TransientError(
                f"HAProxy closed {self._path} without answering `{' '.join(words)}`, so whether "
                "it was done is unknown; the next cycle reads the servers again"
            )
        return reply.strip()

    def _check(self, words: Sequence[str], reply: str, success: tuple[str, ...]) -> None:
        accepted = reply.startswith(success) if success else not reply
        if accepted:
            return
        if reply.startswith(_PERMISSION_DENIED):
            reply += (
                f" (the stats socket {self._path} needs `level admin` in its `stats socket` line)"
            )
        raise PermanentError(f"{' '.join(words)} refused by HAProxy: {reply}")

    def _send(self, words: Sequence[str]) -> str:
        """Send one command and return HAProxy's whole reply as it came."""
        for word in words:
            if _CONTROL.search(word):
                raise PermanentError(
                    f"not sent to HAProxy: an argument of `{' '.join(words[:2])}` contains a "
                    f"control character, which would end the command there: {word!r}"
                )
        line = " ".join(_SPECIAL.sub(r"\\\1", word) for word in words) + "\n"
        deadline = time.monotonic() + self._timeout
        chunks: list[bytes] = []
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(_left(deadline))
                conn.connect(str(self._path))
                conn.settimeout(_left(deadline))
                conn.sendall(line.encode())
                while True:
                    conn.settimeout(_left(deadline))
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
        except TimeoutError as exc:
            raise TransientError(
                f"HAProxy did not answer `{' '.join(words)}` within {self._timeout:g}s on "
                f"{self._path}; it may be overloaded or stuck"
            ) from exc
        except OSError as exc:
            # FileNotFoundError, ConnectionRefusedError, PermissionError...: the socket is not
            # reachable now; the user has to look at HAProxy or its config.
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise TransientError(
                f"cannot talk to the HAProxy runtime API at {self._path} ({reason}); is HAProxy "
                f"running, and does its global section have `stats socket {self._path} level "
                "admin`?"
            ) from exc
        return b"".join(chunks).decode("utf-8", errors="replace")


def timeout_within(seconds: float) -> float:
    """The timeout of each command of a run that should end after *seconds*."""
    return min(DEFAULT_TIMEOUT, max(MIN_TIMEOUT, seconds))


def _left(deadline: float) -> float:
    """Seconds until *deadline*; ``TimeoutError`` once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def uptime_of(reply: str) -> float | None:
    """``Uptime_sec`` of a whole ``show info`` reply, ``None`` when it is cut or lacks the line."""
    if not reply.endswith(_END):
        return None
    for row in reply.splitlines():
        name, _, value = row.partition(":")
        if name == "Uptime_sec" and value.strip().isdigit():
            return float(value)
    return None


def state_command(backend: str) -> tuple[str, ...]:
    """``show servers state <backend>``."""
    return ("show", "servers", "state", backend)


def stat_command(backend: str) -> tuple[str, ...]:
    """``show stat <backend> 4 -1``: the rows of its servers only (type 4, every server id)."""
    return ("show", "stat", backend, "4", "-1")


def backend_servers(backend: str, state: str, stat: str) -> tuple[RuntimeServer, ...] | None:
    """
    The servers of *backend* from the raw replies to ``show servers state`` and ``show stat``,
    ``None`` when HAProxy has no backend of that name.

    Raises ``IncompleteReadError`` naming the command when a reply is not a complete dump of
    *backend*, or when the two do not name the same servers with the same ids.
    """
    stat_text = " ".join(stat_command(backend))
    state_text = " ".join(state_command(backend))
    stats = None if stat in _UNKNOWN_BACKEND else _parsed(parse_stat, stat, stat_text)
    if state in _UNKNOWN_BACKEND:
        if stats:
            raise IncompleteReadError(
                f"HAProxy's reply to `{state_text}` knows no such backend, but the one to "
                f"`{stat_text}` lists its servers (a reload between the two?)"
            )
        return None
    servers = _parsed(parse_servers_state, state, state_text)
    # What HAProxy 2.6 shows of a `disabled` backend: its servers without ids, and no counters.
    if servers and stats == {} and all(server.server_id == 0 for server in servers):
        raise DisabledBackendError(
            f"backend '{backend}' is disabled in HAProxy (`disabled` in its section); enable it "
            "and reload HAProxy, or remove its [[backend]]"
        )
    if stats is None:
        raise IncompleteReadError(
            f"HAProxy's reply to `{stat_text}` knows no such backend, but the one to "
            f"`{state_text}` lists it (a reload between the two?)"
        )
    _require_agreement(backend, servers, stats, state_text=state_text, stat_text=stat_text)
    return tuple(_joined(server, stats[backend, server.name]) for server in servers)


def _require_agreement(
    backend: str,
    servers: Sequence[RuntimeServer],
    stats: Mapping[tuple[str, str], ServerStats],
    *,
    state_text: str,
    stat_text: str,
) -> None:
    """
    ``IncompleteReadError`` unless *servers* (the reply to *state_text*) and *stats* (the reply to
    *stat_text*) hold rows of *backend* alone, and name the same servers with the same ids.
    """
    for command, named in (
        (state_text, {s.backend for s in servers}),
        (stat_text, {name for name, _ in stats}),
    ):
        if named - {backend}:
            raise IncompleteReadError(
                f"HAProxy's reply to `{command}` has rows of backend {', '.join(sorted(named))}"
            )
    in_state = {(s.name, s.server_id) for s in servers}
    in_stat = {(name, row.server_id) for (_, name), row in stats.items()}
    if in_state != in_stat:
        raise IncompleteReadError(
            f"HAProxy's reply to `{state_text}` and the one to `{stat_text}` name different "
            f"servers (only in the first: {_names(in_state - in_stat)}; only in the second: "
            f"{_names(in_stat - in_state)})"
        )


def parse_servers_state(text: str) -> tuple[RuntimeServer, ...]:
    """
    The rows of a whole ``show servers state`` reply: the version line ``1``, a ``# `` header,
    rows of exactly the header's width, then an empty line. ``IncompleteReadError`` otherwise.

    Counters and stat texts are left at their defaults; ``backend_servers`` fills them in.
    """
    lines = _body(text)
    if lines[0] != _STATE_VERSION:
        raise IncompleteReadError(f"does not start with the format version line `{_STATE_VERSION}`")
    header = _header(lines[1:]).split()
    _require_columns(header, _STATE_COLUMNS)
    servers = []
    for row in lines[2:]:
        words = row.split()
        _require_width(row, len(words), len(header))
        cells = dict(zip(header, words, strict=True))
        try:
            servers.append(
                RuntimeServer(
                    backend=cells["be_name"],
                    name=cells["srv_name"],
                    server_id=int(cells["srv_id"]),
                    address=cells["srv_addr"],
                    # 0 is how HAProxy prints "no port".
                    port=int(cells["srv_port"]) or None,
                    op_state=int(cells["srv_op_state"]),
                    admin_state=int(cells["srv_admin_state"]),
                    check_state=int(cells["srv_check_state"]),
                    check_result=int(cells["srv_check_result"]),
                    seconds_in_state=int(cells["srv_time_since_last_change"]),
                )
            )
        except ValueError:
            raise IncompleteReadError(f"has a row that does not parse: {row}") from None
    return tuple(servers)


def parse_stat(text: str) -> Mapping[tuple[str, str], ServerStats]:
    """
    The server rows of a whole ``show stat`` CSV reply (a ``# `` header, rows of exactly its
    width, an empty line), by ``(backend, server)``. ``IncompleteReadError`` otherwise.
    """
    lines = _body(text)
    header = next(csv.reader([_header(lines)]))
    _require_columns(header, _STAT_COLUMNS)
    stats: dict[tuple[str, str], ServerStats] = {}
    for line in lines[1:]:
        cells = next(csv.reader([line]))
        _require_width(line, len(cells), len(header))
        row = dict(zip(header, cells, strict=True))
        if row["type"] != _STAT_TYPE_SERVER:
            continue
        try:
            stats[row["pxname"], row["svname"]] = ServerStats(
                server_id=int(row["sid"]),
                sessions=_count(row["scur"]),
                queued=_count(row["qcur"]),
                idle_connections=_count(row["idle_conn_cur"]),
                status=row["status"],
                check_status=row["check_status"],
            )
        except ValueError:
            raise IncompleteReadError(f"has a row that does not parse: {line}") from None
    return stats


def _parsed(parse: Callable[[str], _T], text: str, command: str) -> _T:
    """*parse* applied to *text*; a complaint names *command*."""
    try:
        return parse(text)
    except IncompleteReadError as exc:
        raise IncompleteReadError(f"HAProxy's reply to `{command}` {exc}") from None


def _body(text: str) -> list[str]:
    """The lines of a whole dump, without the empty line that ends it."""
    if not text:
        raise IncompleteReadError("is empty (the connection closed without an answer)")
    if not text.endswith(_END):
        raise IncompleteReadError("ended before its terminating empty line")
    lines = text.removesuffix(_END).split("\n")
    if "" in lines:
        raise IncompleteReadError("has an empty line before its end")
    return lines


def _header(lines: Sequence[str]) -> str:
    """The header line's text after ``# ``."""
    if not lines or not lines[0].startswith("# "):
        raise IncompleteReadError("has no `# ` header line")
    return lines[0].removeprefix("# ")


def _require_columns(header: Sequence[str], required: frozenset[str]) -> None:
    missing = required.difference(header)
    if missing:
        raise IncompleteReadError(f"has no column {', '.join(sorted(missing))}")


def _require_width(row: str, width: int, expected: int) -> None:
    if width != expected:
        raise IncompleteReadError(
            f"has a row of {width} fields under a header of {expected}: {_clip(row)}"
        )


def _clip(row: str) -> str:
    return row if len(row) <= _SHOWN else row[:_SHOWN] + "..."


def _names(servers: set[tuple[str, int]]) -> str:
    return ", ".join(f"{name} (id {ident})" for name, ident in sorted(servers)) or "none"


def _joined(server: RuntimeServer, stats: ServerStats) -> RuntimeServer:
    return dataclasses.replace(server, **dataclasses.asdict(stats))


def _count(cell: str) -> int:
    # HAProxy leaves a counter empty when it does not apply to the row.
    return int(cell) if cell else 0
