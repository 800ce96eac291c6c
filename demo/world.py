"""
The demo's world: an AWS account played by moto, instances, HAProxy and the controller, all on
loopback and all in one temp dir.

``running`` builds it in the order a real node starts (the group and its instances exist, the
controller starts and renders ``haproxy.cfg`` from the shipped template, HAProxy starts from that
file) and tears it down in reverse, whatever happens: an exception, Ctrl-C or SIGTERM. The parts
are the ``harness`` the end-to-end tests use too, so the demo and those tests drive the same code
the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from harness.haproxy import HAProxyProcess, HTTPBackends, free_port, wait_for
from harness.moto import Cloud, moto_server, use_moto_only
from harness.stack import GROUP, PROCESS_DEADLINE, RECONCILE, Daemon, Notifications, Stack


#: The template users start from, used as shipped: the demo shows what they would run.
TEMPLATE = Path(__file__).resolve().parent.parent / "haproxy.cfg.j2"
INITIAL_SIZE = 2
#: Seconds between resyncs: short, so that the lost notification is corrected while you watch.
RESYNC_INTERVAL = 5
#: The backend's drain_timeout: longer than the slow request of the scale-in, so it can finish.
DRAIN_TIMEOUT = 20
#: Seconds the controller's first file and HAProxy's start may take.
START_TIMEOUT = 30.0
#: The controller's log (JSON lines) in the temp dir, beside HAProxy's.
CONTROLLER_LOG = "reconcile.log"
#: Long-poll wait of the queue; short, so that stopping the controller never waits for a poll.
SQS_WAIT = 2
#: What ``reconcile`` needs from the environment to act on this world as its controller does:
#: moto's endpoint, dummy keys and region (``use_moto_only``), and template mode (``_configure``).
SHELL_ENVIRONMENT = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REGION",
    "RECONCILER_HAPROXY_TEMPLATE",
    "RECONCILER_HAPROXY_RELOAD_COMMAND",
    "FRONTEND_BIND",
)


class DemoError(Exception):
    """A step did not converge or a part failed; the message says which and why."""


@dataclass
class World:
    """Every running part of the demo, and where to look at it."""

    directory: Path
    cloud: Cloud
    queue: Notifications
    stack: Stack
    daemon: Daemon
    #: Stops every part, newest first: a step that starts more registers them here.
    cleanup: ExitStack

    @property
    def haproxy(self) -> HAProxyProcess:
        """The HAProxy serving the group."""
        return self.stack.haproxy

    @property
    def master_pid(self) -> int:
        """HAProxy's master process (``-p`` writes its PID in master-worker mode)."""
        return int(self.haproxy.pid_path.read_text().split()[0])

    def where_to_look(self) -> list[tuple[str, str]]:
        """What a reader may open while the demo runs: label and address or path."""
        return [
            ("frontend", f"{self.haproxy.url}/"),
            ("metrics", f"{self.daemon.status_url}/metrics"),
            ("health", f"{self.daemon.status_url}/healthz"),
            ("haproxy.cfg", str(self.haproxy.config_path)),
            ("rendered from", str(TEMPLATE)),
            ("settings", str(self.stack.settings)),
            ("controller log", str(self.daemon.log_path)),
            ("haproxy log", str(self.haproxy.log_path)),
            ("admin socket", str(self.haproxy.socket_path)),
            (
                "processes",
                f"controller pid {self.daemon.process.pid}, haproxy master pid {self.master_pid}",
            ),
        ]

    def shell_lines(self) -> list[str]:
        """
        What to paste into another shell to run the CLI on this world: the environment, each
        variable on an ``export`` line (``RECONCILER_CONFIG`` naming the settings), then
        ``reconcile drift`` by its full path.
        """
        environment = {name: os.environ[name] for name in SHELL_ENVIRONMENT}
        environment["RECONCILER_CONFIG"] = str(self.stack.settings)
        exports = [f"export {name}={shlex.quote(value)}" for name, value in environment.items()]
        drift = [*_reconcile_command(), "drift", "--config", str(self.stack.settings)]
        return [*exports, shlex.join(drift)]

    def drift(self) -> int:
        """
        Run ``reconcile drift`` on this world, its table going straight to the terminal; return
        its exit code (0 in sync, 3 drift). Failing to read anything is a ``DemoError``.
        """
        done = subprocess.run(
            [*RECONCILE, "drift", "--config", str(self.stack.settings)],
            stdin=subprocess.DEVNULL,
            env=os.environ.copy(),
            timeout=PROCESS_DEADLINE,
            check=False,
        )
        if done.returncode not in (0, 3):
            raise DemoError(f"reconcile drift failed with exit code {done.returncode}")
        return done.returncode


@contextlib.contextmanager
def running(console: Console, *, verbose: bool = False) -> Iterator[World]:
    """
    Start the world in a new temp dir and yield it; on the way out stop every process and
    server it started, newest first, and remove the directory.
    """
    haproxy_binary = shutil.which("haproxy")
    if haproxy_binary is None:
        raise DemoError("haproxy is not on PATH: `make demo` installs it (apt-get install haproxy)")
    # Short (/tmp/asg-demo-xxxxxxxx): UNIX socket paths must stay under 108 bytes.
    directory = Path(tempfile.mkdtemp(prefix="asg-demo-"))
    with ExitStack() as cleanup:
        cleanup.callback(_remove_directory, console, directory)
        try:
            yield _start(console, directory, cleanup, haproxy_binary, verbose=verbose)
        except KeyboardInterrupt:
            # On its own line: the terminal echoed ^C after whatever was printed last.
            console.print("\ninterrupted: stopping everything the demo started")
            raise
        except BaseException:
            # The logs go with the directory: show what explains a failure while they exist.
            _print_logs(console, directory)
            raise
        finally:
            # A second Ctrl-C must not cut the clean-up short and leave processes behind.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _wire_as_in_an_account(cloud: Cloud, queue: Notifications) -> None:
    """
    What an account set up as docs/aws-setup.md says has and moto does not need: the group's
    notifications to the topic, a dead-letter queue, and a queue policy admitting the topic
    alone; so that ``reconcile check``, run on the playground, finds the path a message takes.
    """
    cloud.put_notification_configuration(GROUP, queue.topic_arn)
    dead = cloud.sqs.create_queue(QueueName="asg-events-dlq")["QueueUrl"]
    dead_arn = cloud.sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])
    queue_arn = cloud.sqs.get_queue_attributes(
        QueueUrl=queue.queue_url, AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    from_topic = {"ArnEquals": {"aws:SourceArn": queue.topic_arn}}
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "FromAsgTopic",
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": from_topic,
            }
        ],
    }
    redrive = {"deadLetterTargetArn": dead_arn["Attributes"]["QueueArn"], "maxReceiveCount": "10"}
    cloud.sqs.set_queue_attributes(
        QueueUrl=queue.queue_url,
        Attributes={"Policy": json.dumps(policy), "RedrivePolicy": json.dumps(redrive)},
    )


def _start(
    console: Console, directory: Path, cleanup: ExitStack, haproxy_binary: str, *, verbose: bool
) -> World:
    """Start every part in *directory*, registering how to stop each on *cleanup*."""
    endpoint = cleanup.enter_context(moto_server())
    use_moto_only(endpoint)
    cloud = Cloud(endpoint)
    cloud.create_group(GROUP, INITIAL_SIZE)
    queue = Notifications(cloud)
    _wire_as_in_an_account(cloud, queue)

    backends = HTTPBackends()
    cleanup.callback(backends.stop_all)
    haproxy = HAProxyProcess(haproxy_binary, directory)
    cleanup.callback(_stop_haproxy, console, haproxy)
    stack = Stack(cloud, haproxy, backends, directory / "reconciler.toml", free_port())
    stack.serve_instances()

    listen = f"127.0.0.1:{free_port()}"
    _configure(stack, queue, listen)
    daemon = Daemon(stack.settings, directory / CONTROLLER_LOG, listen)
    if verbose:
        # Stopped after the controller (callbacks run newest first), so its last lines show.
        tail = _LogTail(daemon.log_path, console)
        tail.start()
        cleanup.callback(tail.stop)
    cleanup.callback(_stop_controller, console, daemon)

    # Bootstrap, as a sidecar's HAProxy container does: wait for the controller's first
    # file, then start HAProxy from it.
    wait_for(
        lambda: _has_content(haproxy.config_path) or not daemon.alive,
        "the controller to write haproxy.cfg",
        START_TIMEOUT,
    )
    if not daemon.alive:
        raise DemoError(f"the controller exited with code {daemon.process.returncode}")
    haproxy.start(haproxy.config_path.read_text())
    return World(directory, cloud, queue, stack, daemon, cleanup)


def _reconcile_command() -> list[str]:
    """
    The ``reconcile`` script installed beside this Python (``.venv/bin/reconcile``), else this
    Python running the package: a full path either way, which works from any directory.
    """
    script = Path(sys.executable).with_name("reconcile")
    return [str(script)] if script.exists() else [sys.executable, "-m", "reconciler"]


def _has_content(path: Path) -> bool:
    """*path* exists and is not empty (the controller writes it atomically, whole)."""
    return path.exists() and path.stat().st_size > 0


def _print_logs(console: Console, directory: Path, lines: int = 15) -> None:
    """The last *lines* lines of every log in *directory*: the controller's and HAProxy's."""
    for path in sorted(directory.glob("*.log")):
        console.print(f"last lines of {path}:", style="bold")
        tail = path.read_text(errors="replace").splitlines()[-lines:]
        console.print("\n".join(tail), markup=False, highlight=False, soft_wrap=True)


def _configure(stack: Stack, queue: Notifications, listen: str) -> None:
    """
    The controller's settings: the file for the backend, the queue, the timers and the status
    listener; the environment for template mode and the frontend address the template binds.
    """
    stack.write_settings(
        {"drain_timeout": DRAIN_TIMEOUT},
        controller={"resync_interval": RESYNC_INTERVAL, "follow_up_delay": 1},
        sqs={"queue_url": queue.queue_url, "wait_seconds": SQS_WAIT},
        server={"listen": listen},
    )
    haproxy = stack.haproxy
    # Environment overrides, as a container sets them: the settings file has no [haproxy] keys
    # beyond the paths. The template binds FRONTEND_BIND; never leave it to its default ":80",
    # which would listen on every address.
    os.environ.update(
        {
            "RECONCILER_HAPROXY_TEMPLATE": str(TEMPLATE),
            "RECONCILER_HAPROXY_RELOAD_COMMAND": f'kill -USR2 "$(cat {haproxy.pid_path})"',
            "FRONTEND_BIND": f"127.0.0.1:{haproxy.port}",
        }
    )


def _stop_controller(console: Console, daemon: Daemon) -> None:
    """SIGTERM, as systemd or a container runtime sends it; a kill if it does not exit in time."""
    try:
        seconds = daemon.signal(signal.SIGTERM)
    except subprocess.TimeoutExpired:
        daemon.kill()
        console.print(f"controller (pid {daemon.process.pid}) did not stop on SIGTERM: killed")
        return
    console.print(
        f"controller stopped (pid {daemon.process.pid}, {seconds:.1f} s after SIGTERM, "
        f"exit code {daemon.process.returncode})"
    )


def _stop_haproxy(console: Console, haproxy: HAProxyProcess) -> None:
    """Stop HAProxy's master, its workers and whatever is left of its process group."""
    haproxy.stop()  # does nothing when it never started
    if haproxy.pid_path.exists():
        console.print("haproxy stopped (master and workers)")


def _remove_directory(console: Console, directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    console.print(f"removed {directory}")


class _LogTail:
    """With ``--verbose``: print the controller's JSON log lines as they are written."""

    def __init__(self, path: Path, console: Console) -> None:
        self._path = path
        self._console = console
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-tail", daemon=True)

    def start(self) -> None:
        """Follow the log from its start."""
        self._thread.start()

    def stop(self) -> None:
        """Print what is left, then stop following."""
        self._stopped.set()
        self._thread.join(PROCESS_DEADLINE)

    def _run(self) -> None:
        # Binary, so that a line caught half-written can be read again from its start.
        with self._path.open("rb") as log:
            while True:
                line = log.readline()
                if line.endswith(b"\n"):
                    text = _log_line(line.decode(errors="replace"))
                    self._console.print(
                        text, style="dim", markup=False, highlight=False, soft_wrap=True
                    )
                elif self._stopped.wait(0.1):
                    return
                else:
                    log.seek(-len(line), os.SEEK_CUR)


def _log_line(line: str) -> str:
    """One controller log record as ``controller: <time> <level> <message> key=value...``."""
    try:
        record: dict[str, Any] = json.loads(line)
    except ValueError:
        return f"controller: {line.rstrip()}"
    time_of_day = str(record.pop("time", ""))[11:23]
    level = record.pop("level", "")
    message = record.pop("message", "")
    record.pop("logger", None)
    fields = " ".join(f"{key}={value}" for key, value in record.items())
    return f"controller: {time_of_day} {level} {message} {fields}".rstrip()
