"""
Lifecycle-hook completion: which of a group's hooks a backend completes, which instances wait
behind its launch hook, and when a terminate hook is completed. Pure.

A launching instance (``Pending:Wait``) is added and warmed up; its launch is completed once its
check passes (see ``server_steps.launching``). A leaving instance (``Terminating:Wait``) is released
only when its server is gone from HAProxy, from every backend of its group, and from any older
HAProxy worker that may still serve it; heartbeats extend the wait while it drains.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TypeVar

from reconciler.core.managed_servers import ManagedServers
from reconciler.core.model import (
    LAUNCH_WAIT,
    LAUNCHING,
    TERMINATE_WAIT,
    TERMINATING,
    BackendPlan,
    Group,
    Instance,
    LifecycleAction,
    LifecycleHook,
    LifecycleResult,
)
from reconciler.core.settings import Binding


#: A group's hook as the controller reads it, or with more of its attributes (``reconcile check``).
_Hook = TypeVar("_Hook", bound=LifecycleHook)


def hook(binding: Binding, group: Group, transition: str) -> LifecycleHook | None:
    """The hook on *transition* the backend completes among *group*'s (``completed``)."""
    return completed(binding, group.hooks, transition)


def completed(binding: Binding, hooks: Iterable[_Hook], transition: str) -> _Hook | None:
    """
    The hook of *hooks* on *transition* the backend completes: the one its settings name, else
    the only one; ``None`` when it completes none. Never a guess: another system's hook is not
    ours to complete.
    """
    if not binding.complete_lifecycle_actions:
        return None
    named = binding.launch_hook if transition == LAUNCHING else binding.terminate_hook
    found = [h for h in hooks if h.transition == transition and named in (None, h.name)]
    return found[0] if len(found) == 1 else None


def launching(
    servers: ManagedServers, group: Group, doubts: Mapping[str, str]
) -> tuple[Instance, ...]:
    """
    Instances held in ``Pending:Wait`` by a launch hook the backend completes: they are added
    and warmed up, but get no traffic (and no file line) before they are InService. Only with a
    runtime socket: without one, a server cannot be warmed up out of traffic.
    """
    if hook(servers.binding, group, LAUNCHING) is None or servers.runtime is None:
        return ()
    return tuple(
        i
        for i in group.instances
        if i.lifecycle_state == LAUNCH_WAIT
        and i.ec2_state == "running"
        and i.private_ip
        and i.instance_id not in doubts
    )


def launch(
    binding: Binding, group: Group, instance_id: str, result: LifecycleResult
) -> LifecycleAction:
    """Complete the launch of *instance_id*, one of ``launching``'s instances."""
    launch_hook = hook(binding, group, LAUNCHING)
    assert launch_hook is not None  # noqa: S101 - launching instances imply the hook
    return LifecycleAction(group.name, instance_id, launch_hook.name, result)


def terminations(
    servers: ManagedServers, group: Group, doubts: Mapping[str, str], worker_uptime: float | None
) -> tuple[tuple[LifecycleAction, ...], bool]:
    """
    Complete the terminate hook of every instance whose server is gone from HAProxy (the drain is
    over); send heartbeats while it drains. Also whether some drain goes on.
    """
    terminate_hook = hook(servers.binding, group, TERMINATING)
    if terminate_hook is None:
        return (), False
    actions = []
    draining = False
    for instance in group.instances:
        if instance.lifecycle_state != TERMINATE_WAIT or instance.instance_id in doubts:
            continue
        name = servers.binding.server_name(instance.instance_id)
        running = servers.running(name)
        release = LifecycleAction(
            group.name, instance.instance_id, terminate_hook.name, LifecycleResult.CONTINUE
        )
        if running is None and name not in servers.file:
            if _older_workers_drained(servers.binding, worker_uptime):
                actions.append(release)
            else:
                # An older worker (before a reload) may still serve it: give its sessions the
                # drain they would have had here.
                draining = True
            continue
        draining = True
        if running is not None:
            waited, timeout = running.seconds_in_state, terminate_hook.heartbeat_timeout
            actions.append(
                replace(release, result=LifecycleResult.HEARTBEAT, waited=waited, timeout=timeout)
            )
    return tuple(actions), draining


def release_when_gone_everywhere(
    plans: Sequence[BackendPlan], groups: Mapping[str, Group]
) -> tuple[BackendPlan, ...]:
    """
    One group may feed several backends: an instance leaving it is released (terminate hook
    CONTINUE) only when no backend of the group still has its server. A refused backend, whose
    servers are unknown, keeps every instance of its group waiting.
    """
    if not any(a.result is LifecycleResult.CONTINUE for p in plans for a in p.lifecycle):
        # Nothing to release: the rows of every backend need not be looked at.
        return tuple(plans)
    present = {(p.asg, row.instance_id) for p in plans for row in p.rows}
    unknown = {p.asg for p in plans if p.refused is not None}

    def too_soon(plan: BackendPlan, action: LifecycleAction) -> bool:
        group = groups.get(plan.asg)
        leaving = group is not None and any(
            i.instance_id == action.instance_id and i.lifecycle_state == TERMINATE_WAIT
            for i in group.instances
        )
        still_served = plan.asg in unknown or (plan.asg, action.instance_id) in present
        return action.result is LifecycleResult.CONTINUE and leaving and still_served

    return tuple(
        replace(p, lifecycle=tuple(a for a in p.lifecycle if not too_soon(p, a))) for p in plans
    )


def _older_workers_drained(binding: Binding, worker_uptime: float | None) -> bool:
    """
    No HAProxy worker from before a reload can still hold sessions that a drain would not have
    cut by now: the answering worker has run for at least ``drain_timeout`` (or its age is
    unknown).
    """
    return worker_uptime is None or worker_uptime >= binding.drain_timeout
