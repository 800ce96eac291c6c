"""
``reconcile`` as a long-running controller, as a user runs it: the real command in a child process
with a settings file and JSON logs, the moto server as the AWS account (SNS → SQS notifications in
the classic envelope), a real HAProxy with an admin socket, and HTTP servers on the instances'
loopback addresses. Assertions are about what HAProxy serves, what the queue holds, and what the
controller reports on ``/metrics``, ``/healthz`` and in its log; cycles are counted, never timed,
except where a latency is the point, and then only against a generous bound.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import time
from typing import Any

import pytest

from harness.haproxy import wait_for
from harness.messages import MALFORMED
from harness.moto import UNIMPLEMENTED, Cloud
from harness.stack import BACKEND, GROUP, Daemon, Daemons, Notifications, Stack, asg_notification
from tests.support.corpus import CORPUS
from tests.support.daemon import (
    DEADLINE,
    controller,
    settled,
    sqs,
    start_converged,
    wait_deleted,
    wait_for_woken_cycle,
    woken_cycles,
)


def cycles_since(daemon: Daemon, count: int) -> list[dict[str, Any]]:
    """The summaries of the cycles after the first *count*."""
    return daemon.cycles()[count:]


def report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    """Show a measurement in the test output, whatever pytest captures."""
    with capsys.disabled():
        print(f"\n    {text}")


@pytest.mark.haproxy_versions
def test_scale_out_notification_is_served_within_a_second(
    stack: Stack, daemons: Daemons, queue: Notifications, capsys: pytest.CaptureFixture[str]
) -> None:
    """
    The group launches an instance and notifies SNS: with no resync due for five minutes, the
    controller serves it about as soon as the notification lands, deletes the message, and its
    metrics and log say so.
    """
    daemon = start_converged(daemons, stack, controller=controller(), sqs=sqs(queue))
    before = len(daemon.cycles())
    (new,) = stack.scale_to(3)
    published = time.monotonic()
    queue.publish("LAUNCH", new)
    wait_for(lambda: new in stack.serving(), "the new instance to serve", DEADLINE)
    latency = time.monotonic() - published
    report(capsys, f"notification to serving: {latency:.2f}s")
    assert latency < 5, "only a resync would have been this slow"
    everyone = set(stack.cloud.serving(GROUP))
    wait_for(lambda: stack.answering(40).keys() == everyone, "every instance answering", DEADLINE)

    wait_deleted(daemon, queue, 1)
    # The event cycle saw the instance serving: no follow-up; progress polls end the warm-up.
    wait_for(lambda: settled(daemon), "the warm-up to end", DEADLINE)
    triggers = [c["trigger"] for c in cycles_since(daemon, before)]
    assert triggers[0] == "event"
    assert set(triggers) <= {"event", "progress"}
    fields = {"trigger", "duration_ms", "cpu_ms", "aws_read", "changes", "api_calls", "result"}
    for cycle in daemon.cycles():
        assert fields <= cycle.keys()
        # A cycle that reads AWS calls DescribeAutoScalingGroups and DescribeInstances; a
        # progress poll calls nothing.
        assert cycle["api_calls"] >= 2 if cycle["aws_read"] else cycle["api_calls"] == 0
    assert cycles_since(daemon, before)[0]["changes"] == 1

    metrics = daemon.metrics()
    cycles = len(daemon.cycles())
    reads = len([c for c in daemon.cycles() if c["aws_read"]])

    def sample(name: str, **labels: str) -> float:
        return metrics.get((name, frozenset(labels.items())), 0.0)

    assert sample("reconciler_cycles_total", result="ok") == cycles
    assert sample("reconciler_cycles_total", result="failed") == 0
    assert sample("reconciler_changes_total", kind="add") >= 3
    assert sample("reconciler_servers", backend=BACKEND, source="desired") == 3
    assert sample("reconciler_servers", backend=BACKEND, source="actual") == 3
    assert sample("reconciler_drift_servers", backend=BACKEND) == 0
    assert sample("reconciler_sqs_messages_received_total", kind="scaling") == 1
    assert sample("reconciler_sqs_messages_deleted_total", kind="scaling") == 1
    groups_calls = "autoscaling:DescribeAutoScalingGroups"
    assert sample("reconciler_aws_api_calls_total", operation=groups_calls) == reads
    assert sample("reconciler_aws_api_calls_total", operation="sqs:ReceiveMessage") >= 1
    assert sample("reconciler_aws_api_retries_total", operation=groups_calls) == 0
    assert abs(sample("reconciler_last_success_timestamp_seconds") - time.time()) < 60
    status, reason = daemon.get("/healthz")
    assert status == 200
    assert reason.startswith("last successful cycle")


@pytest.mark.parametrize("with_queue", [False, True], ids=["no-queue", "notifications-lost"])
def test_resync_converges_without_any_notification(
    stack: Stack, daemons: Daemons, cloud: Cloud, with_queue: bool
) -> None:
    """
    Without a queue the controller polls every resync interval; with a queue whose notifications
    are all lost it does the same. Either way the next resync serves the new instance.
    """
    sections: dict[str, Any] = {"controller": controller(resync_interval=1)}
    if with_queue:
        sections["sqs"] = sqs(Notifications(cloud))
    daemon = start_converged(daemons, stack, **sections)
    before = len(daemon.cycles())
    (new,) = stack.scale_to(3)
    wait_for(lambda: new in stack.serving(), "the next resync to serve it", DEADLINE)
    changed = [c for c in cycles_since(daemon, before) if c["changes"]]
    assert changed[0]["trigger"] == "resync"
    assert {c["trigger"] for c in daemon.cycles()} <= {"resync", "progress"}


@pytest.mark.haproxy_versions
def test_each_change_is_made_once_however_often_it_is_announced(
    stack: Stack, daemons: Daemons, queue: Notifications
) -> None:
    """
    A launch announced three times (at-least-once delivery) costs exactly what a launch
    announced once costs: the same changes and runtime commands; the repeats find nothing to do.
    """
    daemon = start_converged(daemons, stack, controller=controller(), sqs=sqs(queue))

    def totals() -> tuple[float, float]:
        metrics = daemon.metrics()
        changes = sum(v for (name, _), v in metrics.items() if name == "reconciler_changes_total")
        return changes, daemon.metric("reconciler_runtime_commands_total")

    def done(messages: int) -> None:
        """Wait until *messages* were deleted and the last cycle left nothing pending."""
        wait_deleted(daemon, queue, messages)
        wait_for(lambda: settled(daemon), "the warm-up to end", DEADLINE)

    start = totals()
    (once,) = stack.scale_to(3)
    queue.publish("LAUNCH", once)
    wait_for(lambda: once in stack.serving(), "the first new instance", DEADLINE)
    done(1)
    single = totals()

    (thrice,) = stack.scale_to(4)
    for _ in range(3):
        woken = woken_cycles(daemon)
        queue.publish("LAUNCH", thrice)
        wait_for_woken_cycle(daemon, woken)
        wait_for(lambda: thrice in stack.serving(), "the second new instance", DEADLINE)
    done(4)
    triple = totals()

    assert (triple[0] - single[0], triple[1] - single[1]) == (
        single[0] - start[0],
        single[1] - start[1],
    )
    assert daemon.metric("reconciler_sqs_messages_deleted_total", kind="scaling") == 4
    assert daemon.metric("reconciler_cycles_total", result="failed") == 0

    def changes_of(instance: str) -> list[str]:
        return [r["change"] for r in daemon.records() if r.get("server") == f"api-{instance}"]

    assert changes_of(thrice) == changes_of(once)
    assert changes_of(once)[0] == "add"
    assert len([line for line in stack.file_servers() if line.startswith("server api-")]) == 4


def test_a_burst_of_100_messages_costs_a_few_cycles(
    stack: Stack, daemons: Daemons, queue: Notifications, capsys: pytest.CaptureFixture[str]
) -> None:
    """
    A launch notification, then 99 more messages over most of a second: the launch is served
    before the burst ends, and the whole burst costs at most five cycles that read AWS. A burst
    costs about one such cycle per ``min_gap`` it lasts, plus the first (no follow-up: the first
    cycle sees the launch); a gap of a second keeps that bound on a loaded machine, where the
    burst itself is slower. Progress polls of the warm-up read HAProxy only, and are not counted.
    """
    config = controller(min_gap=1, poll_interval=0.5)
    daemon = start_converged(daemons, stack, controller=config, sqs=sqs(queue))
    count = len(daemon.cycles())
    (new,) = stack.scale_to(3)
    body = json.dumps(asg_notification("LAUNCH", new))
    queue.publish("LAUNCH", new)
    for _ in range(10):
        queue.send(*[body] * 9)
        time.sleep(0.06)
    # The last messages wait until HAProxy has the new server: it got it during the burst.
    wait_for(lambda: new in stack.states(), "the new server, before the burst ends", DEADLINE)
    queue.send(*[body] * 9)
    wait_deleted(daemon, queue, 100)
    wait_for(lambda: settled(daemon), "the warm-up to end", DEADLINE)
    burst = [c for c in cycles_since(daemon, count) if c["aws_read"]]
    report(capsys, f"100 messages: {len(burst)} cycles ({[c['trigger'] for c in burst]})")
    assert len(burst) <= 5
    assert sum(c["wakeups"] for c in burst) == 100
    assert daemon.metric("reconciler_sqs_messages_deleted_total", kind="scaling") == 100
    assert new in stack.admitted()


def test_harmless_messages_are_deleted_at_once_without_a_cycle(
    stack: Stack, daemons: Daemons, queue: Notifications, cloud: Cloud
) -> None:
    """Test notifications and subscription confirmations are deleted on receipt; no cycle runs."""
    daemon = start_converged(daemons, stack, controller=controller(), sqs=sqs(queue))
    cycles = len(daemon.cycles())
    confirmation = {
        "Type": "SubscriptionConfirmation",
        "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": "2336412f37",
        "TopicArn": queue.topic_arn,
        "Message": "You have chosen to subscribe to the topic. To confirm, visit the SubscribeURL.",
        "SubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription",
        "Timestamp": "2026-03-02T10:15:42.447Z",
    }
    queue.send(json.dumps(confirmation), json.dumps(asg_notification("TEST_NOTIFICATION")))
    queue.publish("TEST_NOTIFICATION")
    assert wait_deleted(daemon, queue, 3) == {"test": 2, "subscription": 1}
    assert len(daemon.cycles()) == cycles


def test_malformed_messages_wake_a_cycle_and_are_deleted(
    stack: Stack, daemons: Daemons, queue: Notifications
) -> None:
    """Bodies in no known shape are logged, count as wake-ups for every group, and go away."""
    daemon = start_converged(daemons, stack, controller=controller(), sqs=sqs(queue))
    queue.send(*MALFORMED)
    kinds = wait_deleted(daemon, queue, len(MALFORMED))
    assert daemon.alive
    assert kinds["not_json"] >= 3
    assert daemon.metric("reconciler_cycles_total", result="failed") == 0
    received = [r for r in daemon.records() if r["message"] == "message received"]
    assert len(received) == len(MALFORMED)
    assert all(len(r.get("body", "")) <= 200 for r in received)


def test_every_corpus_message_is_handled_and_deleted(
    stack: Stack, daemons: Daemons, queue: Notifications
) -> None:
    """Every real sample (for a group this controller does not manage) is handled, then deleted."""
    if not CORPUS.is_dir():
        pytest.skip(f"message corpus not found at {CORPUS}")
    bodies = [path.read_text(encoding="utf-8") for path in sorted(CORPUS.glob("*.json"))]
    daemon = start_converged(daemons, stack, controller=controller(), sqs=sqs(queue))
    queue.send(*bodies)
    wait_deleted(daemon, queue, len(bodies))
    assert daemon.alive
    assert daemon.metric("reconciler_cycles_total", result="failed") == 0
    received = [r for r in daemon.records() if r["message"] == "message received"]
    assert len(received) == len(bodies)


def test_aws_outage_changes_nothing_and_recovery_converges(
    stack: Stack,
    daemons: Daemons,
    queue: Notifications,
    cloud: Cloud,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """
    A short throttling burst is ridden out by retries. Then DescribeAutoScalingGroups answers
    HTML 500 pages for a while: nothing is removed, the notification stays in the queue, /healthz
    turns 503 with the reason, and the process lives on. Once AWS answers again the controller
    converges, deletes the message and is healthy.
    """
    daemon = start_converged(
        daemons,
        stack,
        controller=controller(resync_interval=1, max_backoff=1),
        sqs=sqs(queue),
        server={"healthy_intervals": 2},
    )
    groups_calls = "autoscaling:DescribeAutoScalingGroups"
    cloud.fail("DescribeAutoScalingGroups", "Throttling", 2)
    wait_for(
        lambda: daemon.metric("reconciler_aws_api_retries_total", operation=groups_calls) == 2,
        "two retries of a throttled call",
        DEADLINE,
    )
    assert daemon.metric("reconciler_cycles_total", result="failed") == 0

    before = stack.haproxy.config_path.read_bytes()
    admitted = stack.admitted()
    leaving, staying = sorted(admitted)
    # moto logs a traceback for every HTML 500 it serves; they are the point here.
    caplog.set_level(logging.CRITICAL, logger="werkzeug")
    cloud.fail("DescribeAutoScalingGroups", UNIMPLEMENTED, 1_000_000)
    # A cycle already past its group read would see the termination truthfully; only once a
    # cycle has failed is every later read sure to fail.
    failed_before = daemon.metric("reconciler_cycles_total", result="failed")
    wait_for(
        lambda: daemon.metric("reconciler_cycles_total", result="failed") > failed_before,
        "a failed cycle",
        DEADLINE,
    )
    cloud.terminate(leaving)
    queue.publish("TERMINATE", leaving)
    wait_for(
        lambda: daemon.metric("reconciler_cycles_total", result="failed") >= failed_before + 3,
        "two more failed cycles",
        DEADLINE,
    )
    wait_for(lambda: daemon.get("/healthz")[0] == 503, "/healthz to turn 503", DEADLINE)
    reason = daemon.get("/healthz")[1]
    assert "last error" in reason
    assert "DescribeAutoScalingGroups" in reason
    assert stack.admitted() == admitted, f"a failed read removed a server: {stack.states()}"
    assert stack.haproxy.config_path.read_bytes() == before
    assert daemon.metric("reconciler_sqs_messages_deleted_total", kind="scaling") == 0
    assert daemon.metric("reconciler_aws_api_errors_total", operation=groups_calls) >= 2

    def receipts() -> list[int]:
        """How often the notification was received so far (it comes back while not deleted)."""
        return [
            int(r["receive_count"])
            for r in daemon.records()
            if r["message"] == "message received" and r["event"].endswith("TERMINATE")
        ]

    wait_for(lambda: max(receipts(), default=0) >= 2, "the notification to come back", DEADLINE)
    failed = [c for c in daemon.cycles() if c["result"] == "failed"]
    assert {c["trigger"] for c in failed} <= {"event", "retry", "resync"}

    cloud.close()  # AWS answers again
    wait_for(lambda: stack.serving() == {staying}, "the terminated instance to leave", DEADLINE)
    wait_deleted(daemon, queue, 1)
    wait_for(lambda: daemon.get("/healthz")[0] == 200, "/healthz to recover", DEADLINE)
    assert daemon.metric("reconciler_sqs_messages_deleted_total", kind="scaling") >= 1
    assert daemon.alive


@pytest.mark.haproxy_versions
def test_follow_up_catches_a_change_announced_before_aws_shows_it(
    stack: Stack, daemons: Daemons, queue: Notifications
) -> None:
    """
    The notification arrives before the launch is visible (eventual consistency): the event
    cycle finds nothing new, and the follow-up a moment later serves the instance.
    """
    daemon = start_converged(
        daemons, stack, controller=controller(follow_up_delay=1.5), sqs=sqs(queue)
    )
    count = len(daemon.cycles())
    queue.publish("LAUNCH", "i-0123456789abcdef0")
    wait_for(lambda: cycles_since(daemon, count), "the event cycle", DEADLINE)
    (new,) = stack.scale_to(3)
    wait_for(lambda: new in stack.serving(), "the follow-up to serve it", DEADLINE)
    first, *rest = cycles_since(daemon, count)
    assert (first["trigger"], first["changes"]) == ("event", 0)
    assert next(c for c in rest if c["changes"])["trigger"] == "follow-up"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_promptly_and_cleanly(
    stack: Stack,
    daemons: Daemons,
    queue: Notifications,
    signum: signal.Signals,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """
    Idle, the controller uses next to no CPU. A signal while a 20 s long poll is in flight (and
    a change is under way) ends it within a couple of seconds with exit code 0, the config file
    valid and no temp file left beside it.
    """
    daemon = start_converged(
        daemons, stack, controller=controller(), sqs=sqs(queue, wait_seconds=20)
    )
    cpu = daemon.cpu_seconds()
    time.sleep(1.5)
    idle = daemon.cpu_seconds() - cpu
    assert idle < 0.3, f"{idle:.2f}s of CPU in 1.5s of idling: a busy loop?"

    (new,) = stack.scale_to(3)
    queue.publish("LAUNCH", new)
    took = daemon.signal(signum)
    report(capsys, f"{signum.name} to exit: {took:.2f}s; idle CPU {idle * 1000:.0f}ms in 1.5s")
    assert daemon.process.returncode == 0
    assert took < 5
    assert daemon.records()[-1]["message"] == "controller stopped"
    check = subprocess.run(
        [stack.haproxy.binary, "-c", "-f", str(stack.haproxy.config_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    leftovers = [p.name for p in stack.haproxy.workdir.iterdir() if ".tmp" in p.name]
    assert leftovers == []
