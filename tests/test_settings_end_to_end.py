"""
Numeric settings at and beyond their ranges, as a user meets them: ``reconcile --once`` refuses
absurd values with exit 2 before touching anything, and a controller given the largest values of
every range runs, waits and wakes normally.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness.haproxy import wait_for
from harness.moto import Cloud
from harness.stack import PROCESS_DEADLINE, Daemons, Notifications, Stack
from reconciler.core import settings
from tests.support.settings_files import VALID, write


def reconcile_once(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``reconcile --once --config *config*`` in a child process with *env* added."""
    return subprocess.run(
        [sys.executable, "-m", "reconciler", "--once", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )


@pytest.mark.parametrize(
    ("line", "env", "key"),
    [
        pytest.param("resync_interval = inf", {}, "controller.resync_interval", id="inf-in-file"),
        pytest.param(
            "",
            {"RECONCILER_CONTROLLER_RESYNC_INTERVAL": "nan"},
            "controller.resync_interval (from RECONCILER_CONTROLLER_RESYNC_INTERVAL)",
            id="nan-in-environment",
        ),
        pytest.param("max_backoff = 1e308", {}, "controller.max_backoff", id="huge"),
    ],
)
def test_reconcile_once_refuses_absurd_numbers_with_exit_2(
    tmp_path: Path, line: str, env: dict[str, str], key: str
) -> None:
    """The command exits 2 before touching anything, naming the key and its range."""
    config = write(tmp_path, VALID + f"\n[controller]\n{line}\n")
    done = reconcile_once(config, env)
    assert done.returncode == 2, done.stderr
    assert "configuration error" in done.stderr
    limits = settings.LIMITS[key.partition(" ")[0]]
    assert f"  - {key}: " in done.stderr
    assert f"{limits.low:g} to {limits.high:g}" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "listen",
    [
        pytest.param("127.0.0.1:\u00b2", id="superscript-two"),
        pytest.param("127.0.0.1:\u0669\u0660", id="arabic-indic-digits"),
    ],
)
def test_listen_port_of_non_ascii_digits_is_a_settings_error(tmp_path: Path, listen: str) -> None:
    """Characters Python counts as digits are no port: exit 2 naming the key, no traceback."""
    config = write(tmp_path, VALID)
    done = reconcile_once(config, {"RECONCILER_SERVER_LISTEN": listen})
    assert done.returncode == 2, done.stderr
    assert "  - server.listen: expected host:port" in done.stderr
    assert "Traceback" not in done.stderr


def largest(section: str) -> dict[str, float]:
    """The largest accepted value of every numeric key of *section*."""
    return {
        key.partition(".")[2]: limits.high
        for key, limits in settings.LIMITS.items()
        if key.startswith(f"{section}.") and key != "backend.port"
    }


def test_controller_with_the_largest_values_waits_and_wakes(
    stack: Stack, daemons: Daemons, cloud: Cloud
) -> None:
    """
    Every duration and count at the top of its range (``min_gap`` at the bottom, so that a
    message runs a cycle at once): after its first cycle the controller waits (for up to a day),
    a message wakes it for a second cycle, ``/healthz`` answers, and SIGTERM ends it with exit 0.
    """
    queue = Notifications(cloud)
    controller = {**largest("controller"), "min_gap": settings.LIMITS["controller.min_gap"].low}
    daemon = daemons.start(
        stack,
        # ``default_weight`` is refused without a source of weights.
        {**largest("backend"), "weight": "capacity"},
        controller=controller,
        sqs={"queue_url": queue.queue_url, **largest("sqs")},
        server=largest("server"),
    )
    queue.send("wake up")

    def woken() -> bool:
        # A progress poll may come first: the first cycle added the servers.
        return any(c["trigger"] == "event" for c in daemon.cycles()) or not daemon.alive

    wait_for(woken, "a cycle for the message")
    assert daemon.alive, daemon.log_path.read_text()
    triggers = [c["trigger"] for c in daemon.cycles()]
    assert triggers[0] == "resync"
    assert set(triggers[1:]) <= {"progress", "event"}  # no timer of a day or an hour came due
    assert daemon.get("/healthz")[0] == 200
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(PROCESS_DEADLINE) == 0, daemon.log_path.read_text()
    assert daemon.records()[-1]["message"] == "controller stopped"


@pytest.mark.parametrize("value", ["inf", "nan", "1e308", "-1"])
def test_absurd_once_timeout_is_a_usage_error(tmp_path: Path, value: str) -> None:
    """``--timeout`` has a range too (0 to a day): anything else exits 2 naming the option."""
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", "--once", "--timeout", value, "--config", "x.toml"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "'--timeout'" in done.stderr
