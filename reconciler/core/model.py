"""
The values the controller computes with.

Three observations feed every cycle: what AWS says (``Instance``, ``Group``, ``AwsObservation``),
what the config file says (``ConfigServer``, ``ConfigBackend``), and what the running HAProxy says
(``RuntimeServer``, ``RuntimeObservation``). The planner turns them into a ``Plan`` made of
``RuntimeStep`` and ``ServerLine`` values plus report ``Row``. Everything here is a frozen value
with no I/O, so the pure core can be tested with plain constructors.

The values a cycle makes once per server (``Instance``, ``ConfigServer``, ``RuntimeServer``,
``ServerLine``, ``RuntimeStep``, ``Row``) have slots: a backend of 10,000 servers makes tens of
thousands of them per cycle, and slots make each smaller and quicker to build.
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar


# -- AWS -------------------------------------------------------------------------------------------

#: The only lifecycle state that serves. An allow-list, so states AWS adds later never serve.
SERVING_LIFECYCLE_STATE = "InService"
SERVING_HEALTH_STATUS = "Healthy"
SERVING_EC2_STATE = "running"
#: EC2 states in which the machine is going away or is gone: its own word, never a guess.
GONE_EC2_STATES = frozenset({"shutting-down", "terminated", "stopping", "stopped"})
#: An EC2 instance id as AWS documents it: ``i-`` and 8 (older) or 17 lowercase hex digits.
INSTANCE_ID_PATTERN = r"i-[0-9a-f]{8}(?:[0-9a-f]{9})?"
_INSTANCE_ID = re.compile(INSTANCE_ID_PATTERN)
#: What ``ipaddress.IPv4Address`` accepts from a string: four decimal octets of at most 255,
#: without leading zeros. A regular expression, as a cycle checks every instance's address and the
#: ``ipaddress`` parser costs several microseconds each.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_ADDRESS = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}")


def is_instance_id(text: str) -> bool:
    """*text* has the documented shape of an EC2 instance id."""
    return _INSTANCE_ID.fullmatch(text) is not None


def is_ipv4_address(text: str) -> bool:
    """*text* is an IPv4 address literal in dotted-decimal form, and nothing else."""
    return _IPV4_ADDRESS.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class Instance:
    """One member of an Auto Scaling group, joined with its EC2 description."""

    instance_id: str
    lifecycle_state: str
    health_status: str
    #: EC2 ``State.Name``; ``None`` when DescribeInstances did not return the instance.
    ec2_state: str | None
    #: The primary private IPv4 address; ``None`` when it has none (yet).
    private_ip: str | None
    #: DescribeInstances says it is a Spot instance: only then can an interruption warning be
    #: true, whatever a message claims.
    spot: bool = False
    #: DescribeInstances ``InstanceType`` (``c5.large``); ``None`` when not returned.
    instance_type: str | None = None
    #: DescribeInstances ``Placement.AvailabilityZone`` (``eu-west-1a``); ``None`` if not returned.
    zone: str | None = None

    @property
    def malformed(self) -> str | None:
        """
        Which value AWS returned without its documented shape, or ``None``. Such a value never
        reaches a runtime command or a file line: a newline or a ``;`` in it would be read by
        HAProxy as another command, or as another word of the line.
        """
        if not is_instance_id(self.instance_id):
            return f"malformed instance id {self.instance_id!r}"
        if self.private_ip is not None and not is_ipv4_address(self.private_ip):
            return f"malformed private IPv4 address {self.private_ip!r}"
        return None

    @property
    def disagreement(self) -> str | None:
        """
        How the two reads contradict each other, or ``None``: the group lists the instance
        InService and Healthy, but DescribeInstances did not return it (EC2 is eventually
        consistent). Neither read can be trusted to add or remove its server.
        """
        listed_serving = (
            self.lifecycle_state == SERVING_LIFECYCLE_STATE
            and self.health_status == SERVING_HEALTH_STATUS
        )
        if listed_serving and self.ec2_state is None:
            return (
                "the group lists it InService and Healthy but DescribeInstances did not return "
                "it; read again soon"
            )
        return None

    @property
    def not_serving_reason(self) -> str | None:
        """Why this instance must not receive traffic, or ``None`` when it should."""
        if self.malformed is not None:
            return self.malformed
        if self.lifecycle_state != SERVING_LIFECYCLE_STATE:
            return f"lifecycle {self.lifecycle_state}"
        if self.health_status != SERVING_HEALTH_STATUS:
            return f"health {self.health_status}"
        if self.ec2_state != SERVING_EC2_STATE:
            return f"EC2 {self.ec2_state or 'not found'}"
        if not self.private_ip:
            return "no private IPv4 address"
        return None

    @property
    def serving(self) -> bool:
        """True when the instance belongs in its backends."""
        return self.in_service and self.malformed is None

    @property
    def in_service(self) -> bool:
        """
        Every state says it serves (InService, Healthy, running, with an address), the shape of
        its values aside: ``serving`` without ``malformed``, for a planner that judged the shape
        of every instance already (and cheaper to ask than ``not_serving_reason``).
        """
        return (
            self.lifecycle_state == SERVING_LIFECYCLE_STATE
            and self.health_status == SERVING_HEALTH_STATUS
            and self.ec2_state == SERVING_EC2_STATE
            and bool(self.private_ip)
        )

    @property
    def gone(self) -> bool:
        """
        True when EC2 says the machine is being shut down or is gone: its server takes no new
        request at all (maintenance rather than drain). Requests in flight may still finish on
        a machine that answers while it shuts down, so they get the drain timeout all the same.
        An instance DescribeInstances did not return is not known to be gone.
        """
        return self.ec2_state in GONE_EC2_STATES


@dataclass(frozen=True)
class Group:
    """An Auto Scaling group as read in one cycle."""

    name: str
    desired_capacity: int
    instances: tuple[Instance, ...]
    #: Its lifecycle hooks; only read for groups whose backends complete lifecycle actions.
    hooks: tuple[LifecycleHook, ...] = ()
    #: ``WeightedCapacity`` by instance type, from the ``MixedInstancesPolicy`` launch template
    #: overrides that set one; empty for a group without them.
    capacities: Mapping[str, int] = field(default_factory=dict)

    @property
    def malformed(self) -> dict[str, str]:
        """
        Why AWS's values for an instance are refused, by instance id: a value without its
        documented shape, or an id the group lists more than once (no valid read does).
        """
        ids = [i.instance_id for i in self.instances]
        addresses = [i.private_ip for i in self.instances if i.private_ip is not None]
        # As a rule every value of a read is well formed: all are checked first, without a call
        # per instance; only a read with a refused value is looked at instance by instance.
        if (
            len(set(ids)) == len(ids)
            and all(map(_INSTANCE_ID.fullmatch, ids))
            and all(map(_IPV4_ADDRESS.fullmatch, addresses))
        ):
            return {}
        listed = Counter(ids)
        found: dict[str, str] = {}
        for instance in self.instances:
            why = instance.malformed
            if why is None and listed[instance.instance_id] > 1:
                why = f"instance id {instance.instance_id!r} listed more than once"
            if why is not None:
                found[instance.instance_id] = why
        return found

    @property
    def doubts(self) -> dict[str, str]:
        """
        Why nothing may be done about an instance's server this cycle, by instance id: a refused
        value, or reads that disagree. Its server is kept exactly as it is.
        """
        return self.doubts_besides(self.malformed)

    def doubts_besides(self, malformed: Mapping[str, str]) -> dict[str, str]:
        """``doubts`` from ``malformed`` already judged (each costs a pass over the instances)."""
        found = dict(malformed)
        for instance in self.instances:
            disagreement = instance.disagreement
            if disagreement is not None:
                found.setdefault(instance.instance_id, disagreement)
        return found


LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"
#: The lifecycle states in which an instance waits for ``CompleteLifecycleAction``.
LAUNCH_WAIT = "Pending:Wait"
TERMINATE_WAIT = "Terminating:Wait"


@dataclass(frozen=True)
class LifecycleHook:
    """A lifecycle hook of a group, as ``DescribeLifecycleHooks`` gives it."""

    name: str
    transition: str
    #: Seconds the instance waits before the hook's default result, unless heartbeats extend it.
    heartbeat_timeout: int


@dataclass(frozen=True)
class AwsObservation:
    """
    The result of reading a set of group names.

    A name is in *groups* when it was read completely, in *errors* (with the reason) when any read
    concerning it failed. A requested name in neither does not exist.
    """

    groups: Mapping[str, Group] = field(default_factory=dict)
    errors: Mapping[str, str] = field(default_factory=dict)


# -- HAProxy config file ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigServer:
    """One ``server`` line of a backend or listen section, as written in the file."""

    name: str
    #: The address word without the port, as written (may be a hostname, ``${VAR}``, ``[::1]``).
    address: str
    #: The port, or ``None`` when the line has none or it is not a plain number.
    port: int | None
    #: The explicit ``id`` keyword's value, if any.
    server_id: int | None
    #: Every word after the address except ``id <n>``, in order.
    options: tuple[str, ...]
    #: Index of the line in the parsed document (0-based).
    line_index: int


@dataclass(frozen=True)
class ConfigBackend:
    """A ``backend`` or ``listen`` section as far as the controller cares."""

    name: str
    servers: tuple[ConfigServer, ...]
    #: The effective ``balance`` algorithm (inherited from defaults, else ``roundrobin``).
    balance: str
    #: The effective ``hash-type`` method word (``map-based`` when unset).
    hash_type: str
    #: Reasons this section cannot be managed at all (``.if`` block, ``$`` in a name...).
    problems: tuple[str, ...] = ()
    #: The effective ``option allbackups`` (inherited from defaults, ``no option allbackups``
    #: cancels): every usable backup server takes traffic when no active one is, not the first.
    allbackups: bool = False

    @property
    def takes_dynamic_servers(self) -> bool:
        """True when HAProxy 2.6 accepts ``add server`` for this backend's algorithm."""
        algorithm = self.balance.split("(", 1)[0]
        if algorithm in ("roundrobin", "leastconn", "first", "random"):
            return True
        if algorithm == "static-rr":
            return False
        return self.hash_type == "consistent"


# -- HAProxy runtime -------------------------------------------------------------------------------

# ``srv_admin_state`` bits (HAProxy 2.6 ``enum srv_admin``).
ADMIN_FMAINT = 0x01
ADMIN_IMAINT = 0x02
ADMIN_CMAINT = 0x04
ADMIN_FDRAIN = 0x08
ADMIN_IDRAIN = 0x10
ADMIN_RMAINT = 0x20
ADMIN_HMAINT = 0x40
# ``srv_check_state`` bits.
CHECK_CONFIGURED = 0x02
CHECK_ENABLED = 0x04
# ``srv_check_result`` values.
CHECK_RESULT_PASSED = 3
CHECK_RESULT_CONDPASS = 4


@dataclass(frozen=True, slots=True)
class RuntimeServer:
    """One server of the running HAProxy: a ``show servers state`` row joined with ``show stat``."""

    backend: str
    name: str
    server_id: int
    #: ``srv_addr``; ``-`` when the server has no address.
    address: str
    port: int | None
    op_state: int
    admin_state: int
    check_state: int
    check_result: int
    seconds_in_state: int
    #: ``show stat`` ``scur``, ``qcur`` and ``idle_conn_cur``.
    sessions: int = 0
    queued: int = 0
    idle_connections: int = 0
    #: ``show stat`` ``status`` and ``check_status`` (for reports only).
    status: str = ""
    check_status: str = ""
    #: ``show servers state`` ``srv_uweight``: the weight set in the file or by ``set server
    #: weight`` (HAProxy's default is 1).
    weight: int = 1
    #: ``show stat`` ``bck``: a backup server, used only while no active server is usable.
    backup: bool = False
    #: ``show stat`` ``lbtot``: times the load balancer chose it since the worker started.
    chosen: int = 0

    @property
    def usable(self) -> bool:
        """
        It takes new requests from the load balancer: running (``srv_op_state`` 2), neither in
        maintenance nor draining, with a weight above 0.
        """
        return self.op_state == 2 and self.admin_state == 0 and self.weight > 0

    @property
    def in_maintenance(self) -> bool:
        """Forced, inherited or resolution maintenance (``admin & 0x23``)."""
        return bool(self.admin_state & (ADMIN_FMAINT | ADMIN_IMAINT | ADMIN_RMAINT))

    @property
    def draining(self) -> bool:
        """Forced or inherited drain."""
        return bool(self.admin_state & (ADMIN_FDRAIN | ADMIN_IDRAIN))

    @property
    def has_check(self) -> bool:
        """A health check is configured and enabled."""
        wanted = CHECK_CONFIGURED | CHECK_ENABLED
        return self.check_state & wanted == wanted

    @property
    def check_passed(self) -> bool:
        """The last health check passed."""
        return self.check_result in (CHECK_RESULT_PASSED, CHECK_RESULT_CONDPASS)

    @property
    def idle(self) -> bool:
        """
        No session, queued request or idle connection: what 2.6's ``del server`` asks for (3.0
        closes idle connections itself).
        """
        return self.sessions == 0 and self.queued == 0 and self.idle_connections == 0


@dataclass(frozen=True)
class HAProxyFeatures:
    """
    What the running HAProxy is and what its runtime API accepts, as it says itself: the
    ``Version`` line of ``show info``, the commands ``help`` lists, and the keywords ``add server
    help`` lists where the version has that command. Read, never guessed from the version number.
    """

    #: The runtime commands the controller sends, as ``help`` names them. ``add server`` and
    #: ``del server`` are listed from 2.6 (2.4 and 2.5 hide them as experimental commands).
    REQUIRED_COMMANDS: ClassVar[tuple[str, ...]] = (
        "add server",
        "del server",
        "set server",
        "enable health",
        "shutdown sessions server",
        "show servers state",
        "show stat",
        "show info",
    )
    #: Runtime commands newer versions add, named when ``help`` lists them (3.0: ``wait <ms>
    #: srv-removable <backend>/<server>``, which waits until a server can be deleted).
    NEWER_COMMANDS: ClassVar[tuple[str, ...]] = ("wait",)

    version: str
    #: The runtime commands ``help`` lists, by their leading words (``add server``, ``wait``...).
    commands: frozenset[str]
    #: The keywords ``add server`` accepts, ``None`` when this version cannot list them.
    server_keywords: frozenset[str] | None = None
    #: The stats socket's level (``show cli level``: ``admin``, ``operator``, ``user``), ``None``
    #: when not read. ``help`` lists the same commands at every level; only ``admin`` may add.
    level: str | None = None
    #: Words of ``server_options`` this HAProxy process refused in an ``add server``, by its own
    #: reply (3.0 refuses ``enabled``): no add with them can succeed on it.
    refused_options: frozenset[str] = frozenset()

    @property
    def missing_commands(self) -> tuple[str, ...]:
        """The commands the controller sends that ``help`` does not list."""
        return tuple(c for c in self.REQUIRED_COMMANDS if c not in self.commands)

    @property
    def capabilities(self) -> tuple[str, ...]:
        """
        The runtime commands that matter to the controller, among those ``help`` lists: the ones
        it sends, then the newer ones it can use (``NEWER_COMMANDS``), in that order.
        """
        wanted = (*self.REQUIRED_COMMANDS, *self.NEWER_COMMANDS)
        return tuple(command for command in wanted if command in self.commands)

    @property
    def below_admin(self) -> bool:
        """The socket's level is known and is not ``admin``."""
        return self.level not in (None, "admin")

    @property
    def can_change_servers(self) -> bool:
        """Every command the controller sends is there, at a level that may send them."""
        return not self.missing_commands and not self.below_admin


@dataclass(frozen=True)
class RuntimeObservation:
    """The servers of the requested backends, by backend name; a missing name is not running."""

    backends: Mapping[str, tuple[RuntimeServer, ...]]
    #: Why a backend's servers could not be read completely (a cut or inconsistent reply); such a
    #: backend is refused for the cycle, never planned from part of its servers.
    errors: Mapping[str, str] = field(default_factory=dict)
    #: Seconds the worker that answered has run (``show info`` ``Uptime_sec``), ``None`` when
    #: unknown. A worker younger than a drain may have an older one beside it, started before a
    #: reload and still finishing requests on servers this one does not have.
    worker_uptime: float | None = None
    #: What the answering HAProxy is and accepts; ``None`` when not read.
    features: HAProxyFeatures | None = None


# -- plan ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerLine:
    """A managed server as it must appear in the file and at runtime."""

    name: str
    address: str
    port: int
    server_id: int | None
    #: The backend's ``server_options``, split into words.
    options: tuple[str, ...]
    #: The weight the controller sets (``weight`` of the backend); ``None`` leaves it to
    #: ``server_options`` or HAProxy's default.
    weight: int | None = None
    #: Zone routing made it a backup server (its instance is in another zone).
    backup: bool = False

    @property
    def has_check(self) -> bool:
        """The options turn on a health check."""
        return "check" in self.options

    @property
    def is_backup(self) -> bool:
        """HAProxy runs it as a backup server: by zone routing, or by ``server_options``."""
        return self.backup or "backup" in self.options

    @property
    def file_options(self) -> tuple[str, ...]:
        """The words the file line holds after its ``id``: the options, weight and backup."""
        if self.weight is None and not self.backup:
            return self.options
        weight = ("weight", str(self.weight)) if self.weight is not None else ()
        return (*self.options, *weight, *(("backup",) if self.backup else ()))

    def words(self) -> tuple[str, ...]:
        """Every word after ``server``: name, address, ``id``, then the options."""
        ident = ("id", str(self.server_id)) if self.server_id is not None else ()
        return (self.name, f"{self.address}:{self.port}", *ident, *self.file_options)


class StepKind(enum.Enum):
    """One runtime API move for one server. Each is safe to repeat after a crash."""

    #: ``add server`` + ``enable health`` + ``state drain`` (warm-up) or ``state ready``.
    ADD = "add"
    #: Warm-up done (first check passed), or put back after a forced drain/maint: ``state ready``.
    READY = "ready"
    #: Hold a desired server out of traffic until its check passes: ``state drain``.
    WARM_UP = "warm-up"
    #: Point an existing server at a new address: ``state maint``, ``set server addr``, warm-up.
    READDRESS = "readdress"
    #: Stop new traffic to a server that is leaving: ``state drain``.
    DRAIN = "drain"
    #: Drained, or its instance is gone: ``state maint``.
    MAINT = "maint"
    #: Sessions outlived the drain timeout: ``shutdown sessions server``.
    KILL_SESSIONS = "kill-sessions"
    #: The weight the backend calls for: ``set server <b>/<s> weight N``.
    WEIGHT = "weight"
    #: In maintenance with nothing attached: ``del server``.
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class RuntimeStep:
    """A step for one server of one backend; *line* is set for ADD and READDRESS."""

    backend: str
    server: str
    kind: StepKind
    line: ServerLine | None = None
    #: For ADD: keep the server in drain even without a check (its launch is not complete yet).
    hold: bool = False
    #: For ADD: ready at once, check or not: the server is added again with another form (zone
    #: routing turned it into or out of a backup) and its check passed just before.
    proven: bool = False


class Change(enum.Enum):
    """What a cycle does (or did) to one server, for reports."""

    ADD = "add"
    REMOVE = "remove"
    ADDRESS = "address"
    OPTIONS = "options"
    WARMING = "warming"
    DRAINING = "draining"
    WEIGHT = "weight"
    #: Zone routing turns it into a backup server, or back into an active one.
    ZONE = "zone"
    UNCHANGED = "unchanged"
    HELD = "held"


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the per-backend report."""

    server: str
    instance_id: str
    address: str
    change: Change
    reason: str


class LifecycleResult(enum.Enum):
    """How a lifecycle action is completed; ``HEARTBEAT`` only extends the wait."""

    CONTINUE = "CONTINUE"
    ABANDON = "ABANDON"
    HEARTBEAT = "HEARTBEAT"


@dataclass(frozen=True)
class LifecycleAction:
    """Complete (or extend) the lifecycle action of one instance waiting on a hook."""

    group: str
    instance_id: str
    hook: str
    result: LifecycleResult
    #: For heartbeats: how long the server has been draining, and the hook's timeout; the
    #: executor sends one when the wait would otherwise end before the drain.
    waited: int = 0
    timeout: int = 0


class ZoneMode(enum.Enum):
    """How a zone-routed backend sends the node's requests, decided every cycle."""

    #: The local zone carries them: servers in other zones are backups.
    LOCAL = "local"
    #: The local zone is degraded: every zone's servers are active, traffic in proportion to
    #: their healthy capacity.
    SPILL = "spill"


@dataclass(frozen=True)
class ZoneCount:
    """One zone's managed servers for the report and the metrics."""

    servers: int
    #: Usable at runtime (``RuntimeServer.usable``).
    healthy: int
    #: Sum of the weights of the usable ones (1 each without weights).
    healthy_capacity: int


@dataclass(frozen=True)
class ZoneStatus:
    """What zone routing decided for one backend this cycle."""

    node_zone: str
    mode: ZoneMode
    #: By Availability Zone (``"unknown"`` for an instance DescribeInstances gave no zone).
    zones: Mapping[str, ZoneCount]
    #: The healthy capacity the local zone needs to carry the node's requests (the threshold).
    needed: float
    #: Share of the load balancer's choices that went to other zones' servers since the worker
    #: started (``lbtot``); ``None`` before any.
    cross_zone_share: float | None = None

    @property
    def local(self) -> ZoneCount:
        """The node's zone (zeros when the group has no server there)."""
        return self.zones.get(self.node_zone, ZoneCount(0, 0, 0))


@dataclass(frozen=True)
class BackendPlan:
    """
    Everything one cycle does to one backend.

    *refused* is set when the backend must not be touched this cycle (failed read, missing group,
    unsafe config); then the step and line fields are empty/``None``.
    """

    backend: str
    asg: str
    refused: str | None = None
    #: Not a failure: a safety rule kept the current servers (e.g. zero InService, desired > 0).
    held: str | None = None
    steps: tuple[RuntimeStep, ...] = ()
    #: The managed server lines the file must end up with, in order; ``None`` leaves the file.
    lines: tuple[ServerLine, ...] | None = None
    #: A change the runtime API cannot make (new options) needs a reload.
    needs_reload: bool = False
    #: Steps remain that a later cycle must take (warm-up or drain in progress, or reads that
    #: disagree): ``awaits_haproxy`` or ``rereads_aws``, or both.
    pending: bool = False
    #: Of those, steps that wait on HAProxy alone (a check to pass, sessions to end): the next
    #: look needs no AWS read.
    awaits_haproxy: bool = False
    #: AWS's reads disagree about an instance (eventual consistency): read AWS again soon.
    rereads_aws: bool = False
    rows: tuple[Row, ...] = ()
    #: Lifecycle actions to complete once the steps and the file write succeeded.
    lifecycle: tuple[LifecycleAction, ...] = ()
    #: One message per instance refused for a malformed AWS value: the backend was planned,
    #: but without that instance, whose server (if any) was kept as it is.
    rejected: tuple[str, ...] = ()
    #: Not errors: what the report should say (an instance type without a weight).
    warnings: tuple[str, ...] = ()
    #: Zone routing is on: HAProxy's health decides the zone mode, so the runtime is looked at
    #: again soon whether or not a step waits.
    watches_health: bool = False
    #: What zone routing decided; ``None`` when it is off.
    zones: ZoneStatus | None = None


@dataclass(frozen=True)
class Plan:
    """The plans of every configured backend, in configuration order."""

    backends: tuple[BackendPlan, ...]

    @property
    def pending(self) -> bool:
        """Some backend still has steps for a later cycle."""
        return any(b.pending for b in self.backends)

    @property
    def refused(self) -> tuple[BackendPlan, ...]:
        """The backends left untouched because of an error."""
        return tuple(b for b in self.backends if b.refused)


@dataclass(frozen=True)
class Observation:
    """Everything one cycle read, the planner's whole input besides the settings."""

    aws: AwsObservation
    #: Parsed sections of the configured backends; a backend missing from the file is absent.
    config: Mapping[str, ConfigBackend]
    #: The running HAProxy; ``None`` when no runtime socket is configured, or before template
    #: mode's first file exists (no HAProxy runs yet).
    runtime: RuntimeObservation | None
    #: Why the runtime could not be read (a socket is configured but the read failed).
    runtime_error: str | None = None
    #: Instances named by a current Spot interruption warning or rebalance recommendation.
    interrupted: frozenset[str] = frozenset()


# -- what a cycle did ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deferral:
    """A delete HAProxy postponed (a connection still attached): a later cycle tries again."""

    backend: str
    server: str
    #: HAProxy's refusal.
    reason: str

    def __str__(self) -> str:
        return f"{self.backend}/{self.server}: {self.reason}"


@dataclass(frozen=True)
class Outcome:
    """What applying a plan did."""

    #: One message per step, write or reload that failed.
    errors: tuple[str, ...] = ()
    #: Runtime commands that succeeded.
    commands: int = 0
    file_written: bool = False
    reloaded: bool = False
    #: Deletions HAProxy postponed (a connection arrived meanwhile); the next cycle retries.
    deferred: tuple[Deferral, ...] = ()
    #: Lifecycle API calls made (completions and heartbeats).
    lifecycle_calls: int = 0
    #: Backends whose plan proved to come from an out-of-date read; their file sections stayed.
    stale_reads: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdicts:
    """
    What one cycle's read says about the instances interruption warnings named. An instance in
    none of the sets cannot be judged yet: its group, or its description, could not be read.
    """

    #: Spot instances of a managed group: the warning may be true.
    verified: frozenset[str] = frozenset()
    #: In no managed group, although every managed group was read.
    unmanaged: frozenset[str] = frozenset()
    #: In a managed group, but DescribeInstances says it is no Spot instance.
    not_spot: frozenset[str] = frozenset()


@dataclass(frozen=True)
class CycleResult:
    """What one cycle decided and did."""

    plan: Plan
    #: ``None`` for a dry run.
    outcome: Outcome | None
    #: What the read says about the instances interruption warnings named.
    interruptions: Verdicts = field(default_factory=Verdicts)
    #: Backends whose servers the runtime API did not give completely, with the reason.
    runtime_read_errors: Mapping[str, str] = field(default_factory=dict)
    #: What the running HAProxy is and accepts, when the cycle read its runtime.
    haproxy: HAProxyFeatures | None = None
    #: The AWS observation the cycle planned from: read by it, or given to it.
    aws: AwsObservation = field(default_factory=AwsObservation)

    @property
    def errors(self) -> tuple[str, ...]:
        """Every refusal (of a backend or of one instance's values) and failure, one each."""
        refused = tuple(f"{b.backend}: {b.refused}" for b in self.plan.refused)
        rejected = tuple(f"{b.backend}: {r}" for b in self.plan.backends for r in b.rejected)
        return refused + rejected + (self.outcome.errors if self.outcome else ())

    @property
    def ok(self) -> bool:
        """Every backend was read and every change applied."""
        return not self.errors

    @property
    def pending(self) -> bool:
        """Warm-ups, drains or postponed deletions remain for a later cycle."""
        return self.plan.pending or bool(self.outcome and self.outcome.deferred)

    @property
    def rereads_aws(self) -> bool:
        """AWS's reads disagreed about an instance: a later cycle must read AWS again."""
        return any(b.rereads_aws for b in self.plan.backends if not b.refused)

    @property
    def changed_aws(self) -> bool:
        """It completed lifecycle actions: AWS changed since its read, which is stale now."""
        return self.outcome is not None and self.outcome.lifecycle_calls > 0
