"""
The container image, tested as far as a machine without a Docker engine allows: the Dockerfile is
read, and what it would run (its ENTRYPOINT with its ENV, its HEALTHCHECK command) runs as plain
processes, with the image's paths mapped to this virtual environment and its listen address moved
to loopback. The ENTRYPOINT's first process stands in for PID 1: it is made a child subreaper, so
that, as in a container, every orphaned process of the tree becomes its child.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from harness.haproxy import DEADLINE, HAProxyFactory, HTTPBackends, free_port, wait_for
from harness.moto import Cloud
from tests.support.dockerfile import IMAGE_VENV, Image, instructions, read_image


ROOT = Path(__file__).resolve().parent.parent
GROUP = "api-asg"
#: Runs a command the way a container runs its ENTRYPOINT as PID 1, as far as orphans go: the
#: process is a child subreaper (kept across exec), so orphaned descendants become its children
#: and stay zombies until it waits for them.
AS_PID_1 = [
    sys.executable,
    "-c",
    "import ctypes, os, sys; PR_SET_CHILD_SUBREAPER = 36; "
    "assert ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0; "
    "os.execvp(sys.argv[1], sys.argv[1:])",
]


def ignored(path: str, patterns: Sequence[str]) -> bool:
    """Whether Docker leaves *path* out of the build context (the last matching pattern wins)."""
    excluded = False
    for pattern in patterns:
        keep = pattern.startswith("!")
        bare = pattern.removeprefix("!").rstrip("/")
        parts = path.split("/")
        # A pattern names the path or a directory above it; after "**/", at any depth.
        starts = range(len(parts)) if bare.startswith("**/") else range(1)
        bare = bare.removeprefix("**/")
        candidates = ["/".join(parts[i:j]) for i in starts for j in range(i + 1, len(parts) + 1)]
        if any(fnmatch.fnmatchcase(c, bare) for c in candidates):
            excluded = not keep
    return excluded


@pytest.fixture(name="image")
def _image() -> Image:
    """The repository's Dockerfile."""
    return read_image(ROOT / "Dockerfile")


def run_healthcheck(image: Image, env: dict[str, str]) -> int:
    """Run the HEALTHCHECK command with *env*; its exit code."""
    done = subprocess.run(
        image.healthcheck(), env=env, capture_output=True, timeout=DEADLINE, check=False
    )
    return done.returncode


def test_image_definition(image: Image) -> None:
    """
    Multi-stage, slim Python, non-root, `reconcile` under tini, the listen address a default
    on the exposed port, and a health check that follows the settings.
    """
    assert image.stages >= 2
    assert image.base.startswith("python:3.11-slim")
    assert f"--from=builder {IMAGE_VENV} {IMAGE_VENV}" in [
        i.arguments for i in image.instructions if i.keyword == "COPY"
    ]
    assert image.only("USER").split(":")[0] not in ("root", "0")
    assert image.entrypoint() == ["/usr/bin/tini", "--", "reconcile"]
    installs = [i.arguments for i in image.instructions if "apt-get install" in i.arguments]
    assert any(" tini" in line.split("apt-get install", 1)[1] for line in installs)
    env = image.env_as_written()
    assert env["RECONCILER_CONFIG"] == "/etc/reconciler/reconciler.toml"
    assert env["RECONCILER_LOG_FORMAT"] == "json"
    assert env["RECONCILER_DEFAULT_SERVER_LISTEN"] == f"0.0.0.0:{image.only('EXPOSE')}"
    assert "RECONCILER_SERVER_LISTEN" not in env, "an override would hide the file's listen"
    assert image.healthcheck() == ["reconcile", "health"]


def test_build_context_holds_what_the_build_copies(image: Image) -> None:
    """Every file the Dockerfile copies is in the context; the venv, git and tests are not."""
    patterns = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = [
        source
        for instruction in instructions((ROOT / "Dockerfile").read_text())
        if instruction.keyword == "COPY" and not instruction.arguments.startswith("--from")
        for source in instruction.arguments.split()[:-1]
    ]
    assert "reconciler" in copied
    for source in copied:
        assert (ROOT / source).exists(), source
        assert not ignored(source, patterns), source
    assert not ignored("reconciler/core/next_config.py", patterns)
    for outside in (".venv/bin/python", ".git/HEAD", "tests/conftest.py"):
        assert ignored(outside, patterns), outside
    assert ignored("reconciler/__pycache__/cli.cpython-311.pyc", patterns)


def test_entrypoint_runs_with_the_image_environment(image: Image) -> None:
    """`reconcile --help` through the image's ENTRYPOINT and ENV."""
    done = subprocess.run(
        [*AS_PID_1, *image.entrypoint(), "--help"],
        env=image.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Usage" in done.stdout


class Daemon:
    """The long-running controller as a child process, its output in a file."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path) -> None:
        self.command = command
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Run the command, stdout and stderr to the log file."""
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                self.command, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )

    def stop(self) -> int:
        """SIGTERM, as a container stop sends; the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(DEADLINE)

    def kill(self) -> None:
        """Kill the process if it still runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture(name="daemon")
def _daemon(image: Image, cloud: Cloud, tmp_path: Path) -> Iterator[Daemon]:
    """
    The ENTRYPOINT without arguments (the controller) as PID 1, started on demand and stopped at
    teardown, with the image's ENV plus the test's AWS endpoint, its listen address on loopback.
    """
    env = {**os.environ, **image.env()}
    env["RECONCILER_CONFIG"] = str(tmp_path / "reconciler.toml")
    daemon = Daemon([*AS_PID_1, *image.entrypoint()], env, tmp_path / "reconcile.log")
    try:
        yield daemon
    finally:
        daemon.kill()


def test_sidecar_starts_haproxy_and_reports_health(
    image: Image,
    daemon: Daemon,
    cloud: Cloud,
    haproxy_factory: HAProxyFactory,
    http_backends: HTTPBackends,
) -> None:
    """
    The sidecar as the image runs it, in template mode with no config file yet: the controller
    writes the first file, HAProxy started from it serves the instances, and the HEALTHCHECK
    passes; when cycles fail (the group is gone) it fails; SIGTERM stops the controller cleanly
    and its logs are JSON lines.
    """
    instances = cloud.create_group(GROUP, 2)
    port = free_port()
    for instance_id, ip in cloud.serving(GROUP).items():
        http_backends.start(ip, port, name=instance_id)
    haproxy = haproxy_factory.create()
    daemon.env["FRONTEND_BIND"] = f"127.0.0.1:{haproxy.port}"
    Path(daemon.env["RECONCILER_CONFIG"]).write_text(
        f"""
[haproxy]
config = "{haproxy.config_path}"
socket = "{haproxy.socket_path}"
template = "{ROOT / "haproxy.cfg.j2"}"

[controller]
resync_interval = 1
max_backoff = 1

[server]
healthy_intervals = 2

[[backend]]
name = "api"
asg = "{GROUP}"
port = {port}
server_prefix = "api-"
"""
    )
    assert run_healthcheck(image, daemon.env) != 0, "nothing listens yet"
    daemon.start()
    wait_for(haproxy.config_path.exists, f"the first file (log: {daemon.log})")
    haproxy.start(haproxy.config_path.read_text())
    wait_for(
        lambda: (
            {haproxy.get("/")[1].removeprefix("hello from ") for _ in range(20)} == set(instances)
        ),
        "every instance answering",
    )
    wait_for(lambda: run_healthcheck(image, daemon.env) == 0, "a passing health check")
    cloud.delete_group(GROUP)
    wait_for(lambda: run_healthcheck(image, daemon.env) != 0, "a failing health check")
    assert daemon.stop() == 0, daemon.log.read_text()
    records = [json.loads(line) for line in daemon.log.read_text().splitlines()]
    assert any(r["message"] == "controller started" for r in records)


def write_template_settings(
    env: dict[str, str], tmp_path: Path, extra: str = "", haproxy: str = ""
) -> None:
    """
    Template-mode settings at *env*'s ``RECONCILER_CONFIG``: one backend of a group, no HAProxy
    running (the first file is written all the same), *haproxy* added to ``[haproxy]`` and
    *extra* TOML appended.
    """
    Path(env["RECONCILER_CONFIG"]).write_text(
        f"""
[haproxy]
config = "{tmp_path / "haproxy.cfg"}"
socket = "{tmp_path / "admin.sock"}"
template = "{ROOT / "haproxy.cfg.j2"}"
{haproxy}

[[backend]]
name = "api"
asg = "{GROUP}"
port = 8080
{extra}"""
    )


def zombies_under(root: int) -> list[int]:
    """The zombie processes among the descendants of process *root*."""
    parents: dict[int, int] = {}
    states: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended meanwhile
            continue
        fields = text.rpartition(")")[2].split()
        pid = int(stat.parent.name)
        states[pid], parents[pid] = fields[0], int(fields[1])
    below = {root}
    grown = True
    while grown:
        more = {pid for pid, parent in parents.items() if parent in below} - below
        below |= more
        grown = bool(more)
    return sorted(pid for pid in below - {root} if states.get(pid) == "Z")


def test_pid_1_reaps_orphans_of_check_commands(
    daemon: Daemon, cloud: Cloud, tmp_path: Path
) -> None:
    """
    A check command that leaves a background process behind (it outlives the command, so PID 1
    inherits it): once that process ends, no ``<defunct>`` entry is left in the container.
    """
    cloud.create_group(GROUP, 1)
    marker = tmp_path / "orphan-done"
    orphan = f"(sleep 0.2; touch {marker}) >/dev/null 2>&1 &"
    check = shlex.join(["sh", "-c", orphan, "sh", "{path}"])
    write_template_settings(daemon.env, tmp_path, haproxy=f"check_command = {json.dumps(check)}")
    daemon.start()
    assert daemon.process is not None
    wait_for(marker.exists, f"the orphan to finish (log: {daemon.log})")
    root = daemon.process.pid
    wait_for(lambda: not zombies_under(root), "no zombie left")
    assert daemon.stop() == 0, daemon.log.read_text()


def test_listen_in_the_file_wins_over_the_image_default(
    image: Image, daemon: Daemon, cloud: Cloud, tmp_path: Path
) -> None:
    """
    The user's ``[server] listen`` is where the controller listens, not the image's default
    address; the HEALTHCHECK asks there.
    """
    cloud.create_group(GROUP, 0)
    # The image's address, moved to loopback, wherever the image sets it.
    default = next(v for k, v in daemon.env.items() if k.endswith("SERVER_LISTEN"))
    chosen = f"127.0.0.1:{free_port()}"
    write_template_settings(daemon.env, tmp_path, f'\n[server]\nlisten = "{chosen}"\n')
    daemon.start()
    wait_for(lambda: run_healthcheck(image, daemon.env) == 0, f"health at {chosen}")
    host, _, port = default.rpartition(":")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=DEADLINE).close()
    assert daemon.stop() == 0, daemon.log.read_text()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        pytest.param(
            {"RECONCILER_CONTROLLER_RESYNC_INTERVAL": "nan"}, "resync_interval", id="bad-settings"
        ),
        pytest.param({"RECONCILER_SERVER_LISTEN": ""}, "server.listen is not set", id="no-listen"),
        pytest.param({}, "no answer from", id="nobody-listening"),
    ],
)
def test_healthcheck_fails_with_1_and_says_why(
    image: Image, tmp_path: Path, override: dict[str, str], expected: str
) -> None:
    """Whatever goes wrong, the HEALTHCHECK exits 1 (Docker reserves 2) and says what."""
    env = {**os.environ, **image.env(), "RECONCILER_CONFIG": str(tmp_path / "reconciler.toml")}
    write_template_settings(env, tmp_path)
    done = subprocess.run(
        image.healthcheck(),
        env={**env, **override},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert expected in done.stderr
