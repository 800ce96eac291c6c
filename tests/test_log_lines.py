"""
The log line an operator reads when a server's warm-up finished: it is ready and takes new
requests, cycles after the line that said it was added. (A reload's line, with its cause, is
``tests.test_template_mode``'s.)
"""

from __future__ import annotations

from typing import Any

from harness.haproxy import wait_for
from harness.stack import BACKEND, GROUP, SERVER_PREFIX, Daemons, Stack
from tests.support.daemon import DEADLINE, controller


def test_a_finished_warm_up_is_logged_once_per_server(stack: Stack, daemons: Daemons) -> None:
    """
    The controller adds the group's instances warming up (their check has not passed yet); when
    a check passes and the server is made ready, an INFO line says so, with the server's fields.
    """
    daemon = daemons.start(stack, controller=controller(poll_interval=0.2))
    addresses = stack.cloud.serving(GROUP)
    instances = set(addresses)

    def warmed() -> list[dict[str, Any]]:
        return [r for r in daemon.records() if r["message"] == "warm-up done"]

    wait_for(lambda: {r["instance"] for r in warmed()} == instances, "every warm-up", DEADLINE)
    added = [r for r in daemon.records() if r["message"] == "server add"]
    assert {r["instance"] for r in added} == instances
    for record in warmed():
        assert record["level"] == "info"
        instance = record["instance"]
        assert record["backend"] == BACKEND
        assert record["server"] == f"{SERVER_PREFIX}{instance}"
        assert record["address"] == f"{addresses[instance]}:{stack.port}"
        assert record["reason"] == "check passed; now ready"
    assert len(warmed()) == len(instances)
