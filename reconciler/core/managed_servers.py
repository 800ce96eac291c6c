"""
The managed servers of one backend, as the planner's modules read them: the ``server`` lines named
``<prefix><instance-id>`` in its config file section, and the servers of those names in the running
HAProxy. Every other server is never planned, so it is not in this view. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reconciler.core.model import Change, ConfigServer, Row, RuntimeServer, ServerLine
from reconciler.core.settings import Binding


@dataclass(frozen=True)
class ManagedServers:
    """One backend's managed servers in the file and at runtime."""

    binding: Binding
    #: The file's managed servers by name, in file order.
    file: Mapping[str, ConfigServer]
    #: The running HAProxy's managed servers by name; ``None`` when the runtime is not read.
    runtime: Mapping[str, RuntimeServer] | None

    @classmethod
    def of(
        cls,
        binding: Binding,
        file_servers: Sequence[ConfigServer],
        runtime: Sequence[RuntimeServer] | None,
    ) -> ManagedServers:
        """The managed ones among a section's *file_servers* and the *runtime* servers."""
        managed_name = binding.managed_name.fullmatch
        file = {s.name: s for s in file_servers if managed_name(s.name)}
        if runtime is None:
            return cls(binding, file, None)
        # Most servers run under a name already found managed in the file.
        running = {s.name: s for s in runtime if s.name in file or managed_name(s.name)}
        return cls(binding, file, running)

    @property
    def names(self) -> frozenset[str]:
        """Every managed server in the file or at runtime."""
        return frozenset(self.file) | frozenset(self.runtime or ())

    def running(self, name: str) -> RuntimeServer | None:
        """The server *name* in the running HAProxy, if it runs (and the runtime is read)."""
        return None if self.runtime is None else self.runtime.get(name)

    def address(self, name: str) -> str:
        """Where *name* points: at runtime when it runs, else in the file; ``-`` for neither."""
        running, current = self.running(name), self.file.get(name)
        if running is not None:
            return address(running)
        if current is not None:
            return address(current)
        return "-"

    def instance_id(self, name: str) -> str:
        """The instance id of the managed server *name*."""
        instance_id = self.binding.instance_of(name)
        assert instance_id is not None  # noqa: S101 - callers only pass managed names
        return instance_id

    def row_of(self, name: str, instance_id: str | None = None) -> RowMaker:
        """
        The report rows of server *name*, showing where it points now. *instance_id* is given
        for an instance whose id is malformed, so that its name is not a managed one.
        """
        if instance_id is None:
            instance_id = self.instance_id(name)
        return RowMaker(name, instance_id, self.address(name))


@dataclass(frozen=True)
class RowMaker:
    """Builds the report row of one server."""

    name: str
    instance_id: str
    address: str

    def __call__(self, change: Change, reason: str) -> Row:
        return Row(self.name, self.instance_id, self.address, change, reason)


def address(server: ConfigServer | RuntimeServer | ServerLine) -> str:
    """``address:port``, as reports show it."""
    return f"{server.address}:{server.port}"


def points_at(server: ConfigServer | RuntimeServer, line: ServerLine) -> bool:
    """*server* has *line*'s address and port."""
    return server.address == line.address and server.port == line.port
