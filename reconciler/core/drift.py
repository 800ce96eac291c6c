"""
Drift: how far HAProxy is from the Auto Scaling groups right now, for ``reconcile drift``.

The drift report is the planner's view, told server by server. ``assess`` runs ``plan.compute`` on
the same ``Observation`` a cycle would read and takes from it everything that decides *whether*
a backend drifted (refused, held, the managed lines the file must hold); it only adds *how* each
server differs, from the facts the planner read. So for any observation a backend has no drift
row exactly when the cycle would have nothing to do for it: no runtime step, no warm-up or drain
waiting (``pending``) and no file line to rewrite. ``tests/test_drift.py`` checks this over
generated worlds.

One row per instance of the group, per managed server (named ``<prefix><instance-id>``) and per
unmanaged server, each with a ``Verdict``. Verdicts are declared most severe first, which is the
order of rows in a report:

==============  ======  ===============================================================
verdict         drift   meaning
==============  ======  ===============================================================
missing         yes     InService, in neither the file nor the running HAProxy
stale           yes     in HAProxy but its instance does not serve (terminating,
                        standby, terminated, unhealthy, gone from the group, or a Spot
                        interruption warning with ``drain_on_spot_warning``)
held            yes     kept as it is by a safety rule: like stale, but the group has no
                        serving instance while its desired capacity is above zero; or
                        AWS returned a malformed value for the instance, or the group
                        lists it InService while DescribeInstances does not know it
                        (then it is not added either)
address         yes     the server's address in the file or at runtime is not the
                        instance's private IP and port
runtime-only    yes     InService, running, not in the file (a reload would drop it)
file-only       yes     InService, in the file, not running (a reload would add it)
maint           yes     InService but in maintenance at runtime; the next cycle warms it
                        up again
zone            yes     zone routing: the server is a backup (or active) at runtime or in
                        the file, and the zone mode calls for the other form; the next
                        cycles re-add it in that form (draining it first when in use)
draining        yes     leaving, and the removal is under way: in drain or maintenance
                        until nothing is attached, then deleted
warming         yes     InService, held in drain until its first health check passes;
                        or launching: ``Pending:Wait`` behind a launch hook the backend
                        completes, warmed up at runtime and kept out of the file
weight          yes     the weight at runtime or in the file is not the one the backend's
                        weights give the instance type; the next cycle sets it
outdated        yes     the file line's options or id are not what the settings call for
down            no      InService, in place everywhere, failing its health checks
ok              no      InService and serving
excluded        no      not serving and not in HAProxy, as it should be
unmanaged       no      a server the controller never touches (any other name)
==============  ======  ===============================================================

A transitional server (warming, draining) is drift: it does not yet serve, or still does,
unlike what the group says. A backend the planner refuses (failed read, missing group,
unmanageable section) has no rows, only the planner's reason.

Weights and zone routing add facts, not other ways to decide: each row carries its instance's
zone and, with zone routing, whether that is the node's; and its weights (desired, runtime, file)
when the backend sets weights. The backend carries the plan's warnings (instance types without a
weight: never drift) and zone routing's decision (``ZoneStatus``, told by ``zone_summary``). A
server in the other backup form is ``zone`` before ``maint`` and ``warming``: its re-add goes
through drain and maintenance, which are then no warm-up.

The report also carries what the running HAProxy said of itself (``HAProxyFeatures``: its version,
the runtime commands its ``help`` lists, the ``add server`` keywords it lists, if any), so a report
shows which HAProxy it was compared with and what that one can do
(``HAProxyFeatures.capabilities``).

Pure: no I/O, no clock. Linear in the number of instances and servers.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from reconciler.core import file_lines, plan, server_steps
from reconciler.core import zones as routing
from reconciler.core.errors import ConfigError
from reconciler.core.managed_servers import address, points_at
from reconciler.core.model import (
    BackendPlan,
    Change,
    ConfigServer,
    Group,
    HAProxyFeatures,
    Instance,
    Observation,
    RuntimeServer,
    ServerLine,
    ZoneMode,
    ZoneStatus,
)
from reconciler.core.settings import Binding, Settings


class Verdict(enum.Enum):
    """How one instance or server stands; declared most severe first."""

    MISSING = "missing"
    STALE = "stale"
    HELD = "held"
    ADDRESS = "address"
    RUNTIME_ONLY = "runtime-only"
    FILE_ONLY = "file-only"
    MAINT = "maint"
    ZONE = "zone"
    DRAINING = "draining"
    WARMING = "warming"
    WEIGHT = "weight"
    OUTDATED = "outdated"
    DOWN = "down"
    OK = "ok"
    EXCLUDED = "excluded"
    UNMANAGED = "unmanaged"

    @property
    def drift(self) -> bool:
        """HAProxy differs from the group here: the cycle has (or waits for) work to do."""
        return self not in _NOT_DRIFT

    @property
    def severity(self) -> int:
        """0 for the most severe verdict; rows sort by it."""
        return _SEVERITY[self]


#: Planner row kinds of servers on their way out.
_LEAVING = frozenset({Change.REMOVE, Change.DRAINING, Change.HELD})
#: The detail of a server the planner brings up behind a launch hook.
_LAUNCHING = "launching: warmed up in drain, kept out of the file until InService"
_NOT_DRIFT = frozenset({Verdict.DOWN, Verdict.OK, Verdict.EXCLUDED, Verdict.UNMANAGED})
_SEVERITY = {verdict: index for index, verdict in enumerate(Verdict)}


class RuntimeState(enum.Enum):
    """A server's state in the running HAProxy, from its admin and operational state."""

    UP = "UP"
    DOWN = "DOWN"
    MAINT = "MAINT"
    DRAIN = "DRAIN"
    ABSENT = "absent"


class CheckResult(enum.Enum):
    """The last health check of a running server."""

    PASSED = "passed"
    FAILED = "failed"
    #: Not checked yet, or the result was neutral.
    UNKNOWN = "unknown"
    #: No check is configured or it is disabled.
    DISABLED = "disabled"


class Status(enum.Enum):
    """A backend's overall standing."""

    IN_SYNC = "in-sync"
    DRIFTED = "drifted"
    #: Drifted, and the controller keeps it so on purpose (see ``BackendDrift.held``).
    HELD = "held"
    #: Could not be assessed: a read failed, the group is missing or the section is unmanageable.
    REFUSED = "refused"


@dataclass(frozen=True)
class DriftRow:
    """One instance or server of a backend, with every fact the verdict rests on."""

    verdict: Verdict
    #: Why, in words: which place lacks the server, which address differs, the check status...
    detail: str
    #: The server's name in HAProxy (or the one it will get); ``None`` when no server is wanted.
    server: str | None
    #: ``None`` for an unmanaged server.
    instance_id: str | None
    #: The instance's ASG and EC2 facts; all ``None`` when the group does not list it.
    lifecycle_state: str | None
    health_status: str | None
    ec2_state: str | None
    private_ip: str | None
    in_file: bool
    #: ``address:port`` as the file says it, when the server is in the file.
    file_address: str | None
    #: ``None`` when no runtime socket is configured (the runtime was not read).
    runtime_state: RuntimeState | None
    runtime_address: str | None
    #: ``None`` when the server is not running (or the runtime was not read).
    check: CheckResult | None
    #: HAProxy's own check status text (``L7OK``, ``L4CON``...), when it reports one.
    check_status: str | None
    #: The instance's Availability Zone, when DescribeInstances gave one.
    zone: str | None = None
    #: Zone routing is on: the instance is in the node's zone (``None`` when routing is off).
    local: bool | None = None
    #: The weight the backend's weights give the server (``None`` without weights), the one it
    #: runs with and the one its file line says (``None`` without a ``weight`` word). Filled
    #: when the backend sets weights or the server's weights differ; else all ``None``.
    weight_desired: int | None = None
    weight_runtime: int | None = None
    weight_file: int | None = None

    @property
    def drift(self) -> bool:
        """The row's verdict is drift."""
        return self.verdict.drift


@dataclass(frozen=True)
class BackendDrift:
    """One configured backend: its rows in report order, or why it could not be assessed."""

    backend: str
    asg: str
    #: Set when the planner refuses the backend; the rows are then empty.
    refused: str | None = None
    #: Set when the planner keeps the current servers although the group does not serve.
    held: str | None = None
    rows: tuple[DriftRow, ...] = ()
    #: Not drift: what the operator should know (an instance type without a weight).
    warnings: tuple[str, ...] = ()
    #: The backend sets server weights (``weight`` or ``[backend.weights]``).
    weights: bool = False
    #: What zone routing decided this cycle; ``None`` when it is off.
    zones: ZoneStatus | None = None

    @property
    def drifted(self) -> tuple[DriftRow, ...]:
        """The rows that are drift."""
        return tuple(row for row in self.rows if row.drift)

    @property
    def status(self) -> Status:
        """Refused, held, drifted or in sync."""
        if self.refused is not None:
            return Status.REFUSED
        if self.held is not None:
            return Status.HELD
        return Status.DRIFTED if self.drifted else Status.IN_SYNC

    def counts(self) -> dict[Verdict, int]:
        """How many rows have each verdict, every verdict listed, most severe first."""
        result = dict.fromkeys(Verdict, 0)
        for row in self.rows:
            result[row.verdict] += 1
        return result


@dataclass(frozen=True)
class DriftReport:
    """Every assessed backend, in configuration order."""

    backends: tuple[BackendDrift, ...]
    #: A runtime socket is configured, so the running HAProxy was compared too.
    runtime: bool
    #: What the running HAProxy said of itself; ``None`` when its runtime was not read.
    haproxy: HAProxyFeatures | None = None

    @property
    def refused(self) -> tuple[BackendDrift, ...]:
        """The backends that could not be assessed."""
        return tuple(b for b in self.backends if b.status is Status.REFUSED)

    @property
    def drifted(self) -> tuple[BackendDrift, ...]:
        """The assessed backends with drift (held ones included)."""
        return tuple(b for b in self.backends if b.status in (Status.DRIFTED, Status.HELD))

    @property
    def in_sync(self) -> bool:
        """Every backend was assessed and none drifted."""
        return all(b.status is Status.IN_SYNC for b in self.backends)


def selected(settings: Settings, names: Sequence[str] | None) -> tuple[Binding, ...]:
    """
    The bindings of backends *names* in configuration order (all of them for ``None`` or empty);
    ``ConfigError`` naming every unknown name.
    """
    if not names:
        return settings.backends
    known = {b.name for b in settings.backends}
    unknown = [name for name in dict.fromkeys(names) if name not in known]
    if unknown:
        listed = ", ".join(sorted(known))
        raise ConfigError(
            [
                f"--backend {name}: no [[backend]] of that name; configured: {listed}"
                for name in unknown
            ],
            settings.source,
        )
    wanted = set(names)
    return tuple(b for b in settings.backends if b.name in wanted)


def assess(
    settings: Settings, observed: Observation, backends: Sequence[str] | None = None
) -> DriftReport:
    """The drift of *backends* (default: every configured one) in *observed*."""
    narrowed = replace(settings, backends=selected(settings, backends))
    decided = plan.compute(narrowed, observed)
    return DriftReport(
        tuple(_assess_backend(narrowed.binding(p.backend), p, observed) for p in decided.backends),
        runtime=settings.haproxy.socket is not None,
        haproxy=None if observed.runtime is None else observed.runtime.features,
    )


def _assess_backend(binding: Binding, decided: BackendPlan, observed: Observation) -> BackendDrift:
    if decided.refused is not None:
        return BackendDrift(decided.backend, decided.asg, refused=decided.refused)
    runtime = None
    if observed.runtime is not None:
        runtime = observed.runtime.backends[binding.name]
    assessor = _Assessor(
        binding,
        observed.aws.groups[binding.asg],
        observed.config[binding.name].servers,
        runtime,
        decided,
    )
    rows = sorted(
        assessor.rows(),
        key=lambda r: (r.verdict.severity, r.instance_id or "", r.server or ""),
    )
    return BackendDrift(
        decided.backend,
        decided.asg,
        held=decided.held,
        rows=tuple(rows),
        warnings=decided.warnings,
        weights=assessor.weights,
        zones=decided.zones,
    )


class _Assessor:
    """Builds the rows of one backend the planner did not refuse."""

    def __init__(
        self,
        binding: Binding,
        group: Group,
        file_servers: Iterable[ConfigServer],
        runtime: Iterable[RuntimeServer] | None,
        decided: BackendPlan,
    ) -> None:
        self.binding = binding
        self.instances = {i.instance_id: i for i in group.instances}
        #: The instances the planner keeps exactly as they are, and why.
        self.doubts = group.doubts
        self.file = {s.name: s for s in file_servers}
        self.runtime = None if runtime is None else {s.name: s for s in runtime}
        self.held = decided.held is not None
        self.weights = binding.weights is not None
        self.zones = decided.zones
        # The planner decides who belongs: its lines are the servers the file must hold (none
        # when held), and any other server it brings up rather than down is launching: added
        # and warmed up behind a lifecycle hook, kept out of the file until InService.
        self.desired = {line.name: line for line in decided.lines or ()}
        self.launching = dict.fromkeys(
            row.server
            for row in decided.rows
            if row.server not in self.desired and row.change not in _LEAVING
        )

    def rows(self) -> list[DriftRow]:
        """A row per managed server or desired line, per other instance, per unmanaged server."""
        present = [*self.file, *(self.runtime or {})]
        managed = [n for n in present if self.binding.instance_of(n) is not None]
        names = dict.fromkeys([*self.desired, *self.launching, *managed])
        rows = [self._managed(name) for name in names]
        covered = {self.binding.instance_of(name) for name in names}
        rows += [self._absent(i) for i in self.instances.values() if i.instance_id not in covered]
        rows += [
            self._row(
                name, None, Verdict.UNMANAGED, "not named <prefix><instance-id>; never touched"
            )
            for name in dict.fromkeys(present)
            if self.binding.instance_of(name) is None
        ]
        return rows

    def _absent(self, instance: Instance) -> DriftRow:
        """The row of an instance that has no server (and must have none, unless doubtful)."""
        doubt = self.doubts.get(instance.instance_id)
        if doubt is not None:
            return self._row(None, instance.instance_id, Verdict.HELD, f"{doubt}; not added")
        detail = f"{server_steps.leaving_reason(instance)}; not in HAProxy"
        return self._row(None, instance.instance_id, Verdict.EXCLUDED, detail)

    def _managed(self, name: str) -> DriftRow:
        instance_id = self.binding.instance_of(name)
        instance = self.instances.get(instance_id or "")
        line = self.desired.get(name)
        doubt = self.doubts.get(instance_id or "")
        if doubt is not None:
            # A malformed value or reads that disagree: the planner keeps the server as it is.
            verdict, detail = Verdict.HELD, f"{doubt}; kept as it is"
        elif line is not None:
            verdict, detail = self._desired(line)
        elif name in self.launching:
            verdict, detail = Verdict.WARMING, _LAUNCHING
        else:
            verdict, detail = self._leaving(name, instance)
        return self._row(name, instance_id, verdict, detail)

    def _desired(self, line: ServerLine) -> tuple[Verdict, str]:
        """The verdict of a server the group calls for; the first matching rule wins."""
        current = self.file.get(line.name)
        running = self._running(line.name)
        wanted = address(line)
        if current is None and running is None:
            where = "the file" if self.runtime is None else "the file or the running HAProxy"
            return Verdict.MISSING, f"InService; not in {where}"
        if running is not None and not points_at(running, line):
            return Verdict.ADDRESS, f"running at {address(running)}; the instance is {wanted}"
        if current is not None and not points_at(current, line):
            return Verdict.ADDRESS, f"the file says {address(current)}; the instance is {wanted}"
        if self.runtime is not None and running is None:
            return Verdict.FILE_ONLY, "InService; not running (a reload would add it)"
        if current is None:
            return Verdict.RUNTIME_ONLY, "InService; not in the file (a reload would drop it)"
        if self.zones is not None and running is not None and running.backup != line.backup:
            # Re-added in the other form, through drain and maintenance: it is not warming.
            return Verdict.ZONE, _zone_move(running, line, self.zones)
        if running is not None and running.in_maintenance:
            return Verdict.MAINT, "InService but in maintenance; the next cycle warms it up"
        if running is not None and running.draining:
            if running.has_check and not running.check_passed:
                status = server_steps.awaited_check(running)
                return Verdict.WARMING, f"held in drain until its check passes ({status})"
            return Verdict.WARMING, "in drain; the next cycle makes it ready"
        differs = _line_differs(current, line, self.binding, self.zones)
        if differs is not None:
            return differs
        if line.weight is not None and running is not None and running.weight != line.weight:
            return (
                Verdict.WEIGHT,
                f"runs at weight {running.weight}; the next cycle sets {line.weight}",
            )
        if running is not None and runtime_state(running) is RuntimeState.DOWN:
            return Verdict.DOWN, f"failing health checks ({running.check_status or 'DOWN'})"
        return Verdict.OK, "InService and serving"

    def _leaving(self, name: str, instance: Instance | None) -> tuple[Verdict, str]:
        """The verdict of a managed server whose instance does not serve."""
        reason = server_steps.leaving_reason(instance)
        running = self._running(name)
        if self.held:
            return Verdict.HELD, f"{reason}; kept while the group has no serving instance"
        if running is not None and (running.draining or running.in_maintenance):
            return Verdict.DRAINING, f"{reason}; being removed ({server_steps.attached(running)})"
        if running is None:
            return Verdict.STALE, f"{reason}; in the file only (a reload would bring it back)"
        where = "running and in the file" if name in self.file else "running, not in the file"
        return Verdict.STALE, f"{reason}; {where}"

    def _running(self, name: str) -> RuntimeServer | None:
        return None if self.runtime is None else self.runtime.get(name)

    def _row(
        self, name: str | None, instance_id: str | None, verdict: Verdict, detail: str
    ) -> DriftRow:
        instance = self.instances.get(instance_id) if instance_id is not None else None
        current = self.file.get(name) if name is not None else None
        running = self._running(name) if name is not None else None
        line = self.desired.get(name) if name is not None else None
        desired, at_runtime, in_file = self._weights(line, current, running)
        node_zone = None if self.zones is None else self.zones.node_zone
        return DriftRow(
            verdict=verdict,
            detail=detail,
            server=name,
            instance_id=instance_id,
            lifecycle_state=instance.lifecycle_state if instance else None,
            health_status=instance.health_status if instance else None,
            ec2_state=instance.ec2_state if instance else None,
            private_ip=instance.private_ip if instance else None,
            in_file=current is not None,
            file_address=address(current) if current is not None else None,
            runtime_state=None if self.runtime is None else runtime_state(running),
            runtime_address=address(running) if running is not None else None,
            check=check_result(running) if running is not None else None,
            check_status=(running.check_status or None) if running is not None else None,
            zone=instance.zone if instance else None,
            # An instance without a zone is never local.
            local=None if self.zones is None or instance is None else instance.zone == node_zone,
            weight_desired=desired,
            weight_runtime=at_runtime,
            weight_file=in_file,
        )

    def _weights(
        self,
        line: ServerLine | None,
        current: ConfigServer | None,
        running: RuntimeServer | None,
    ) -> tuple[int | None, int | None, int | None]:
        """
        The server's weights (desired, runtime, file) when the backend sets weights; without,
        only where the running weight is not the one its file line writes (``set server weight``
        by hand), as a line without ``weight`` may take a ``default-server`` one.
        """
        desired = line.weight if line is not None else None
        at_runtime = running.weight if running is not None else None
        in_file = _file_weight(current.options) if current is not None else None
        if self.weights or (None not in (at_runtime, in_file) and at_runtime != in_file):
            return desired, at_runtime, in_file
        return None, None, None


def runtime_state(running: RuntimeServer | None) -> RuntimeState:
    """A running server's state as an operator names it; ``ABSENT`` for ``None``."""
    if running is None:
        return RuntimeState.ABSENT
    if running.in_maintenance:
        return RuntimeState.MAINT
    if running.draining:
        return RuntimeState.DRAIN
    # ``srv_op_state`` 0 is "stopped": the checks took it out.
    return RuntimeState.DOWN if running.op_state == 0 else RuntimeState.UP


def check_result(running: RuntimeServer) -> CheckResult:
    """The last health check of *running*."""
    if not running.has_check:
        return CheckResult.DISABLED
    if running.check_passed:
        return CheckResult.PASSED
    # ``srv_check_result`` 2 is "failed"; 0 (unknown) and 1 (neutral) say nothing yet.
    return CheckResult.FAILED if running.check_result == 2 else CheckResult.UNKNOWN


def _line_differs(
    current: ConfigServer, line: ServerLine, binding: Binding, zones: ZoneStatus | None
) -> tuple[Verdict, str] | None:
    """
    How the file line of a server at the right address differs from *line*, if it does: in the
    settings' options or the id (outdated), or only in the words the controller writes itself,
    ``weight`` (weight) and ``backup`` (zone).
    """
    if current.options == line.file_options and current.server_id == line.server_id:
        return None
    theirs = file_lines.user_options(current.options, binding)
    if theirs != line.options:
        have, want = " ".join(theirs), " ".join(line.options)
        return (
            Verdict.OUTDATED,
            f"the file line has options '{have}', the settings '{want}' (a reload applies them)",
        )
    if current.server_id != line.server_id:
        written = "no id" if current.server_id is None else f"id {current.server_id}"
        return (
            Verdict.OUTDATED,
            f"the file line has {written}; the next cycle writes id {line.server_id}",
        )
    weight = _file_weight(current.options)
    if line.weight is not None and weight != line.weight:
        have = "no weight" if weight is None else f"weight {weight}"
        return (
            Verdict.WEIGHT,
            f"the file line has {have}; the next cycle writes weight {line.weight}",
        )
    if zones is not None and ("backup" in current.options) != line.backup:
        now = "active" if line.backup else "a backup"
        move = routing.reason(zones, to_backup=line.backup)
        return Verdict.ZONE, f"the file line is {now}; the next cycle writes it {move}"
    return (
        Verdict.OUTDATED,
        "the file line's words are in another order; the next cycle rewrites it",
    )


def _file_weight(options: Sequence[str]) -> int | None:
    """The weight a server line's words set (the last ``weight N``, as HAProxy reads them)."""
    found = None
    for word, value in itertools.pairwise(options):
        if word == "weight" and value.isdigit():
            found = int(value)
    return found


def _zone_move(running: RuntimeServer, line: ServerLine, zones: ZoneStatus) -> str:
    """Why a running server of the wrong form is re-added in the other, and what it waits for."""
    now = "a backup" if running.backup else "active"
    detail = f"{now} at runtime; re-added {routing.reason(zones, to_backup=line.backup)}"
    if server_steps.unattached(running):
        return detail
    return f"{detail} once unused ({server_steps.attached(running)})"


def zone_reason(zones: ZoneStatus) -> str:
    """Why zone routing chose its mode, in words."""
    local, node = zones.local, zones.node_zone
    capacity = routing.capacity(zones)
    if local.servers == 0:
        return f"no server in the local zone {node}"
    if not any(count.healthy for count in zones.zones.values()):
        return "no healthy server in any zone"
    if local.healthy_capacity == 0:
        return f"no healthy server in the local zone {node}; HAProxy sends to the other zones"
    if zones.mode is ZoneMode.LOCAL:
        return f"the local zone {node} carries the traffic ({capacity})"
    return f"the local zone {node} is degraded ({capacity})"


def zone_summary(zones: ZoneStatus) -> str:
    """
    The zone routing line of a backend: its mode and why, the servers healthy per zone, the
    share of requests HAProxy sent to other zones (since its worker started).
    """
    counts = ", ".join(
        f"{zone} {count.healthy}/{count.servers} healthy"
        for zone, count in sorted(zones.zones.items())
    )
    share = zones.cross_zone_share
    sent = "no request yet" if share is None else f"{share:.1%} of requests sent cross-zone"
    return f"zone routing {zones.mode.value}: {zone_reason(zones)}; {counts or 'no server'}; {sent}"
