"""
The runtime step machine: the next step of every managed server, with its report row. Pure.

A step is derived only from what HAProxy reports now, so a restarted controller picks up a warm-up
or a drain exactly where it stands:

======================================  ==========================================
observed                                next step
======================================  ==========================================
serving, absent                         ADD (add, enable health, drain or ready)
serving, other address                  READDRESS (maint, set addr, warm up again)
serving, in maintenance                 WARM_UP (enable health, drain) or READY
serving, draining, check not passed     wait (warming up)
serving, draining, check passed         READY
serving, weight not the desired one    WEIGHT (with the step above, if any)
serving, in the other backup form       MAINT, DELETE, ADD in the new form (ready at
(zone routing), unused                  once when its check had passed)
serving, in the other backup form,      DRAIN first, then as unused; sessions that
in use                                  outlive the drain timeout are cut
launching (behind a launch hook)        as serving, but never READY: the launch is
                                        completed once the check passes
leaving, ready                          DRAIN (MAINT when its instance is gone)
leaving, draining, unused or timed out  MAINT (+ KILL_SESSIONS when timed out)
leaving, in maintenance, timed out      KILL_SESSIONS
leaving, in maintenance, unused         DELETE
doubtful                                nothing: kept exactly as it is
======================================  ==========================================

An instance is *gone* when EC2 says it is shutting down or terminated, or it left its group: its
server goes straight to maintenance, which takes no new request, but the requests in flight may
finish within the drain timeout (an instance may answer while it shuts down); only then are they
cut. A drain timeout of 0 cuts at once.

A server is *unused* when it has no session and no queued request. Its idle connections (kept
open for reuse) do not hold the delete back: HAProxy's answer decides. 3.0 closes them itself and
deletes the server; 2.6 refuses while it has any (``Server still has connections attached to
it``), which apply takes as a deferral retried next cycle, no error. What the planner reads could
not decide it anyway: ``show stat`` ``idle_conn_cur`` leaves out the idle connections of the
"safe" list, which 2.6's ``del server`` counts too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from reconciler.core import file_lines
from reconciler.core.managed_servers import ManagedServers, RowMaker, address, points_at
from reconciler.core.model import (
    Change,
    ConfigServer,
    Instance,
    LifecycleResult,
    Row,
    RuntimeServer,
    RuntimeStep,
    ServerLine,
    StepKind,
)


#: Why a serving instance is drained while a Spot interruption warning names it.
SPOT_WARNING_REASON = "Spot interruption warning"


@dataclass(frozen=True, slots=True)
class Move:
    """One server's part of a cycle."""

    steps: tuple[RuntimeStep, ...]
    row: Row
    #: A later cycle must look again: a warm-up or a drain is under way.
    waits: bool
    #: For a launching server: how its launch hook is completed this cycle, if it is.
    launch: LifecycleResult | None = None


@dataclass(frozen=True)
class Rezoning:
    """What zone routing says about the servers of one backup form, this cycle."""

    #: Why the lines are in that form (for the rows of the servers changing into it).
    reason: str
    #: Some desired active server runs active, usable and in place: the traffic of a server
    #: drained to become a backup has somewhere to go.
    carried: bool


def serving(
    servers: ManagedServers, line: ServerLine, instance: Instance, zone: Rezoning | None = None
) -> Move:
    """
    The next step that brings a serving instance's server to ready in its line's form (weight,
    backup), and its line in place. *zone* is zone routing's view of the line's backup form;
    ``None`` without zone routing.
    """
    settled = in_place(servers, line, instance)
    if settled is not None:
        return Move((), settled, False)
    row = RowMaker(line.name, instance.instance_id, address(line))
    running = servers.running(line.name)
    if servers.runtime is None:
        # Not in the file either (``in_place``).
        return Move((), row(Change.ADD, "InService; added to the file"), False)
    step = _Steps(servers.binding.name, line.name, line)
    if running is None:
        how = "warming up until its first check passes" if line.has_check else "ready"
        return Move(step(StepKind.ADD), row(Change.ADD, f"InService; added, {how}"), line.has_check)
    if zone is not None and running.backup != line.backup:
        return reformed(servers, line, running, row, zone)
    return _weighted(_brought_up(servers, line, instance, running, row), running, line)


def _brought_up(
    servers: ManagedServers,
    line: ServerLine,
    instance: Instance,
    running: RuntimeServer,
    row: RowMaker,
) -> Move:
    """``serving`` for a server that runs in its line's backup form."""
    step = _Steps(servers.binding.name, line.name, line)
    if not points_at(running, line):
        was = row(Change.ADDRESS, f"was {address(running)}")
        return Move(step(StepKind.READDRESS), was, line.has_check)
    if running.in_maintenance:
        if line.has_check:
            reason = "was in maintenance; warming up again"
            return Move(step(StepKind.WARM_UP), row(Change.WARMING, reason), True)
        return Move(step(StepKind.READY), row(Change.ADD, "was in maintenance; ready"), False)
    if running.draining:
        if running.has_check and not running.check_passed:
            waiting = f"waiting for a passing check ({awaited_check(running)})"
            return Move((), row(Change.WARMING, waiting), True)
        return Move(step(StepKind.READY), row(Change.WARMING, "check passed; now ready"), False)
    return Move((), _as_in_file(servers, line, instance), False)


def _weighted(move: Move, running: RuntimeServer, line: ServerLine) -> Move:
    """*move*, which also sets the weight *line* calls for when *running* has another one."""
    if line.weight is None or running.weight == line.weight:
        return move
    weight = RuntimeStep(running.backend, line.name, StepKind.WEIGHT, line)
    row = move.row
    if not move.steps and not move.waits:
        reason = f"weight {running.weight} -> {line.weight}"
        row = Row(row.server, row.instance_id, row.address, Change.WEIGHT, reason)
    return Move((weight, *move.steps), row, move.waits, move.launch)


def reformed(
    servers: ManagedServers, line: ServerLine, running: RuntimeServer, row: RowMaker, zone: Rezoning
) -> Move:
    """
    A running server in the other backup form than *line*'s, which zone routing calls for:
    HAProxy cannot turn a server into a backup or back at runtime, so it is deleted and added
    again in the new form. Unused, that happens at once, and the server is ready at once when it
    was up (a check that fails from then on takes it down as before). In use, an active server
    becoming a backup drains first (its traffic moves to the others at once), and sessions that
    outlive the drain timeout are cut, as for a leaving server; but only while another active
    server serves in place (``Rezoning.carried``), never draining the servers that carry every
    request. A backup in use carries the traffic no active server can: it stays until unused.
    """
    step = _Steps(servers.binding.name, line.name)
    timeout = servers.binding.drain_timeout
    if unattached(running):
        return _readded(line, running, row, zone.reason)
    held = running.draining or running.in_maintenance
    if not held and not (line.backup and zone.carried):
        waits = "once it is unused" if line.backup else "once the backups are unused"
        return Move((), row(Change.ZONE, f"{zone.reason}; {waits}"), True)
    if (held and running.seconds_in_state >= timeout) or timeout == 0:
        kinds = () if running.in_maintenance else (StepKind.MAINT,)
        cutting = row(Change.ZONE, f"{zone.reason}; drain timeout {timeout:g}s, cutting")
        return Move(step(*kinds, StepKind.KILL_SESSIONS), cutting, True)
    if held:
        status = f"{attached(running)}, {running.seconds_in_state}s of {timeout:g}s"
        return Move((), row(Change.ZONE, f"{zone.reason}; draining first: {status}"), True)
    return Move(step(StepKind.DRAIN), row(Change.ZONE, f"{zone.reason}; draining first"), True)


def _readded(line: ServerLine, running: RuntimeServer, row: RowMaker, why: str) -> Move:
    """An unused server deleted and added again in *line*'s form, ready at once if it was up."""
    # Up, and serving (its checks keep it up) or past its warm-up's check.
    proven = (
        points_at(running, line)
        and running.op_state == 2
        and not running.in_maintenance
        and (running.admin_state == 0 or not running.has_check or running.check_passed)
    )
    added = RuntimeStep(running.backend, line.name, StepKind.ADD, line, proven=proven)
    first = () if running.in_maintenance else (StepKind.MAINT,)
    warms = line.has_check and not proven
    how = "warming up until its check passes" if warms else "ready"
    steps = (*_Steps(running.backend, line.name)(*first, StepKind.DELETE), added)
    return Move(steps, row(Change.ZONE, f"{why}; {how}"), warms)


def in_place(servers: ManagedServers, line: ServerLine, instance: Instance) -> Row | None:
    """
    The row of a serving instance's server that needs nothing at runtime (only its file line may
    differ): it runs ready at *line*'s address, or the runtime is not read and the file has it.
    ``None`` when ``serving`` must decide a step.

    Most servers of a large backend are in place, with the very line the file has: they cost
    this one call and their row (``points_at`` and ``file_lines.change`` are spelled out here, as
    a cycle of 10,000 servers would pay 40,000 more calls for them).
    """
    current = servers.file.get(line.name)
    if servers.runtime is None:
        if current is None:
            return None
    else:
        running = servers.runtime.get(line.name)
        if (
            running is None
            or running.admin_state != 0
            or running.address != line.address
            or running.port != line.port
            or (line.weight is not None and running.weight != line.weight)
            or (running.backup != line.backup and servers.binding.zone_routing)
        ):
            return None
    if (
        current is not None
        and current.address == line.address
        and current.port == line.port
        and current.options == line.file_options
        and current.server_id == line.server_id
    ):
        where = f"{line.address}:{line.port}"
        return Row(line.name, instance.instance_id, where, Change.UNCHANGED, "InService")
    return _as_in_file(servers, line, instance)


def launching(servers: ManagedServers, line: ServerLine, instance: Instance) -> Move:
    """
    A server whose instance waits behind a launch hook: added and warmed up in drain (never made
    ready here), then its launch is completed once its check passes, or abandoned when it has not
    passed within ``abandon_launch_after``.
    """
    row = RowMaker(line.name, instance.instance_id, address(line))
    step = _Steps(servers.binding.name, line.name, line)
    running = servers.running(line.name)
    if running is None:
        added = RuntimeStep(servers.binding.name, line.name, StepKind.ADD, line, hold=True)
        return Move((added,), row(Change.WARMING, "Pending:Wait; added, warming up"), True)
    if not points_at(running, line):
        return Move(step(StepKind.READDRESS), row(Change.ADDRESS, "Pending:Wait; moved"), True)
    if running.in_maintenance:
        warming = row(Change.WARMING, "Pending:Wait; warming up")
        return Move(step(StepKind.WARM_UP), warming, True)
    if not running.has_check or running.check_passed:
        completed = row(Change.WARMING, "check passed; launch completed")
        return Move((), completed, True, LifecycleResult.CONTINUE)
    limit = servers.binding.abandon_launch_after
    if limit is not None and running.seconds_in_state >= limit:
        abandoned = row(Change.WARMING, f"no passing check in {limit:g}s; launch abandoned")
        return Move((), abandoned, True, LifecycleResult.ABANDON)
    waiting = f"Pending:Wait; waiting for a passing check ({awaited_check(running)})"
    return Move((), row(Change.WARMING, waiting), True)


def leaving(servers: ManagedServers, name: str, instance: Instance | None) -> Move:
    """The next removal step of a managed server whose *instance* no longer serves."""
    reason = leaving_reason(instance)
    row = servers.row_of(name)
    running = servers.running(name)
    if running is None:
        return Move((), row(Change.REMOVE, f"{reason}; removed"), False)
    removal = _Removal(
        _Steps(servers.binding.name, name), row, running, reason, servers.binding.drain_timeout
    )
    gone = instance is None or instance.gone
    if running.in_maintenance:
        return removal.in_maintenance()
    if running.draining and not gone:
        return removal.draining()
    if gone or removal.timeout == 0:
        return removal.at_once()
    return removal.start()


def leaving_reason(instance: Instance | None) -> str:
    """Why the server of a member of the group (or of an instance that left it) must go."""
    if instance is None:
        return "not in the group"
    # An instance that would serve is only left out because of a Spot interruption warning.
    return instance.not_serving_reason or SPOT_WARNING_REASON


def kept_as_is(
    servers: ManagedServers, doubts: Mapping[str, str]
) -> tuple[dict[str, ConfigServer | None], tuple[Move, ...]]:
    """
    The servers of the doubtful instances, each kept exactly as it is, with its file line
    (``None`` when the file has none, which is then not added either); and a held row per
    doubtful instance, whether it has a server or not.
    """
    kept: dict[str, ConfigServer | None] = {}
    moves = []
    for instance_id, doubt in doubts.items():
        # A malformed id makes a name that is not managed: it can have no server.
        name = servers.binding.server_name(instance_id)
        row = servers.row_of(name, instance_id)
        current = servers.file.get(name)
        if servers.running(name) is None and current is None:
            moves.append(Move((), row(Change.HELD, f"{doubt}; not added"), False))
            continue
        kept[name] = current
        moves.append(Move((), row(Change.HELD, f"{doubt}; kept as it is"), False))
    return kept, tuple(moves)


def held(servers: ManagedServers, names: Iterable[str]) -> tuple[Move, ...]:
    """Leaving servers kept as they are while their group has no serving instance."""
    reason = "kept: group at 0 serving with desired capacity above 0"
    return tuple(
        Move((), servers.row_of(name)(Change.HELD, reason), False) for name in sorted(names)
    )


def attached(running: RuntimeServer) -> str:
    """What still holds a leaving server: "1 session, 0 queued"."""
    plural = "" if running.sessions == 1 else "s"
    return f"{running.sessions} session{plural}, {running.queued} queued"


def awaited_check(running: RuntimeServer) -> str:
    """The status of the check a warming server waits on to pass."""
    return running.check_status or "not checked yet"


@dataclass(frozen=True)
class _Steps:
    """Builds the steps of one server."""

    backend: str
    name: str
    line: ServerLine | None = None

    def __call__(self, *kinds: StepKind) -> tuple[RuntimeStep, ...]:
        return tuple(RuntimeStep(self.backend, self.name, kind, self.line) for kind in kinds)


@dataclass(frozen=True)
class _Removal:
    """The removal of a leaving server that still runs, from the state HAProxy reports."""

    step: _Steps
    row: RowMaker
    running: RuntimeServer
    reason: str
    timeout: float

    def in_maintenance(self) -> Move:
        """Deleted once unused; sessions that outlived the drain are cut."""
        running = self.running
        if unattached(running):
            return Move(self.step(StepKind.DELETE), self._row_removed(self.reason), False)
        if running.sessions and running.seconds_in_state >= self.timeout:
            cut = self.row(Change.DRAINING, "sessions outlived the drain; cutting them")
            return Move(self.step(StepKind.KILL_SESSIONS), cut, True)
        return Move((), self._row_draining(), True)

    def draining(self) -> Move:
        """Drained once no session or request is left; cut at the drain timeout."""
        if unattached(self.running):
            return self._finish(f"{self.reason}; drained")
        if self.running.seconds_in_state >= self.timeout:
            cutting = self.row(Change.DRAINING, f"drain timeout {self.timeout:g}s; cutting")
            return Move(self.step(StepKind.MAINT, StepKind.KILL_SESSIONS), cutting, True)
        return Move((), self._row_draining(), True)

    def at_once(self) -> Move:
        """
        Straight to maintenance: the instance is gone, or the drain timeout is 0. Maintenance
        takes no new request; the ones in flight may still finish on a machine that answers while
        it shuts down, so they get the drain timeout (time already spent draining counts) before
        they are cut.
        """
        running = self.running
        if unattached(running):
            return self._finish(f"{self.reason}; idle")
        drained = running.seconds_in_state if running.draining else 0
        if running.sessions and drained >= self.timeout:
            cutting = self.row(Change.DRAINING, f"{self.reason}; maintenance, cutting")
            return Move(self.step(StepKind.MAINT, StepKind.KILL_SESSIONS), cutting, True)
        finishing = self.row(Change.DRAINING, f"{self.reason}; maintenance, requests finish")
        return Move(self.step(StepKind.MAINT), finishing, True)

    def start(self) -> Move:
        """A ready server starts to drain."""
        if unattached(self.running):
            return self._finish(f"{self.reason}; idle", drain=True)
        draining = self.row(Change.DRAINING, f"{self.reason}; draining")
        return Move(self.step(StepKind.DRAIN), draining, True)

    def _finish(self, why: str, *, drain: bool = False) -> Move:
        """An unused leaving server goes through drain and maintenance, then is deleted at once."""
        kinds = (StepKind.DRAIN, StepKind.MAINT) if drain else (StepKind.MAINT,)
        return Move(self.step(*kinds, StepKind.DELETE), self._row_removed(why), False)

    def _row_removed(self, why: str) -> Row:
        """Deleted; idle connections are named, as HAProxy may keep the server while they last."""
        idle = self.running.idle_connections
        if idle == 0:
            return self.row(Change.REMOVE, f"{why}; deleted")
        return self.row(
            Change.REMOVE, f"{why}; deleted, or kept while idle connections last ({idle})"
        )

    def _row_draining(self) -> Row:
        status = f"{attached(self.running)}, {self.running.seconds_in_state}s of {self.timeout:g}s"
        return self.row(Change.DRAINING, f"draining: {status}")


def _as_in_file(servers: ManagedServers, line: ServerLine, instance: Instance) -> Row:
    """The row of a server in place at runtime (or not read there): its file line may differ."""
    current = servers.file.get(line.name)
    found = file_lines.change(current, line, servers.binding)
    change, reason = found or (Change.UNCHANGED, "InService")
    return Row(line.name, instance.instance_id, address(line), change, reason)


def unattached(running: RuntimeServer) -> bool:
    """Unused: no session and no queued request (idle connections aside: HAProxy decides)."""
    return running.sessions == 0 and running.queued == 0
