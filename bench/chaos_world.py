"""
The world of a ``bench.chaos`` run, and the run itself.

``running`` starts every part on loopback, in one directory, and stops them all on the way out:
a moto server in this process (the AWS account, with a group carrying a launch and a terminate
hook), the SNS topic and SQS queue, HTTP servers on the instances' 127.0.1.x addresses, a real
HAProxy in master-worker mode with an operator's hand-written config, the real ``reconcile``
controller in a child process, the load generator, the config and serving watchers, the AWS faults
and the notification courier. ``Chaos`` plays the scenario against it: it applies each event to
the group, keeps the harness in step with the group (HTTP servers started as instances come, and
stopped as they go: at once, or a few seconds later for the instances of a plain scale-in that
shut down as real ones do; the notifications AWS would send posted through the courier), forges
Spot warnings, has EC2 not know instances in service for a while (``Cloud.forget_instance``: the
eventual consistency that has the group list an instance DescribeInstances does not return),
kills and restarts the controller, reloads HAProxy, and finally waits for everything to settle.
The harness itself reads who serves past every fault (``serving``).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from botocore.exceptions import ClientError
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends

from bench.chaos_checks import (
    LOG_FORMAT,
    ConfigWatcher,
    Ledger,
    ServingWatch,
    retrying,
    worker_sessions,
)
from bench.chaos_faults import RUNTIME_FAULTS, Courier, RandomFaults
from bench.chaos_scenario import OPPOSITE, Disruption, Event, Forgery, Kind, Moment, Scenario
from harness.faulty_socket import FaultyProxy
from harness.haproxy import (
    HEALTH_CHECK,
    HAProxyProcess,
    HTTPBackend,
    HTTPBackends,
    free_port,
    wait_for,
)
from harness.lifecycle import COMPLETE, LAUNCH_HOOK, TERMINATE_HOOK, calls, serve, witness_haproxy
from harness.load import Load
from harness.messages import MALFORMED
from harness.moto import LAUNCHING, TERMINATING, WAIT_STATES, Cloud, moto_environment, moto_server
from harness.stack import (
    BACKEND,
    CHECK_TIMEOUT,
    GROUP,
    HAND_WRITTEN,
    SERVER_PREFIX,
    Daemon,
    Notifications,
    Stack,
    Value,
)


#: The controller signs with this key, the harness with ``MOTO_KEY``: faults hit only the former.
CONTROLLER_KEY = "chaos-controller"
FAULT_RATE = 0.1
#: Share of the controller's runtime API commands the faulty proxy picks for a fault.
RUNTIME_FAULT_RATE = 0.05
DROP = 0.3
DUPLICATE = 0.3
#: Seconds a notification copy may be late.
MAX_DELAY = 2.0
VISIBILITY_TIMEOUT = 2

INITIAL_SIZE = 3
#: The group never has fewer instances in service, so HAProxy always has somewhere to send.
MIN_IN_SERVICE = 2
#: Nor more members in all, which bounds the HTTP servers and health checks of this process.
MAX_MEMBERS = 8

RESYNC_INTERVAL = 5.0
DRAIN_TIMEOUT = 5.0
CONTROLLER = {
    "resync_interval": RESYNC_INTERVAL,
    "follow_up_delay": 1,
    "poll_interval": 0.2,
    "max_backoff": 2,
}
BINDING: dict[str, Value] = {
    "server_options": "check inter 200ms fall 2 rise 1",
    "drain_timeout": DRAIN_TIMEOUT,
    "complete_lifecycle_actions": True,
    # Forged warnings are only a test of the controller when it acts on true ones.
    "drain_on_spot_warning": True,
}
#: Seconds allowed after the last event beyond one resync and one drain: delivery delays,
#: AWS retries, and a last health check.
SETTLE_SLACK = 5.0
#: Load threads: short requests, and slow ones that keep sessions open across drains and reloads.
PATHS = ["/", "/", "/", "/slow?seconds=1", "/slow?seconds=1"]
#: Seconds each load thread waits between requests: the load shares two cores with everything.
PAUSE = 0.02
#: How often the run loop looks after the harness, and re-reads the group.
TEND_INTERVAL = 0.05
SYNC_INTERVAL = 0.2
#: How often the serving watch samples the group, the file and the runtime.
SAMPLE_INTERVAL = 0.1
#: Seconds a part may take to answer at start (the controller's first convergence included).
START_DEADLINE = 30.0
IN_SERVICE = "InService"


def haproxy_config(haproxy: HAProxyProcess) -> str:
    """
    The operator's haproxy.cfg: comments, tabs and spaces, a hand-written server in the managed
    backend and a second backend, none of which the controller may change by a single byte.
    """
    return f"""\
# haproxy.cfg as an operator keeps it, edited in place by the controller.
global
\tstats socket {haproxy.socket_path} mode 600 level admin
\tlog stdout format raw local0
\t# After a reload, the old worker may finish its requests for this long.
\thard-stop-after 10s

defaults
\tmode http
\tlog global
\tlog-format "{LOG_FORMAT}"
\toption dontlognull
\t# A connection refused by an instance that just died is retried on another server.
\tretries 3
\toption redispatch 1
\ttimeout connect 1s
\ttimeout client 10s
\ttimeout server 10s
\t{CHECK_TIMEOUT}

frontend fe
\tbind 127.0.0.1:{haproxy.port}
\tdefault_backend {BACKEND}

backend {BACKEND}
    balance roundrobin
    {HEALTH_CHECK}
    # Managed: the controller keeps the {SERVER_PREFIX}i-... server lines of this section.
    server {HAND_WRITTEN}\t# hand-written: never touched

backend static
\tserver static-1 127.0.0.1:9 disabled
"""


@contextlib.contextmanager
def running(directory: Path, binary: str, scenario: Scenario) -> Iterator[Chaos]:
    """Start every part in *directory*; stop them all on the way out, whatever happens."""
    with ExitStack() as cleanup:
        # moto warns at every injected code its error model lacks; the code reaches the client.
        warnings.filterwarnings("ignore", r"Exception\(\w+\) with code", UserWarning)
        endpoint = cleanup.enter_context(moto_server())
        # The controller inherits this environment: moto only (nothing of the user's own AWS
        # setup), and its own key, which the faults recognise; the harness's clients sign with
        # MOTO_KEY explicitly.
        for var in [v for v in os.environ if v.startswith("AWS_")]:
            del os.environ[var]
        os.environ.update(moto_environment(endpoint))
        os.environ.update(AWS_ACCESS_KEY_ID=CONTROLLER_KEY, AWS_SECRET_ACCESS_KEY=CONTROLLER_KEY)
        cloud = Cloud(endpoint)
        initial = cloud.create_group(GROUP, INITIAL_SIZE)
        # Scale-in protection (it only decides which instances a scale-in may pick): moto then
        # never terminates a member of its choice when a desired capacity it is given falls
        # below the instances in service (a launch completed meanwhile). Every departure is one
        # the scenario or the controller caused.
        cloud.autoscaling.update_auto_scaling_group(
            AutoScalingGroupName=GROUP, NewInstancesProtectedFromScaleIn=True
        )
        cloud.autoscaling.set_instance_protection(
            AutoScalingGroupName=GROUP, InstanceIds=initial, ProtectedFromScaleIn=True
        )
        cloud.put_lifecycle_hook(GROUP, LAUNCH_HOOK, LAUNCHING)
        cloud.put_lifecycle_hook(GROUP, TERMINATE_HOOK, TERMINATING)
        cleanup.callback(cloud.close)
        queue = Notifications(cloud, visibility_timeout=VISIBILITY_TIMEOUT)

        backends = HTTPBackends()
        cleanup.callback(backends.stop_all)
        haproxy = HAProxyProcess(binary, directory)
        haproxy.start(haproxy_config(haproxy))
        cleanup.callback(haproxy.stop)
        stack = Stack(cloud, haproxy, backends, directory / "reconciler.toml", free_port())
        _witness_every_worker(stack)

        # The controller talks to the admin socket through the proxy (the file names the real
        # socket); the harness's own reads and the watchers go to HAProxy directly.
        proxy = cleanup.enter_context(FaultyProxy(haproxy.socket_path, seed=scenario.seed + 3))
        proxy.chaos(RUNTIME_FAULT_RATE, RUNTIME_FAULTS)
        os.environ["RECONCILER_HAPROXY_SOCKET"] = str(proxy.path)

        faults = RandomFaults(FAULT_RATE, scenario.seed + 1, CONTROLLER_KEY)
        faults.install()
        cleanup.callback(faults.remove)
        courier = Courier(
            queue,
            random.Random(scenario.seed + 2),
            drop=DROP,
            duplicate=DUPLICATE,
            max_delay=MAX_DELAY,
            malformed=MALFORMED,
        )
        courier.start()
        cleanup.callback(courier.stop)
        watcher = ConfigWatcher(haproxy.config_path)
        watcher.start()
        cleanup.callback(watcher.stop)
        watch = ServingWatch(
            lambda: set(serving(cloud)),
            haproxy,
            backend=BACKEND,
            prefix=SERVER_PREFIX,
            hand_written=[HAND_WRITTEN.split()[0]],
            interval=SAMPLE_INTERVAL,
        )

        chaos = Chaos(directory, scenario, stack, queue, faults, proxy, courier, watcher, watch)
        chaos.sync()
        cleanup.callback(chaos.kill_controller)
        chaos.start_controller()
        wait_for(chaos.converged, "the first convergence", START_DEADLINE)
        watch.start()
        cleanup.callback(watch.stop)
        # Load only calls get(), which the ledger has; stopped first, before anything it uses.
        cleanup.enter_context(Load(chaos.ledger, PATHS))  # type: ignore[arg-type]
        yield chaos


def serving(cloud: Cloud) -> dict[str, str]:
    """
    Instance id → private IP of the group's members that serve (InService and Healthy, running),
    read past every fault: the group through the harness's own key, EC2 from moto's state in
    this process, since DescribeInstances may be pretending not to know an instance.
    """
    groups = cloud.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])
    ec2 = ec2_backends[DEFAULT_ACCOUNT_ID][cloud.region]
    found = {}
    for member in groups["AutoScalingGroups"][0]["Instances"]:
        if member["LifecycleState"] != IN_SERVICE or member["HealthStatus"] != "Healthy":
            continue
        instance = ec2.get_instance_by_id(member["InstanceId"])
        if instance is not None and instance.state == "running" and instance.private_ip:
            found[member["InstanceId"]] = instance.private_ip
    return found


def _witness_every_worker(stack: Stack) -> None:
    """
    At every lifecycle call, record what ``witness_haproxy`` records (the current worker and the
    file) and the sessions of every worker, old ones included; an unreadable HAProxy (mid-reload)
    is recorded as such rather than failing the call.
    """
    witness_haproxy(stack)
    current = stack.cloud.lifecycle_witness

    def witness() -> dict[str, object]:
        """What HAProxy holds at this instant."""
        try:
            seen = cast("dict[str, object]", retrying(current))
        except OSError as exc:
            return {"error": repr(exc)}
        return {**seen, "workers": worker_sessions(stack.haproxy, BACKEND)}

    stack.cloud.lifecycle_witness = witness


# -- the run ---------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the run did, for the report."""

    events: Counter[str] = field(default_factory=Counter)
    #: Events whose kind (and its opposite) did not fit the group's size bounds.
    skipped: int = 0
    launched: int = 0
    #: Instances terminated without a hook (scale-in, death), and through the terminate hook.
    abrupt: int = 0
    graceful: int = 0
    #: Of the ``abrupt`` ones: those that kept answering a while (a plain scale-in's shutdown),
    #: and those whose lingering was cut short because a new instance got their address.
    lingered: int = 0
    cut_short: int = 0
    #: Times an instance in service was unknown to DescribeInstances, and seconds in all.
    hidden: int = 0
    hidden_seconds: float = 0.0
    #: Instances that left the group while waiting on the terminate hook, never released.
    unexplained: list[str] = field(default_factory=list)
    kills: int = 0
    #: When each reload from outside began (monotonic).
    reloads: list[float] = field(default_factory=list)
    #: Exits of the controller that were not our SIGKILL, with their exit codes.
    unexpected_exits: list[int] = field(default_factory=list)
    #: Seconds from the last event to convergence; ``None``: not within the bound.
    settled_after: float | None = None
    settle_bound: float = RESYNC_INTERVAL + DRAIN_TIMEOUT + SETTLE_SLACK
    #: When it did not settle: what HAProxy, the file and the group held at the deadline.
    unsettled: str = ""
    #: Messages still in the queue once everything settled.
    queue_left: int = -1
    #: The last controller's exit code after SIGTERM (``None``: it had to be killed).
    stop_code: int | None = None
    #: Temp files killed controllers left beside haproxy.cfg.
    leftovers: int = 0
    seconds: float = 0.0


class Chaos:
    """Plays a scenario against the world and keeps the harness in step with the group."""

    def __init__(
        self,
        directory: Path,
        scenario: Scenario,
        stack: Stack,
        queue: Notifications,
        faults: RandomFaults,
        proxy: FaultyProxy,
        courier: Courier,
        watcher: ConfigWatcher,
        serving: ServingWatch,
    ) -> None:
        """Wire the parts ``running`` started."""
        self.directory = directory
        self.scenario = scenario
        self.stack = stack
        self.cloud = stack.cloud
        self.queue = queue
        self.faults = faults
        self.proxy = proxy
        self.courier = courier
        self.watcher = watcher
        self.serving = serving
        self.ledger = Ledger(stack.haproxy, PAUSE)
        self.daemons: list[Daemon] = []
        self.tally = Tally()
        #: When each instance terminated without a hook stopped answering (monotonic).
        self.abrupt: dict[str, float] = {}
        #: When (monotonic) a fault aimed at an instance: instance id → [(time, what)].
        self.aimed: dict[str, list[tuple[float, str]]] = {}
        #: Seconds the instances a plain scale-in picked will keep answering once they left.
        self._lingers: dict[str, float] = {}
        #: Instances that left and still answer: id → (when they stop, their HTTP server).
        self._lingering: dict[str, tuple[float, HTTPBackend]] = {}
        #: Instances DescribeInstances does not know for now → when it knows them again.
        self._hidden: dict[str, float] = {}
        self._states: dict[str, str] = {}
        self._killed = False
        self._restart_at: float | None = None
        self._boots: list[tuple[float, HTTPBackend]] = []
        self._synced = 0.0
        #: When the world was up (monotonic): times in the report count from here.
        self.started = time.monotonic()
        self._last_event = self.started

    def since(self, moment: float) -> str:
        """A monotonic *moment* as the time since the world was up, for the report."""
        return f"+{moment - self.started:.1f}s"

    # -- the controller --

    @property
    def daemon(self) -> Daemon:
        """The controller started last."""
        return self.daemons[-1]

    def start_controller(self) -> None:
        """Start a controller (on a fresh status port: the killed one's may linger)."""
        listen = f"127.0.0.1:{free_port()}"
        self.stack.write_settings(
            BINDING,
            controller=CONTROLLER,
            sqs={"queue_url": self.queue.queue_url, "wait_seconds": 1},
            server={"listen": listen},
        )
        log = self.directory / f"reconcile-{len(self.daemons)}.log"
        self.daemons.append(Daemon(self.stack.settings, log, listen))
        self._killed = False
        self._restart_at = None

    def kill_controller(self) -> None:
        """SIGKILL the controller, if one runs."""
        if self.daemons:
            self._killed = True
            self.daemon.kill()

    # -- the scenario --

    def play(self) -> None:
        """Apply every event, with the disruptions in the gaps between them."""
        started = time.monotonic()
        for index, event in enumerate(self.scenario.events):
            self._apply(event)
            self._last_event = time.monotonic()
            if index < len(self.scenario.events) - 1:
                self._pause(event.gap, self.scenario.moments_after(index))
        self.tally.seconds = time.monotonic() - started

    def settle(self) -> None:
        """After the last event: wait for convergence, then for an empty queue; stop everything."""
        if self._restart_at is not None:
            self.start_controller()
        self.courier.flush(MAX_DELAY + 5)
        deadline = self._last_event + self.tally.settle_bound
        while time.monotonic() < deadline:
            self._tend()
            if self.converged():
                self.tally.settled_after = time.monotonic() - self._last_event
                break
            time.sleep(TEND_INTERVAL)
        else:
            self.tally.unsettled = (
                f"HAProxy {self.stack.states()}, file {self._in_file()}, "
                f"serving {sorted(serving(self.cloud))}, members {self._members()}"
            )
        # Messages a killed controller took come back after the visibility timeout.
        deadline = time.monotonic() + VISIBILITY_TIMEOUT + RESYNC_INTERVAL + SETTLE_SLACK
        while self.queue.depth() and time.monotonic() < deadline:
            self._tend()
            time.sleep(TEND_INTERVAL)
        self.tally.queue_left = self.queue.depth()
        self._stop_controller()
        # A controller killed while writing leaves its hidden temp file behind (never loaded).
        self.tally.leftovers = len(list(self.directory.glob(".*.tmp-*")))

    def converged(self) -> bool:
        """HAProxy and the file hold exactly the InService instances, all UP; nothing waits."""
        if any(state != IN_SERVICE for state in self._members().values()):
            return False
        ids = set(serving(self.cloud))
        return self.stack.states() == dict.fromkeys(ids, "UP") and self._in_file() == ids

    def _in_file(self) -> set[str]:
        """The instances the file has a managed server line for."""
        return {
            line.split()[1].removeprefix(SERVER_PREFIX)
            for line in self.stack.file_servers()
            if line.split()[1].startswith(SERVER_PREFIX)
        }

    def _apply(self, event: Event) -> None:
        """Do *event* to the group (as far as it fits), follow the group, then its faults."""
        self._scale(event)
        if event.junk:
            self.courier.junk()
        in_service = sorted(i for i, state in self._states.items() if state == IN_SERVICE)
        if not in_service:
            return
        # The controller sees this instance in service, Healthy, on-demand: nothing true may
        # take it out of service.
        target = in_service[int(event.target * len(in_service))]
        if event.forgery is not None:
            self.courier.forge(event.forgery, target)
            if event.forgery is not Forgery.UNKNOWN:
                self._aim(target, f"forged Spot warning ({event.forgery.value})")
        if event.hide and target not in self._hidden:
            self.cloud.forget_instance(target)
            self._hidden[target] = time.monotonic() + event.hide
            self.tally.hidden += 1
            self.tally.hidden_seconds += event.hide
            self._aim(target, f"unknown to DescribeInstances for {event.hide:.1f}s")

    def _aim(self, instance_id: str, what: str) -> None:
        """Record that a fault aimed at *instance_id* now, for the report's explanations."""
        self.aimed.setdefault(instance_id, []).append((time.monotonic(), what))

    def _scale(self, event: Event) -> None:
        """Do *event*'s scaling to the group (as far as it fits), then follow the group."""
        self.sync()
        fit = self._fit(event)
        if fit is None:
            self.tally.skipped += 1
            return
        kind, count = fit
        self.tally.events[kind.value] += 1
        in_service = sorted(i for i, state in self._states.items() if state == IN_SERVICE)
        start = int(event.pick * len(in_service))
        picked = (in_service[start:] + in_service[:start])[:count]
        if kind is Kind.SCALE_OUT:
            self.cloud.set_desired(GROUP, len(in_service) + count)
        elif kind is Kind.HOOKED_SCALE_OUT:
            self.cloud.begin_scale_out(GROUP, count)
        elif kind is Kind.HOOKED_SCALE_IN:
            self.cloud.begin_scale_in(GROUP, picked)
        else:
            self._level()
            if kind is Kind.SCALE_IN:
                self._lingers.update(dict.fromkeys(picked, event.linger))
            for instance_id in picked:
                # _level may race a launch the controller completes meanwhile, and moto then
                # terminates a member of its choice to match: perhaps this one (sync sees it).
                with contextlib.suppress(ClientError):
                    self.cloud.terminate(instance_id, decrement=kind is Kind.SCALE_IN)
        self.sync(boot=event.boot)

    def _fit(self, event: Event) -> tuple[Kind, int] | None:
        """
        What *event* can do within the size bounds: its own kind with as many instances as fit,
        else its opposite's, else nothing.
        """
        members = len(self._states)
        in_service = sum(state == IN_SERVICE for state in self._states.values())
        for kind in (event.kind, OPPOSITE[event.kind]):
            if kind is Kind.REPLACEMENT:
                room = min(1, in_service)
            elif kind is Kind.SCALE_OUT:
                room = MAX_MEMBERS - members
            elif kind is Kind.HOOKED_SCALE_OUT:
                # Cloud.begin_scale_out also launches one per member not in service.
                room = MAX_MEMBERS - members - (members - in_service)
            else:
                room = in_service - MIN_IN_SERVICE
            if room >= 1:
                return kind, min(event.count, room)
        return None

    def _level(self) -> None:
        """
        Set the desired capacity to the instances in service, before a call that makes moto
        re-balance the group: moto counts only InService members, and would otherwise launch
        more instances to match a desired capacity that counts those waiting on a hook.
        """
        members = self._members()
        self.cloud.set_desired(GROUP, sum(state == IN_SERVICE for state in members.values()))

    def _pause(self, gap: float, moments: Sequence[Moment]) -> None:
        """Look after the harness for *gap* seconds, disrupting at each of *moments*."""
        start = time.monotonic()
        todo = list(moments)
        while todo or time.monotonic() - start < gap:
            while todo and time.monotonic() - start >= todo[0].delay:
                self._disrupt(todo.pop(0))
            self._tend()
            time.sleep(TEND_INTERVAL)

    def _disrupt(self, moment: Moment) -> None:
        """Kill the controller (its restart is scheduled) or reload HAProxy."""
        if moment.what is Disruption.KILL:
            self.kill_controller()
            self.tally.kills += 1
            self._restart_at = time.monotonic() + moment.downtime
        else:
            self.tally.reloads.append(time.monotonic())
            self.stack.haproxy.reload()

    def _tend(self) -> None:
        """Restart the controller when due, end slow boots, and follow the group."""
        now = time.monotonic()
        if self._restart_at is not None and now >= self._restart_at:
            self.start_controller()
        elif not self._killed and not self.daemon.alive:
            self.tally.unexpected_exits.append(self.daemon.process.returncode)
            self.start_controller()
        for due, backend in [b for b in self._boots if b[0] <= now]:
            backend.healthy = True
            self._boots.remove((due, backend))
        for instance_id in [i for i, (due, _) in self._lingering.items() if due <= now]:
            self._stop_answering(instance_id)
        for instance_id in [i for i, due in self._hidden.items() if due <= now]:
            self.cloud.remember_instance(instance_id)
            del self._hidden[instance_id]
        if now - self._synced >= SYNC_INTERVAL:
            self.sync()

    def _stop_controller(self) -> None:
        """SIGTERM, as a supervisor stops it; SIGKILL if it does not exit in time."""
        # Not before it handles SIGTERM: a signal that early would end it like a crash.
        wait_for(self._started_up, "the controller to start", START_DEADLINE)
        try:
            self.daemon.signal(signal.SIGTERM)
            self.tally.stop_code = self.daemon.process.returncode
        except subprocess.TimeoutExpired:
            self.kill_controller()

    def _started_up(self) -> bool:
        """The last controller has installed its signal handlers (it logs so just after)."""
        return '"controller started"' in self.daemon.log_path.read_text(errors="replace")

    # -- following the group --

    def sync(self, boot: float = 0.0) -> None:
        """
        Follow the group: stop the HTTP server of every instance that left it, serve every new
        one (failing its health checks for *boot* seconds), and post the notifications AWS sends
        for each change.
        """
        self._synced = time.monotonic()
        now = self._members()
        released = {
            c["instance_id"]
            for c in calls(self.cloud, COMPLETE)
            if c["hook"] == TERMINATE_HOOK and c["result"] == "CONTINUE"
        }
        for instance_id, before in self._states.items():
            if instance_id not in now:
                self._left(instance_id, released=instance_id in released, waited=before)
        arrived = [i for i in now if i not in self._states]
        if arrived:
            # After the departures: a new instance may get the address of one that just left,
            # which stops answering then, if it still did.
            self._free(arrived)
            serve(self.stack, arrived)
            self.tally.launched += len(arrived)
        for instance_id in arrived:
            if boot:
                self.stack.servers[instance_id].healthy = False
                self._boots.append((self._synced + boot, self.stack.servers[instance_id]))
        for instance_id, state in now.items():
            if state != self._states.get(instance_id):
                self._announce(instance_id, state)
        self._states = now

    def _left(self, instance_id: str, *, released: bool, waited: str) -> None:
        """
        An instance left the group (*released* through the terminate hook, else terminated
        without one; *waited*: its state before). It stops answering at once, or, picked by a
        plain scale-in that lingers, that many seconds later. Only an instance that stopped
        answering without a hook excuses the requests cut on it from then on; one that nothing
        explains excuses nothing.
        """
        backend = self.stack.servers.pop(instance_id)
        self.courier.scaling("TERMINATE", instance_id)
        linger = self._lingers.pop(instance_id, 0.0)
        if released:
            self.tally.graceful += 1
        elif waited == WAIT_STATES[TERMINATING]:
            # Held by the hook, yet gone without a completion: the harness lost track.
            self.tally.unexplained.append(instance_id)
        else:
            self.tally.abrupt += 1
            if linger:
                self.tally.lingered += 1
                self._lingering[instance_id] = (time.monotonic() + linger, backend)
                return
            self.abrupt[instance_id] = time.monotonic()
        backend.stop()

    def _stop_answering(self, instance_id: str) -> None:
        """A lingering instance, gone from the group, stops answering now."""
        _, backend = self._lingering.pop(instance_id)
        # From the moment it starts closing: a request cut while it closes is cut by its death.
        self.abrupt[instance_id] = time.monotonic()
        backend.stop()

    def _free(self, arrived: Sequence[str]) -> None:
        """Stop the lingering instances whose address one of *arrived* got."""
        reservations = self.cloud.ec2.describe_instances(InstanceIds=list(arrived))["Reservations"]
        taken = {i["PrivateIpAddress"] for r in reservations for i in r["Instances"]}
        for instance_id, (_, backend) in list(self._lingering.items()):
            if backend.host in taken:
                self.tally.cut_short += 1
                self._stop_answering(instance_id)

    def _announce(self, instance_id: str, state: str) -> None:
        """The notification AWS sends when an instance enters *state*."""
        if state == WAIT_STATES[LAUNCHING]:
            self.courier.lifecycle(LAUNCHING, LAUNCH_HOOK, instance_id)
        elif state == WAIT_STATES[TERMINATING]:
            self.courier.lifecycle(TERMINATING, TERMINATE_HOOK, instance_id)
        elif state == IN_SERVICE:
            self.courier.scaling("LAUNCH", instance_id)

    def _members(self) -> dict[str, str]:
        """Instance id → lifecycle state of the group's members (the harness's calls: no faults)."""
        groups = self.cloud.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])
        members = groups["AutoScalingGroups"][0]["Instances"]
        return {m["InstanceId"]: m["LifecycleState"] for m in members}
