"""
The planner: observed state in, the minimal set of moves out. Pure; no I/O, no clock.

For each configured backend the planner compares three things: the serving instances of its Auto
Scaling group (the truth), the managed ``server`` lines of the config file, and (when a runtime
socket is configured) the servers of the running HAProxy. It decides:

- the managed lines the file must hold: one per serving instance, nothing else
  (``file_lines``);
- the next runtime step of every managed server, derived only from what HAProxy reports now, so a
  restarted controller picks up a warm-up or a drain exactly where it stands (``server_steps``,
  whose table lists every step);
- which lifecycle actions to complete: a launch once its server's check passed, a termination once
  its server is gone (``hook_actions``);
- the form of every desired line: its weight by instance type (``weights``) and, with zone
  routing, whether it is a backup server (``zones``); a running server in another form is set
  to it at runtime (``server_steps``).

This module holds what ties them together: which backends may be planned at all, which instances
serve, and the hold that keeps a backend's servers while its group reports none serving.

An instance is *doubtful* when AWS returned a malformed value for it (an instance id or address
without its documented shape, an id listed twice) or when the reads disagree (the group lists it
InService and Healthy, DescribeInstances does not know it). Nothing is done about it: its server
keeps its runtime state and its file line, or is not added; a held row reports it. Disagreeing
reads are read again soon (the backend is pending); malformed values are errors of the cycle.
So only values with their documented shape ever reach a runtime command or a file line.

Only servers named ``<prefix><instance-id>`` are managed; every other server is never planned.
Safety: a backend whose reads failed, whose group is missing, whose section cannot be managed, or
whose HAProxy's runtime API cannot make its changes (``HAProxyFeatures``: a command missing from
``help``, a socket below ``level admin``, an option HAProxy refused in ``add server``) is refused
as a whole; a backend is never emptied while its group's desired capacity is above zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from reconciler.core import file_lines, hook_actions, server_steps, weights, zones
from reconciler.core.managed_servers import ManagedServers
from reconciler.core.model import (
    BackendPlan,
    ConfigBackend,
    Group,
    HAProxyFeatures,
    Instance,
    LifecycleAction,
    Observation,
    Plan,
    Row,
    RuntimeServer,
    ServerLine,
    ZoneStatus,
)
from reconciler.core.server_steps import Move, Rezoning
from reconciler.core.settings import AUTO_ZONE, Binding, Settings
from reconciler.core.weights import Weighing


def compute(settings: Settings, observed: Observation) -> Plan:
    """The plan of every configured backend, in configuration order."""
    # Planned against the runtime whenever a socket was read, or failed to be read. Nothing is read
    # before template mode's first file exists (no HAProxy runs yet): that file is planned alone.
    runtime_mode = observed.runtime is not None or observed.runtime_error is not None
    plans = [
        _plan_backend(binding, observed, runtime_mode, settings) for binding in settings.backends
    ]
    return Plan(hook_actions.release_when_gone_everywhere(plans, observed.aws.groups))


def _plan_backend(
    binding: Binding, observed: Observation, runtime_mode: bool, settings: Settings
) -> BackendPlan:
    section = observed.config.get(binding.name)
    config_path = str(settings.haproxy.config)
    node_zone = settings.haproxy.zone
    refusal = _refusal(binding, observed, section, runtime_mode, config_path)
    refusal = refusal or _zone_refusal(binding, node_zone)
    if refusal is not None or section is None:
        return BackendPlan(binding.name, binding.asg, refused=refusal or "not found")
    group = observed.aws.groups[binding.asg]
    running = observed.runtime
    runtime = None if running is None else running.backends[binding.name]
    backend = _Backend.read(binding, group, section, runtime, observed.interrupted)
    return backend.plan(None if running is None else running.worker_uptime, node_zone)


def section_problem(
    binding: Binding, section: ConfigBackend | None, runtime_mode: bool, config_path: str
) -> str | None:
    """Why the config file's section for *binding* cannot be managed, or ``None``."""
    if section is None:
        return (
            f"no backend or listen section '{binding.name}' in {config_path}; "
            "add it or fix the [[backend]] name"
        )
    if section.problems:
        return "; ".join(section.problems)
    if runtime_mode and not section.takes_dynamic_servers:
        return (
            f"backend '{binding.name}': 'balance {section.balance}' (hash-type "
            f"{section.hash_type}) cannot take servers added at runtime; use roundrobin, "
            "leastconn, first, random or 'hash-type consistent', or remove [haproxy] socket "
            "to manage this file with reloads"
        )
    if binding.zone_routing and not section.allbackups:
        # Without it HAProxy sends every request to the first usable backup alone when the
        # local zone fails; the controller never edits outside its managed lines to add it.
        return (
            f"backend '{binding.name}': zone_routing needs 'option allbackups' in its section "
            "(the other zones' servers are backups and must all take over when the local zone "
            "fails); add the line and reload HAProxy once"
        )
    if binding.zone_routing:
        return _hand_written_backup(binding, section)
    return None


def _hand_written_backup(binding: Binding, section: ConfigBackend) -> str | None:
    """Why an unmanaged backup server keeps zone routing off this backend, or ``None``."""
    managed = binding.managed_name.fullmatch
    for server in section.servers:
        if "backup" in server.options and not managed(server.name):
            return (
                f"backend '{binding.name}': zone_routing makes the other zones' servers backups, "
                f"and with 'option allbackups' the hand-written backup server '{server.name}' "
                f"(line {server.line_index + 1}) would take a share of their failover traffic; "
                "remove its 'backup' word or the line, or turn zone_routing off"
            )
    return None


def _zone_refusal(binding: Binding, node_zone: str | None) -> str | None:
    """Why zone routing cannot decide this backend's servers, or ``None``."""
    if binding.zone_routing and node_zone in (None, AUTO_ZONE):
        return (
            f"backend '{binding.name}': zone_routing needs the node's Availability Zone, which "
            'is not known; set [haproxy] zone to its name, or to "auto" where the instance '
            "metadata service answers"
        )
    return None


def _refusal(
    binding: Binding,
    observed: Observation,
    section: ConfigBackend | None,
    runtime_mode: bool,
    config_path: str,
) -> str | None:
    """Why this backend must not be touched this cycle, or ``None``."""
    problem = section_problem(binding, section, runtime_mode, config_path)
    if problem is not None:
        return problem
    if binding.asg in observed.aws.errors:
        return observed.aws.errors[binding.asg]
    if binding.asg not in observed.aws.groups:
        return (
            f"Auto Scaling group '{binding.asg}' not found in this account and region; "
            "check the name and [aws] region"
        )
    if not runtime_mode:
        return None
    if observed.runtime is None:
        return observed.runtime_error or "the HAProxy runtime API could not be read"
    if observed.runtime.features is not None:
        unusable = _unusable_runtime_api(binding, observed.runtime.features)
        if unusable is not None:
            return unusable
    if binding.name in observed.runtime.errors:
        return observed.runtime.errors[binding.name]
    if binding.name not in observed.runtime.backends:
        return (
            f"the running HAProxy has no backend '{binding.name}'; "
            "reload HAProxy once so it loads the section"
        )
    return None


def _unusable_runtime_api(binding: Binding, features: HAProxyFeatures) -> str | None:
    """Why the running HAProxy's runtime API cannot make this backend's changes, or ``None``."""
    without_socket = "or remove [haproxy] socket (file edits and reloads only)"
    if features.missing_commands:
        missing = "/".join(f"'{command}'" for command in features.missing_commands)
        return (
            f"HAProxy {features.version}'s runtime API has no {missing} (`help` does not list "
            "it; adding and deleting servers at runtime needs HAProxy 2.6 or later): upgrade "
            f"HAProxy, {without_socket}"
        )
    if features.below_admin:
        return (
            f"the HAProxy stats socket is at level {features.level}, which may not add or delete "
            f"servers: give its `stats socket` line `level admin` and reload HAProxy, "
            f"{without_socket}"
        )
    refused = sorted(features.refused_options.intersection(binding.server_options))
    if refused:
        words = ", ".join(f"'{word}'" for word in refused)
        return (
            f"HAProxy {features.version} refused {words} of server_options in `add server` (not "
            f"taken on servers added at runtime): remove it from [[backend]] '{binding.name}', "
            f"{without_socket}"
        )
    return None


@dataclass(frozen=True)
class _Backend:
    """One backend whose reads all succeeded."""

    servers: ManagedServers
    group: Group
    #: The group's instances by id.
    instances: Mapping[str, Instance]
    #: The instances nothing may be done about, and why (see ``Group.doubts``)...
    doubts: Mapping[str, str]
    #: ...among them those with a malformed value, an error of the cycle.
    malformed: Mapping[str, str]
    #: The instances a Spot interruption warning names.
    warned: frozenset[str]
    #: The first server id a new server may take.
    first_free_id: int

    @classmethod
    def read(
        cls,
        binding: Binding,
        group: Group,
        section: ConfigBackend,
        runtime: Sequence[RuntimeServer] | None,
        warned: frozenset[str],
    ) -> _Backend:
        """The backend of *binding*, from its *group*, file *section* and *runtime* servers."""
        malformed = group.malformed
        return cls(
            servers=ManagedServers.of(binding, section.servers, runtime),
            group=group,
            instances={i.instance_id: i for i in group.instances},
            doubts=group.doubts_besides(malformed),
            malformed=malformed,
            warned=warned,
            first_free_id=file_lines.first_free_id(section.servers, runtime or ()),
        )

    @property
    def binding(self) -> Binding:
        return self.servers.binding

    def plan(self, worker_uptime: float | None, node_zone: str | None = None) -> BackendPlan:
        """
        The servers of the serving and launching instances come or stay, the doubtful ones are
        kept as they are, the others go; but none goes while the group reports no serving
        instance at a desired capacity above zero.
        """
        serving = self._serving()
        launching = hook_actions.launching(self.servers, self.group, self.doubts)
        held_back = {self.binding.server_name(i.instance_id) for i in launching}
        kept, kept_moves = server_steps.kept_as_is(self.servers, self.doubts)
        arriving = [*serving, *launching]
        shape = self._shape(arriving, node_zone)
        lines = file_lines.desired(self.servers, arriving, self.first_free_id, shape.form)
        arriving_rows, moving = self._arriving(lines, held_back, shape)
        rows, moves = [*(m.row for m in kept_moves), *arriving_rows], [*kept_moves, *moving]
        launches = self._launches(moves)
        present = self.servers.names - kept.keys()
        # Launches go on during a hold: completing them is what brings serving instances back.
        if not serving and self.group.desired_capacity > 0 and present - held_back:
            held = server_steps.held(self.servers, present - held_back)
            taken = self._taking([*rows, *(m.row for m in held)], [*moves, *held], launches)
            return shape.on(replace(taken, held=self._hold_reason()))
        wanted = {line.name for line in lines}
        leaving = [self._leaving(name) for name in sorted(present - wanted)]
        releases, draining = hook_actions.terminations(
            self.servers, self.group, self.doubts, worker_uptime
        )
        planned = self._taking(
            [*rows, *(m.row for m in leaving)], [*moves, *leaving], (*launches, *releases)
        )
        in_file = [line for line in lines if line.name not in held_back] if held_back else lines
        return shape.on(
            replace(
                planned,
                lines=file_lines.written(self.servers, in_file, kept),
                needs_reload=file_lines.needs_reload(self.servers, lines),
                pending=planned.pending or draining,
                awaits_haproxy=planned.awaits_haproxy or draining,
            )
        )

    def _shape(self, arriving: Sequence[Instance], node_zone: str | None) -> _Shape:
        """The weights and the zone mode of the servers of the *arriving* instances."""
        weighing = weights.weigh(self.binding, self.group, arriving)
        if not self.binding.zone_routing or node_zone is None:
            return _Shape(weighing)
        server_name = self.binding.server_name
        status = zones.decide(
            node_zone,
            self.binding.zone_threshold,
            [(server_name(i.instance_id), i) for i in arriving],
            self.servers.runtime or {},
            _one if weighing is None else weighing.of,
            self._zone_of_server,
        )
        return _Shape(weighing, status)

    def _zone_of_server(self, name: str) -> str:
        """The zone of managed server *name*'s instance (``zones.UNKNOWN`` when not known)."""
        return zones.zone_of(self.instances.get(self.servers.instance_id(name)))

    def _serving(self) -> list[Instance]:
        """The instances whose servers serve: neither interrupted nor doubtful."""
        interrupted = self._interrupted()
        # An instance with a malformed value is doubtful: the others need ``in_service`` alone.
        return [
            i
            for i in self.group.instances
            if i.instance_id not in self.doubts
            and i.in_service
            and i.instance_id not in interrupted
        ]

    def _interrupted(self) -> frozenset[str]:
        """
        Instances to drain because a Spot warning names them, if this backend wants that. A
        message is no fact: only instances of this group that DescribeInstances calls Spot
        instances can be interrupted.
        """
        if not self.binding.drain_on_spot_warning:
            return frozenset()
        return frozenset(i for i in self.warned if i in self.instances and self.instances[i].spot)

    def _arriving(
        self, lines: Sequence[ServerLine], launching: set[str], shape: _Shape
    ) -> tuple[list[Row], list[Move]]:
        """
        The row of every desired line, and the moves of those not in place (see
        ``server_steps.in_place``), in line order: those in *launching* wait behind a launch hook.
        """
        servers, instances = self.servers, self.instances
        # A line's name is its instance's ``server_name``: the prefix, then the instance id.
        prefix = len(self.binding.server_prefix)
        rezonings = shape.rezonings(lines, servers.runtime)
        rows: list[Row] = []
        moves: list[Move] = []
        for line in lines:
            instance = instances[line.name[prefix:]]
            if line.name in launching:
                move = server_steps.launching(servers, line, instance)
            else:
                row = server_steps.in_place(servers, line, instance)
                if row is not None:
                    rows.append(row)
                    continue
                zone = None if rezonings is None else rezonings[line.backup]
                move = server_steps.serving(servers, line, instance, zone)
            rows.append(move.row)
            moves.append(move)
        return rows, moves

    def _leaving(self, name: str) -> Move:
        """The next removal step of server *name*, whose instance does not serve."""
        instance = self.instances.get(self.servers.instance_id(name))
        return server_steps.leaving(self.servers, name, instance)

    def _launches(self, moves: Iterable[Move]) -> tuple[LifecycleAction, ...]:
        """The launch hooks the *moves* complete."""
        return tuple(
            hook_actions.launch(self.binding, self.group, move.row.instance_id, move.launch)
            for move in moves
            if move.launch is not None
        )

    def _taking(
        self, rows: Sequence[Row], moves: Sequence[Move], lifecycle: tuple[LifecycleAction, ...]
    ) -> BackendPlan:
        """
        The plan that takes *moves* and completes *lifecycle*, leaving the file as it is; *rows*
        are those of the *moves* and of the servers in place, in report order.
        """
        waits = any(m.waits for m in moves)
        # Reads that disagree are read again soon: the next read may well agree.
        rereads = len(self.doubts) > len(self.malformed)
        return BackendPlan(
            backend=self.binding.name,
            asg=self.binding.asg,
            steps=tuple(step for move in moves for step in move.steps),
            pending=waits or rereads,
            awaits_haproxy=waits,
            rereads_aws=rereads,
            rows=tuple(rows),
            lifecycle=lifecycle,
            rejected=tuple(self._rejection(reason) for reason in self.malformed.values()),
        )

    def _hold_reason(self) -> str:
        return (
            f"'{self.group.name}' reports no serving instance while its desired "
            f"capacity is {self.group.desired_capacity}; keeping the current servers"
        )

    def _rejection(self, reason: str) -> str:
        """The error reported for an instance refused for a malformed value."""
        return (
            f"group '{self.group.name}': {reason}; that instance is left as it is "
            "(never added, removed or cut) until AWS returns a valid value: check the AWS "
            "endpoint the controller reads (AWS_ENDPOINT_URL, any proxy on the way)"
        )


@dataclass(frozen=True)
class _Shape:
    """What weights and zone routing make of a backend's desired lines this cycle."""

    #: ``None`` when the backend sets no weights.
    weighing: Weighing | None = None
    #: ``None`` without zone routing.
    zones: ZoneStatus | None = None

    @property
    def form(self) -> file_lines.Form | None:
        """Each instance's weight and backup form; ``None`` when the backend sets neither."""
        if self.weighing is None and self.zones is None:
            return None
        return self._form

    def _form(self, instance: Instance) -> tuple[int | None, bool]:
        weight = None if self.weighing is None else self.weighing.of(instance)
        return weight, self.zones is not None and zones.backup(self.zones, instance)

    def rezonings(
        self, lines: Sequence[ServerLine], runtime: Mapping[str, RuntimeServer] | None
    ) -> tuple[Rezoning, Rezoning] | None:
        """
        Zone routing's view of the active lines, then of the backup ones (index
        ``line.backup``); ``None`` without zone routing.
        """
        if self.zones is None:
            return None
        carried = zones.carried(lines, runtime or {})
        return (
            Rezoning(zones.reason(self.zones, to_backup=False), carried),
            Rezoning(zones.reason(self.zones, to_backup=True), carried),
        )

    def on(self, plan: BackendPlan) -> BackendPlan:
        """*plan* with the warnings and the zone status."""
        if self.weighing is None and self.zones is None:
            return plan
        warnings = () if self.weighing is None else self.weighing.warnings
        return replace(
            plan, warnings=warnings, watches_health=self.zones is not None, zones=self.zones
        )


def _one(_instance: Instance) -> int:
    """The capacity of every server of a backend without weights."""
    return 1
