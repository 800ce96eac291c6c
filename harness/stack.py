"""
A whole deployment, every part real and on loopback.

- ``Stack``: one Auto Scaling group in moto, HTTP servers on its instances' loopback addresses,
  a real HAProxy with an admin socket and one ``api`` backend (plus a hand-written backup server
  the controller must never touch), and the settings file of ``reconcile``; ``build_stack`` makes
  one.
- ``Notifications``: the trigger queue subscribed to the SNS topic the group notifies, with raw
  delivery off, so bodies arrive in the classic SNS envelope; ``asg_notification`` and
  ``spot_warning`` are the bodies AWS sends about the stack's group.
- ``Daemon`` / ``Daemons``: ``reconcile`` running as a controller in a child process, its JSON
  log in a file, its ``/healthz`` and ``/metrics`` on a loopback port.
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client.parser import text_string_to_metric_families

from harness import HarnessError
from harness.haproxy import (
    HEALTH_CHECK,
    BackendSpec,
    HAProxyFactory,
    HAProxyProcess,
    HTTPBackend,
    HTTPBackends,
    free_port,
    wait_for,
)
from harness.moto import Cloud


if TYPE_CHECKING:
    from mypy_boto3_sqs.literals import QueueAttributeNameType
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef


GROUP = "api-asg"
BACKEND = "api"
SERVER_PREFIX = "api-"
HAND_WRITTEN = "maintenance 127.0.0.1:9 backup"
RECONCILE = [sys.executable, "-m", "reconciler"]
ACCOUNT = "123456789012"
#: Without it a check must answer within its 100 ms interval, which the test process's HTTP
#: servers miss on a loaded machine: servers would flap DOWN for reasons no test is about.
CHECK_TIMEOUT = "timeout check 2s"
#: Seconds a child process may take to start answering or to exit before the test fails.
PROCESS_DEADLINE = 20.0

#: A TOML scalar in a settings section.
Value = str | int | float | bool


class Stack:
    """One group, its instances' HTTP servers, one HAProxy and the settings file."""

    def __init__(
        self,
        cloud: Cloud,
        haproxy: HAProxyProcess,
        backends: HTTPBackends,
        settings_path: Path,
        port: int,
    ) -> None:
        """Wire the parts; ``build_stack`` makes them."""
        self.cloud = cloud
        self.haproxy = haproxy
        self.backends = backends
        self.settings = settings_path
        self.port = port
        self.servers: dict[str, HTTPBackend] = {}
        self.write_settings()

    def write_settings(
        self, backend: Mapping[str, Value] | None = None, **sections: Mapping[str, Value]
    ) -> None:
        """
        Write the settings file: the HAProxy paths, the ``api`` backend (with *backend*'s keys
        added or replacing), then each of *sections* (``controller={"resync_interval": 1}``...)
        as a TOML table.
        """
        binding: dict[str, Value] = {
            "name": BACKEND,
            "asg": GROUP,
            "port": self.port,
            "server_prefix": SERVER_PREFIX,
            "server_options": "check inter 100ms fall 2 rise 1",
            "drain_timeout": 5,
            **(backend or {}),
        }
        # The controller checks each file with the HAProxy this stack runs, which need not be
        # the one on PATH (the default `check_command`).
        check = f"{shlex.quote(self.haproxy.binary)} -c -f {{path}}"
        text = f"""
[haproxy]
config = "{self.haproxy.config_path}"
socket = "{self.haproxy.socket_path}"
check_command = {json.dumps(check)}

[[backend]]
{_toml(binding)}"""
        for name, values in sections.items():
            text += f"\n[{name}]\n{_toml(values)}"
        self.settings.write_text(text)

    def serve_instances(self) -> None:
        """Start an HTTP server on every serving instance that has none yet."""
        for instance_id, ip in self.cloud.serving(GROUP).items():
            if instance_id not in self.servers:
                self.servers[instance_id] = self.backends.start(ip, self.port, name=instance_id)

    def scale_to(self, capacity: int) -> set[str]:
        """Set the group's desired capacity, serve new instances; return the ids that appeared."""
        before = set(self.cloud.serving(GROUP))
        self.cloud.set_desired(GROUP, capacity)
        self.serve_instances()
        return set(self.cloud.serving(GROUP)) - before

    def reconcile(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``reconcile --once`` with this stack's settings."""
        return subprocess.run(
            [*RECONCILE, "--once", "--config", str(self.settings), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=os.environ.copy(),
            check=False,
        )

    def reconcile_json(self, *args: str) -> tuple[int, dict[str, Any]]:
        """Run ``reconcile --once --json``; return the exit code and the report."""
        done = self.reconcile("--json", *args)
        if not done.stdout:
            raise HarnessError(f"reconcile --json printed nothing: {done.stderr}")
        return done.returncode, json.loads(done.stdout)

    def answering(self, requests: int = 30) -> Counter[str]:
        """Which instances answer *requests* requests sent through HAProxy's frontend."""
        seen: Counter[str] = Counter()
        for _ in range(requests):
            status, body = self.haproxy.get("/")
            if status != 200:
                raise HarnessError(f"HAProxy answered {status}: {body}")
            seen[body.strip().removeprefix("hello from ")] += 1
        return seen

    def states(self) -> dict[str, str]:
        """Instance id → HAProxy status (``UP``, ``DRAIN``, ``MAINT``...) of the managed servers."""
        rows = csv.DictReader(self.haproxy.command("show stat").lstrip("# ").splitlines())
        return {
            row["svname"].removeprefix(SERVER_PREFIX): row["status"]
            for row in rows
            if row["pxname"] == BACKEND and row["svname"].startswith(SERVER_PREFIX)
        }

    def serving(self) -> set[str]:
        """The instances whose managed server takes traffic (up and not draining)."""
        return {instance for instance, status in self.states().items() if status == "UP"}

    def admitted(self) -> set[str]:
        """
        The instances whose managed server is neither draining nor in maintenance: what the
        controller keeps, whatever the health checks (HAProxy's own business) say right now.
        """
        return {
            instance
            for instance, status in self.states().items()
            if not status.startswith(("DRAIN", "MAINT"))
        }

    def converged(self) -> bool:
        """HAProxy serves exactly the group's serving instances."""
        return self.serving() == set(self.cloud.serving(GROUP))

    def file_servers(self) -> list[str]:
        """The ``server`` lines of the api backend in the config file, stripped."""
        lines = self.haproxy.config_path.read_text().splitlines()
        start = lines.index(f"backend {BACKEND}")
        section = []
        for line in lines[start + 1 :]:
            if line and not line.startswith(" "):
                break
            section.append(line.strip())
        return [line for line in section if line.startswith("server ")]


def _toml(values: Mapping[str, Value]) -> str:
    """The body of a TOML table: one ``key = value`` line each (JSON scalars are TOML too)."""
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())


def build_stack(
    cloud: Cloud,
    haproxy_factory: HAProxyFactory,
    http_backends: HTTPBackends,
    directory: Path,
    size: int = 2,
    *,
    global_lines: Sequence[str] = (),
) -> Stack:
    """
    *size* InService instances serving, HAProxy (with *global_lines* in its ``global`` section)
    with only a hand-written backup server.
    """
    cloud.create_group(GROUP, size)
    haproxy = haproxy_factory(
        BackendSpec(BACKEND, lines=(HEALTH_CHECK, CHECK_TIMEOUT), servers=(HAND_WRITTEN,)),
        global_lines=global_lines,
    )
    stack = Stack(cloud, haproxy, http_backends, directory / "reconciler.toml", free_port())
    stack.serve_instances()
    return stack


# -- the trigger queue -----------------------------------------------------------------------------


class Notifications:
    """The trigger queue, subscribed (raw delivery off) to the topic the group notifies."""

    def __init__(self, cloud: Cloud, *, visibility_timeout: int = 2) -> None:
        """Create the queue, with a short *visibility_timeout* so failed messages return soon."""
        self.cloud = cloud
        self.queue_url = cloud.sqs.create_queue(
            QueueName="asg-events", Attributes={"VisibilityTimeout": str(visibility_timeout)}
        )["QueueUrl"]
        queue_arn = cloud.sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]
        self.topic_arn = cloud.sns.create_topic(Name="asg-notifications")["TopicArn"]
        cloud.sns.subscribe(TopicArn=self.topic_arn, Protocol="sqs", Endpoint=queue_arn)

    def publish(self, event: str, instance_id: str = "", group: str = GROUP) -> None:
        """Publish an Auto Scaling notification (``LAUNCH``, ``TERMINATE``...) for *group*."""
        what = {"LAUNCH": "launch", "TERMINATE": "termination"}.get(event, event.lower())
        self.cloud.sns.publish(
            TopicArn=self.topic_arn,
            Subject=f'Auto Scaling: {what} for group "{group}"',
            Message=json.dumps(asg_notification(event, instance_id, group)),
        )

    def send(self, *bodies: str) -> None:
        """Put *bodies* on the queue as they are, ten per call."""
        for start in range(0, len(bodies), 10):
            entries: list[SendMessageBatchRequestEntryTypeDef] = [
                {"Id": str(n), "MessageBody": body}
                for n, body in enumerate(bodies[start : start + 10])
            ]
            reply = self.cloud.sqs.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            if reply.get("Failed"):
                raise HarnessError(f"SQS refused messages: {reply}")

    def depth(self) -> int:
        """Messages in the queue, visible or in flight."""
        names: list[QueueAttributeNameType] = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
        ]
        attributes = self.cloud.sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=names
        )["Attributes"]
        return sum(int(attributes[name]) for name in names)


def asg_notification(event: str, instance_id: str = "", group: str = GROUP) -> dict[str, Any]:
    """
    An ``autoscaling:EC2_INSTANCE_<event>`` notification as the group sends it to SNS, or the
    test notification for ``event="TEST_NOTIFICATION"``.
    """
    arn = (
        f"arn:aws:autoscaling:eu-west-1:{ACCOUNT}:autoScalingGroup:"
        f"2f1c7f3b-8d3a-4a8e-9b1e-5c6d7e8f9a0b:autoScalingGroupName/{group}"
    )
    common = {
        "AccountId": ACCOUNT,
        "RequestId": "6a1e7b0c-3f2d-4c59-9d6e-2b8a4f1c0e77",
        "AutoScalingGroupARN": arn,
        "AutoScalingGroupName": group,
        "Service": "AWS Auto Scaling",
        "Time": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
    }
    if event == "TEST_NOTIFICATION":
        return {**common, "Event": "autoscaling:TEST_NOTIFICATION"}
    return {
        "Progress": 50,
        **common,
        "Description": f"{event.title()} of EC2 instance: {instance_id}",
        "EC2InstanceId": instance_id,
        "StatusCode": "InProgress",
        "StatusMessage": "",
        "Details": {"Availability Zone": "eu-west-1a"},
        "Cause": "a user request changed the desired capacity",
        "Event": f"autoscaling:EC2_INSTANCE_{event}",
    }


def spot_warning(instance_id: str) -> dict[str, Any]:
    """An EC2 Spot interruption warning as an EventBridge rule delivers it to the queue."""
    return {
        "version": "0",
        "id": "ab3d5e7a-9c1f-4b3d-85e7-a9c1f3b5d7e9",
        "detail-type": "EC2 Spot Instance Interruption Warning",
        "source": "aws.ec2",
        "account": ACCOUNT,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": "eu-west-1",
        "resources": [f"arn:aws:ec2:eu-west-1:{ACCOUNT}:instance/{instance_id}"],
        "detail": {"instance-id": instance_id, "instance-action": "terminate"},
    }


# -- the controller in a child process -------------------------------------------------------------


#: A scraped sample: metric name and its labels.
SampleKey = tuple[str, frozenset[tuple[str, str]]]


class Daemon:
    """``reconcile`` as a controller in a child process; stdout and stderr go to one log file."""

    def __init__(self, settings: Path, log_path: Path, status: str) -> None:
        """Start it with *settings*, logging JSON to *log_path*; *status* is its listen address."""
        self.log_path = log_path
        self.status_url = f"http://{status}"
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [*RECONCILE, "--config", str(settings), "--log-format", "json"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=os.environ.copy(),
            )

    @property
    def alive(self) -> bool:
        """The process has not exited."""
        return self.process.poll() is None

    def records(self) -> list[dict[str, Any]]:
        """
        Every complete log line, each of which must be one JSON object. A last line without its
        newline is still being written, and is left for the next call.
        """
        written = self.log_path.read_bytes()
        complete = written[: written.rfind(b"\n") + 1]
        records = []
        for line in complete.decode("utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                raise HarnessError(f"log line is not JSON: {line!r}") from None
            if not isinstance(record, dict):
                raise HarnessError(f"log line is not a JSON object: {line!r}")
            records.append(record)
        return records

    def cycles(self) -> list[dict[str, Any]]:
        """The summary line of every cycle so far, in order."""
        return [r for r in self.records() if r["message"] in ("cycle done", "cycle failed")]

    def wait_cycles(self, count: int, what: str, timeout: float = PROCESS_DEADLINE) -> None:
        """Wait until at least *count* cycles have ended."""
        wait_for(lambda: len(self.cycles()) >= count, f"{count} cycle(s): {what}", timeout)

    def metrics(self) -> dict[SampleKey, float]:
        """Every sample of ``/metrics``."""
        status, text = self.get("/metrics")
        if status != 200:
            raise HarnessError(f"/metrics answered {status}: {text}")
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def metric(self, name: str, **labels: str) -> float:
        """One sample of ``/metrics``; 0 when it does not exist (yet)."""
        return self.metrics().get((name, frozenset(labels.items())), 0.0)

    def get(self, path: str) -> tuple[int, str]:
        """GET *path* from the status listener (no proxy); the status and the body."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(self.status_url + path, timeout=10) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def cpu_seconds(self) -> float:
        """User plus system CPU time the process has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        # utime and stime are the 14th and 15th fields; two were before the ")" split.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def signal(self, signum: signal.Signals) -> float:
        """Send *signum*; return how many seconds it took to exit (failing after the deadline)."""
        sent = time.monotonic()
        self.process.send_signal(signum)
        self.process.wait(PROCESS_DEADLINE)
        return time.monotonic() - sent

    def kill(self) -> None:
        """Stop it, whatever it is doing."""
        if self.alive:
            self.process.kill()
        self.process.wait(PROCESS_DEADLINE)


class Daemons:
    """Starts the controllers of one test, each running before the test goes on; kills them."""

    def __init__(self, directory: Path) -> None:
        """Keep logs in *directory*."""
        self._directory = directory
        self._started: list[Daemon] = []

    def start(
        self,
        stack: Stack,
        backend: Mapping[str, Value] | None = None,
        **sections: Mapping[str, Value],
    ) -> Daemon:
        """
        Write *stack*'s settings with *backend*'s keys, *sections* and a status listener on a
        free port, start ``reconcile`` and wait for its first cycle.
        """
        listen = f"127.0.0.1:{free_port()}"
        server = {"listen": listen, **sections.pop("server", {})}
        stack.write_settings(backend, **sections, server=server)
        log_path = self._directory / f"reconcile-{len(self._started)}.log"
        daemon = Daemon(stack.settings, log_path, listen)
        self._started.append(daemon)
        wait_for(lambda: daemon.cycles() or not daemon.alive, "the first cycle", PROCESS_DEADLINE)
        if not daemon.alive:
            raise HarnessError(f"reconcile exited before its first cycle:\n{log_path.read_text()}")
        return daemon

    def stop_all(self) -> None:
        """Kill every controller still running."""
        while self._started:
            self._started.pop().kill()
