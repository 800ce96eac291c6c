"""
The HAProxy runtime API over its UNIX stats socket: the only module that opens a socket.

Every command uses a connection of its own in non-interactive mode: connect, send one line, read
until HAProxy closes the connection. Several commands on one line (``a; b``) are not used: on 2.6 a
dump command that follows another one on the same line returns nothing, and error replies end
without the usual empty line, so the replies could not be split reliably.

Replies are classified by their text, never by a severity level: the success of each command is one
known sentence (or silence), and anything else is HAProxy refusing it, reported verbatim in a
``PermanentError``. An unreachable socket is a ``TransientError``.

``parse_servers_state`` and ``parse_stat`` are pure and parse by column name, so they can be tested
on recorded replies and keep working when a later HAProxy appends columns.
"""

from __future__ import annotations

import csv
import dataclasses
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from reconciler.errors import PermanentError, TransientError
from reconciler.model import RuntimeObservation, RuntimeServer, ServerLine


#: Seconds allowed for each socket operation (connect, send, every read).
DEFAULT_TIMEOUT = 10.0

# Success replies (HAProxy 2.6). A command not listed succeeds silently.
_ADDED = ("New server registered.",)
_DELETED = ("Server deleted.",)
_ADDRESS_SET = ("IP changed from", "no need to change the addr")
_SILENT: tuple[str, ...] = ()

_PERMISSION_DENIED = "Permission denied"
# `show servers state <name>` and `show stat <name> 4 -1` for a name HAProxy has no backend for.
_UNKNOWN_BACKEND = ("Can't find backend.", "No such proxy.")
# `show stat` filter: type 4 = servers only, server id -1 = all of them.
_STAT_SERVERS_ONLY = ("4", "-1")
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
    {"pxname", "svname", "type", "qcur", "scur", "idle_conn_cur", "status", "check_status"}
)
# `show stat` row type of a server (0 frontend, 1 backend, 2 server, 3 listener).
_STAT_TYPE_SERVER = "2"
# A word must reach HAProxy as one argument and never end the command early.
_SPECIAL = re.compile(r"([\\; ])")


@dataclass(frozen=True)
class ServerStats:
    """The ``show stat`` columns of one server; the names are ``RuntimeServer``'s fields."""

    sessions: int
    queued: int
    idle_connections: int
    status: str
    check_status: str


class RuntimeSocket:
    """``reconciler.ports.RuntimeApi`` over the stats socket at *path* (``level admin``)."""

    def __init__(self, path: Path, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._path = path
        self._timeout = timeout

    def read_servers(self, backends: Sequence[str]) -> RuntimeObservation:
        """
        The servers of each of *backends* HAProxy knows; an unknown name is left out.

        Two small commands per backend rather than one dump of every proxy: their cost follows
        the servers asked for, whatever else the HAProxy runs.
        """
        found: dict[str, tuple[RuntimeServer, ...]] = {}
        for backend in dict.fromkeys(backends):
            # Counters first: a server added between the two reads then has no stats row and keeps
            # the zero counters a new server really has, and one deleted in between is absent from
            # the state. The other order could report a deleted server as present and idle.
            stat = self._show(("show", "stat", backend, *_STAT_SERVERS_ONLY))
            if stat is None:
                continue
            state = self._show(("show", "servers", "state", backend))
            if state is None:
                continue
            found[backend] = join_stats(parse_servers_state(state), parse_stat(stat))
        # After the servers: a reload in between then shows as a young worker (the cautious
        # reading), never as an old worker's uptime beside the new worker's servers.
        return RuntimeObservation(backends=found, worker_uptime=self._uptime())

    def _uptime(self) -> float | None:
        """``Uptime_sec`` of ``show info``: how long the answering worker has run."""
        for row in self._send(("show", "info")).splitlines():
            name, _, value = row.partition(":")
            if name == "Uptime_sec" and value.strip().isdigit():
                return float(value)
        return None

    def add_server(self, backend: str, line: ServerLine) -> None:
        """``add server <backend>/<name> <addr>:<port> [id <n>] <options>``."""
        name, *rest = line.words()
        self._change(("add", "server", f"{backend}/{name}", *rest), _ADDED)

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
        reply = self._send(words)
        accepted = reply.startswith(success) if success else not reply
        if accepted:
            return
        if reply.startswith(_PERMISSION_DENIED):
            reply += (
                f" (the stats socket {self._path} needs `level admin` in its `stats socket` line)"
            )
        raise PermanentError(f"{' '.join(words)} refused by HAProxy: {reply}")

    def _show(self, words: Sequence[str]) -> str | None:
        """A dump command's reply, or ``None`` when HAProxy has no backend of that name."""
        reply = self._send(words)
        if reply.startswith(_UNKNOWN_BACKEND):
            return None
        if not reply:
            # Every dump has at least a header, so silence means the connection was cut (a worker
            # stopping during a reload, for example).
            raise TransientError(
                f"HAProxy closed {self._path} without answering {' '.join(words)}; will retry"
            )
        return reply

    def _send(self, words: Sequence[str]) -> str:
        """Send one command and return HAProxy's reply without surrounding whitespace."""
        line = " ".join(_SPECIAL.sub(r"\\\1", word) for word in words) + "\n"
        chunks: list[bytes] = []
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(self._timeout)
                conn.connect(str(self._path))
                conn.sendall(line.encode())
                while chunk := conn.recv(65536):
                    chunks.append(chunk)
        except OSError as exc:
            # TimeoutError, FileNotFoundError, ConnectionRefusedError, PermissionError...: the
            # socket is not reachable now; the user has to look at HAProxy or its config.
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise TransientError(
                f"cannot talk to the HAProxy runtime API at {self._path} ({reason}); is HAProxy "
                f"running, and does its global section have `stats socket {self._path} level "
                "admin`?"
            ) from exc
        return b"".join(chunks).decode("utf-8", errors="replace").strip()


def parse_servers_state(text: str) -> tuple[RuntimeServer, ...]:
    """
    The rows of a ``show servers state`` reply (version line, ``#`` header, rows).

    Counters and stat texts are left at their defaults; ``join_stats`` fills them in.
    """
    lines = text.strip().splitlines()
    header = lines[1][2:].split() if len(lines) > 1 and lines[1].startswith("# ") else []
    _require_columns("show servers state", header, _STATE_COLUMNS, text)
    servers = []
    for row in lines[2:]:
        cells = dict(zip(header, row.split(), strict=False))
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
        except (KeyError, ValueError):
            raise PermanentError(f"unexpected `show servers state` row: {row}") from None
    return tuple(servers)


def parse_stat(text: str) -> Mapping[tuple[str, str], ServerStats]:
    """The server rows of a ``show stat`` CSV reply, by ``(backend, server)``."""
    rows = csv.DictReader(
        text[2:].strip().splitlines() if text.startswith("# ") else [], restval=""
    )
    _require_columns("show stat", rows.fieldnames or [], _STAT_COLUMNS, text)
    stats: dict[tuple[str, str], ServerStats] = {}
    for row in rows:
        if row["type"] != _STAT_TYPE_SERVER:
            continue
        try:
            stats[row["pxname"], row["svname"]] = ServerStats(
                sessions=_count(row["scur"]),
                queued=_count(row["qcur"]),
                idle_connections=_count(row["idle_conn_cur"]),
                status=row["status"],
                check_status=row["check_status"],
            )
        except ValueError:
            raise PermanentError(f"unexpected `show stat` row for {row['svname']}") from None
    return stats


def join_stats(
    servers: Iterable[RuntimeServer], stats: Mapping[tuple[str, str], ServerStats]
) -> tuple[RuntimeServer, ...]:
    """*servers* with their counters from *stats*; a server without a stats row keeps zeros."""
    joined = []
    for server in servers:
        row = stats.get((server.backend, server.name))
        joined.append(
            server if row is None else dataclasses.replace(server, **dataclasses.asdict(row))
        )
    return tuple(joined)


def _require_columns(
    command: str, header: Sequence[str], required: frozenset[str], text: str
) -> None:
    missing = required.difference(header)
    if missing:
        raise PermanentError(
            f"unexpected `{command}` reply (no column {', '.join(sorted(missing))}): "
            f"{_first_line(text)}"
        )


def _count(cell: str) -> int:
    # HAProxy leaves a counter empty when it does not apply to the row.
    return int(cell) if cell else 0


def _first_line(text: str) -> str:
    return text.strip().partition("\n")[0] or "(empty)"
