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
verbatim in a ``PermanentError``. ``set server … addr … port …`` answers one clause per part it
was given, and the versions word them differently (2.6: ``no need to change the addr, port changed
from …``; 3.0 leaves out what did not change, or says ``nothing changed``): every clause must be
a success, so an error beside one (2.6's ``no need to change the addr, problem converting port``)
is a refusal. Two refusals of ``add server`` are ``TransientError`` instead: the name, or the id,
is taken, so the read that planned the add was out of date. An ``add server`` refused for one of
the line's options (3.0 refuses ``enabled``) names the fix, and the option is remembered in the
features of that HAProxy process, so the planner refuses the backend from then on rather than
sending an add that cannot succeed. Even silence comes with a newline, so a connection closed
without any reply leaves the outcome unknown: a ``TransientError``, like an unreachable or too
slow socket.

What the running HAProxy is and accepts is read, never guessed from its version number
(``HAProxyFeatures``): ``show info`` (``Version``, ``Pid``, ``Uptime_sec``) every cycle, and once
per HAProxy process ``help`` (the commands, by their leading words), ``show cli level`` (``help``
lists the same commands at every level) and ``add server help`` (the keywords a server added at
runtime takes; 3.2 and later, ``None`` before). Another process answers after a reload, a restart
or an upgrade: a different ``Pid`` or ``Version``, or an uptime lower than last time (a restarted
container often gives HAProxy its old ``Pid``); its features are read afresh, and kept only once a
second ``show info`` shows the same process still answering. These replies are framed like the
dumps; a cut or garbled one is read again, and after ``READ_ATTEMPTS`` the whole read fails. A
``help`` that lacks a command the controller sends is read again before it is believed, and
features that would refuse the backends are never kept: they are read again next cycle, so a
damaged reply refuses nothing for longer than one cycle.

Reads are complete or not used. A backend's servers come from two dumps, ``show stat`` (counters)
and ``show servers state`` (states and ids); each must be framed as HAProxy 2.6 frames a whole
dump (``show servers state``: the version line ``1``, a ``#`` header with the needed columns, rows
of exactly the header's width; ``show stat``: a ``#`` CSV header, rows of its width; both end with
an empty line, which a connection cut mid-dump never delivers), and the two must name the same
servers with the same ids. A pair that fails a check was cut (a worker stopping during a reload
closes the connection mid-dump), damaged, or changed while it was read (a server added or deleted
between the two dumps): it is read again at once, and after ``READ_ATTEMPTS`` failures the backend
is reported in ``RuntimeObservation.errors`` so the planner leaves it alone for the cycle.
Besides states and ids, a server's weight is ``show servers state`` ``srv_uweight`` (what the
file's ``weight`` or ``set server … weight`` gave it; ``srv_iweight`` stays the initial one), and
``show stat`` gives ``bck`` (a backup server) and ``lbtot`` (how often the load balancer chose it):
columns every server row fills on 2.6 and 3.0, so a dump without them is incomplete too. An
``add server`` line carries the weight and ``backup`` like any option; both versions take them.

A draining server's time in state is timed from the start of its drain: HAProxy 2.6 restarts its
clock (``srv_time_since_last_change``) on ``state drain``, 3.0 does not, and a drain timed from the
last up/down change would be cut as soon as it began. The adapter notes when it set the drain, or
first saw it (after a restart: the drain is timed afresh, later rather than early), and gives the
smaller of that and HAProxy's own figure.

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
from reconciler.core.model import HAProxyFeatures, RuntimeObservation, RuntimeServer, ServerLine


#: Seconds one command may take, from connecting to the end of its reply.
DEFAULT_TIMEOUT = 10.0
#: The least time a command gets: HAProxy answers within milliseconds, so only a stuck or
#: trickling socket comes near it, and a run with ``--timeout 0`` still has time for one cycle.
MIN_TIMEOUT = 1.0
#: Reads of a backend's two dumps before it is reported incomplete: a reply cut during a reload,
#: or a server added between the two dumps, comes out whole on the next read.
READ_ATTEMPTS = 3

# Success replies, matched from the start of the reply (2.6 and 3.0 alike).
_ADDED = re.compile(r"New server registered\.")
_DELETED = re.compile(r"Server deleted\.")
_SILENT = re.compile(r"\Z")
# `set server … addr … port …`: a clause per part given, then who changed it (see the docstring).
_ADDRESS_CLAUSE = (
    r"(?:(?:IP|port) changed from '[^']*' to '[^']*'"
    r"|no need to change the (?:addr|port)|nothing changed)"
)
_ADDRESS_SET = re.compile(rf"{_ADDRESS_CLAUSE}(?:, {_ADDRESS_CLAUSE})*(?: by '[^']*')?\Z")
# `add server` refusals that mean the read was out of date: the name, or the explicit id, is taken.
_TAKEN = re.compile(r"Already exists a server with the same name|'id' : custom id \d+ already used")
# `add server` refusing a keyword: one dynamic servers do not take, or one the version lacks.
_OPTION_REFUSED = re.compile(
    r"'([^']+)' option is not accepted for dynamic server|unknown keyword '([^']+)'"
)

_INFO = ("show", "info")
_HELP = ("help",)
_LEVEL = ("show", "cli", "level")
_KEYWORDS = ("add", "server", "help")
_HELP_HEADER = "The following commands are valid at this level:"
_KEYWORDS_HEADER = "List of keywords supported for dynamic server:"
# `add server help` of a version that cannot list keywords (2.6 ends it with one newline only).
_NO_KEYWORD_LIST = "Require 'backend/server'."
_LEVELS = frozenset({"admin", "operator", "user"})
# A command word of `help` (`add`, `server`, `severity-output`); arguments start otherwise.
_COMMAND_WORD = re.compile(r"[a-z][a-z0-9-]*")

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
        "srv_uweight",
    }
)
_STAT_COLUMNS = frozenset(
    {
        "pxname",
        "svname",
        "sid",
        "type",
        "qcur",
        "scur",
        "idle_conn_cur",
        "status",
        "check_status",
        "bck",
        "lbtot",
    }
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
    backup: bool
    chosen: int


@dataclass(frozen=True)
class ProcessInfo:
    """What ``show info`` says of the HAProxy process that answered it."""

    version: str
    pid: int
    #: ``Uptime_sec``: how long the answering worker has run.
    uptime: float

    def continues(self, earlier: ProcessInfo) -> bool:
        """This reading is of the process *earlier* was read from, at the same time or later."""
        return (self.pid, self.version) == (earlier.pid, earlier.version) and (
            self.uptime >= earlier.uptime
        )


class RuntimeSocket:
    """
    ``reconciler.ports.RuntimeApi`` over the stats socket at *path* (``level admin``); each
    command must be answered in full within *timeout* seconds. One cycle at a time: it keeps
    what it read of the answering HAProxy process between cycles.
    """

    def __init__(self, path: Path, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._path = path
        self._timeout = timeout
        #: The process last read, and its features (kept only when they refuse nothing).
        self._known: tuple[ProcessInfo, HAProxyFeatures] | None = None
        #: When each draining server (backend, server) began to drain, as far as seen (monotonic).
        self._drains: dict[tuple[str, str], float] = {}

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
                found[backend] = self._timed_drains(backend, servers)
        # After the servers: a reload in between then shows as a young worker (the cautious
        # reading), never as an old worker's uptime beside the new worker's servers.
        process, features = self.process()
        return RuntimeObservation(found, errors, worker_uptime=process.uptime, features=features)

    def _timed_drains(
        self, backend: str, servers: tuple[RuntimeServer, ...]
    ) -> tuple[RuntimeServer, ...]:
        """*servers*, each draining one's time in state counted from its drain at the most."""
        now = time.monotonic()
        draining = {(backend, s.name) for s in servers if s.draining}
        for key in [k for k in self._drains if k[0] == backend and k not in draining]:
            del self._drains[key]
        return tuple(
            dataclasses.replace(
                server,
                seconds_in_state=min(
                    server.seconds_in_state,
                    int(now - self._drains.setdefault((backend, server.name), now)),
                ),
            )
            if server.draining
            else server
            for server in servers
        )

    def _read_backend(self, backend: str) -> tuple[RuntimeServer, ...] | None:
        """Both dumps of *backend*, joined; read again while they are cut or disagree."""

        def both() -> tuple[RuntimeServer, ...] | None:
            stat = self._send(stat_command(backend))
            return backend_servers(backend, self._send(state_command(backend)), stat)

        return _again(both, "; nothing in this backend changes until a read is complete")

    def process(self) -> tuple[ProcessInfo, HAProxyFeatures]:
        """
        The answering process (``show info``; without its uptime a young worker could pass for
        an old one, so a reply that never comes whole fails the read) and its features: those
        kept for it, or read now and confirmed by a second ``show info``.
        """
        process = self._read(_INFO, parse_info)
        if self._known is not None and process.continues(self._known[0]):
            self._known = (process, self._known[1])
            return self._known
        self._known = None
        for _ in range(READ_ATTEMPTS):
            features = self._features(process.version)
            confirmed = self._read(_INFO, parse_info)
            if confirmed.continues(process):
                if features.can_change_servers:
                    self._known = (confirmed, features)
                return confirmed, features
            process = confirmed
        raise IncompleteReadError(
            f"another HAProxy process answered each time its features were read (read "
            f"{READ_ATTEMPTS} times; reloads in a row?)"
        )

    def _features(self, version: str) -> HAProxyFeatures:
        """What this HAProxy (of *version*) accepts; ``help`` lacking a command is read again."""
        for _ in range(READ_ATTEMPTS):
            commands = self._read(_HELP, parse_help)
            if HAProxyFeatures(version, commands).can_change_servers:
                break
        level = self._read(_LEVEL, parse_level)
        keywords = None
        if level == "admin" and "add server" in commands:
            keywords = self._read(_KEYWORDS, parse_server_keywords)
        return HAProxyFeatures(version, commands, keywords, level=level)

    def _read(self, command: Sequence[str], parse: Callable[[str], _T]) -> _T:
        """*parse* of HAProxy's reply to *command*, read again while it is cut or damaged."""
        return _again(lambda: _parsed(parse, self._send(command), " ".join(command)))

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
        refused = _OPTION_REFUSED.match(reply)
        word = (refused[1] or refused[2]) if refused else None
        if word in line.options:
            self._remember_refused(word)
            raise PermanentError(
                f"{' '.join(command)} refused by HAProxy: {reply} (remove '{word}' from "
                f"server_options of [[backend]] '{backend}': this HAProxy does not take it on "
                "servers added at runtime)"
            )
        self._check(command, reply, _ADDED)

    def _remember_refused(self, word: str) -> None:
        """Keep *word* among the options the known process refused in ``add server``."""
        if self._known is not None:
            process, features = self._known
            refused = features.refused_options | {word}
            self._known = (process, dataclasses.replace(features, refused_options=refused))

    def enable_health(self, backend: str, server: str) -> None:
        """``enable health <backend>/<server>``."""
        self._change(("enable", "health", f"{backend}/{server}"), _SILENT)

    def set_state(self, backend: str, server: str, state: str) -> None:
        """``set server <backend>/<server> state <state>``."""
        self._change(("set", "server", f"{backend}/{server}", "state", state), _SILENT)
        if state == "drain":
            self._drains[(backend, server)] = time.monotonic()

    def set_weight(self, backend: str, server: str, weight: int) -> None:
        """``set server <backend>/<server> weight <weight>``."""
        self._change(("set", "server", f"{backend}/{server}", "weight", str(weight)), _SILENT)

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

    def _change(self, words: Sequence[str], success: re.Pattern[str]) -> None:
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

    def _check(self, words: Sequence[str], reply: str, success: re.Pattern[str]) -> None:
        if success.match(reply):
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


def _again(read: Callable[[], _T], then: str = "") -> _T:
    """
    *read* made up to ``READ_ATTEMPTS`` times while it raises ``IncompleteReadError``; the last
    complaint (and *then*) after that. A disabled backend is no cut reply: it is not read again.
    """
    for _ in range(READ_ATTEMPTS):
        try:
            return read()
        except DisabledBackendError:
            raise
        except IncompleteReadError as exc:
            problem = str(exc)
    raise IncompleteReadError(f"{problem} (read {READ_ATTEMPTS} times){then}")


def timeout_within(seconds: float) -> float:
    """The timeout of each command of a run that should end after *seconds*."""
    return min(DEFAULT_TIMEOUT, max(MIN_TIMEOUT, seconds))


def _left(deadline: float) -> float:
    """Seconds until *deadline*; ``TimeoutError`` once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def parse_info(text: str) -> ProcessInfo:
    """
    ``Version``, ``Pid`` and ``Uptime_sec`` of a whole ``show info`` reply (``Name: value``
    lines, then an empty line); ``IncompleteReadError`` when it is cut or lacks one of them.
    """
    fields = {}
    for row in _body(text):
        name, _, value = row.partition(":")
        fields[name] = value.strip()
    version = fields.get("Version", "")
    pid, uptime = fields.get("Pid", ""), fields.get("Uptime_sec", "")
    if not (version and pid.isdigit() and uptime.isdigit()):
        raise IncompleteReadError("has no `Version`, `Pid` or `Uptime_sec` line")
    return ProcessInfo(version, int(pid), float(uptime))


def parse_help(text: str) -> frozenset[str]:
    """
    The commands of a whole ``help`` reply (its header line, then one indented line per command),
    each by its leading words (``show servers state``, ``wait``); ``IncompleteReadError`` when it
    is cut or a line does not start with a command.
    """
    lines = _body(text)
    if lines[0] != _HELP_HEADER:
        raise IncompleteReadError(f"does not start with `{_HELP_HEADER}`")
    commands = set()
    for line in lines[1:]:
        words = []
        for word in line.removeprefix("  ").split(" ") if line.startswith("  ") else ():
            if not _COMMAND_WORD.fullmatch(word):
                break
            words.append(word)
        if not words:
            raise IncompleteReadError(f"has a line that names no command: {_clip(line)}")
        commands.add(" ".join(words))
    return frozenset(commands)


def parse_level(text: str) -> str:
    """The level of a whole ``show cli level`` reply; ``IncompleteReadError`` otherwise."""
    lines = _body(text)
    if len(lines) != 1 or lines[0] not in _LEVELS:
        raise IncompleteReadError(f"is no level ({', '.join(sorted(_LEVELS))})")
    return lines[0]


def parse_server_keywords(text: str) -> frozenset[str] | None:
    """
    The keywords of a whole ``add server help`` reply (3.2 and later: a header, one keyword a
    line), ``None`` for the sentence of versions that cannot list them; ``IncompleteReadError``
    for anything else.
    """
    if text in (f"{_NO_KEYWORD_LIST}\n", f"{_NO_KEYWORD_LIST}{_END}"):
        return None
    lines = _body(text)
    if lines[0] != _KEYWORDS_HEADER or not all(map(_COMMAND_WORD.fullmatch, lines[1:])):
        raise IncompleteReadError(f"is neither `{_NO_KEYWORD_LIST}` nor a list of keywords")
    return frozenset(lines[1:])


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
                    weight=int(cells["srv_uweight"]),
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
                backup=_flag(row["bck"]),
                chosen=_count(row["lbtot"]),
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


def _flag(cell: str) -> bool:
    """A ``show stat`` 0/1 column that every server row fills; anything else is damage."""
    if cell not in ("0", "1"):
        raise ValueError(cell)
    return cell == "1"


def _count(cell: str) -> int:
    # HAProxy leaves a counter empty when it does not apply to the row.
    return int(cell) if cell else 0
