"""
The demo's scripted story: six steps played against a running ``World``, each narrated in one
line, with the requests that went through HAProxy's frontend and ``reconcile drift`` after it.
The last one starts a second node (``demo.zones``) before a mixed-instances group in three zones.

A step has converged when HAProxy serves exactly the group's serving instances (every managed
server ``UP``, none left over), the controller's last cycle succeeded with nothing in progress,
and ``reconcile drift`` exits 0. Anything else within ``STEP_TIMEOUT`` fails the demo with a
message naming the step and what it waited for.
"""

from __future__ import annotations

import csv
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from rich.console import Console

from demo import zones as zone_world
from demo.world import RESYNC_INTERVAL, DemoError, World
from demo.zones import CAPACITIES, PER_ZONE, ZoneWorld
from harness.haproxy import wait_for
from harness.load import Load
from harness.stack import BACKEND, GROUP, SERVER_PREFIX, asg_notification
from harness.zones import ZoneStack


TITLES = (
    "Initial sync",
    "Scale-out, notified through SNS → SQS",
    "Scale-in with draining",
    "A lost notification",
    "A server removed by hand",
    "Mixed instances in three zones",
)
#: The environment switch of ``--stay`` (``DEMO_STAY=1 make demo``).
STAY_ENV = "DEMO_STAY"
#: Seconds any step may take to converge: far above what it needs on a slow 2-core machine.
STEP_TIMEOUT = 30.0
#: Requests sent through the frontend after each step: a multiple of 2 and 3 instances.
REQUESTS = 12
#: Requests sent to the second node: a multiple of its weights' cycle (64 + 256 = 5 x 64).
ZONE_REQUESTS = 20
#: The request kept in flight on the instance that leaves: shorter than its drain_timeout.
SLOW_SECONDS = 6.0
#: The keys of an ``autoscaling:EC2_INSTANCE_*`` notification, in the order AWS writes them.
NOTIFICATION_KEYS = (
    "Progress",
    "AccountId",
    "Description",
    "RequestId",
    "EndTime",
    "AutoScalingGroupARN",
    "ActivityId",
    "StartTime",
    "Service",
    "Time",
    "EC2InstanceId",
    "StatusCode",
    "StatusMessage",
    "Details",
    "AutoScalingGroupName",
    "Cause",
    "Event",
)
#: Per event: the Subject's word, the Description's words, and what the Cause says happened.
_WORDING = {
    "LAUNCH": (
        "launch",
        "Launching a new EC2 instance",
        "an instance was started in response to a difference between desired and actual "
        "capacity, increasing",
    ),
    "TERMINATE": (
        "termination",
        "Terminating EC2 instance",
        "an instance was taken out of service in response to a difference between desired and "
        "actual capacity, shrinking",
    ),
}


class Story:
    """Plays the steps in order against *world*, narrating on *console*."""

    def __init__(self, world: World, console: Console, *, interactive: bool = False) -> None:
        self.world = world
        self.console = console
        self.interactive = interactive
        self.stack = world.stack
        self.haproxy = world.haproxy
        self.daemon = world.daemon

    def introduce(self, *, stay: bool) -> None:
        """
        Where to look while the story plays, and how to reach the world from another shell;
        unless it will *stay* up after the last step, how to make it.
        """
        self.console.print("Where to look while it runs:")
        for label, where in self.world.where_to_look():
            self.console.print(f"  {label:<15}{where}", highlight=False, soft_wrap=True)
        self.poke()
        if not stay:
            self.console.print(
                f"They work until the last step; `{STAY_ENV}=1 make demo` (python -m demo "
                "--stay) keeps the world up after it, until Ctrl-C.",
                highlight=False,
                soft_wrap=True,
            )

    def poke(self) -> None:
        """The lines to paste into another shell to run ``reconcile`` on the world."""
        self.console.print(
            f"Poke it from another shell: AWS is moto at {self.world.cloud.endpoint} (dummy "
            "keys); paste these lines:",
            highlight=False,
            soft_wrap=True,
        )
        for line in self.world.shell_lines():
            # Never wrapped, never read as markup: pasted, the line must be what was printed.
            self.console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)

    def play(self, count: int = len(TITLES)) -> None:
        """
        The first *count* steps in order (every step by default); a step that does not converge
        raises ``DemoError``.
        """
        steps: tuple[Callable[[], None], ...] = (
            self.initial_sync,
            self.scale_out,
            self.scale_in,
            self.lost_notification,
            self.removed_by_hand,
            self.mixed_zones,
        )
        played = zip(TITLES[:count], steps[:count], strict=True)
        for number, (title, step) in enumerate(played, start=1):
            self._pause()
            self.console.print()
            self.console.rule(f"Step {number}/{len(TITLES)}: {title}", align="left")
            try:
                step()
            # AssertionError: the harness's HarnessError (a wait timed out, a wrong answer).
            except (DemoError, AssertionError) as exc:
                raise DemoError(f"step {number} ({title}): {exc}") from exc

    # -- the steps --------------------------------------------------------------------------------

    def initial_sync(self) -> None:
        """The controller's first file, HAProxy started from it, every instance answering."""
        serving = self.group_serving()
        self.say(
            f"The controller rendered haproxy.cfg from haproxy.cfg.j2 with the group's "
            f"{len(serving)} InService instances, then HAProxy started from that file."
        )
        self.settle(since=0)
        self.requests()
        self.drift(expect="in sync")

    def scale_out(self) -> None:
        """A launch whose notification travels SNS → SQS and wakes the controller at once."""
        since = len(self.daemon.cycles())
        size = len(self.group_serving())
        (new,) = self.stack.scale_to(size + 1)
        self.publish("LAUNCH", new, (size, size + 1))
        published = time.monotonic()
        self.say(
            f"The group launches {new} and publishes autoscaling:EC2_INSTANCE_LAUNCH to SNS; "
            "the queue subscribed to the topic wakes the controller."
        )
        self.settle(since)
        self.say(
            f"{new} serves {time.monotonic() - published:.1f} s after the notification, added "
            f"by a cycle triggered by: {self.trigger_of(new, since)} (resyncs run every "
            f"{RESYNC_INTERVAL} s)."
        )
        self.wait(lambda: self.world.queue.depth() == 0, "the message to be deleted")
        self.say("The queue is empty: the message was deleted once a cycle after it succeeded.")
        self.requests()
        self.drift(expect="in sync")

    def scale_in(self) -> None:
        """An instance drained while a slow request on it completes, then terminated."""
        serving = sorted(self.group_serving())
        leaving = serving[0]
        # Round robin gives each of these to a different server, so one lands on the leaver.
        slow = _SlowRequests(self.world, len(serving), SLOW_SECONDS)
        self.wait(lambda: self.sessions(leaving) > 0, f"a slow request in flight on {leaving}")
        since = len(self.daemon.cycles())
        self.world.cloud.begin_scale_in(GROUP, [leaving])
        self.publish("TERMINATE", leaving, (len(serving), len(serving) - 1))
        self.say(
            f"The group scales in: {leaving} waits in Terminating:Wait (a lifecycle hook) with a "
            f"{SLOW_SECONDS:g} s request in flight through HAProxy; a notification wakes the "
            "controller."
        )
        self.wait(lambda: self.status(leaving) == "DRAIN", f"{leaving} to drain")
        self.say(f"{leaving} is draining: its request goes on, new requests go to the others.")
        self.requests()
        self.drift(expect="drift")
        answers = slow.wait()
        body = answers.get(leaving)
        if body is None:
            raise DemoError(f"the slow request on {leaving} did not complete: {answers}")
        self.say(f"The slow request on {leaving} completed: {body}.")
        self.wait(lambda: self.status(leaving) is None, f"{leaving} to leave HAProxy")
        self.world.cloud.terminate(leaving, decrement=False)
        self.stack.servers.pop(leaving).stop()
        self.say(
            f"Nothing attached any more: the controller deleted {SERVER_PREFIX}{leaving}, and "
            "the group terminated the instance."
        )
        self.settle(since)
        self.requests()
        self.drift(expect="in sync")

    def lost_notification(self) -> None:
        """A launch nobody announces: the periodic resync finds it."""
        self.quiet_moment()
        since = len(self.daemon.cycles())
        (new,) = self.stack.scale_to(len(self.group_serving()) + 1)
        launched = time.monotonic()
        self.say(
            f"The group launches {new}, but its notification is lost: nothing reaches the queue."
        )
        self.drift(expect="drift")
        self.settle(since)
        self.say(
            f"{new} serves {time.monotonic() - launched:.1f} s after its launch, added by a cycle "
            f"triggered by: {self.trigger_of(new, since)}; the resync every {RESYNC_INTERVAL} s "
            "corrects what no message announced."
        )
        self.requests()
        self.drift(expect="in sync")

    def removed_by_hand(self) -> None:
        """A server deleted on HAProxy's admin socket, repaired from the group."""
        self.quiet_moment()
        since = len(self.daemon.cycles())
        victim = sorted(self.group_serving())[0]
        server = f"{BACKEND}/{SERVER_PREFIX}{victim}"
        self.say(
            f"By hand on the admin socket: `set server {server} state maint`, then "
            f"`del server {server}`."
        )
        self.admin(f"set server {server} state maint", "")
        # Deletion waits for the last connection to the server to close.
        self.wait(
            lambda: self.admin(f"del server {server}", "Server deleted.", fail=False),
            f"`del server {server}` to succeed",
        )
        removed = time.monotonic()
        worker = self.haproxy.worker_pid()
        self.requests()
        self.drift(expect="drift")
        self.settle(since)
        how = "without a reload" if self.haproxy.worker_pid() == worker else "with a reload"
        self.say(
            f"Repaired {time.monotonic() - removed:.1f} s later by a cycle triggered by: "
            f"{self.trigger_of(victim, since)}. The group says {victim} serves, so the "
            f"controller added it back at runtime, {how}."
        )
        self.requests()
        self.drift(expect="in sync")

    def mixed_zones(self) -> None:
        """
        A second node before a mixed-instances group in three zones: weights from the group's
        WeightedCapacity, every request in the node's zone; then that zone's servers fail their
        checks and HAProxy's own failover sends every request to the other zones, no request
        failing; they recover and the traffic returns.
        """
        second = zone_world.start(
            self.world.cleanup, self.world.cloud, self.world.directory, self.haproxy.binary
        )
        stack = second.stack
        kinds = ", ".join(f"{kind} (WeightedCapacity {n})" for kind, n in CAPACITIES.items())
        self.say(
            f"A second node, in {stack.node_zone}, before a mixed-instances group of {kinds}, "
            f"{PER_ZONE} instances in each of {', '.join(stack.zone_names)}; its backend sets "
            'weight = "capacity" and zone_routing = true.'
        )
        remote = stack.remote()
        self.wait_on(second, lambda: stack.formed(remote, set()), "the other zones as backups")
        zones, types, weights = stack.zones(), stack.types(), stack.runtime_weights()
        for instance in sorted(stack.servers, key=lambda i: (zones[i], i)):
            role = "backup" if instance in remote else "active"
            self.console.print(
                f"  {instance}  {zones[instance]}  {types[instance]:<11} weight "
                f"{weights[instance]:>3}  {role}",
                highlight=False,
            )
        self.zone_requests(stack)
        self.zone_drift(second)
        local = stack.in_zone(stack.node_zone)
        worker = stack.haproxy.worker_pid()
        with Load(stack.haproxy, ["/"] * 2) as load:
            failed_at = time.monotonic()
            stack.fail(local)
            self.say(f"{stack.node_zone} loses its servers: their health checks fail.")
            self.wait_on(second, lambda: stack.down() == set(local), f"{stack.node_zone} DOWN")
            down = time.monotonic() - failed_at
            marked = len(load.hits())
            self.wait_on(second, lambda: len(load.hits()) > marked + 40, "requests")
        hits = load.hits()
        failed = sum(1 for hit in hits if hit.status != 200)
        after = stack.by_zone(Counter(hit.instance for hit in hits[marked + 2 :]))
        self.say(
            f"HAProxy marked them DOWN {down:.1f} s later and sent every request to the backups "
            f"of both other zones at once (option allbackups), no controller cycle needed: "
            f"{len(hits)} requests, {failed} failed; after: "
            + ", ".join(f"{zone}: {after[zone]}" for zone in stack.zone_names)
        )
        if failed:
            raise DemoError(f"{failed} of {len(hits)} requests failed while the zone failed over")
        stack.recover(local)
        self.wait_on(second, lambda: stack.formed(remote, set()), f"{stack.node_zone} UP again")
        self.say(f"{stack.node_zone} recovers: its servers take every request again.")
        self.zone_requests(stack)
        how = "without a reload" if stack.haproxy.worker_pid() == worker else "with a reload"
        self.say(f"All of it {how}.")
        self.zone_drift(second)

    def wait_on(self, second: ZoneWorld, condition: Callable[[], bool], what: str) -> None:
        """``wait``, for the second node's controller."""
        wait_for(lambda: condition() or not second.daemon.alive, what, STEP_TIMEOUT)
        if not second.daemon.alive:
            code = second.daemon.process.returncode
            raise DemoError(f"the controller exited (code {code}) while waiting for {what}")

    def zone_requests(self, stack: ZoneStack) -> None:
        """Send ``ZONE_REQUESTS`` requests to the second node; say where they went."""
        seen = stack.answering(ZONE_REQUESTS)
        zones = stack.zones()
        by_zone = sorted(seen.items(), key=lambda item: (zones[item[0]], item[0]))
        counts = ", ".join(f"{i} ({zones[i]}): {n}" for i, n in by_zone)
        line = f"  {ZONE_REQUESTS} requests → {counts}"
        self.console.print(line, highlight=False, soft_wrap=True)

    def zone_drift(self, second: ZoneWorld) -> None:
        """Show ``reconcile drift`` for the second node, which must be in sync."""
        self.console.print("  $ reconcile drift   (expected: in sync)", style="dim")
        self.console.file.flush()
        code = second.drift()
        if code != 0:
            raise DemoError(f"reconcile drift on the second node exited with {code}")

    def summary(self) -> None:
        """What the controller did over the whole story, from its ``/metrics``."""
        totals: dict[str, float] = {}
        for (name, _labels), value in self.daemon.metrics().items():
            totals[name] = totals.get(name, 0.0) + value
        counted = [
            ("cycles", "reconciler_cycles_total"),
            ("runtime commands", "reconciler_runtime_commands_total"),
            ("file writes", "reconciler_config_writes_total"),
            ("reloads", "reconciler_reloads_total"),
            ("SQS messages deleted", "reconciler_sqs_messages_deleted_total"),
        ]
        words = ", ".join(f"{totals.get(metric, 0):g} {what}" for what, metric in counted)
        self.console.print()
        self.say(f"The controller's /metrics over the whole story: {words}.")

    # -- narration --------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        """One line of narration."""
        # Soft wrap: the terminal wraps a long line; a log or a pipe keeps it whole.
        self.console.print(f"▸ {text}", highlight=False, soft_wrap=True)

    def requests(self) -> None:
        """Send ``REQUESTS`` requests through the frontend; say which instances answered."""
        seen = self.stack.answering(REQUESTS)
        counts = ", ".join(f"{instance}: {n}" for instance, n in sorted(seen.items()))
        self.console.print(f"  {REQUESTS} requests → {counts}", highlight=False, soft_wrap=True)

    def drift(self, *, expect: str) -> None:
        """Show ``reconcile drift``; *expect* ``in sync`` fails the step on any drift."""
        self.console.print(f"  $ reconcile drift   (expected: {expect})", style="dim")
        self.console.file.flush()
        code = self.world.drift()
        if expect == "in sync" and code != 0:
            raise DemoError(f"reconcile drift found drift (exit code {code}) after convergence")

    def _pause(self) -> None:
        if not self.interactive:
            return
        try:
            self.console.input("[dim]Press Enter for the next step…[/]")
        except EOFError:
            self.interactive = False

    # -- observations -----------------------------------------------------------------------------

    def group_serving(self) -> dict[str, str]:
        """The group's instances that should serve, with their addresses."""
        return self.world.cloud.serving(GROUP)

    def settle(self, since: int) -> None:
        """
        Wait until HAProxy serves exactly the group's serving instances and the controller's last
        cycle (one of those after the first *since*) succeeded with nothing left in progress.
        """
        expected = set(self.group_serving())

        def settled() -> bool:
            cycles = self.daemon.cycles()
            if len(cycles) <= since:
                return False
            last = cycles[-1]
            quiet = last["result"] == "ok" and not last["pending"]
            return quiet and self.stack.serving() == expected

        self.wait(settled, f"HAProxy to serve exactly {sorted(expected)}")

    def wait(self, condition: Callable[[], bool], what: str) -> None:
        """
        Wait up to ``STEP_TIMEOUT`` for *condition*; stop waiting at once if the controller
        exits, since nothing would change any more.
        """
        wait_for(lambda: condition() or not self.daemon.alive, what, STEP_TIMEOUT)
        if not self.daemon.alive:
            code = self.daemon.process.returncode
            raise DemoError(f"the controller exited (code {code}) while waiting for {what}")

    def quiet_moment(self) -> None:
        """
        Wait for the end of a resync that left nothing in progress: the next cycle is then a
        whole resync interval away, time enough to show the drift it will repair.
        """
        count = len(self.daemon.cycles())

        def resynced() -> bool:
            cycles = self.daemon.cycles()
            return len(cycles) > count and cycles[-1]["trigger"] == "resync"

        self.wait(resynced, "a resync")

    def trigger_of(self, instance_id: str, since: int) -> str:
        """What triggered the cycle that changed *instance_id*'s server, after cycle *since*."""
        cycles = 0
        changed = False
        for record in self.daemon.records():
            if record["message"] in ("cycle done", "cycle failed"):
                cycles += 1
                if changed:
                    return str(record["trigger"])
            elif cycles >= since and record.get("instance") == instance_id:
                changed = True
        return "unknown"

    def stats(self) -> dict[str, dict[str, str]]:
        """HAProxy's ``show stat`` rows of the backend's managed servers, by instance id."""
        rows = csv.DictReader(self.haproxy.command("show stat").lstrip("# ").splitlines())
        return {
            row["svname"].removeprefix(SERVER_PREFIX): row
            for row in rows
            if row["pxname"] == BACKEND and row["svname"].startswith(SERVER_PREFIX)
        }

    def status(self, instance_id: str) -> str | None:
        """The HAProxy status of *instance_id*'s server (``UP``, ``DRAIN``...); None: absent."""
        row = self.stats().get(instance_id)
        return row["status"] if row else None

    def sessions(self, instance_id: str) -> int:
        """The sessions *instance_id*'s server has now."""
        row = self.stats().get(instance_id)
        return int(row["scur"] or 0) if row else 0

    # -- actions ----------------------------------------------------------------------------------

    def admin(self, command: str, success: str, *, fail: bool = True) -> bool:
        """Send *command* to the admin socket; whether HAProxy answered *success*."""
        reply = self.haproxy.command(command).strip()
        if reply != success and fail:
            raise DemoError(f"`{command}`: HAProxy answered {reply!r}")
        return reply == success

    def publish(self, event: str, instance_id: str, capacity: tuple[int, int]) -> None:
        """
        Publish the group's ``autoscaling:EC2_INSTANCE_<event>`` notification for *instance_id*
        to the topic, for a desired *capacity* change (before, after).
        """
        reservation = self.world.cloud.ec2.describe_instances(InstanceIds=[instance_id])
        instance = reservation["Reservations"][0]["Instances"][0]
        message = notification(
            event,
            instance_id,
            subnet=instance["SubnetId"],
            zone=instance["Placement"]["AvailabilityZone"],
            capacity=capacity,
        )
        self.world.cloud.sns.publish(
            TopicArn=self.world.queue.topic_arn,
            Subject=f'Auto Scaling: {_WORDING[event][0]} for group "{GROUP}"',
            # Compact, as AWS writes it.
            Message=json.dumps(message, separators=(",", ":")),
        )


def notification(
    event: str, instance_id: str, *, subnet: str, zone: str, capacity: tuple[int, int]
) -> dict[str, Any]:
    """
    The ``autoscaling:EC2_INSTANCE_<event>`` notification (``LAUNCH`` or ``TERMINATE``) an Auto
    Scaling group sends to SNS after a user set its desired *capacity* (before, after), field
    for field as AWS writes it (shared/notes/aws.md §1.3).
    """
    base = asg_notification(event, instance_id, GROUP)
    _, description, activity = _WORDING[event]
    at = f"At {base['Time'][:19]}Z"
    change = f"from {capacity[0]} to {capacity[1]}"
    cause = (
        f"{at} a user request explicitly set group desired capacity changing the desired "
        f"capacity {change}.  {at} {activity} the capacity {change}."
    )
    if event == "TERMINATE":
        cause += f"  {at} instance {instance_id} was selected for termination."
    # Each scaling activity has its own id, which AWS also uses as the request's.
    activity_id = str(uuid.uuid4())
    fields = {
        **base,
        "Description": f"{description}: {instance_id}",
        "RequestId": activity_id,
        "StartTime": base["Time"],
        "EndTime": base["Time"],
        "ActivityId": activity_id,
        "Details": {"Subnet ID": subnet, "Availability Zone": zone},
        "Cause": cause,
    }
    return {key: fields[key] for key in NOTIFICATION_KEYS}


class _SlowRequests:
    """``GET /slow`` requests sent through the frontend at once, each in its own thread."""

    def __init__(self, world: World, count: int, seconds: float) -> None:
        self._answers: dict[str, str] = {}
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(
                target=self._send, args=(world, seconds), name=f"slow-{n}", daemon=True
            )
            for n in range(count)
        ]
        for thread in self._threads:
            thread.start()
            # One after the other, so round robin hands each to the next server.
            time.sleep(0.05)

    def _send(self, world: World, seconds: float) -> None:
        started = time.monotonic()
        try:
            status, body = world.haproxy.get(f"/slow?seconds={seconds:g}", timeout=seconds + 10)
        except OSError as exc:
            status, body = 0, str(exc)
        answer = f"{status} {body!r} after {time.monotonic() - started:.1f} s"
        with self._lock:
            self._answers[body.removeprefix("hello from ")] = answer

    def wait(self) -> dict[str, str]:
        """Wait for every request; the answers by instance id (or error text)."""
        for thread in self._threads:
            thread.join(SLOW_SECONDS + 15)
        with self._lock:
            return dict(self._answers)
