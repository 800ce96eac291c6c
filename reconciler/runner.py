"""
What ``reconcile`` runs, behind the CLI: the real adapters wired to the cycle, and the three ways
to run it.

- ``run_once``: cycles until nothing is pending (or a time limit); returns a ``RunReport``;
  while only HAProxy is awaited, cycles reuse the run's last AWS read (``converge``);
- ``run_daemon``: the controller with its status listener and SQS receiver, until SIGTERM or
  SIGINT;
- ``read_drift``: one read of the selected backends, assessed.

Each first resolves ``[haproxy] zone = "auto"`` through the instance metadata service
(``with_node_zone``), once: the node does not move. A run that cannot start raises the error
taxonomy: ``ConfigError`` for a configuration that cannot be worked with, any other
``ReconcilerError`` for a dependency that refused. What goes wrong once a ``--once`` run is under
way is in its report instead. A cycle (or drift's read) that raises ``TransientError`` is tried
again by the cycle-level policy of ``reconciler.retry``.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace

from reconciler import collector, retry
from reconciler.adapters import haproxy_socket
from reconciler.adapters.aws import imds
from reconciler.adapters.aws.clients import AwsClients
from reconciler.adapters.aws.inbox import SqsInbox
from reconciler.adapters.aws.lifecycle import AwsLifecycle
from reconciler.adapters.aws.membership import AwsMembership
from reconciler.adapters.config_store import FileStore
from reconciler.adapters.status_server import StatusServer
from reconciler.core import drift, progress
from reconciler.core.errors import PermanentError, ReconcilerError
from reconciler.core.model import AwsObservation, CycleResult
from reconciler.core.results import RunReport
from reconciler.core.settings import AUTO_ZONE, Settings
from reconciler.cycle import observe, run_cycle
from reconciler.loop import Controller
from reconciler.metrics import Metrics
from reconciler.ports import Ports
from reconciler.wakeups import SqsReceiver, Wakeups


log = logging.getLogger(__name__)
#: ``--once`` waits for the longest drain timeout plus this margin unless told otherwise.
ONCE_TIMEOUT_MARGIN = 30.0


def build_ports(
    loaded: Settings,
    clients: AwsClients | None = None,
    *,
    command_timeout: float = haproxy_socket.DEFAULT_TIMEOUT,
) -> Ports:
    """The real adapters for *loaded* settings; each runtime command gets *command_timeout* s."""
    hap = loaded.haproxy
    aws = clients or AwsClients(loaded.aws.region)
    hooks = any(b.complete_lifecycle_actions for b in loaded.backends)
    return Ports(
        membership=AwsMembership(aws, hooks_max_age=loaded.controller.resync_interval),
        store=FileStore(hap.config, hap.check_command, hap.reload_command, template=hap.template),
        runtime=haproxy_socket.RuntimeSocket(hap.socket, command_timeout) if hap.socket else None,
        lifecycle=AwsLifecycle(aws) if hooks else None,
    )


def with_node_zone(loaded: Settings) -> Settings:
    """
    *loaded* with ``[haproxy] zone = "auto"`` replaced by the zone the instance metadata
    service gives this node; unchanged for any other zone. ``ConfigError`` when it gives none.
    """
    if loaded.haproxy.zone != AUTO_ZONE:
        return loaded
    zone = imds.node_zone()
    log.info("node zone from the instance metadata service", extra={"fields": {"zone": zone}})
    return replace(loaded, haproxy=replace(loaded.haproxy, zone=zone))


def prepare(
    loaded: Settings,
    clients: AwsClients | None = None,
    *,
    command_timeout: float = haproxy_socket.DEFAULT_TIMEOUT,
) -> Ports:
    """
    Build the adapters and read the config file once, so that a run stops before anything when
    it cannot work at all: ``ConfigError`` for a missing file (or no AWS region),
    ``TransientError`` when the file cannot be read. A section that cannot be managed is no
    reason to stop: each cycle refuses its backend alone and goes on with the others, as drift
    and the running controller do (one rule, in the README's "Reports and exit codes").
    """
    ports = build_ports(loaded, clients, command_timeout=command_timeout)
    ports.store.read()
    return ports


# -- --once ----------------------------------------------------------------------------------------


def once_limit(loaded: Settings, timeout: float | None) -> float:
    """Seconds a ``--once`` run may take: *timeout*, else the longest drain plus a margin."""
    if timeout is not None:
        return timeout
    return max(b.drain_timeout for b in loaded.backends) + ONCE_TIMEOUT_MARGIN


def run_once(loaded: Settings, *, dry_run: bool, timeout: float | None) -> RunReport:
    """Prepare, then run cycles until converged or out of time (``converge``)."""
    loaded = with_node_zone(loaded)
    limit = once_limit(loaded, timeout)
    # A socket that trickles its replies must not keep the run going past its limit.
    ports = prepare(loaded, command_timeout=haproxy_socket.timeout_within(limit))
    collector.tune()
    return converge(loaded, ports, dry_run=dry_run, limit=limit)


def converge(
    loaded: Settings,
    ports: Ports,
    *,
    dry_run: bool,
    limit: float,
    cycle: Callable[..., CycleResult] = run_cycle,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> RunReport:
    """
    Run cycles (*cycle*, called like ``run_cycle``) until none leaves work pending, or *limit*
    seconds passed; a dry run runs one. While warm-ups and drains wait on HAProxy alone, the
    next cycle comes a quarter of a check interval later and reuses the AWS read (as the
    controller's progress polls do); otherwise after ``poll_interval``, reading AWS again. The
    report ends with the error that ended the run, if any; *sleep* waits, *clock* is monotonic.
    """
    started = clock()
    report = RunReport()
    tries = retry.retrying("cycle failed", sleep=sleep)
    aws: AwsObservation | None = None
    read_at = started
    while True:
        before = clock()
        try:
            result = tries(cycle, loaded, ports, dry_run=dry_run, aws=aws)
        except ReconcilerError as exc:
            return report.failed(str(exc))
        read_at = before if aws is None else read_at
        report = report.add(result)
        if dry_run or not result.pending:
            return report
        if clock() - started >= limit:
            return report.failed(
                f"not converged after {limit:g}s: warm-ups, drains or disagreeing AWS reads still "
                "in progress; run again later or raise --timeout"
            )
        wait, aws = _next_look(loaded, result, clock() - read_at)
        sleep(wait)


def _next_look(
    loaded: Settings, result: CycleResult, age: float
) -> tuple[float, AwsObservation | None]:
    """
    How long to wait before the next cycle of a ``--once`` run, and the AWS read (*age* seconds
    old) it may reuse (``None``: it reads AWS): only while nothing but HAProxy is awaited, the
    read had no error, no lifecycle action changed AWS since, and it will not be as old as a
    resync.
    """
    config = loaded.controller
    wait = progress.next_look(loaded, result)
    if wait is None or result.rereads_aws or result.changed_aws or result.aws.errors:
        return config.poll_interval, None
    return wait, (result.aws if age + wait < config.resync_interval else None)


# -- drift -----------------------------------------------------------------------------------------


def read_drift(loaded: Settings, backends: Sequence[str] | None) -> drift.DriftReport:
    """
    Read the *backends* named (``None``: all) and assess them against their groups. An unknown
    name is a ``ConfigError``, raised before any read.
    """
    # Only the selected backends are read, so --backend also saves their reads.
    selected = drift.selected(loaded, backends)
    chosen = replace(with_node_zone(loaded), backends=selected)
    ports = build_ports(chosen)
    observed, _ = retry.retrying("reading failed")(observe, chosen, ports)
    return drift.assess(chosen, observed)


# -- the daemon ------------------------------------------------------------------------------------


def run_daemon(loaded: Settings) -> None:
    """Run the controller until SIGTERM or SIGINT; return after the cycle in progress."""
    wakeups = Wakeups()
    stopper = _Stopper(wakeups)
    # Before anything slow, so that a signal during startup also ends in a clean exit.
    stopper.install()
    loaded = with_node_zone(loaded)
    clients = AwsClients(loaded.aws.region)
    ports = prepare(loaded, clients)
    stale_after = loaded.server.healthy_intervals * loaded.controller.resync_interval
    metrics = Metrics(stale_after=stale_after, api_calls=clients.calls.snapshot)
    status = _status_server(loaded, metrics)
    inbox = None
    if loaded.sqs.queue_url:
        inbox = SqsInbox(clients, loaded.sqs.queue_url, wait_seconds=loaded.sqs.wait_seconds)
        stopper.receiver = SqsReceiver(
            inbox,
            wakeups,
            on_message=lambda m: metrics.message_received(m.trigger.kind.value),
            on_delete=lambda m: metrics.message_deleted(m.trigger.kind.value),
        )
    controller = Controller(
        loaded, ports, wakeups, metrics, inbox=inbox, api_calls=clients.calls.snapshot
    )
    collector.tune()
    with _serving(status, stopper.receiver):
        log.info(
            "controller started",
            extra={
                "fields": {"backends": len(loaded.backends), "queue": loaded.sqs.queue_url or "-"}
            },
        )
        controller.run()
    log.info(
        "controller stopped",
        extra={"fields": {"cycles": controller.cycles, "signal": ",".join(stopper.signals) or "-"}},
    )


class _Stopper:
    """Stops the controller, and the receiver once there is one, on SIGTERM and SIGINT."""

    def __init__(self, wakeups: Wakeups) -> None:
        """Stop *wakeups* on a signal."""
        self._wakeups = wakeups
        self.receiver: SqsReceiver | None = None
        #: The names of the signals received.
        self.signals: list[str] = []

    def install(self) -> None:
        """Handle SIGTERM and SIGINT from now on."""
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)

    def _stop(self, signum: int, _frame: object) -> None:
        # Flags only: a log line written from a signal handler can interleave with the one the
        # main thread is writing, or raise "reentrant call" inside the buffered stream.
        self.signals.append(signal.Signals(signum).name)
        self._wakeups.stop()
        if self.receiver is not None:
            self.receiver.stop()


def _status_server(loaded: Settings, metrics: Metrics) -> StatusServer | None:
    """The ``/healthz`` and ``/metrics`` listener, bound now so that a port in use fails early."""
    listen = loaded.server.listen
    if not listen:
        return None
    try:
        return StatusServer(listen, metrics)
    except OSError as exc:
        msg = f"server.listen: cannot listen on {listen}: {exc.strerror}"
        raise PermanentError(msg) from exc


@contextmanager
def _serving(status: StatusServer | None, receiver: SqsReceiver | None) -> Iterator[None]:
    """Serve the status listener and run the receiver for as long as the block runs."""
    if status is not None:
        status.start()
        log.info("health and metrics on http://%s/healthz and /metrics", status.address)
    if receiver is not None:
        receiver.start()
    try:
        yield
    finally:
        if receiver is not None:
            receiver.stop()
        if status is not None:
            status.stop()
