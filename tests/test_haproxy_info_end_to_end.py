"""
The controller tells which HAProxy it runs against, on every HAProxy of the matrix: its
``/metrics`` carry ``reconciler_haproxy_info`` with the version ``show info`` gives.
"""

from __future__ import annotations

import pytest

from harness.stack import Daemons, Stack


@pytest.mark.haproxy_versions
def test_metrics_name_the_running_haproxy(stack: Stack, daemons: Daemons) -> None:
    """One series, 1, labelled with the running version and the commands the controller sends."""
    (version,) = [
        row.removeprefix("Version: ")
        for row in stack.haproxy.command("show info").splitlines()
        if row.startswith("Version: ")
    ]
    daemon = daemons.start(stack)
    series = [
        (dict(labels), value)
        for (name, labels), value in daemon.metrics().items()
        if name == "reconciler_haproxy_info"
    ]
    assert [(labels["version"], value) for labels, value in series] == [(version, 1.0)]
    commands = series[0][0]["commands"].split(",")
    assert {"add server", "del server", "set server", "show servers state"} <= set(commands)
