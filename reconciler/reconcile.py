"""
One reconcile cycle: observe everything, plan, apply.

Nothing here depends on what woke the cycle: a message, a timer and ``--once`` all run the same
function, which reads AWS, the config file and the running HAProxy afresh every time. A failure to
read the file or to reach AWS at all raises ``TransientError`` (the caller retries with backoff); a
failure that concerns some backends only refuses those backends in the plan.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler import apply, plan
from reconciler.errors import TransientError
from reconciler.haproxy import cfgparse, render
from reconciler.model import ConfigBackend, Observation, Plan
from reconciler.ports import ConfigStore, LifecycleApi, MembershipSource, RuntimeApi
from reconciler.settings import Settings


@dataclass(frozen=True)
class Ports:
    """The adapters a cycle works through."""

    membership: MembershipSource
    store: ConfigStore
    #: ``None`` when no runtime socket is configured.
    runtime: RuntimeApi | None
    #: ``None`` when no backend completes lifecycle actions.
    lifecycle: LifecycleApi | None = None


@dataclass(frozen=True)
class CycleResult:
    """What one cycle decided and did."""

    plan: Plan
    #: ``None`` for a dry run.
    outcome: apply.Outcome | None

    @property
    def errors(self) -> tuple[str, ...]:
        """Every refusal and failure, one message each."""
        refused = tuple(f"{b.backend}: {b.refused}" for b in self.plan.refused)
        return refused + (self.outcome.errors if self.outcome else ())

    @property
    def ok(self) -> bool:
        """Every backend was read and every change applied."""
        return not self.errors

    @property
    def pending(self) -> bool:
        """Warm-ups, drains or postponed deletions remain for a later cycle."""
        return self.plan.pending or bool(self.outcome and self.outcome.deferred)


def observe(
    settings: Settings, ports: Ports, interrupted: frozenset[str] = frozenset()
) -> tuple[Observation, bytes]:
    """
    Read AWS, the config file and the runtime; also return the file bytes the plan edits.
    *interrupted* names the instances a current Spot warning is about (the loop tracks them).
    """
    data = ports.store.read()
    document = cfgparse.parse(render.for_settings(settings).baseline(data))
    config: dict[str, ConfigBackend] = {}
    for binding in settings.backends:
        section = cfgparse.backend(document, binding.name)
        if section is not None:
            config[binding.name] = section
    hooked = {b.asg for b in settings.backends if b.complete_lifecycle_actions}
    groups = ports.membership.read_groups(
        sorted({b.asg for b in settings.backends}), with_hooks=hooked
    )
    runtime = runtime_error = None
    if ports.runtime is not None and not render.bootstrapping(settings, data):
        try:
            runtime = ports.runtime.read_servers([b.name for b in settings.backends])
        except TransientError as exc:
            runtime_error = str(exc)
    return Observation(groups, config, runtime, runtime_error, interrupted), data


def config_problems(settings: Settings, data: bytes) -> list[str]:
    """
    Problems of the config file (in template mode: of the template) that make a backend
    unmanageable, for a check before running.
    """
    document = cfgparse.parse(render.for_settings(settings).baseline(data))
    runtime_mode = settings.haproxy.socket is not None
    found = (
        plan.section_problem(
            binding,
            cfgparse.backend(document, binding.name),
            runtime_mode,
            str(settings.haproxy.template or settings.haproxy.config),
        )
        for binding in settings.backends
    )
    return [problem for problem in found if problem is not None]


def run_cycle(
    settings: Settings,
    ports: Ports,
    *,
    dry_run: bool = False,
    interrupted: frozenset[str] = frozenset(),
) -> CycleResult:
    """Observe, plan and (unless *dry_run*) apply once."""
    observed, data = observe(settings, ports, interrupted)
    decided = plan.compute(settings, observed)
    if dry_run:
        return CycleResult(decided, None)
    outcome = apply.execute(settings, decided, data, ports.store, ports.runtime, ports.lifecycle)
    return CycleResult(decided, outcome)
