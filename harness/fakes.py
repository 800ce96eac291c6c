"""
Small hand-written fakes of the ports, for tests of the pure core (and the CPU benchmark) only.

``FakeRuntime`` follows the HAProxy 2.6 rules the planner relies on (a new server starts in forced
maintenance with its check disabled, ``del server`` needs maintenance and nothing attached, a
desired server with a check only passes after ``tick``); integration tests use the real binary.

``FakeInbox`` is the ``Inbox`` of tests of the controller and the receiver thread: receives are
scripted, deletions are recorded, failures are injected (``received`` builds a message as it hands
them out). The real ``SqsInbox`` is tested against the moto server in ``test_sqs_inbox.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace

from reconciler.core import messages
from reconciler.core.errors import PermanentError, TransientError
from reconciler.core.messages import Received
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
from reconciler.core.next_config import StoredConfig, Template


@dataclass
class FakeMembership:
    """Returns fixed groups; names in *errors* fail."""

    groups: dict[str, Group] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def read_groups(
        self,
        names: Sequence[str],
        *,
        with_hooks: Collection[str] = (),  # noqa: ARG002 (the groups hold their hooks already)
    ) -> AwsObservation:
        """The requested groups that exist (hooks included), and the requested errors."""
        return AwsObservation(
            {n: g for n, g in self.groups.items() if n in names},
            {n: e for n, e in self.errors.items() if n in names},
        )


@dataclass
class FakeStore:
    """
    A config file in memory, and in template mode (*template* set) its template and environment;
    *reloads*, *writes* and *reads* count the calls.
    """

    content: bytes
    reloads: int = 0
    writes: int = 0
    template: str | None = None
    environ: dict[str, str] = field(default_factory=dict)
    reads: int = 0

    def read(self) -> StoredConfig:
        """The current bytes, and the template as it is now."""
        self.reads += 1
        template = None if self.template is None else Template(self.template, dict(self.environ))
        return StoredConfig(self.content, template)

    def write(self, expected: bytes, new: bytes) -> None:
        """Replace the content (the fake never fails validation)."""
        if expected != self.content:
            raise AssertionError("the cycle wrote over bytes it had not read")
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
            weight=_weight_of(line),
            backup=line.is_backup,
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

    def set_weight(self, backend: str, server: str, weight: int) -> None:
        """Change the weight."""
        self.commands.append(f"weight {backend}/{server} {weight}")
        self._update(backend, server, weight=weight)

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


def _weight_of(line: ServerLine) -> int:
    """The weight ``add server`` gives *line*'s server: its last ``weight`` word, else 1."""
    words = line.file_options
    weights = [int(words[i + 1]) for i, w in enumerate(words[:-1]) if w == "weight"]
    return weights[-1] if weights else 1


@dataclass
class FakeLifecycle:
    """Records lifecycle actions; every one counts as an API call."""

    actions: list[LifecycleAction] = field(default_factory=list)

    def carry_out(self, action: LifecycleAction) -> bool:
        """Record *action*."""
        self.actions.append(action)
        return True


#: Seconds an empty scripted poll blocks, standing in for the long poll.
EMPTY_POLL = 0.01


def received(body: str, handle: str, *, at: float = 0.0, message_id: str | None = None) -> Received:
    """A message as the inbox hands it out: *body* classified, received at *at*."""
    return Received(
        message_id=message_id or f"id-{handle}",
        receipt_handle=handle,
        body=body,
        trigger=messages.classify(body),
        received_at=at,
        receive_count=1,
        sent_at=None,
    )


@dataclass
class FakeInbox:
    """
    Each ``receive`` hands out the next scripted batch (or raises it, if it is an exception);
    once the script is used up, polls come back empty after ``EMPTY_POLL``. ``delete`` records
    the handles, refuses those in *refuse*, and raises *delete_error* while it is set.
    """

    script: list[Sequence[Received] | Exception] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    delete_error: Exception | None = None
    deleted: list[str] = field(default_factory=list)
    receives: int = 0
    closed: threading.Event = field(default_factory=threading.Event)

    # The script decides what a poll returns: how long a real one would wait plays no part.
    def receive(self, wait_seconds: int | None = None) -> list[Received]:  # noqa: ARG002
        """The next scripted batch; empty after ``close`` or when the script is used up."""
        self.receives += 1
        if self.closed.is_set():
            return []
        if not self.script:
            self.closed.wait(EMPTY_POLL)
            return []
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return list(step)

    def delete(self, handles: Sequence[str]) -> list[str]:
        """Record *handles*; return those refused."""
        if self.delete_error is not None:
            raise self.delete_error
        self.deleted.extend(h for h in handles if h not in self.refuse)
        return [h for h in handles if h in self.refuse]

    def close(self) -> None:
        """Make polls return empty at once."""
        self.closed.set()
