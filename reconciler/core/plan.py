"""
The planner: observed state in, the minimal set of moves out. Pure; no I/O, no clock.

For each configured backend the planner compares three things: the serving instances of its Auto
Scaling group (the truth), the managed ``server`` lines of the config file, and (when a runtime
socket is configured) the servers of the running HAProxy. It decides:

- the managed lines the file must hold: one per serving instance, nothing else;
- the next runtime step of every managed server, derived only from what HAProxy reports now, so a
  restarted controller picks up a warm-up or a drain exactly where it stands:

  ======================================  ==========================================
  observed                                next step
  ======================================  ==========================================
  serving, absent                         ADD (add, enable health, drain or ready)
  serving, other address                  READDRESS (maint, set addr, warm up again)
  serving, in maintenance                 WARM_UP (enable health, drain) or READY
  serving, draining, check not passed     wait (warming up)
  serving, draining, check passed         READY
  leaving, ready                          DRAIN (MAINT when its instance is gone)
  leaving, draining, idle or timed out    MAINT (+ KILL_SESSIONS when timed out)
  leaving, in maintenance, timed out      KILL_SESSIONS
  leaving, in maintenance, idle           DELETE
  doubtful                                nothing: kept exactly as it is
  ======================================  ==========================================

An instance is *gone* when EC2 says it is shutting down or terminated, or it left its group: its
server goes straight to maintenance, which takes no new request, but the requests in flight may
finish within the drain timeout (an instance may answer while it shuts down); only then are they
cut. A drain timeout of 0 cuts at once.

An instance is *doubtful* when AWS returned a malformed value for it (an instance id or address
without its documented shape, an id listed twice) or when the reads disagree (the group lists it
InService and Healthy, DescribeInstances does not know it). Nothing is done about it: its server
keeps its runtime state and its file line, or is not added; a held row reports it. Disagreeing
reads are read again soon (the backend is pending); malformed values are errors of the cycle.
So only values with their documented shape ever reach a runtime command or a file line.

Only servers named ``<prefix><instance-id>`` are managed; every other server is never planned.
Safety: a backend whose reads failed, whose group is missing, or whose section cannot be managed is
refused as a whole; a backend is never emptied while its group's desired capacity is above zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from reconciler.core import config_edit
from reconciler.core.model import (
    LAUNCH_WAIT,
    LAUNCHING,
    TERMINATE_WAIT,
    TERMINATING,
    BackendPlan,
    Change,
    ConfigBackend,
    ConfigServer,
    Group,
    Instance,
    LifecycleAction,
    LifecycleHook,
    LifecycleResult,
    Observation,
    Plan,
    Row,
    RuntimeServer,
    RuntimeStep,
    ServerLine,
    StepKind,
)
from reconciler.core.settings import Binding, Settings


#: Why a serving instance is drained while a Spot interruption warning names it.
SPOT_WARNING_REASON = "Spot interruption warning"


def compute(settings: Settings, observed: Observation) -> Plan:
    """The plan of every configured backend, in configuration order."""
    # Planned against the runtime whenever a socket was read, or failed to be read. Nothing is read
    # before template mode's first file exists (no HAProxy runs yet): that file is planned alone.
    runtime_mode = observed.runtime is not None or observed.runtime_error is not None
    plans = [
        _plan_backend(binding, observed, runtime_mode, str(settings.haproxy.config))
        for binding in settings.backends
    ]
    return Plan(_release_when_gone_everywhere(plans, observed))


def _release_when_gone_everywhere(
    plans: Sequence[BackendPlan], observed: Observation
) -> tuple[BackendPlan, ...]:
    """
    One group may feed several backends: an instance leaving it is released (terminate hook
    CONTINUE) only when no backend of the group still has its server. A refused backend, whose
    servers are unknown, keeps every instance of its group waiting.
    """
    present = {(p.asg, row.instance_id) for p in plans for row in p.rows}
    unknown = {p.asg for p in plans if p.refused is not None}

    def too_soon(plan: BackendPlan, action: LifecycleAction) -> bool:
        group = observed.aws.groups.get(plan.asg)
        leaving = group is not None and any(
            i.instance_id == action.instance_id and i.lifecycle_state == TERMINATE_WAIT
            for i in group.instances
        )
        still_served = plan.asg in unknown or (plan.asg, action.instance_id) in present
        return action.result is LifecycleResult.CONTINUE and leaving and still_served

    return tuple(
        replace(p, lifecycle=tuple(a for a in p.lifecycle if not too_soon(p, a))) for p in plans
    )


def _plan_backend(
    binding: Binding, observed: Observation, runtime_mode: bool, config_path: str
) -> BackendPlan:
    section = observed.config.get(binding.name)
    refusal = _refusal(binding, observed, section, runtime_mode, config_path)
    if refusal is not None or section is None:
        return BackendPlan(binding.name, binding.asg, refused=refusal or "not found")
    group = observed.aws.groups[binding.asg]
    runtime: tuple[RuntimeServer, ...] | None = None
    uptime = None
    if observed.runtime is not None:
        runtime = observed.runtime.backends[binding.name]
        uptime = observed.runtime.worker_uptime
    planner = _BackendPlanner(binding, group, section, runtime, observed.interrupted, uptime)
    return planner.plan()


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
    if binding.name in observed.runtime.errors:
        return observed.runtime.errors[binding.name]
    if binding.name not in observed.runtime.backends:
        return (
            f"the running HAProxy has no backend '{binding.name}'; "
            "reload HAProxy once so it loads the section"
        )
    return None


class _BackendPlanner:
    """Plans one backend whose reads all succeeded."""

    def __init__(
        self,
        binding: Binding,
        group: Group,
        section: ConfigBackend,
        runtime: tuple[RuntimeServer, ...] | None,
        interrupted: frozenset[str] = frozenset(),
        worker_uptime: float | None = None,
    ) -> None:
        self.binding = binding
        self._worker_uptime = worker_uptime
        self._interrupted = interrupted
        self.group = group
        self.instances = {i.instance_id: i for i in group.instances}
        self.malformed = group.malformed
        self.doubts = group.doubts
        self.file = {s.name: s for s in section.servers if binding.instance_of(s.name)}
        self.runtime = (
            None
            if runtime is None
            else {s.name: s for s in runtime if binding.instance_of(s.name) is not None}
        )
        self.section = section
        self.all_runtime = runtime or ()

    def plan(self) -> BackendPlan:
        interrupted = self.interrupted
        serving = [
            i
            for i in self.group.instances
            if i.serving and i.instance_id not in interrupted and i.instance_id not in self.doubts
        ]
        launching = self._launching()
        held_back = {self.binding.server_name(i.instance_id) for i in launching}
        kept, rows = self._kept()
        present = (set(self.file) | set(self.runtime or {})) - set(kept)
        # Launches go on during a hold: completing them is what brings serving instances back.
        hold = not serving and self.group.desired_capacity > 0 and bool(present - held_back)
        by_name = {self.binding.server_name(i.instance_id): i for i in [*serving, *launching]}
        lines = self._lines([*serving, *launching])
        steps: list[RuntimeStep] = []
        actions: list[LifecycleAction] = []
        # Reads that disagree are read again soon: the next read may well agree.
        pending = len(self.doubts) > len(self.malformed)
        rejected = tuple(self._rejection(reason) for reason in self.malformed.values())
        for line in lines:
            instance = by_name[line.name]
            if line.name in held_back:
                new_steps, row, waits = self._launch(line, instance, actions)
            else:
                new_steps, row, waits = self._keep(line, instance)
            steps.extend(new_steps)
            rows.append(row)
            pending = pending or waits
        if hold:
            rows.extend(self._held_rows(present - held_back))
            return BackendPlan(
                backend=self.binding.name,
                asg=self.binding.asg,
                held=(
                    f"'{self.group.name}' reports no serving instance while its desired "
                    f"capacity is {self.group.desired_capacity}; keeping the current servers"
                ),
                steps=tuple(steps),
                pending=pending,
                rows=tuple(rows),
                lifecycle=tuple(actions),
                rejected=rejected,
            )
        wanted = {line.name for line in lines}
        for name in sorted(present - wanted):
            new_steps, row, waits = self._leave(name)
            steps.extend(new_steps)
            rows.append(row)
            pending = pending or waits
        pending = self._terminations(actions) or pending
        return BackendPlan(
            backend=self.binding.name,
            asg=self.binding.asg,
            steps=tuple(steps),
            lines=self._file_lines([line for line in lines if line.name not in held_back], kept),
            needs_reload=self._needs_reload(lines),
            pending=pending,
            rows=tuple(rows),
            lifecycle=tuple(actions),
            rejected=rejected,
        )

    # -- instances nothing may be done about -------------------------------------------------------

    def _kept(self) -> tuple[dict[str, ConfigServer | None], list[Row]]:
        """
        The servers of the doubtful instances, each kept exactly as it is, with its file line
        (``None`` when the file has none, which is then not added either); and a held row per
        doubtful instance, whether it has a server or not.
        """
        kept: dict[str, ConfigServer | None] = {}
        rows = []
        for instance_id, doubt in self.doubts.items():
            # A malformed id makes a name that is not managed: it can have no server.
            name = self.binding.server_name(instance_id)
            running = (self.runtime or {}).get(name)
            current = self.file.get(name)
            row = _RowMaker(name, instance_id, _address_of(running, current))
            if running is None and current is None:
                rows.append(row(Change.HELD, f"{doubt}; not added"))
                continue
            kept[name] = current
            rows.append(row(Change.HELD, f"{doubt}; kept as it is"))
        return kept, rows

    def _file_lines(
        self, lines: Sequence[ServerLine], kept: Mapping[str, ConfigServer | None]
    ) -> tuple[ServerLine, ...] | None:
        """
        The managed lines the file must hold: *lines*, and the kept servers' lines unchanged,
        in the file's order. ``None`` (the file is left alone this cycle) when a kept line cannot
        be written back as it is, which only a hand-edited line can cause.
        """
        unchanged = []
        for current in (c for c in kept.values() if c is not None):
            line = _as_written(current)
            if line is None:
                return None
            unchanged.append(line)
        order = {name: index for index, name in enumerate(self.file)}
        return tuple(
            sorted([*lines, *unchanged], key=lambda line: order.get(line.name, len(order)))
        )

    def _rejection(self, reason: str) -> str:
        """The error reported for an instance refused for a malformed value."""
        return (
            f"group '{self.group.name}': {reason}; that instance is left as it is "
            "(never added, removed or cut) until AWS returns a valid value: check the AWS "
            "endpoint the controller reads (AWS_ENDPOINT_URL, any proxy on the way)"
        )

    # -- lifecycle hooks ---------------------------------------------------------------------------

    @property
    def interrupted(self) -> frozenset[str]:
        """
        Instances to drain because a Spot warning names them, if this backend wants that. A
        message is no fact: only instances of this group that DescribeInstances calls Spot
        instances can be interrupted.
        """
        if not self.binding.drain_on_spot_warning:
            return frozenset()
        return frozenset(
            i for i in self._interrupted if i in self.instances and self.instances[i].spot
        )

    def _launching(self) -> list[Instance]:
        """
        Instances held in ``Pending:Wait`` by a launch hook this backend completes: they are added
        and warmed up, but get no traffic (and no file line) before they are InService.
        """
        hook = self._hook(LAUNCHING)
        if hook is None or not self.binding.complete_lifecycle_actions or self.runtime is None:
            return []
        return [
            i
            for i in self.group.instances
            if i.lifecycle_state == LAUNCH_WAIT
            and i.ec2_state == "running"
            and i.private_ip
            and i.instance_id not in self.doubts
        ]

    def _launch(
        self, line: ServerLine, instance: Instance, actions: list[LifecycleAction]
    ) -> tuple[list[RuntimeStep], Row, bool]:
        """A launching server: warm up in drain, then complete the launch (or abandon it)."""
        assert self.runtime is not None  # noqa: S101 - _launching requires a runtime
        hook = self._hook(LAUNCHING)
        assert hook is not None  # noqa: S101 - _launching requires the hook
        row = _RowMaker(line.name, instance.instance_id, f"{line.address}:{line.port}")
        step = _StepMaker(self.binding.name, line, line.name)
        running = self.runtime.get(line.name)
        if running is None:
            added = RuntimeStep(self.binding.name, line.name, StepKind.ADD, line, hold=True)
            return [added], row(Change.WARMING, "Pending:Wait; added, warming up"), True
        if (running.address, running.port) != (line.address, line.port):
            return [step(StepKind.READDRESS)], row(Change.ADDRESS, "Pending:Wait; moved"), True
        if running.in_maintenance:
            return [step(StepKind.WARM_UP)], row(Change.WARMING, "Pending:Wait; warming up"), True
        if not running.has_check or running.check_passed:
            actions.append(self._action(instance, hook, LifecycleResult.CONTINUE))
            return [], row(Change.WARMING, "check passed; launch completed"), True
        limit = self.binding.abandon_launch_after
        if limit is not None and running.seconds_in_state >= limit:
            actions.append(self._action(instance, hook, LifecycleResult.ABANDON))
            reason = f"no passing check in {limit:g}s; launch abandoned"
            return [], row(Change.WARMING, reason), True
        status = running.check_status or "not checked yet"
        return (
            [],
            row(Change.WARMING, f"Pending:Wait; waiting for a passing check ({status})"),
            True,
        )

    def _terminations(self, actions: list[LifecycleAction]) -> bool:
        """
        Complete the terminate hook of every instance whose server is gone from HAProxy (the
        drain is over); send heartbeats while it drains. True while some drain goes on.
        """
        hook = self._hook(TERMINATING)
        if hook is None or not self.binding.complete_lifecycle_actions:
            return False
        draining = False
        for instance in self.group.instances:
            if instance.lifecycle_state != TERMINATE_WAIT or instance.instance_id in self.doubts:
                continue
            name = self.binding.server_name(instance.instance_id)
            running = (self.runtime or {}).get(name)
            if running is None and name not in self.file:
                if not self._older_workers_drained:
                    # An older worker (before a reload) may still serve it: give its sessions
                    # the drain they would have had here.
                    draining = True
                    continue
                actions.append(self._action(instance, hook, LifecycleResult.CONTINUE))
                continue
            draining = True
            if running is not None:
                heartbeat = self._action(instance, hook, LifecycleResult.HEARTBEAT)
                actions.append(
                    replace(
                        heartbeat, waited=running.seconds_in_state, timeout=hook.heartbeat_timeout
                    )
                )
        return draining

    def _hook(self, transition: str) -> LifecycleHook | None:
        """
        The hook on *transition* this backend completes: the one its settings name, else the
        group's only one. Never a guess: another system's hook is not ours to complete.
        """
        named = self.binding.launch_hook if transition == LAUNCHING else self.binding.terminate_hook
        hooks = [
            h for h in self.group.hooks if h.transition == transition and named in (None, h.name)
        ]
        return hooks[0] if len(hooks) == 1 else None

    @property
    def _older_workers_drained(self) -> bool:
        """
        No HAProxy worker from before a reload can still hold sessions that a drain would not
        have cut by now: the answering worker has run for at least ``drain_timeout`` (or its age
        is unknown).
        """
        uptime = self._worker_uptime
        return uptime is None or uptime >= self.binding.drain_timeout

    def _action(
        self, instance: Instance, hook: LifecycleHook, result: LifecycleResult
    ) -> LifecycleAction:
        return LifecycleAction(self.group.name, instance.instance_id, hook.name, result)

    # -- desired servers ---------------------------------------------------------------------------

    def _lines(self, serving: Sequence[Instance]) -> tuple[ServerLine, ...]:
        """One line per serving instance: those already in the file first, in file order."""
        ids = _IdAllocator(self.section.servers, self.all_runtime)
        by_name = {self.binding.server_name(i.instance_id): i for i in serving}
        in_file = [n for n in self.file if n in by_name]
        new = sorted(n for n in by_name if n not in self.file)
        lines = []
        for name in [*in_file, *new]:
            instance = by_name[name]
            assert instance.private_ip is not None  # noqa: S101 - serving implies an address
            lines.append(
                ServerLine(
                    name=name,
                    address=instance.private_ip,
                    port=self.binding.port,
                    server_id=ids.for_server(name, self.file.get(name), self.runtime or {}),
                    options=self.binding.server_options,
                )
            )
        return tuple(lines)

    def _keep(self, line: ServerLine, instance: Instance) -> tuple[list[RuntimeStep], Row, bool]:
        """Steps that bring a desired server to serving, its report row, and whether to wait."""
        address = f"{line.address}:{line.port}"
        row = _RowMaker(line.name, instance.instance_id, address)
        current = self.file.get(line.name)
        file_change = _file_change(current, line)
        if self.runtime is None:
            if current is None:
                return [], row(Change.ADD, "InService; added to the file"), False
            if file_change is not None:
                return [], row(*file_change), False
            return [], row(Change.UNCHANGED, "InService"), False
        running = self.runtime.get(line.name)
        step = _StepMaker(self.binding.name, line, line.name)
        if running is None:
            how = "warming up until its first check passes" if line.has_check else "ready"
            return [step(StepKind.ADD)], row(Change.ADD, f"InService; added, {how}"), line.has_check
        if (running.address, running.port) != (line.address, line.port):
            was = f"{running.address}:{running.port}"
            return [step(StepKind.READDRESS)], row(Change.ADDRESS, f"was {was}"), line.has_check
        if running.in_maintenance:
            if line.has_check:
                reason = "was in maintenance; warming up again"
                return [step(StepKind.WARM_UP)], row(Change.WARMING, reason), True
            return [step(StepKind.READY)], row(Change.ADD, "was in maintenance; ready"), False
        if running.draining:
            if running.has_check and not running.check_passed:
                status = running.check_status or "not checked yet"
                return [], row(Change.WARMING, f"waiting for a passing check ({status})"), True
            return [step(StepKind.READY)], row(Change.WARMING, "check passed; now ready"), False
        if file_change is not None:
            return [], row(*file_change), False
        return [], row(Change.UNCHANGED, "InService"), False

    # -- leaving servers ---------------------------------------------------------------------------

    def _leave(self, name: str) -> tuple[list[RuntimeStep], Row, bool]:
        """The next removal step of a managed server whose instance no longer serves."""
        instance_id = _instance_id(self.binding, name)
        instance = self.instances.get(instance_id)
        if instance is None:
            reason = "not in the group"
        else:
            reason = instance.not_serving_reason or SPOT_WARNING_REASON
        gone = instance is None or instance.gone
        running = None if self.runtime is None else self.runtime.get(name)
        address = _address_of(running, self.file.get(name))
        row = _RowMaker(name, instance_id, address)
        if running is None:
            return [], row(Change.REMOVE, f"{reason}; removed"), False
        step = _StepMaker(self.binding.name, None, name)
        timeout = self.binding.drain_timeout
        if running.in_maintenance:
            if running.idle:
                return [step(StepKind.DELETE)], row(Change.REMOVE, f"{reason}; deleted"), False
            if running.sessions and running.seconds_in_state >= timeout:
                cut = row(Change.DRAINING, "sessions outlived the drain; cutting them")
                return [step(StepKind.KILL_SESSIONS)], cut, True
            return [], row(Change.DRAINING, _drain_status(running, timeout)), True
        if running.draining and not gone:
            if running.sessions == 0 and running.queued == 0:
                return self._finish(step, row, running, f"{reason}; drained")
            if running.seconds_in_state >= timeout:
                steps = [step(StepKind.MAINT), step(StepKind.KILL_SESSIONS)]
                return steps, row(Change.DRAINING, f"drain timeout {timeout:g}s; cutting"), True
            return [], row(Change.DRAINING, _drain_status(running, timeout)), True
        if gone or timeout == 0:
            # Maintenance takes no new request; the ones in flight may still finish on a machine
            # that answers while it shuts down, so they get the drain timeout (time already
            # spent draining counts) before they are cut.
            if running.sessions == 0 and running.queued == 0:
                return self._finish(step, row, running, f"{reason}; idle")
            steps = [step(StepKind.MAINT)]
            drained = running.seconds_in_state if running.draining else 0
            if running.sessions and drained >= timeout:
                steps.append(step(StepKind.KILL_SESSIONS))
                return steps, row(Change.DRAINING, f"{reason}; maintenance, cutting"), True
            return steps, row(Change.DRAINING, f"{reason}; maintenance, requests finish"), True
        if running.sessions == 0 and running.queued == 0:
            return self._finish(step, row, running, f"{reason}; idle", drain=True)
        return [step(StepKind.DRAIN)], row(Change.DRAINING, f"{reason}; draining"), True

    @staticmethod
    def _finish(
        step: _StepMaker, row: _RowMaker, running: RuntimeServer, why: str, *, drain: bool = False
    ) -> tuple[list[RuntimeStep], Row, bool]:
        """An idle leaving server goes through drain and maintenance, then is deleted at once."""
        steps = [step(StepKind.DRAIN)] if drain else []
        steps.append(step(StepKind.MAINT))
        if running.idle_connections == 0:
            steps.append(step(StepKind.DELETE))
            return steps, row(Change.REMOVE, f"{why}; deleted"), False
        return steps, row(Change.DRAINING, f"{why}; waiting for idle connections"), True

    def _needs_reload(self, lines: Sequence[ServerLine]) -> bool:
        """With a runtime socket, only new options on an existing server need a reload."""
        if self.runtime is None:
            return False
        return any(
            line.name in self.file and self.file[line.name].options != line.options
            for line in lines
        )

    def _held_rows(self, names: Iterable[str]) -> list[Row]:
        return [
            Row(
                name,
                _instance_id(self.binding, name),
                _address_of((self.runtime or {}).get(name), self.file.get(name)),
                Change.HELD,
                "kept: group at 0 serving with desired capacity above 0",
            )
            for name in sorted(names)
        ]


class _IdAllocator:
    """
    Explicit server ids: the one a server already has, else the next one above every id in use.

    HAProxy numbers servers without an explicit id with the lowest free ids, so those never exceed
    the number of servers in the section; starting above that and above every id seen keeps the new
    id free in the file and at runtime.
    """

    def __init__(
        self, file_servers: Sequence[ConfigServer], runtime: Sequence[RuntimeServer]
    ) -> None:
        used = [s.server_id for s in file_servers if s.server_id is not None]
        used += [s.server_id for s in runtime]
        self.next = max([len(file_servers), *used], default=0) + 1

    def for_server(
        self, name: str, current: ConfigServer | None, runtime: Mapping[str, RuntimeServer]
    ) -> int:
        if name in runtime:
            return runtime[name].server_id
        if current is not None and current.server_id is not None:
            return current.server_id
        chosen = self.next
        self.next += 1
        return chosen


class _StepMaker:
    """Builds the steps of one server."""

    def __init__(self, backend: str, line: ServerLine | None, name: str) -> None:
        self.backend, self.line, self.name = backend, line, name

    def __call__(self, kind: StepKind) -> RuntimeStep:
        return RuntimeStep(self.backend, self.name, kind, self.line)


class _RowMaker:
    """Builds the report row of one server."""

    def __init__(self, name: str, instance_id: str, address: str) -> None:
        self.name, self.instance_id, self.address = name, instance_id, address

    def __call__(self, change: Change, reason: str) -> Row:
        return Row(self.name, self.instance_id, self.address, change, reason)


def _file_change(current: ConfigServer | None, line: ServerLine) -> tuple[Change, str] | None:
    """How the file's line differs from the desired one, if it does."""
    if current is None:
        return Change.ADD, "InService; written to the file"
    if (current.address, current.port) != (line.address, line.port):
        return Change.ADDRESS, f"file had {current.address}:{current.port}"
    if current.options != line.options:
        return Change.OPTIONS, "server_options changed"
    if current.server_id != line.server_id:
        return Change.OPTIONS, f"id {line.server_id} written to the file"
    return None


def attached(running: RuntimeServer) -> str:
    """What still holds a leaving server: "1 session, 0 queued"."""
    plural = "" if running.sessions == 1 else "s"
    return f"{running.sessions} session{plural}, {running.queued} queued"


def _drain_status(running: RuntimeServer, timeout: float) -> str:
    return f"draining: {attached(running)}, {running.seconds_in_state}s of {timeout:g}s"


def _as_written(server: ConfigServer) -> ServerLine | None:
    """*server*'s file line as a ``ServerLine`` meaning the same; ``None`` if none can."""
    if server.port is None:
        return None
    line = ServerLine(server.name, server.address, server.port, server.server_id, server.options)
    try:
        config_edit.line_text(line)
    except ValueError:
        return None
    return line


def _address_of(running: RuntimeServer | None, current: ConfigServer | None) -> str:
    if running is not None:
        return f"{running.address}:{running.port}"
    if current is not None:
        return f"{current.address}:{current.port}"
    return "-"


def _instance_id(binding: Binding, name: str) -> str:
    instance_id = binding.instance_of(name)
    assert instance_id is not None  # noqa: S101 - callers only pass managed names
    return instance_id
