"""
The planner's parts one at a time: the runtime step machine row by row of the table in
``reconciler.core.server_steps``, the server ids of ``file_lines`` and the hook choice of
``hook_actions``. ``tests/test_planning.py`` explores whole backends; here each rule is shown
alone, on one server.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from reconciler.core import file_lines, hook_actions, server_steps
from reconciler.core.managed_servers import ManagedServers
from reconciler.core.model import (
    ADMIN_FDRAIN,
    ADMIN_FMAINT,
    CHECK_CONFIGURED,
    CHECK_ENABLED,
    CHECK_RESULT_PASSED,
    LAUNCHING,
    TERMINATING,
    Change,
    ConfigServer,
    Group,
    Instance,
    LifecycleHook,
    LifecycleResult,
    RuntimeServer,
    ServerLine,
    StepKind,
)
from reconciler.core.settings import Binding


BINDING = Binding(
    name="api",
    asg="api-asg",
    port=8080,
    server_prefix="api-",
    server_options=("check",),
    drain_timeout=5,
)
INSTANCE_ID = "i-00000000000000001"
NAME = f"api-{INSTANCE_ID}"
LINE = ServerLine(NAME, "127.0.1.1", 8080, 101, ("check",))
SERVING = Instance(INSTANCE_ID, "InService", "Healthy", "running", "127.0.1.1")
LEAVING = replace(SERVING, lifecycle_state="Terminating")
GONE = replace(LEAVING, ec2_state="shutting-down")
LAUNCH_WAIT = replace(SERVING, lifecycle_state="Pending:Wait")

READY_SERVER = RuntimeServer(
    backend="api",
    name=NAME,
    server_id=101,
    address="127.0.1.1",
    port=8080,
    op_state=2,
    admin_state=0,
    check_state=CHECK_CONFIGURED | CHECK_ENABLED,
    check_result=CHECK_RESULT_PASSED,
    seconds_in_state=1,
)
DRAINING = replace(READY_SERVER, admin_state=ADMIN_FDRAIN)
IN_MAINTENANCE = replace(READY_SERVER, admin_state=ADMIN_FMAINT)
NOT_CHECKED = 0


def _servers(*running: RuntimeServer, binding: Binding = BINDING) -> ManagedServers:
    return ManagedServers.of(binding, [], running)


def _kinds(move: server_steps.Move) -> list[StepKind]:
    return [step.kind for step in move.steps]


@pytest.mark.parametrize(
    ("running", "steps", "waits"),
    [
        pytest.param(None, [StepKind.ADD], True, id="absent"),
        pytest.param(
            replace(READY_SERVER, address="127.0.1.2"),
            [StepKind.READDRESS],
            True,
            id="other address",
        ),
        pytest.param(IN_MAINTENANCE, [StepKind.WARM_UP], True, id="in maintenance"),
        pytest.param(
            replace(DRAINING, check_result=NOT_CHECKED), [], True, id="draining, check not passed"
        ),
        pytest.param(DRAINING, [StepKind.READY], False, id="draining, check passed"),
        pytest.param(READY_SERVER, [], False, id="ready"),
    ],
)
def test_a_serving_instance_brings_its_server_to_ready(
    running: RuntimeServer | None, steps: list[StepKind], waits: bool
) -> None:
    servers = _servers() if running is None else _servers(running)
    move = server_steps.serving(servers, LINE, SERVING)
    assert (_kinds(move), move.waits) == (steps, waits)


@pytest.mark.parametrize(
    ("running", "instance", "steps", "change"),
    [
        pytest.param(
            replace(READY_SERVER, sessions=1),
            LEAVING,
            [StepKind.DRAIN],
            Change.DRAINING,
            id="ready",
        ),
        pytest.param(
            replace(READY_SERVER, sessions=1), GONE, [StepKind.MAINT], Change.DRAINING, id="gone"
        ),
        pytest.param(
            READY_SERVER,
            LEAVING,
            [StepKind.DRAIN, StepKind.MAINT, StepKind.DELETE],
            Change.REMOVE,
            id="ready and idle",
        ),
        pytest.param(
            replace(DRAINING, sessions=1), LEAVING, [], Change.DRAINING, id="draining, in time"
        ),
        pytest.param(
            DRAINING,
            LEAVING,
            [StepKind.MAINT, StepKind.DELETE],
            Change.REMOVE,
            id="draining, idle",
        ),
        pytest.param(
            replace(DRAINING, sessions=1, seconds_in_state=5),
            LEAVING,
            [StepKind.MAINT, StepKind.KILL_SESSIONS],
            Change.DRAINING,
            id="draining, timed out",
        ),
        pytest.param(
            replace(IN_MAINTENANCE, sessions=1, seconds_in_state=5),
            None,
            [StepKind.KILL_SESSIONS],
            Change.DRAINING,
            id="in maintenance, timed out",
        ),
        pytest.param(IN_MAINTENANCE, None, [StepKind.DELETE], Change.REMOVE, id="maint, idle"),
    ],
)
def test_a_leaving_server_is_drained_then_deleted(
    running: RuntimeServer, instance: Instance | None, steps: list[StepKind], change: Change
) -> None:
    move = server_steps.leaving(_servers(running), NAME, instance)
    assert (_kinds(move), move.row.change) == (steps, change)
    assert move.waits is (change is Change.DRAINING)


def test_a_launching_server_is_added_held_in_drain() -> None:
    move = server_steps.launching(_servers(), LINE, LAUNCH_WAIT)
    assert [(s.kind, s.hold) for s in move.steps] == [(StepKind.ADD, True)]
    assert move.launch is None


@pytest.mark.parametrize(
    ("running", "launch"),
    [
        pytest.param(DRAINING, LifecycleResult.CONTINUE, id="check passed"),
        pytest.param(replace(DRAINING, check_result=NOT_CHECKED), None, id="not passed yet"),
        pytest.param(
            replace(DRAINING, check_result=NOT_CHECKED, seconds_in_state=60),
            LifecycleResult.ABANDON,
            id="not passed in time",
        ),
    ],
)
def test_a_launch_completes_on_a_passing_check_only(
    running: RuntimeServer, launch: LifecycleResult | None
) -> None:
    binding = replace(BINDING, complete_lifecycle_actions=True, abandon_launch_after=60)
    move = server_steps.launching(_servers(running, binding=binding), LINE, LAUNCH_WAIT)
    assert (move.steps, move.launch) == ((), launch)


def test_a_doubtful_server_is_kept_as_it_is_and_a_missing_one_not_added() -> None:
    other = "i-00000000000000002"
    kept, moves = server_steps.kept_as_is(
        _servers(READY_SERVER), {INSTANCE_ID: "reads disagree", other: "reads disagree"}
    )
    assert kept == {NAME: None}
    assert [(m.steps, m.row.change, m.row.reason) for m in moves] == [
        ((), Change.HELD, "reads disagree; kept as it is"),
        ((), Change.HELD, "reads disagree; not added"),
    ]


def test_new_server_ids_start_above_every_id_in_use() -> None:
    file_servers = [ConfigServer(f"s{i}", "127.0.0.1", 80, None, (), i) for i in range(3)]
    assert file_lines.first_free_id(file_servers, []) == 4
    assert file_lines.first_free_id(file_servers, [replace(READY_SERVER, server_id=9)]) == 10


def test_a_new_line_takes_the_id_its_running_server_has() -> None:
    lines = file_lines.desired(_servers(READY_SERVER), [SERVING], first_free=500)
    assert [line.server_id for line in lines] == [READY_SERVER.server_id]
    assert [line.server_id for line in file_lines.desired(_servers(), [SERVING], 500)] == [500]


@pytest.mark.parametrize(
    ("named", "hooks", "chosen"),
    [
        pytest.param(None, ["only"], "only", id="the group's only hook"),
        pytest.param(None, ["one", "two"], None, id="never a guess"),
        pytest.param("two", ["one", "two"], "two", id="the named hook"),
        pytest.param("three", ["one", "two"], None, id="a named hook the group lacks"),
    ],
)
def test_the_hook_completed_is_the_named_one_or_the_only_one(
    named: str | None, hooks: list[str], chosen: str | None
) -> None:
    binding = replace(BINDING, complete_lifecycle_actions=True, terminate_hook=named)
    group = Group(
        "api-asg",
        1,
        (SERVING,),
        (
            LifecycleHook("launch", LAUNCHING, 300),
            *(LifecycleHook(name, TERMINATING, 300) for name in hooks),
        ),
    )
    found = hook_actions.hook(binding, group, TERMINATING)
    assert (found.name if found else None) == chosen
