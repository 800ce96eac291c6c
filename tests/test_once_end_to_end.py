"""
``reconcile --once`` as a user runs it: the real command in a child process, the moto server as the
AWS account, a real HAProxy with an admin socket, and HTTP servers on the instances' loopback
addresses. Assertions are about what HAProxy serves and what the file holds.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.haproxy import wait_for
from harness.stack import GROUP, HAND_WRITTEN, Stack


pytestmark = pytest.mark.haproxy_versions


def test_converges_from_empty(stack: Stack) -> None:
    """Every InService instance is added, warmed up and serving; the backup line is untouched."""
    before = stack.haproxy.config_path.read_text()
    code, report = stack.reconcile_json()
    assert code == 0, report
    instances = set(stack.cloud.serving(GROUP))
    assert set(stack.answering()) == instances
    assert f"server {HAND_WRITTEN}" in stack.file_servers()
    after = stack.haproxy.config_path.read_text().splitlines(keepends=True)
    assert len([line for line in after if "server api-" in line]) == len(instances)
    assert "".join(line for line in after if "server api-" not in line) == before
    changes = {s["instance_id"]: s["change"] for s in report["backends"][0]["servers"]}
    assert changes == dict.fromkeys(instances, "add")
    assert report["reloads"] == 0


def test_second_run_changes_nothing(stack: Stack) -> None:
    """Idempotence: the same file bytes, no runtime command, every server unchanged."""
    assert stack.reconcile().returncode == 0
    before = stack.haproxy.config_path.read_bytes()
    code, report = stack.reconcile_json()
    assert code == 0
    assert stack.haproxy.config_path.read_bytes() == before
    assert report["commands"] == 0
    assert report["file_writes"] == 0
    assert {s["change"] for s in report["backends"][0]["servers"]} == {"unchanged"}


def test_scale_out_then_in(stack: Stack) -> None:
    """A new instance starts serving; terminated ones stop serving and leave the file."""
    assert stack.reconcile().returncode == 0
    stack.cloud.set_desired(GROUP, 4)
    stack.serve_instances()
    assert stack.reconcile().returncode == 0
    assert set(stack.answering(40)) == set(stack.cloud.serving(GROUP))
    assert len(stack.cloud.serving(GROUP)) == 4

    stack.cloud.set_desired(GROUP, 1)
    (survivor,) = stack.cloud.serving(GROUP)
    code, report = stack.reconcile_json()
    assert code == 0, report
    assert set(stack.answering()) == {survivor}
    managed = [line for line in stack.file_servers() if line.startswith("server api-")]
    assert len(managed) == 1
    assert survivor in managed[0]
    state = stack.haproxy.command("show servers state api")
    assert survivor in state
    assert state.count("api-i-") == 1


def test_new_server_gets_no_traffic_before_its_check_passes(stack: Stack) -> None:
    """A new instance failing its health check is held in drain; --once reports no convergence."""
    assert stack.reconcile().returncode == 0
    stack.cloud.set_desired(GROUP, 3)
    stack.serve_instances()
    (new,) = set(stack.cloud.serving(GROUP)) - set(stack.answering())
    stack.servers[new].healthy = False
    done = stack.reconcile("--timeout", "1")
    assert done.returncode == 1
    assert "not converged" in done.stderr
    assert new not in stack.answering(40)
    stack.servers[new].healthy = True
    assert stack.reconcile().returncode == 0
    wait_for(lambda: new in stack.answering(), f"{new} serving")


def test_dry_run_changes_nothing(stack: Stack) -> None:
    """--dry-run prints the plan and leaves HAProxy and the file alone."""
    before = stack.haproxy.config_path.read_bytes()
    done = stack.reconcile("--dry-run")
    assert done.returncode == 0, done.stderr
    assert "dry run" in done.stdout
    assert stack.haproxy.config_path.read_bytes() == before
    assert "api-i-" not in stack.haproxy.command("show servers state api")


def test_missing_group_is_an_error_and_changes_nothing(stack: Stack) -> None:
    """A group that does not exist: exit 1 with the reason, nothing removed."""
    assert stack.reconcile().returncode == 0
    before = stack.haproxy.config_path.read_bytes()
    stack.cloud.delete_group(GROUP)
    done = stack.reconcile()
    assert done.returncode == 1
    assert "not found" in done.stderr
    assert stack.haproxy.config_path.read_bytes() == before
    assert len(stack.answering()) == 2


def test_bad_configuration_exits_2_and_names_every_problem(stack: Stack) -> None:
    """
    Unknown backend section and a bad port: exit 2, each problem named, nothing changed. The
    unknown section alone is no settings error: its backend is refused (exit 1, the reason
    named), like any backend that cannot be managed.
    """
    text = stack.settings.read_text()
    stack.settings.write_text(
        text.replace('name = "api"', 'name = "nope"').replace(f"port = {stack.port}", "port = 0")
    )
    before = stack.haproxy.config_path.read_bytes()
    done = stack.reconcile()
    assert done.returncode == 2
    assert "backend 'nope'.port" in done.stderr
    assert stack.haproxy.config_path.read_bytes() == before
    stack.settings.write_text(text.replace('name = "api"', 'name = "nope"'))
    done = stack.reconcile()
    assert done.returncode == 1
    assert "no backend or listen section 'nope'" in done.stderr
    assert stack.haproxy.config_path.read_bytes() == before


def test_console_script_is_installed(stack: Stack) -> None:
    """The `reconcile` entry point next to the interpreter runs the same command."""
    script = Path(sys.executable).with_name("reconcile")
    done = subprocess.run(
        [str(script), "--once", "--dry-run", "--config", str(stack.settings)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
