"""
One reconcile cycle: observe everything, plan, apply.

Nothing here depends on what woke the cycle: a message, a timer and ``--once`` all run the same
function, which reads AWS, the config file (with its template) and the running HAProxy afresh
every time, each once: what observing decided about the next file (the template's render, whether
a reload is due) goes on to apply with the plan. The one exception is a progress cycle, which
the loop runs while warm-ups and drains wait on HAProxy alone: it is given the AWS observation of
an earlier cycle instead of reading AWS again (the file and the runtime are read as always), and
the result carries the observation it planned from either way (``CycleResult.aws``). A failure
to read the file raises ``TransientError`` (the caller retries with backoff); a failure to read
AWS or the runtime refuses the backends it concerns in the plan, and the next cycle reads them
again.

The instances that interruption warnings named are checked against what the cycle read: a
message is no fact, and only a Spot instance of a managed group can be interrupted
(``judge_warnings``). The verdicts ride on the ``CycleResult`` for the loop to report, with what
the runtime read found of the running HAProxy (``CycleResult.haproxy``).
"""

from __future__ import annotations

from reconciler import apply
from reconciler.core import next_config, plan
from reconciler.core.errors import TransientError
from reconciler.core.model import (
    AwsObservation,
    CycleResult,
    Observation,
    Verdicts,
)
from reconciler.core.next_config import StoredConfig
from reconciler.core.settings import Settings
from reconciler.ports import Ports


def observe(
    settings: Settings, ports: Ports, interrupted: frozenset[str] = frozenset()
) -> tuple[Observation, bytes]:
    """
    Read AWS, the config file and the runtime; also return the file's bytes as read.
    *interrupted* names the instances a current Spot warning is about (the loop tracks them).
    """
    observed, maker = _observe(settings, ports, interrupted, None)
    return observed, maker.current


def _observe(
    settings: Settings, ports: Ports, interrupted: frozenset[str], aws: AwsObservation | None
) -> tuple[Observation, next_config.NextFileMaker]:
    """
    ``observe``, returning the maker of the next file the cycle's apply goes on with; AWS is
    not read when *aws* gives what an earlier read found.
    """
    maker = next_config.for_cycle(settings, ports.store.read())
    # Parsed once: the editor edits the sections the planner read.
    config = maker.config
    groups = aws if aws is not None else _read_aws(settings, ports)
    runtime = runtime_error = None
    if ports.runtime is not None and not maker.bootstrapping:
        try:
            runtime = ports.runtime.read_servers([b.name for b in settings.backends])
        except TransientError as exc:
            runtime_error = str(exc)
    return Observation(groups, config, runtime, runtime_error, interrupted), maker


def _read_aws(settings: Settings, ports: Ports) -> AwsObservation:
    """Every managed group, with the hooks of those whose backends complete lifecycle actions."""
    hooked = {b.asg for b in settings.backends if b.complete_lifecycle_actions}
    return ports.membership.read_groups(
        sorted({b.asg for b in settings.backends}), with_hooks=hooked
    )


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


def config_problems(settings: Settings, stored: StoredConfig) -> list[str]:
    """
    Problems of the config file *stored* (in template mode: of the template) that make a backend
    unmanageable, for a check before running.
    """
    sections = next_config.for_cycle(settings, stored).config
    runtime_mode = settings.haproxy.socket is not None
    found = (
        plan.section_problem(
            binding,
            sections.get(binding.name),
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
    aws: AwsObservation | None = None,
) -> CycleResult:
    """
    Observe, plan and (unless *dry_run*) apply once. Given *aws* (an earlier cycle's read), AWS
    is not read: a progress cycle, which looks at HAProxy and the file only.
    """
    observed, maker = _observe(settings, ports, interrupted, aws)
    decided = plan.compute(settings, observed)
    verdicts = judge_warnings(observed)
    running = observed.runtime
    unread = running.errors if running is not None else {}
    features = running.features if running is not None else None
    if dry_run:
        return CycleResult(decided, None, verdicts, unread, features, observed.aws)
    outcome = apply.execute(decided, maker, ports.store, ports.runtime, ports.lifecycle)
    return CycleResult(decided, outcome, verdicts, unread, features, observed.aws)
