"""
Worlds for tests of the planner and of whole cycles over fakes: one ``api`` backend bound to group
``api-asg``, a config file with a hand-written backup server, and ``World`` wiring the fakes of
``harness.fakes`` into ports; ``worlds`` is the hypothesis strategy of arbitrary starting states.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from harness.fakes import FakeLifecycle, FakeMembership, FakeRuntime, FakeStore
from reconciler.core import config_parse
from reconciler.core.model import (
    ADMIN_FDRAIN,
    ADMIN_FMAINT,
    CHECK_CONFIGURED,
    CHECK_ENABLED,
    CHECK_RESULT_PASSED,
    BackendPlan,
    Change,
    Group,
    Instance,
    RuntimeServer,
)
from reconciler.core.settings import AwsSettings, Binding, HAProxySettings, Settings
from reconciler.cycle import run_cycle
from reconciler.ports import Ports


BACKEND = "api"
ASG = "api-asg"
PREFIX = "api-"
CONFIG = b"""global
    maxconn 100

defaults
    mode http
    timeout connect 1s

backend api
    balance roundrobin
    server maintenance-page 127.0.0.9:8080 backup # hand-written, never touched

frontend fe
    bind 127.0.0.1:8000
    default_backend api
"""
UNMANAGED_LINE = (
    b"    server maintenance-page 127.0.0.9:8080 backup # hand-written, never touched\n"
)


def make_settings(
    *, socket: bool = True, options: str = "check inter 1s", **binding: Any
) -> Settings:
    """Settings with one backend bound to one group; *binding* overrides Binding fields."""
    return Settings(
        aws=AwsSettings(region="eu-west-1"),
        haproxy=HAProxySettings(
            config=Path("haproxy.cfg"), socket=Path("admin.sock") if socket else None
        ),
        backends=(
            Binding(
                name=BACKEND,
                asg=ASG,
                port=8080,
                server_prefix=PREFIX,
                server_options=tuple(options.split()),
                **{"drain_timeout": 5, **binding},
            ),
        ),
    )


def instance(n: int, state: str = "InService", ec2: str | None = "running") -> Instance:
    """Instance number *n* at 127.0.1.<n>."""
    return Instance(f"i-{n:017x}", state, "Healthy", ec2, f"127.0.1.{n}")


def group(*instances: Instance, desired: int | None = None) -> Group:
    """The group with these instances; desired capacity defaults to the serving count."""
    serving = sum(i.serving for i in instances)
    return Group(ASG, serving if desired is None else desired, instances)


def runtime_server(n: int, **changes: object) -> RuntimeServer:
    """A ready, healthy managed server for instance *n*."""
    server = RuntimeServer(
        backend=BACKEND,
        name=f"{PREFIX}i-{n:017x}",
        server_id=100 + n,
        address=f"127.0.1.{n}",
        port=8080,
        op_state=2,
        admin_state=0,
        check_state=CHECK_CONFIGURED | CHECK_ENABLED,
        check_result=CHECK_RESULT_PASSED,
        seconds_in_state=100,
    )
    return replace(server, **changes)  # type: ignore[arg-type]


def unmanaged_runtime() -> RuntimeServer:
    """The hand-written backup server as the runtime reports it."""
    return RuntimeServer(BACKEND, "maintenance-page", 1, "127.0.0.9", 8080, 2, 0, 0, 0, 100)


class World:
    """Fakes wired into ports, with helpers to run cycles until the plan settles."""

    def __init__(
        self,
        g: Group,
        *,
        socket: bool = True,
        runtime: list[RuntimeServer] | None = None,
        content: bytes = CONFIG,
        options: str = "check inter 1s",
        **binding: Any,
    ) -> None:
        self.settings = make_settings(socket=socket, options=options, **binding)
        self.lifecycle = FakeLifecycle()
        self.membership = FakeMembership({ASG: g})
        self.store = FakeStore(content)
        self.runtime = FakeRuntime(
            {BACKEND: {s.name: s for s in [unmanaged_runtime(), *(runtime or [])]}}
        )
        self.ports = Ports(
            self.membership, self.store, self.runtime if socket else None, self.lifecycle
        )

    def converge(self, max_cycles: int = 20) -> int:
        """
        Run cycles (time passing between them) until nothing is pending but a read again of
        instances whose reads disagree; return the count.
        """
        for count in range(1, max_cycles + 1):
            result = run_cycle(self.settings, self.ports)
            assert result.ok, result.errors
            if not result.pending or _only_reading_again(result.plan.backends[0]):
                return count
            self.runtime.tick()
        raise AssertionError("did not converge")

    def file_servers(self) -> dict[str, str]:
        """Managed servers in the file: name → address:port."""
        section = config_parse.backend(config_parse.parse(self.store.content), BACKEND)
        assert section is not None
        binding = self.settings.backends[0]
        return {
            s.name: f"{s.address}:{s.port}" for s in section.servers if binding.instance_of(s.name)
        }

    def runtime_servers(self) -> dict[str, str]:
        """Managed servers at runtime: name → address:port, only those ready."""
        return {
            s.name: f"{s.address}:{s.port}"
            for s in self.runtime.servers[BACKEND].values()
            if s.name.startswith(PREFIX) and s.admin_state == 0
        }


def _only_reading_again(decided: BackendPlan) -> bool:
    """Nothing to do but wait for reads that agree: no step, no warm-up or drain under way."""
    waiting = (Change.WARMING, Change.DRAINING)
    return not decided.steps and all(row.change not in waiting for row in decided.rows)


STATES = [
    "InService",
    "InService",
    "InService",
    "Pending:Wait",
    "Terminating:Wait",
    "Standby",
    "Terminated",
    "Warmed:Running",
    "SomeFutureState",
]


Case = tuple[Group, list[RuntimeServer], bool]


@st.composite
def worlds(draw: st.DrawFn) -> Case:
    """A group, a runtime with arbitrary managed servers, and the socket mode."""
    numbers = draw(st.lists(st.integers(4, 40), unique=True, max_size=8))
    members = []
    for n in numbers:
        state = draw(st.sampled_from(STATES))
        ec2_states = st.sampled_from(["running", "running", None, "stopped"])
        ec2 = "terminated" if state == "Terminated" else draw(ec2_states)
        members.append(replace(instance(n, state, ec2), spot=draw(st.booleans())))
    extra = draw(st.lists(st.integers(41, 60), unique=True, max_size=3))
    runtime = []
    known = draw(st.lists(st.sampled_from(numbers), unique=True)) if numbers else []
    for n in [*known, *extra]:
        runtime.append(
            runtime_server(
                n,
                admin_state=draw(st.sampled_from([0, ADMIN_FDRAIN, ADMIN_FMAINT])),
                sessions=draw(st.integers(0, 3)),
                check_result=draw(st.sampled_from([0, 2, CHECK_RESULT_PASSED])),
                address=draw(st.sampled_from([f"127.0.1.{n}", "127.0.9.9"])),
            )
        )
    desired = draw(st.integers(0, 3))
    serving = sum(m.serving for m in members)
    capacity = max(desired, serving) if serving else desired
    return Group(ASG, capacity, tuple(members)), runtime, draw(st.booleans())


def unknown_to_ec2(n: int) -> Instance:
    """Instance *n*, InService and Healthy in its group, which DescribeInstances did not return."""
    return Instance(f"i-{n:017x}", "InService", "Healthy", None, None)
