"""
The naive per-message handler the benchmarks compare against: the classic blog-post script.

For every message of the queue, one at a time: parse the Auto Scaling notification, look the
instance up with ``DescribeInstances``, add or remove its ``server`` line in the backend section of
haproxy.cfg, write the file, reload HAProxy (the given shell command, by default what
``systemctl reload haproxy`` runs: ``haproxy -c`` then ``SIGUSR2`` to the master), delete the
message. No batching, no coalescing, no runtime API, no health-check warm-up, no look at what
HAProxy runs.

Run as ``python -m bench.naive --queue-url URL --config haproxy.cfg --backend api --port 80
--reload '...'``; AWS settings come from the environment like any boto3 script's. After every
message it rewrites ``--stats`` (JSON: messages, AWS calls by kind, file writes, reloads), which
is how the benchmark counts its work. SIGTERM ends it at once.

``NaiveHandler`` runs it as a child process for the benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import ClientError


if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_sqs.type_defs import MessageTypeDef

#: The repository root, from which ``python -m bench.naive`` finds the package.
ROOT = Path(__file__).resolve().parent.parent
STAT_NAMES = (
    "messages",
    "receive_calls",
    "describe_calls",
    "delete_calls",
    "file_writes",
    "reloads",
    "reload_failures",
)


class Script:
    """The handler's state: its arguments, its AWS clients and its counts."""

    def __init__(self, args: argparse.Namespace) -> None:
        """Build the clients from the environment."""
        self.args = args
        # botocore itself reads AWS_DEFAULT_REGION only; scripts usually name the region.
        session = boto3.session.Session(region_name=args.region or os.environ.get("AWS_REGION"))
        self.sqs = session.client("sqs")
        self.ec2: EC2Client = session.client("ec2")
        self.stats = dict.fromkeys(STAT_NAMES, 0)

    def run(self) -> None:
        """Handle messages until killed."""
        self._save()
        while True:
            self.stats["receive_calls"] += 1
            reply = self.sqs.receive_message(
                QueueUrl=self.args.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=20
            )
            for message in reply.get("Messages", []):
                self.handle(message)
                self.stats["delete_calls"] += 1
                self.sqs.delete_message(
                    QueueUrl=self.args.queue_url, ReceiptHandle=message["ReceiptHandle"]
                )
                self.stats["messages"] += 1
                self._save()

    def handle(self, message: MessageTypeDef) -> None:
        """One notification: look the instance up, edit the file, reload."""
        body = json.loads(message.get("Body", "{}"))
        notification = json.loads(body["Message"]) if "Message" in body else body
        event = str(notification.get("Event", ""))
        instance_id = notification.get("EC2InstanceId")
        if not instance_id:
            return  # a test notification
        address = self.running_address(instance_id)
        name = f"{self.args.prefix}{instance_id}"
        if event.endswith("LAUNCH") and address:
            line = f"server {name} {address}:{self.args.port} {self.args.options}".rstrip()
            self.rewrite(name, line)
        elif event.endswith("TERMINATE"):
            self.rewrite(name, None)

    def running_address(self, instance_id: str) -> str | None:
        """The private IP of *instance_id* when it is running."""
        self.stats["describe_calls"] += 1
        try:
            reply = self.ec2.describe_instances(InstanceIds=[instance_id])
        except ClientError:
            return None
        for reservation in reply["Reservations"]:
            for instance in reservation.get("Instances", []):
                if instance.get("State", {}).get("Name") == "running":
                    return instance.get("PrivateIpAddress")
        return None

    def rewrite(self, name: str, line: str | None) -> None:
        """Remove server *name* from the backend section, add *line* if given, write, reload."""
        path = Path(self.args.config)
        lines = path.read_text().splitlines()
        start = lines.index(f"backend {self.args.backend}") + 1
        end = start
        while end < len(lines) and (not lines[end] or lines[end][0].isspace()):
            end += 1
        section = [row for row in lines[start:end] if row.split()[:2] != ["server", name]]
        while section and not section[-1].strip():
            section.pop()
        if line is not None:
            section.append(f"    {line}")
        lines[start:end] = [*section, ""] if end < len(lines) else section
        path.write_text("\n".join(lines) + "\n")
        self.stats["file_writes"] += 1
        done = subprocess.run(self.args.reload, shell=True, check=False)  # noqa: S602 - the user's command
        self.stats["reloads"] += 1
        if done.returncode != 0:
            self.stats["reload_failures"] += 1

    def _save(self) -> None:
        """Rewrite the stats file atomically: the benchmark reads it at any moment."""
        path = Path(self.args.stats)
        temp = path.with_name(f".{path.name}.tmp")
        temp.write_text(json.dumps(self.stats))
        temp.replace(path)


class NaiveHandler:
    """The script as a child process, with its output in *directory*."""

    def __init__(
        self,
        directory: Path,
        *,
        queue_url: str,
        config: Path,
        port: int,
        options: str,
        reload: str,
        backend: str = "api",
        prefix: str = "api-",
    ) -> None:
        """Start it."""
        self.stats_path = directory / "naive-stats.json"
        self.log_path = directory / "naive.log"
        command = [
            sys.executable,
            "-m",
            "bench.naive",
            f"--queue-url={queue_url}",
            f"--config={config}",
            f"--backend={backend}",
            f"--prefix={prefix}",
            f"--port={port}",
            f"--options={options}",
            f"--reload={reload}",
            f"--stats={self.stats_path}",
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=os.environ.copy(),
            )

    def stats(self) -> dict[str, int]:
        """Its counts so far (zeros before its first write); raise if it died."""
        if self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the naive script exited with {self.process.returncode}: {tail}")
        try:
            saved: dict[str, Any] = json.loads(self.stats_path.read_text())
        except (OSError, ValueError):
            saved = {}
        return {name: int(saved.get(name, 0)) for name in STAT_NAMES}

    def stop(self) -> None:
        """Kill it, whatever it is doing."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.naive", description=__doc__)
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--region", default=None, help="default: $AWS_REGION, then boto3's chain")
    parser.add_argument("--config", required=True, help="haproxy.cfg to edit")
    parser.add_argument("--backend", default="api")
    parser.add_argument("--prefix", default="", help="server name prefix")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--options", default="", help="words after the address")
    parser.add_argument(
        "--reload",
        default="haproxy -c -f /etc/haproxy/haproxy.cfg && systemctl reload haproxy",
        help="shell command that reloads HAProxy",
    )
    parser.add_argument("--stats", required=True, help="JSON file rewritten after every message")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run until killed."""
    Script(parse(argv)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
