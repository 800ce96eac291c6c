"""
The seams between the cycle and the outside world.

``cycle`` and ``apply`` only ever talk to these Protocols; the real adapters live in
``reconciler.adapters`` and tests of the pure core wire in small fakes. Every method raises
``TransientError`` when its dependency is unreachable and ``PermanentError`` when it refused the
request.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from reconciler.core.messages import Received
from reconciler.core.model import AwsObservation, LifecycleAction, RuntimeObservation, ServerLine
from reconciler.core.next_config import StoredConfig


class MembershipSource(Protocol):
    """Reads Auto Scaling groups and their instances."""

    def read_groups(
        self, names: Sequence[str], *, with_hooks: Collection[str] = ()
    ) -> AwsObservation:
        """
        Read every group in *names* with its instances' EC2 state and private IP, and the
        lifecycle hooks of the groups in *with_hooks*.

        A failure that concerns only some groups is reported per group in ``errors``; a failure
        that concerns all of them may raise ``TransientError``.
        """
        ...


class RuntimeApi(Protocol):
    """The HAProxy runtime API (stats socket, level admin)."""

    def read_servers(self, backends: Sequence[str]) -> RuntimeObservation:
        """The servers of *backends* (``show servers state`` joined with ``show stat``)."""
        ...

    def add_server(self, backend: str, line: ServerLine) -> None:
        """
        ``add server`` with every option of *line*; the server starts in maintenance. A name or
        id already taken raises ``TransientError``: the read behind the call was out of date.
        """
        ...

    def enable_health(self, backend: str, server: str) -> None:
        """``enable health``: start the server's health check."""
        ...

    def set_state(self, backend: str, server: str, state: str) -> None:
        """``set server <b>/<s> state ready|drain|maint``."""
        ...

    def set_weight(self, backend: str, server: str, weight: int) -> None:
        """``set server <b>/<s> weight <n>``: takes effect at once, no reload."""
        ...

    def set_address(self, backend: str, server: str, address: str, port: int) -> None:
        """``set server <b>/<s> addr <ip> port <port>``."""
        ...

    def shutdown_sessions(self, backend: str, server: str) -> None:
        """``shutdown sessions server``: cut what outlived the drain timeout."""
        ...

    def delete_server(self, backend: str, server: str) -> None:
        """``del server``; the server must be in maintenance with nothing attached."""
        ...


class ConfigStore(Protocol):
    """
    The managed haproxy.cfg, what it is made from (in template mode: the template and the
    environment it sees), and the command that reloads HAProxy.
    """

    def read(self) -> StoredConfig:
        """
        Everything a cycle makes the next file from, read now: the file's current bytes
        (``b""`` for a missing file in template mode) and, in template mode, the template's text
        with the environment, or the ``ConfigError`` saying why the template cannot be read.
        Raises ``ConfigError`` when the file is missing (outside template mode: nothing will
        make it appear), ``TransientError`` when it cannot be read otherwise.
        """
        ...

    def write(self, expected: bytes, new: bytes) -> None:
        """
        Replace the file with *new*, atomically and only after ``check_command`` accepted it.

        Raises ``TransientError`` when the file no longer holds *expected* (someone else wrote it
        meanwhile) and ``PermanentError`` with HAProxy's message when the check fails.
        """
        ...

    def reload(self) -> None:
        """Run the reload command; ``PermanentError`` with its output when it fails."""
        ...


class Inbox(Protocol):
    """The queue whose messages wake the controller."""

    def receive(self, wait_seconds: int | None = None) -> list[Received]:
        """Long-poll for up to *wait_seconds* (default: the configured wait) and classify."""
        ...

    def delete(self, handles: Sequence[str]) -> list[str]:
        """Delete messages by receipt handle; return the handles that could not be deleted."""
        ...

    def close(self) -> None:
        """Stop: a poll in flight returns nothing, later polls return at once."""
        ...


class LifecycleApi(Protocol):
    """Completes Auto Scaling lifecycle actions."""

    def carry_out(self, action: LifecycleAction) -> bool:
        """
        Complete the action (``CONTINUE`` / ``ABANDON``), or for ``HEARTBEAT`` extend the wait
        when the drain is about to outlast the hook's timeout. An action nobody waits for any
        more counts as done. True when an API call was made.
        """
        ...


@dataclass(frozen=True)
class Ports:
    """The adapters a cycle works through."""

    membership: MembershipSource
    store: ConfigStore
    #: ``None`` when no runtime socket is configured.
    runtime: RuntimeApi | None
    #: ``None`` when no backend completes lifecycle actions.
    lifecycle: LifecycleApi | None = None
