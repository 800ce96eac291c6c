"""
Settings: a TOML file plus environment overrides, validated into one frozen ``Settings`` tree.

Every problem is collected and raised as one ``ConfigError`` naming the file and the key, so a user
fixes a bad file in one go. Every scalar key of a single section (``[aws]``, ``[haproxy]``, ...)
can be overridden by ``RECONCILER_<SECTION>_<KEY>`` (for example ``RECONCILER_HAPROXY_SOCKET``),
which is how a container is usually configured; ``[[backend]]`` entries come from the file only.
``RECONCILER_DEFAULT_<SECTION>_<KEY>`` is the other way round: a default that the file (and an
override) wins over, which is how an image ships a default without hiding the user's file.

Every number has a finite range (``LIMITS``), checked in one place: ``nan``, ``inf``, negative or
absurdly large durations would otherwise reach a timer (a hot loop, or ``OverflowError`` in a wait).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from reconciler.core.errors import ConfigError
from reconciler.core.model import INSTANCE_ID_PATTERN


DEFAULT_CONFIG_PATH = "reconciler.toml"
CONFIG_ENV = "RECONCILER_CONFIG"
ENV_PREFIX = "RECONCILER_"
#: ``RECONCILER_DEFAULT_<SECTION>_<KEY>``: a default below the file (see the module docstring).
DEFAULT_ENV_PREFIX = "RECONCILER_DEFAULT_"

#: Words ``add server`` refuses in HAProxy 2.6; a managed line with them could not be mirrored at
#: runtime, and ``id`` is chosen by the controller.
REFUSED_SERVER_OPTIONS = frozenset({"cookie", "resolvers", "init-addr", "redir", "namespace", "id"})
# Each is used with ``fullmatch``: ``$`` would also match before a trailing newline.
_PROXY_NAME = re.compile(r"[A-Za-z0-9_.:-]+")
_PREFIX = re.compile(r"[A-Za-z0-9_.:-]*")
_ASG_NAME = re.compile(r"[^\x00-\x1f]{1,255}")
#: An Availability Zone name as AWS spells it (``eu-west-1a``, ``us-east-1-bos-1a``).
ZONE_NAME = re.compile(r"[a-z0-9-]{1,64}")
#: ``[haproxy] zone`` value that asks the instance metadata service at start-up.
AUTO_ZONE = "auto"
_T = TypeVar("_T")
_N = TypeVar("_N", int, float)


@dataclass(frozen=True)
class Limits:
    """The values a numeric key accepts: finite, from *low* to *high* inclusive."""

    low: float
    high: float
    #: Only whole numbers (a port, a count of seconds an API takes as an integer).
    whole: bool = False
    unit: str = "seconds"
    #: *low* itself is refused (a share that must be above 0).
    open_low: bool = False

    def __str__(self) -> str:
        kind = "a whole number" if self.whole else "a number"
        unit = f" {self.unit}" if self.unit else ""
        above = f", above {self.low:g}" if self.open_low else ""
        return f"{kind} from {self.low:g} to {self.high:g}{unit}{above}"

    def admits(self, value: float) -> bool:
        """Whether *value* is finite and within the range."""
        # The bounds are finite and nan compares false, so this refuses nan and infinities too;
        # math.isfinite() would raise on an integer too large for a float.
        if self.open_low and value == self.low:
            return False
        return self.low <= value <= self.high


DAY = 86400.0
HOUR = 3600.0
PORT = Limits(1, 65535, whole=True, unit="")
#: A server weight the controller sets: HAProxy takes 0 to 256, and 0 would take it out of traffic.
WEIGHT = Limits(1, 256, whole=True, unit="")
#: The range of every numeric key, as ``<section>.<key>`` (``backend`` for each ``[[backend]]``).
LIMITS: Mapping[str, Limits] = MappingProxyType(
    {
        # Each resync reads every group and instance: more often than every second only burns
        # API quota; a safety net rarer than daily is none.
        "controller.resync_interval": Limits(1, DAY),
        # 0 runs a woken cycle at once; folding for longer than a minute delays every change.
        "controller.min_gap": Limits(0, 60),
        "controller.follow_up_delay": Limits(0, HOUR),
        # Backoff starts at 1 s, so a smaller cap would retry a failing AWS back to back.
        "controller.max_backoff": Limits(1, HOUR),
        # Progress polls read the runtime API only; below 50 ms they are a busy loop.
        "controller.poll_interval": Limits(0.05, 60),
        # SQS's own limits for a long poll.
        "sqs.wait_seconds": Limits(0, 20, whole=True),
        # Below one resync interval /healthz would fail between healthy resyncs.
        "server.healthy_intervals": Limits(1, 100, unit="resync intervals"),
        "backend.port": PORT,
        "backend.drain_timeout": Limits(0, DAY),
        # A lifecycle hook times out after at most 7200 s (its heartbeat timeout); abandoning
        # later than that can never happen.
        "backend.abandon_launch_after": Limits(1, 7200),
        "backend.default_weight": WEIGHT,
        # 0 would call any local zone enough, even one with no healthy server; above 1 the local
        # zone would need more than an even spread gives it.
        "backend.zone_threshold": Limits(0, 1, unit="", open_low=True),
    }
)


@dataclass(frozen=True)
class AwsSettings:
    """``[aws]``: where to read Auto Scaling groups."""

    #: ``None`` leaves the choice to the standard chain (``AWS_REGION``, ``AWS_DEFAULT_REGION``...).
    region: str | None = None


@dataclass(frozen=True)
class HAProxySettings:
    """``[haproxy]``: the managed file and how to talk to the running HAProxy."""

    config: Path = Path("/etc/haproxy/haproxy.cfg")
    #: The runtime API socket (``level admin``); ``None`` means every change goes through a reload.
    socket: Path | None = None
    reload_command: str | None = None
    #: ``{path}`` is replaced by the candidate file's path.
    #: Without ``-q``: HAProxy 2.6 prints nothing at all with it, even the error that failed.
    check_command: str = "haproxy -c -f {path}"
    #: A jinja2 template of the whole file; ``None`` edits ``config`` in place.
    template: Path | None = None
    #: The node's Availability Zone, for zone routing: a name, ``"auto"`` (the runner asks the
    #: instance metadata service at start-up and replaces it with the answer), or ``None``.
    zone: str | None = None


@dataclass(frozen=True)
class ControllerSettings:
    """``[controller]``: when the long-running controller runs cycles."""

    #: A cycle runs at least this often (seconds) even when nothing wakes it.
    resync_interval: float = 60.0
    #: Wake-ups within this many seconds after a cycle are folded into the next one.
    min_gap: float = 0.25
    #: Seconds after a cycle that did not see what a message says (AWS eventual consistency)
    #: before a follow-up cycle looks again, doubling per follow-up; 0 turns follow-ups off.
    follow_up_delay: float = 1.0
    #: Retry delays after failed cycles double up to this many seconds.
    max_backoff: float = 60.0
    #: The longest wait between two looks at HAProxy while warm-ups or drains are in progress
    #: (the wait is a quarter of the servers' check interval, within this bound), and the wait
    #: before AWS is read again after its reads disagreed.
    poll_interval: float = 0.5


@dataclass(frozen=True)
class SqsSettings:
    """``[sqs]``: the queue whose messages wake the controller."""

    queue_url: str | None = None
    #: Long-poll wait (0-20 seconds).
    wait_seconds: int = 20


@dataclass(frozen=True)
class ServerSettings:
    """``[server]``: the health and metrics listener."""

    #: ``host:port``; ``None`` starts no listener.
    listen: str | None = None
    #: ``/healthz`` fails when the last successful cycle is older than this many resync intervals.
    healthy_intervals: float = 3.0


@dataclass(frozen=True)
class Weights:
    """
    Where a backend's server weights come from: ``weight = "capacity"`` (the group's
    ``WeightedCapacity``) or a ``[backend.weights]`` table by instance type.
    """

    #: Proportional to the group's ``WeightedCapacity``, scaled into 1..256.
    capacity: bool
    #: Instance type -> weight; empty with *capacity*. Not hashed: a dict cannot be, and the
    #: binding's other fields tell bindings apart.
    table: Mapping[str, int] = field(default_factory=dict, hash=False)
    #: The weight of an instance type without one; ``None``: the smallest known weight.
    default: int | None = None


@dataclass(frozen=True)
class Binding:
    """One ``[[backend]]``: a HAProxy backend fed by an Auto Scaling group."""

    name: str
    asg: str
    port: int
    server_prefix: str = ""
    server_options: tuple[str, ...] = ()
    #: Seconds a leaving server may keep sessions before they are cut.
    drain_timeout: float = 30.0
    #: Complete the group's lifecycle actions: launch after the first passing check, terminate
    #: after the drain.
    complete_lifecycle_actions: bool = False
    #: With lifecycle actions: ABANDON a launch whose check has not passed after this many
    #: seconds; ``None`` waits for the hook's own timeout.
    abandon_launch_after: float | None = None
    #: Drain an instance at once when a Spot interruption warning or rebalance recommendation
    #: names it.
    drain_on_spot_warning: bool = False
    #: The hooks this backend completes; ``None``: the group's only hook on that transition.
    launch_hook: str | None = None
    terminate_hook: str | None = None
    #: Server weights by instance type; ``None`` writes no weight (HAProxy's default, or
    #: ``server_options``).
    weights: Weights | None = None
    #: Keep the node's requests in its own Availability Zone while that zone can carry them:
    #: the other zones' servers are backups then.
    zone_routing: bool = False
    #: The local zone carries the traffic while its healthy capacity is at least this share of
    #: what an even spread over the zones gives it.
    zone_threshold: float = 0.75

    def server_name(self, instance_id: str) -> str:
        """The name of the managed server for *instance_id*."""
        return f"{self.server_prefix}{instance_id}"

    def instance_of(self, server_name: str) -> str | None:
        """The instance id a managed server name stands for, or ``None`` when it is not managed."""
        match = self.managed_name.fullmatch(server_name)
        return None if match is None else match[1]

    @cached_property
    def managed_name(self) -> re.Pattern[str]:
        """
        What ``fullmatch``es a managed server name, its instance id the one group. Compiled once
        per binding: a cycle asks about every server of the file and of the runtime, and a
        backend of 10,000 servers asks with ``managed_name.fullmatch`` itself, without a call of
        ``instance_of`` around it.
        """
        return re.compile(f"{re.escape(self.server_prefix)}({INSTANCE_ID_PATTERN})")


@dataclass(frozen=True)
class Settings:
    """The whole configuration."""

    aws: AwsSettings
    haproxy: HAProxySettings
    backends: tuple[Binding, ...]
    controller: ControllerSettings = ControllerSettings()
    sqs: SqsSettings = SqsSettings()
    server: ServerSettings = ServerSettings()
    #: Where the settings came from, for messages.
    source: str = DEFAULT_CONFIG_PATH

    def binding(self, name: str) -> Binding:
        """The binding of backend *name*."""
        return next(b for b in self.backends if b.name == name)


def parse(raw: Mapping[str, Any], environ: Mapping[str, str], source: str) -> Settings:
    """Validate an already-decoded TOML document (pure; *environ* supplies overrides)."""
    problems: list[str] = []
    reader = _Reader(problems)
    known = {"aws", "haproxy", "backend", "controller", "sqs", "server"}
    problems.extend(f"unknown section or key '{key}'" for key in raw if key not in known)

    aws_raw = reader.section(raw, "aws", environ)
    aws = AwsSettings(region=reader.opt_str(aws_raw, "aws", "region"))
    reader.unknown(aws_raw, "aws", {"region"})

    hap_raw = reader.section(raw, "haproxy", environ)
    haproxy = _haproxy(reader, hap_raw)

    backends = _backends(reader, raw.get("backend"), haproxy)
    controller = _controller(reader, reader.section(raw, "controller", environ))
    sqs = _sqs(reader, reader.section(raw, "sqs", environ))
    server = _server(reader, reader.section(raw, "server", environ))
    if problems:
        raise ConfigError(problems, source)
    return Settings(
        aws=aws,
        haproxy=haproxy,
        backends=backends,
        controller=controller,
        sqs=sqs,
        server=server,
        source=source,
    )


def _controller(reader: _Reader, raw: Mapping[str, Any]) -> ControllerSettings:
    defaults = ControllerSettings()
    names = ("resync_interval", "min_gap", "follow_up_delay", "max_backoff", "poll_interval")
    reader.unknown(raw, "controller", set(names))
    values = {name: reader.number(raw, "controller", name) for name in names}
    return replace(defaults, **{k: v for k, v in values.items() if v is not None})


def _sqs(reader: _Reader, raw: Mapping[str, Any]) -> SqsSettings:
    reader.unknown(raw, "sqs", {"queue_url", "wait_seconds"})
    url = reader.opt_str(raw, "sqs", "queue_url") or None
    wait = reader.whole_number(raw, "sqs", "wait_seconds")
    return SqsSettings(
        queue_url=url, wait_seconds=SqsSettings.wait_seconds if wait is None else wait
    )


def _server(reader: _Reader, raw: Mapping[str, Any]) -> ServerSettings:
    reader.unknown(raw, "server", {"listen", "healthy_intervals"})
    listen = reader.opt_str(raw, "server", "listen") or None
    if listen is not None:
        host, _, port = listen.rpartition(":")
        # isdigit() alone admits "²" (int() then raises) and other scripts' digits.
        if not host or not (port.isascii() and port.isdigit()) or not PORT.admits(int(port)):
            reader.problems.append(f"server.listen: expected host:port, not {listen!r}")
            listen = None
    intervals = reader.number(raw, "server", "healthy_intervals")
    return ServerSettings(
        listen=listen,
        healthy_intervals=ServerSettings.healthy_intervals if intervals is None else intervals,
    )


def _haproxy(reader: _Reader, raw: Mapping[str, Any]) -> HAProxySettings:
    keys = {"config", "socket", "reload_command", "check_command", "template", "zone"}
    reader.unknown(raw, "haproxy", keys)
    config = reader.opt_str(raw, "haproxy", "config")
    socket = reader.opt_str(raw, "haproxy", "socket")
    check = reader.opt_str(raw, "haproxy", "check_command")
    if check is not None and "{path}" not in check:
        reader.problems.append("haproxy.check_command: must contain {path} (the candidate file)")
    if check is not None:
        try:
            shlex.split(check)
        except ValueError as exc:
            reader.problems.append(f"haproxy.check_command: {exc}")
    return HAProxySettings(
        config=Path(config) if config else HAProxySettings.config,
        socket=Path(socket) if socket else None,
        reload_command=reader.opt_str(raw, "haproxy", "reload_command") or None,
        check_command=check or HAProxySettings.check_command,
        template=Path(template)
        if (template := reader.opt_str(raw, "haproxy", "template"))
        else None,
        zone=_zone(reader, raw),
    )


def _zone(reader: _Reader, raw: Mapping[str, Any]) -> str | None:
    """``[haproxy] zone``: ``"auto"``, an Availability Zone name, or ``None``."""
    zone = reader.opt_str(raw, "haproxy", "zone") or None
    if zone is not None and not ZONE_NAME.fullmatch(zone):
        reader.problems.append(
            f"haproxy.zone{_origin(raw['zone'])}: {zone!r} is not an Availability Zone name; "
            'use "auto" (asks the instance metadata service) or a name such as "eu-west-1a"'
        )
        return None
    return zone


_BACKEND_KEYS = frozenset(
    {
        "name",
        "asg",
        "port",
        "server_prefix",
        "server_options",
        "drain_timeout",
        "complete_lifecycle_actions",
        "abandon_launch_after",
        "drain_on_spot_warning",
        "launch_hook",
        "terminate_hook",
        "weight",
        "weights",
        "default_weight",
        "zone_routing",
        "zone_threshold",
    }
)


def _backends(reader: _Reader, raw: Any, haproxy: HAProxySettings) -> tuple[Binding, ...]:
    if raw is None:
        reader.problems.append("backend: no [[backend]] entry; add at least one")
        return ()
    if not isinstance(raw, list):
        reader.problems.append("backend: must be an array of tables ([[backend]])")
        return ()
    bindings: list[Binding] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw):
        if not isinstance(entry, dict):
            reader.problems.append(f"backend[{index}]: must be a table")
            continue
        binding = _backend(reader, entry, f"backend[{index}]", haproxy, seen)
        if binding is not None:
            bindings.append(binding)
    return tuple(bindings)


def _backend(
    reader: _Reader, entry: Mapping[str, Any], where: str, haproxy: HAProxySettings, seen: set[str]
) -> Binding | None:
    """One ``[[backend]]`` table, *where* in the file; ``None`` without a name, group or port."""
    reader.unknown(entry, where, _BACKEND_KEYS)
    name = _backend_name(reader, entry, where, seen)
    where = where if name is None else f"backend '{name}'"
    asg = _asg(reader, entry, where)
    port = (
        reader.whole_number(entry, "backend", "port", where=where)
        if reader.present(entry, where, "port")
        else None
    )
    prefix = _prefix(reader, entry, where)
    options = _server_options(reader, entry, where, haproxy)
    drain = reader.number(entry, "backend", "drain_timeout", where=where)
    completes = _completes(reader, entry, where, haproxy)
    abandon = reader.number(entry, "backend", "abandon_launch_after", where=where)
    threshold = reader.number(entry, "backend", "zone_threshold", where=where)
    weights = _weights(reader, entry, where, options)
    routing = _zone_routing(reader, entry, where, haproxy, options)
    if name is None or asg is None or port is None:
        return None
    return Binding(
        name=name,
        asg=asg,
        port=port,
        server_prefix=prefix,
        server_options=options,
        drain_timeout=Binding.drain_timeout if drain is None else drain,
        complete_lifecycle_actions=completes,
        launch_hook=reader.opt_str(entry, where, "launch_hook") or None,
        terminate_hook=reader.opt_str(entry, where, "terminate_hook") or None,
        abandon_launch_after=abandon,
        drain_on_spot_warning=bool(reader.opt_bool(entry, where, "drain_on_spot_warning")),
        weights=weights,
        zone_routing=routing,
        zone_threshold=Binding.zone_threshold if threshold is None else threshold,
    )


def _asg(reader: _Reader, entry: Mapping[str, Any], where: str) -> str | None:
    """The backend's group name, checked."""
    asg = reader.req_str(entry, where, "asg")
    if asg is not None and not _ASG_NAME.fullmatch(asg):
        reader.problems.append(f"{where}.asg: not a valid Auto Scaling group name")
    return asg


def _prefix(reader: _Reader, entry: Mapping[str, Any], where: str) -> str:
    """The backend's ``server_prefix``, checked."""
    prefix = reader.opt_str(entry, where, "server_prefix") or ""
    if not _PREFIX.fullmatch(prefix):
        reader.problems.append(f"{where}.server_prefix: use only letters, digits and - _ . :")
    return prefix


def _backend_name(
    reader: _Reader, entry: Mapping[str, Any], where: str, seen: set[str]
) -> str | None:
    """The backend's name, checked and added to *seen* (the names of the entries before it)."""
    name = reader.req_str(entry, where, "name")
    if name is not None:
        where = f"backend '{name}'"
        if not _PROXY_NAME.fullmatch(name):
            reader.problems.append(f"{where}.name: use only letters, digits and - _ . :")
        if name in seen:
            reader.problems.append(f"{where}: declared twice; each backend once")
        seen.add(name)
    return name


def _weights(
    reader: _Reader, entry: Mapping[str, Any], where: str, options: tuple[str, ...]
) -> Weights | None:
    """``weight``, ``[backend.weights]`` and ``default_weight``: where server weights come from."""
    source = entry.get("weight")
    table = _weight_table(reader, entry, where)
    default = reader.whole_number(entry, "backend", "default_weight", where=where)
    if source is not None and source != "capacity":
        reader.problems.append(
            f'{where}.weight: {source!r} is not a weight source; use weight = "capacity" (the '
            "group's WeightedCapacity) or a [backend.weights] table by instance type (one "
            "weight for every server goes in server_options)"
        )
        return None
    if source is not None and table is not None:
        reader.problems.append(
            f'{where}.weight: set weight = "capacity" or [backend.weights], not both'
        )
        return None
    if source is None and table is None:
        if default is not None:
            reader.problems.append(
                f'{where}.default_weight: only used with weight = "capacity" or '
                "[backend.weights]; set one of them or remove default_weight"
            )
        return None
    if "weight" in options:
        reader.problems.append(
            f"{where}.server_options: remove 'weight' (the backend's weights set each server's)"
        )
    return Weights(capacity=source is not None, table=table or {}, default=default)


def _weight_table(reader: _Reader, entry: Mapping[str, Any], where: str) -> dict[str, int] | None:
    """``[backend.weights]``: instance type -> weight; ``None`` when absent."""
    raw = entry.get("weights")
    if raw is None:
        return None
    if not isinstance(raw, dict) or not raw:
        reader.problems.append(
            f'{where}.weights: must be a table of instance types ("c5.large" = 10) under '
            "[backend.weights], with at least one type"
        )
        return {}
    table: dict[str, int] = {}
    for kind, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int) or not WEIGHT.admits(value):
            reader.problems.append(
                f"{where}.weights.{kind!r}: {value!r} is out of range; use {WEIGHT}"
            )
        else:
            table[kind] = value
    return table


def _zone_routing(
    reader: _Reader,
    entry: Mapping[str, Any],
    where: str,
    haproxy: HAProxySettings,
    options: tuple[str, ...],
) -> bool:
    """``zone_routing``, which needs the runtime socket and the node's zone."""
    routing = bool(reader.opt_bool(entry, where, "zone_routing"))
    if not routing:
        return False
    if haproxy.socket is None:
        reader.problems.append(
            f"{where}.zone_routing: needs [haproxy] socket (servers become backups and active "
            "again at runtime as the local zone's health changes; a reload is too slow)"
        )
    if haproxy.zone is None:
        reader.problems.append(
            f"{where}.zone_routing: needs [haproxy] zone (the node's Availability Zone, or "
            '"auto" to ask the instance metadata service)'
        )
    if "backup" in options:
        reader.problems.append(
            f"{where}.server_options: remove 'backup' (zone routing decides which servers are "
            "backups)"
        )
    return routing


def _completes(
    reader: _Reader, entry: Mapping[str, Any], where: str, haproxy: HAProxySettings
) -> bool:
    """``complete_lifecycle_actions``, which needs the runtime socket."""
    completes = bool(reader.opt_bool(entry, where, "complete_lifecycle_actions"))
    if completes and haproxy.socket is None:
        # A reload cannot hold a new server back until its check passes, and the old worker
        # still serves a removed one after the reload: completing would be a lie.
        reader.problems.append(
            f"{where}.complete_lifecycle_actions: needs [haproxy] socket (the runtime API "
            "warms up and drains servers; a reload cannot)"
        )
    return completes


def _server_options(
    reader: _Reader, entry: Mapping[str, Any], where: str, haproxy: HAProxySettings
) -> tuple[str, ...]:
    text = reader.opt_str(entry, where, "server_options") or ""
    try:
        words = tuple(shlex.split(text, comments=False, posix=True))
    except ValueError as exc:
        reader.problems.append(f"{where}.server_options: {exc}")
        return ()
    for word in words:
        if word in REFUSED_SERVER_OPTIONS:
            why = (
                "the controller sets it"
                if word == "id"
                else "HAProxy 2.6 refuses it on servers added at runtime"
            )
            if word != "id" and haproxy.socket is None:
                continue
            reader.problems.append(f"{where}.server_options: remove '{word}' ({why})")
        if any(ch in word for ch in "#$\\'\""):
            reader.problems.append(
                f"{where}.server_options: '{word}' needs quoting or expansion; "
                "use plain words (no # $ \\ or quotes)"
            )
    return words


class _Reader:
    """Typed access to raw TOML tables that records problems instead of raising."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems

    def section(
        self, raw: Mapping[str, Any], name: str, environ: Mapping[str, str]
    ) -> dict[str, Any]:
        table = raw.get(name, {})
        if not isinstance(table, dict):
            self.problems.append(f"{name}: must be a table ([{name}])")
            table = {}
        # Lowest first: image defaults, then the file, then overrides.
        merged = self._from_environ(environ, f"{DEFAULT_ENV_PREFIX}{name.upper()}_")
        merged.update(table)
        merged.update(self._from_environ(environ, f"{ENV_PREFIX}{name.upper()}_"))
        return merged

    @staticmethod
    def _from_environ(environ: Mapping[str, str], prefix: str) -> dict[str, Any]:
        return {
            var[len(prefix) :].lower(): _EnvValue(var, value)
            for var, value in environ.items()
            if var.startswith(prefix) and var != CONFIG_ENV
        }

    def unknown(self, table: Mapping[str, Any], where: str, known: Collection[str]) -> None:
        for key, value in table.items():
            if key not in known:
                allowed = ", ".join(sorted(known))
                self.problems.append(
                    f"{where}.{key}: unknown key{_origin(value)}; known: {allowed}"
                )

    def opt_str(self, table: Mapping[str, Any], where: str, key: str) -> str | None:
        return self._get(table, where, key, str, "a string", str)

    def req_str(self, table: Mapping[str, Any], where: str, key: str) -> str | None:
        return self.opt_str(table, where, key) if self.present(table, where, key) else None

    def number(
        self, table: Mapping[str, Any], section: str, key: str, *, where: str = ""
    ) -> float | None:
        """The number at *key*, checked against ``LIMITS`` of *section* (*where* names it)."""
        return self._ranged(table, section, key, where, (int, float), float)

    def whole_number(
        self, table: Mapping[str, Any], section: str, key: str, *, where: str = ""
    ) -> int | None:
        """Like ``number``, for a key that takes whole numbers only."""
        return self._ranged(table, section, key, where, int, int)

    def _ranged(
        self,
        table: Mapping[str, Any],
        section: str,
        key: str,
        where: str,
        kind: type | tuple[type, ...],
        convert: Callable[[Any], _N],
    ) -> _N | None:
        where = where or section
        limits = LIMITS[f"{section}.{key}"]
        value = self._get(table, where, key, kind, str(limits), convert)
        if value is None or limits.admits(value):
            return value
        self.problems.append(
            f"{where}.{key}{_origin(table[key])}: {value!r} is out of range; use {limits}"
        )
        return None

    def opt_bool(self, table: Mapping[str, Any], where: str, key: str) -> bool | None:
        return self._get(table, where, key, bool, "true or false", _to_bool)

    def present(self, table: Mapping[str, Any], where: str, key: str) -> bool:
        """Whether the required *key* is there; a problem when it is not."""
        if key not in table:
            self.problems.append(f"{where}.{key}: required")
            return False
        return True

    def _get(
        self,
        table: Mapping[str, Any],
        where: str,
        key: str,
        kind: type | tuple[type, ...],
        described: str,
        convert: Callable[[Any], _T],
    ) -> _T | None:
        if key not in table:
            return None
        value = table[key]
        if isinstance(value, _EnvValue):
            try:
                return convert(value.text)
            except ValueError:
                self.problems.append(f"{where}.{key}{_origin(value)}: must be {described}")
                return None
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
            self.problems.append(f"{where}.{key}: must be {described}, not {value!r}")
            return None
        try:
            return convert(value)
        except OverflowError:  # a TOML integer beyond any float
            self.problems.append(f"{where}.{key}: must be {described}, not {value}")
            return None


def _origin(value: object) -> str:
    """`` (from VARIABLE)`` for a value that came from the environment."""
    return f" (from {value.var})" if isinstance(value, _EnvValue) else ""


def _to_bool(value: object) -> bool:
    """A TOML boolean, or the text of an environment variable."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    msg = f"not a boolean: {value!r}"
    raise ValueError(msg)


@dataclass(frozen=True)
class _EnvValue:
    """A value that came from the environment: text, converted on read."""

    var: str
    text: str
