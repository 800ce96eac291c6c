"""
One reconcile cycle: observe everything, plan, apply.

Nothing here depends on what woke the cycle: a message, a timer and ``--once`` all run the same
function, which reads AWS, the config file and the running HAProxy afresh every time. A failure to
read the file or to reach AWS at all raises ``TransientError`` (the caller retries with backoff); a
failure that concerns some backends only refuses those backends in the plan.

The instances that interruption warnings named are checked against what the cycle read: a
message is no fact, and only a Spot instance of a managed group can be interrupted
(``judge_warnings``). The verdicts ride on the ``CycleResult`` for the loop to report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

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
    outcome: apply.Outcome | None
    #: What the read says about the instances interruption warnings named.
    interruptions: Verdicts = field(default_factory=Verdicts)
    #: Backends whose servers the runtime API did not give completely, with the reason.
    runtime_read_errors: Mapping[str, str] = field(default_factory=dict)

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


def judge_warnings(observed: Observation) -> Verdicts:
    """Judge the instances that *observed* was told are interrupted, from what it read. Pure."""
    described = {
        instance.instance_id: instance
        for group in observed.aws.groups.values()
        for instance in group.instances
        # Not described (eventual consistency): nothing is known about its kind yet.
        if instance.ec2_state is not None
    }
    listed = {i.instance_id for g in observed.aws.groups.values() for i in g.instances}
    verified = frozenset(i for i in observed.interrupted if i in described and described[i].spot)
    not_spot = frozenset(
        i for i in observed.interrupted if i in described and not described[i].spot
    )
    # An unreadable group might hold any instance.
    unmanaged = frozenset(() if observed.aws.errors else observed.interrupted - listed)
    return Verdicts(verified, unmanaged, not_spot)


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
    verdicts = judge_warnings(observed)
    unread = observed.runtime.errors if observed.runtime is not None else {}
    if dry_run:
        return CycleResult(decided, None, verdicts, unread)
    outcome = apply.execute(settings, decided, data, ports.store, ports.runtime, ports.lifecycle)
    return CycleResult(decided, outcome, verdicts, unread)
