"""
Carries out a ``Plan`` through the ports: runtime steps first, then the file, then a reload if one
is needed.

Make before break: the planner lists a backend's additions before its removals and they run in
that order. The file is written after the runtime changes, without the servers HAProxy refused, so
the file never claims a server the running HAProxy does not have. A failed step stops only that
server's remaining steps; the next cycle re-plans from what HAProxy then reports. A delete HAProxy
puts off (something is still attached) is no failure, but it too ends the server's steps of the
cycle: a server added again in another form (zone routing: maintenance, delete, add) must not be
added while its old form is still there. The next file is made by the ``NextFileMaker`` the
cycle's observation built: edited in place, or rendered from a template, which also asks for a
reload when more than the servers changed. Each reload is logged at INFO with its cause
(``RELOAD_*``): a reload restarts HAProxy's workers, and the log is where an operator looks for
why one happened.

An ``add server`` that HAProxy calls a duplicate (the name or the id is taken) is no refusal: the
read the plan came from was out of date. That backend's remaining steps are skipped, its section of
the file is left as it is (never without the server's line), and the error fails the cycle, so
that the next one reads again soon. The same holds when the add's fate is unknown (the socket
failed during it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from reconciler.core.errors import ConfigError, PermanentError, ReconcilerError, TransientError
from reconciler.core.model import (
    BackendPlan,
    Deferral,
    Outcome,
    Plan,
    RuntimeStep,
    ServerLine,
    StepKind,
)
from reconciler.core.next_config import NextFile, NextFileMaker
from reconciler.ports import ConfigStore, LifecycleApi, RuntimeApi


log = logging.getLogger(__name__)
#: What caused a reload, as its log line says: the template changed more than the servers...
RELOAD_TEMPLATE = "template"
#: ... a server's options changed, which the runtime API cannot apply...
RELOAD_SERVER_OPTIONS = "server-options"
#: ... or there is no runtime socket, so every change to the servers takes a reload.
RELOAD_NO_SOCKET = "no-socket"


def execute(
    plan: Plan,
    maker: NextFileMaker,
    store: ConfigStore,
    runtime: RuntimeApi | None,
    lifecycle: LifecycleApi | None = None,
) -> Outcome:
    """
    Apply *plan*, computed from what *maker* was made from. Lifecycle actions run last, only for
    backends whose every step succeeded and only if the file was written (or needed no change).
    """
    active = [b for b in plan.backends if b.refused is None]
    runner = _StepRunner(runtime)
    if runtime is not None:  # without a runtime socket the planner emits no steps
        for backend in active:
            runner.run(backend.steps)
    lines = {
        b.backend: [line for line in b.lines if line.name not in runner.refused_adds]
        for b in active
        if b.lines is not None and b.backend not in runner.stale_reads
    }
    errors = list(runner.errors)
    new = _next_file(maker, lines, errors)
    written, reloaded = _store(store, maker, new, _plan_reload(runtime, active), errors)
    completed = 0
    if lifecycle is not None and (written or (new is not None and new.content == maker.current)):
        for backend in active:
            if backend.backend not in runner.failed_backends:
                completed += _lifecycle(backend, lifecycle, errors)
    return Outcome(
        errors=tuple(errors),
        commands=runner.commands,
        file_written=written,
        reloaded=reloaded,
        deferred=tuple(runner.deferred),
        lifecycle_calls=completed,
        stale_reads=tuple(runner.stale_reads),
    )


def _next_file(
    maker: NextFileMaker, lines: Mapping[str, Sequence[ServerLine]], errors: list[str]
) -> NextFile | None:
    """The next file, or ``None`` (the error added to *errors*) when it cannot be made."""
    try:
        return maker.next_file(lines)
    except ConfigError as exc:
        # The runtime changes stand; the file waits for a template that renders.
        errors.append(str(exc))
        return None


def _plan_reload(runtime: RuntimeApi | None, active: Sequence[BackendPlan]) -> str | None:
    """Why the plan needs a reload once the file is written (its log line's cause), if it does."""
    if runtime is None:
        return RELOAD_NO_SOCKET
    if any(b.needs_reload for b in active):
        return RELOAD_SERVER_OPTIONS
    return None


def _store(
    store: ConfigStore,
    maker: NextFileMaker,
    new: NextFile | None,
    plan_reload: str | None,
    errors: list[str],
) -> tuple[bool, bool]:
    """
    Write *new* when it changes the file, then reload when the file (*new*) or the plan
    (*plan_reload*, the cause) needs it; whether the file was written and whether HAProxy was
    reloaded.
    """
    if new is None or new.content == maker.current:
        return False, False
    try:
        store.write(maker.current, new.content)
    except PermanentError as exc:
        errors.append(str(exc))
        return False, False
    cause = RELOAD_TEMPLATE if new.needs_reload else plan_reload
    # Nothing runs from the file before template mode's first one, so there is nothing to reload.
    if cause is None or maker.bootstrapping:
        return True, False
    try:
        store.reload()
    except PermanentError as exc:
        errors.append(f"{exc} (the file was written; reload HAProxy to apply it)")
        return True, False
    # The cycle's summary counts reloads; this says why, which no server line does.
    log.info("haproxy reloaded", extra={"fields": {"cause": cause}})
    return True, True


def _lifecycle(backend: BackendPlan, lifecycle: LifecycleApi, errors: list[str]) -> int:
    calls = 0
    for action in backend.lifecycle:
        try:
            calls += lifecycle.carry_out(action)
        except ReconcilerError as exc:
            errors.append(f"{backend.backend}: {action.result.value} {action.instance_id}: {exc}")
    return calls


class _StepRunner:
    """Runs steps, one server at a time, stopping a server's steps at its first failure."""

    def __init__(self, runtime: RuntimeApi | None) -> None:
        self._runtime = runtime
        self.errors: list[str] = []
        self.deferred: list[Deferral] = []
        self.refused_adds: set[str] = set()
        self.failed_backends: set[str] = set()
        self.stale_reads: list[str] = []
        self.commands = 0

    def run(self, steps: Sequence[RuntimeStep]) -> None:
        failed: set[str] = set()
        for step in steps:
            if step.server in failed:
                continue
            try:
                self._one(step)
            except TransientError as exc:
                if step.kind is not StepKind.ADD:
                    raise
                # The name or id is taken, or the add's fate is unknown: nothing else of this
                # backend's plan can be trusted, and the server may well be serving.
                self.stale_reads.append(step.backend)
                self.failed_backends.add(step.backend)
                self.errors.append(str(exc))
                return
            except PermanentError as exc:
                failed.add(step.server)
                if step.kind is StepKind.DELETE:
                    # Put off, not failed; its later steps wait all the same (an add of its new
                    # form would find the name taken by the old one).
                    self.deferred.append(Deferral(step.backend, step.server, str(exc)))
                    continue
                if step.kind is StepKind.ADD:
                    self.refused_adds.add(step.server)
                self.failed_backends.add(step.backend)
                self.errors.append(str(exc))

    @property
    def runtime(self) -> RuntimeApi:
        assert self._runtime is not None  # noqa: S101 - run() is only called with a runtime
        return self._runtime

    def _one(self, step: RuntimeStep) -> None:
        runtime = self.runtime
        backend, server = step.backend, step.server
        if step.kind is StepKind.ADD:
            assert step.line is not None  # noqa: S101 - the planner sets it
            runtime.add_server(backend, step.line)
            self.commands += 1
            self._warm_up(step.line, backend, hold=step.hold, proven=step.proven)
        elif step.kind is StepKind.READDRESS:
            assert step.line is not None  # noqa: S101 - the planner sets it
            self._state(backend, server, "maint")
            runtime.set_address(backend, server, step.line.address, step.line.port)
            self.commands += 1
            self._warm_up(step.line, backend)
        elif step.kind is StepKind.WARM_UP:
            assert step.line is not None  # noqa: S101 - the planner sets it
            self._warm_up(step.line, backend)
        elif step.kind is StepKind.WEIGHT:
            assert step.line is not None  # noqa: S101 - the planner sets it
            assert step.line.weight is not None  # noqa: S101 - the planner sets it
            runtime.set_weight(backend, server, step.line.weight)
            self.commands += 1
        elif step.kind is StepKind.KILL_SESSIONS:
            runtime.shutdown_sessions(backend, server)
            self.commands += 1
        elif step.kind is StepKind.DELETE:
            runtime.delete_server(backend, server)
            self.commands += 1
        else:
            self._state(backend, server, _STATES[step.kind])

    def _warm_up(
        self, line: ServerLine, backend: str, *, hold: bool = False, proven: bool = False
    ) -> None:
        """
        A server with a check waits in drain for its first pass; one without serves at once,
        unless *hold* keeps it in drain (its launch is not complete). A *proven* one (added again
        in another form, its check passed just before) serves at once, check or not, unless held.
        """
        if line.has_check:
            self.runtime.enable_health(backend, line.name)
            self.commands += 1
        waits = hold or (line.has_check and not proven)
        self._state(backend, line.name, "drain" if waits else "ready")

    def _state(self, backend: str, server: str, state: str) -> None:
        self.runtime.set_state(backend, server, state)
        self.commands += 1


_STATES = {StepKind.READY: "ready", StepKind.DRAIN: "drain", StepKind.MAINT: "maint"}
