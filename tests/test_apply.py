"""
``apply.execute`` over fakes: how one server's postponed delete bounds its later steps in the same
cycle, and where an added server starts. The commands against a real HAProxy are in
``test_haproxy_runtime.py``.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from reconciler.apply import execute
from reconciler.core import next_config
from reconciler.core.model import (
    ADMIN_FMAINT,
    BackendPlan,
    Deferral,
    Plan,
    RuntimeServer,
    RuntimeStep,
    ServerLine,
    StepKind,
)
from tests.support.worlds import ASG, BACKEND, PREFIX, World, group, instance, runtime_server


def line_of(server: RuntimeServer, *, backup: bool = False) -> ServerLine:
    """The file line of *server*, as a backup or not."""
    assert server.port is not None
    return ServerLine(
        server.name, server.address, server.port, server.server_id, ("check",), backup=backup
    )


def test_a_postponed_delete_holds_the_same_servers_add_of_the_cycle() -> None:
    """
    A server added again in its backup form (maintenance, delete, add) that still has a session
    when the delete comes: HAProxy puts the delete off, so its add is not sent (the name is still
    taken); no error, the delete is deferred to a later cycle, the server stays in maintenance,
    and the other server's step runs. The file keeps the server HAProxy still has.
    """
    moving, other = runtime_server(4, sessions=1), runtime_server(5)
    world = World(group(instance(4), instance(5)), runtime=[moving, other])
    moved = line_of(moving, backup=True)
    steps = (
        RuntimeStep(BACKEND, moving.name, StepKind.MAINT),
        RuntimeStep(BACKEND, moving.name, StepKind.DELETE),
        RuntimeStep(BACKEND, moving.name, StepKind.ADD, moved, proven=True),
        RuntimeStep(BACKEND, other.name, StepKind.DRAIN),
    )
    plan = Plan((BackendPlan(BACKEND, ASG, steps=steps, lines=(moved, line_of(other))),))
    maker = next_config.for_cycle(world.settings, world.store.read())

    outcome = execute(plan, maker, world.store, world.runtime)

    assert outcome.errors == ()
    assert outcome.deferred == (
        Deferral(
            BACKEND, moving.name, "Server still has connections attached to it, cannot remove it."
        ),
    )
    assert world.runtime.commands == [
        f"state maint {BACKEND}/{moving.name}",
        f"del {BACKEND}/{moving.name}",
        f"state drain {BACKEND}/{other.name}",
    ]
    assert world.runtime.servers[BACKEND][moving.name] == replace(
        moving, admin_state=ADMIN_FMAINT, seconds_in_state=0
    )
    assert set(world.file_servers()) == {moving.name, other.name}


@pytest.mark.parametrize(
    ("options", "proven", "hold", "state"),
    [
        (("check",), False, False, "drain"),  # waits for its first check
        (("check",), True, False, "ready"),  # its check passed under its other form
        ((), False, False, "ready"),
        (("check",), True, True, "drain"),  # its launch is not complete: held all the same
    ],
)
def test_an_add_serves_at_once_when_proven_unless_held(
    options: tuple[str, ...], proven: bool, hold: bool, state: str
) -> None:
    """Where an added server starts: drain until its check passes, or ready at once."""
    world = World(group(instance(4)))
    line = ServerLine(f"{PREFIX}i-{4:017x}", "127.0.1.4", 8080, 104, options)
    step = RuntimeStep(BACKEND, line.name, StepKind.ADD, line, hold=hold, proven=proven)
    plan = Plan((BackendPlan(BACKEND, ASG, steps=(step,), lines=(line,)),))
    maker = next_config.for_cycle(world.settings, world.store.read())

    outcome = execute(plan, maker, world.store, world.runtime)

    assert outcome.errors == ()
    assert world.runtime.commands[-1] == f"state {state} {BACKEND}/{line.name}"
    assert (f"enable health {BACKEND}/{line.name}" in world.runtime.commands) == bool(options)
