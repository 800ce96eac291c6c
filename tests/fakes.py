"""
Small hand-written fakes of the ports, for tests of the pure core only.

``FakeRuntime`` follows the HAProxy 2.6 rules the planner relies on (a new server starts in forced
maintenance with its check disabled, ``del server`` needs maintenance and nothing attached, a
desired server with a check only passes after ``tick``); integration tests use the real binary.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace

from reconciler.core.errors import PermanentError, TransientError
from reconciler.core.model import (
    ADMIN_FDRAIN,
    ADMIN_FMAINT,
    CHECK_CONFIGURED,
    CHECK_ENABLED,
    CHECK_RESULT_PASSED,
    AwsObservation,
    Group,
    LifecycleAction,
    RuntimeObservation,
    RuntimeServer,
    ServerLine,
)


@dataclass
class FakeMembership:
    """Returns fixed groups; names in *errors* fail."""

    groups: dict[str, Group] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def read_groups(
        self, names: Sequence[str], *, with_hooks: Collection[str] = ()
    ) -> AwsObservation:
        """The requested groups that exist (hooks included), and the requested errors."""
        return AwsObservation(
            {n: g for n, g in self.groups.items() if n in names},
            {n: e for n, e in self.errors.items() if n in names},
        )


@dataclass
class FakeStore:
    """A config file in memory; *reloads* counts reloads."""

    content: bytes
    reloads: int = 0
    writes: int = 0

    def read(self) -> bytes:
        """The current bytes."""
        return self.content

    def write(self, expected: bytes, new: bytes) -> None:
        """Replace the content (the fake never fails validation)."""
        assert expected == self.content
        self.content = new
        self.writes += 1

    def reload(self) -> None:
        """Count the reload."""
        self.reloads += 1


@dataclass
class FakeRuntime:
    """The runtime state of some backends, changed by the RuntimeApi calls."""

    servers: dict[str, dict[str, RuntimeServer]] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    #: ``show info`` ``Uptime_sec`` of the worker; ``None``: not known.
    worker_uptime: float | None = None

    def read_servers(self, backends: Sequence[str]) -> RuntimeObservation:
        """The servers of the known backends among *backends*."""
        return RuntimeObservation(
            {b: tuple(self.servers[b].values()) for b in backends if b in self.servers},
            worker_uptime=self.worker_uptime,
        )

    def add_server(self, backend: str, line: ServerLine) -> None:
        """A new server: forced maintenance, check configured but disabled."""
        self.commands.append(f"add {backend}/{line.name}")
        # Like the adapter: a name or id already taken means the caller's read was out of date.
        if line.name in self.servers[backend]:
            msg = "Already exists a server with the same name in backend."
            raise TransientError(msg)
        if line.server_id in {s.server_id for s in self.servers[backend].values()}:
            msg = f"'id' : custom id {line.server_id} already used"
            raise TransientError(msg)
        self.servers[backend][line.name] = RuntimeServer(
            backend=backend,
            name=line.name,
            server_id=line.server_id or 0,
            address=line.address,
            port=line.port,
            op_state=2,
            admin_state=ADMIN_FMAINT,
            check_state=CHECK_CONFIGURED if line.has_check else 0,
            check_result=0,
            seconds_in_state=0,
        )

    def enable_health(self, backend: str, server: str) -> None:
        """Start the check."""
        self.commands.append(f"enable health {backend}/{server}")
        self._update(backend, server, check_state=CHECK_CONFIGURED | CHECK_ENABLED)

    def set_state(self, backend: str, server: str, state: str) -> None:
        """Set the admin state."""
        self.commands.append(f"state {state} {backend}/{server}")
        admin = {"ready": 0, "drain": ADMIN_FDRAIN, "maint": ADMIN_FMAINT}[state]
        self._update(backend, server, admin_state=admin, seconds_in_state=0)

    def set_address(self, backend: str, server: str, address: str, port: int) -> None:
        """Move the server."""
        self.commands.append(f"addr {backend}/{server} {address}:{port}")
        self._update(backend, server, address=address, port=port, check_result=0)

    def shutdown_sessions(self, backend: str, server: str) -> None:
        """Cut the sessions."""
        self.commands.append(f"shutdown sessions {backend}/{server}")
        self._update(backend, server, sessions=0)

    def delete_server(self, backend: str, server: str) -> None:
        """Delete a server in maintenance with nothing attached."""
        self.commands.append(f"del {backend}/{server}")
        current = self.servers[backend][server]
        if not current.in_maintenance:
            msg = "Only servers in maintenance mode can be deleted."
            raise PermanentError(msg)
        if not current.idle:
            msg = "Server still has connections attached to it, cannot remove it."
            raise PermanentError(msg)
        del self.servers[backend][server]

    def tick(self) -> None:
        """Time passes: enabled checks pass, sessions end."""
        for backend in self.servers.values():
            for name, server in list(backend.items()):
                passed = CHECK_RESULT_PASSED if server.has_check else server.check_result
                backend[name] = replace(
                    server,
                    check_result=passed,
                    sessions=0,
                    queued=0,
                    idle_connections=0,
                    seconds_in_state=server.seconds_in_state + 1,
                )

    def _update(self, backend: str, server: str, **changes: object) -> None:
        if server not in self.servers[backend]:
            msg = "No such server."
            raise PermanentError(msg)
        self.servers[backend][server] = replace(self.servers[backend][server], **changes)  # type: ignore[arg-type]


@dataclass
class FakeLifecycle:
    """Records lifecycle actions; every one counts as an API call."""

    actions: list[LifecycleAction] = field(default_factory=list)

    def carry_out(self, action: LifecycleAction) -> bool:
        """Record *action*."""
        self.actions.append(action)
        return True
