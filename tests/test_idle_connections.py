"""
A leaving server HAProxy still keeps idle connections to, on every HAProxy of the matrix.

The delete is sent once nothing is in use (no session, no queued request), idle connections or
not, and HAProxy's own answer decides: 3.0 closes the idle connections itself and deletes the
server at once; 2.6 refuses (``Server still has connections attached to it``) while they last,
which the cycle takes as a deferral, not an error: the file keeps every other line, and a later
cycle deletes the server once HAProxy has closed them (``pool-purge-delay``).

The idle connections are made the way production makes them: instances that answer HTTP/1.1
(keep-alive), requests in flight on the leaving server when it is put in maintenance, each the
first of its client connection, so that HAProxy parks the server connection among its idle ones
(``show stat`` ``idle_conn_cur``) once the answer is through. The servers come from the config file
(a reload after the first run): 2.6 keeps no idle connection to a server added at runtime.

Over fakes (which follow 2.6's rule), the cycle's side of it: the deferral is no error, the report
names the idle connections, and the file loses no line.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from harness.haproxy import HAProxyBinary, HAProxyFactory, HTTPBackends, wait_for
from harness.lifecycle import sessions
from harness.load import Load
from harness.moto import Cloud
from harness.stack import BACKEND, GROUP, Stack, build_stack
from reconciler.adapters import settings_file
from reconciler.adapters.haproxy_socket import RuntimeSocket
from reconciler.core.model import ADMIN_FMAINT, Change, CycleResult, RuntimeServer
from reconciler.core.settings import Settings
from reconciler.cycle import run_cycle
from reconciler.ports import Ports
from reconciler.runner import build_ports
from tests.support.worlds import CONFIG, UNMANAGED_LINE, World, group, instance, runtime_server


#: Long enough to be in flight when the cycle puts the server in maintenance.
SLOW = "/slow?seconds=1"
REFUSAL = "Server still has connections attached to it, cannot remove it."
#: The stack's options, HAProxy closing unused idle connections every second rather than every 5.
SERVER_OPTIONS = "check inter 100ms fall 2 rise 1 pool-purge-delay 1s"
#: Seconds 2.6 may keep idle connections after the last answer (a few ``pool-purge-delay``).
PURGE_DEADLINE = 20.0


@pytest.fixture(name="stack")
def _stack(cloud: Cloud, haproxy_factory: HAProxyFactory, tmp_path: Path) -> Iterator[Stack]:
    """Two instances answering HTTP/1.1, reconciled, their servers loaded from the file."""
    backends = HTTPBackends(keep_alive=True)
    try:
        stack = build_stack(cloud, haproxy_factory, backends, tmp_path)
        stack.write_settings({"server_options": SERVER_OPTIONS})
        assert stack.reconcile().returncode == 0
        stack.haproxy.reload()
        wait_for(stack.converged, "both servers to serve after the reload")
        yield stack
    finally:
        backends.stop_all()


class Cycles:
    """Real cycles run in this process, with the stack's settings and real adapters."""

    def __init__(self, stack: Stack) -> None:
        self.settings: Settings = settings_file.load(stack.settings)
        self.ports: Ports = build_ports(self.settings)
        self.runtime = RuntimeSocket(stack.haproxy.socket_path)

    def run(self) -> CycleResult:
        """One cycle, which must not fail."""
        result = run_cycle(self.settings, self.ports)
        assert result.ok, result.errors
        return result

    def server(self, name: str) -> RuntimeServer | None:
        """Server *name* as the controller reads it now."""
        found = self.runtime.read_servers([BACKEND]).backends[BACKEND]
        return next((server for server in found if server.name == name), None)


def deletes_with_idle_connections(binary: str) -> bool:
    """HAProxy 3.0 and later close a server's idle connections in ``del server``."""
    branch = HAProxyBinary.of(binary).branch
    return tuple(int(n) for n in branch.split(".")) >= (3, 0)


def row_of(result: CycleResult, name: str) -> tuple[Change, str]:
    """The change and reason a cycle reports for server *name*."""
    (row,) = [r for b in result.plan.backends for r in b.rows if r.server == name]
    return row.change, row.reason


@pytest.mark.haproxy_versions
def test_leaving_server_with_idle_connections_is_deleted_as_soon_as_haproxy_can(
    stack: Stack, haproxy_binary: str
) -> None:
    """
    The instance leaves while requests are in flight on it: maintenance, then, once they are
    answered, the delete, although HAProxy keeps idle connections to it. 3.0 deletes it in that
    cycle; 2.6 defers it (no error, the other server's line stays) until a later cycle.
    """
    cycles = Cycles(stack)
    leaving, staying = sorted(stack.servers)
    name = f"api-{leaving}"
    with Load(stack.haproxy, [SLOW] * 4):
        wait_for(lambda: sessions(stack, leaving) > 0, "a request in flight on the leaver")
        stack.cloud.terminate(leaving)
        assert row_of(cycles.run(), name)[0] is Change.DRAINING
        assert stack.states()[leaving].startswith("MAINT")
        wait_for(lambda: sessions(stack, leaving) == 0, "the leaver's requests to be answered")
        parked = cycles.server(name)
        assert parked is not None
        assert parked.idle_connections > 0, "HAProxy parked no idle connection: nothing tested"
        result = cycles.run()
        assert row_of(result, name)[0] is Change.REMOVE
        assert result.outcome is not None
        address = f"{stack.cloud.serving(GROUP)[staying]}:{stack.port}"
        managed = [s for s in stack.file_servers() if s.startswith("server api-")]
        assert [s.split()[1:3] for s in managed] == [[f"api-{staying}", address]]
        if deletes_with_idle_connections(haproxy_binary):
            assert result.outcome.deferred == ()
            assert leaving not in stack.states()
            return
        (deferred,) = result.outcome.deferred
        assert (
            str(deferred)
            == f"{BACKEND}/{name}: del server {BACKEND}/{name} refused by HAProxy: {REFUSAL}"
        )
        assert stack.states()[leaving].startswith("MAINT")
        wait_for(
            lambda: cycles.run() and leaving not in stack.states(),
            "a later cycle to delete the server once HAProxy closed its idle connections",
            PURGE_DEADLINE,
        )


def test_refused_delete_is_deferred_with_every_file_line_kept() -> None:
    """
    Over fakes: a leaving server in maintenance with idle connections and nothing in use gets its
    delete; refused (2.6's rule), it is deferred, no error, the other server's line stays; once
    the connections are gone the next cycle deletes it.
    """
    staying, leaving = runtime_server(4), runtime_server(5, admin_state=ADMIN_FMAINT)
    lines = b"".join(
        f"    server {s.name} {s.address}:8080 id {s.server_id} check inter 1s\n".encode()
        for s in (staying, leaving)
    )
    world = World(
        group(instance(4)),
        runtime=[staying, replace(leaving, idle_connections=2)],
        content=CONFIG.replace(UNMANAGED_LINE, UNMANAGED_LINE + lines),
    )
    result = run_cycle(world.settings, world.ports)
    assert result.ok, result.errors
    assert row_of(result, leaving.name) == (
        Change.REMOVE,
        "not in the group; deleted, or kept while idle connections last (2)",
    )
    assert result.outcome is not None
    (deferred,) = result.outcome.deferred
    assert str(deferred).endswith("Server still has connections attached to it, cannot remove it.")
    assert result.pending
    assert world.file_servers() == {staying.name: "127.0.1.4:8080"}
    assert leaving.name in world.runtime.servers[BACKEND]
    world.runtime.tick()
    assert world.converge() == 1
    assert leaving.name not in world.runtime.servers[BACKEND]
