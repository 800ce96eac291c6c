"""
The ``reconcile`` command: options in, adapters wired, exit codes out.

Exit codes: 0 success (changed or not), 1 runtime failure (AWS or HAProxy unreachable, a backend
refused, validation or reload failed, not converged in time), 2 bad usage or configuration.
``reconcile drift`` adds 3: drift found (see ``reconciler.drift_table``).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from dataclasses import replace
from http import HTTPStatus
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.text import Text
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from reconciler import drift_table, logs, plan_table
from reconciler.adapters import haproxy_socket, settings_file
from reconciler.adapters.aws.clients import AwsClients
from reconciler.adapters.aws.inbox import SqsInbox
from reconciler.adapters.aws.lifecycle import AwsLifecycle
from reconciler.adapters.aws.membership import AwsMembership
from reconciler.adapters.config_store import FileStore
from reconciler.adapters.status_server import StatusServer, probe_health
from reconciler.core import drift, settings
from reconciler.core.errors import ConfigError, ReconcilerError, TransientError
from reconciler.core.model import CycleResult, Observation, Plan
from reconciler.cycle import config_problems, observe, run_cycle
from reconciler.loop import Controller
from reconciler.metrics import Metrics
from reconciler.ports import Ports
from reconciler.wakeups import SqsReceiver, Wakeups


EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
#: ``--once`` waits for the longest drain timeout plus this margin unless told otherwise.
ONCE_TIMEOUT_MARGIN = 30.0
#: The longest ``--timeout``: a day, like the longest ``drain_timeout``.
MAX_ONCE_TIMEOUT = settings.DAY
#: Seconds ``reconcile health`` waits for an answer: within the image HEALTHCHECK's 5 s.
HEALTH_TIMEOUT = 4.0

log = logging.getLogger(__name__)
app = typer.Typer(
    add_completion=False,
    no_args_is_help=False,
    help="Keep HAProxy backends equal to the InService instances of AWS Auto Scaling groups.",
)

ConfigOption = Annotated[
    str | None,
    typer.Option(
        "--config",
        "-c",
        help=f"Settings file (TOML). Default: ${settings.CONFIG_ENV} or ./reconciler.toml.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the report as JSON.")]
BackendOption = Annotated[
    list[str] | None,
    typer.Option("--backend", "-b", help="Only this backend; repeat for several. Default: all."),
]
LogFormatOption = Annotated[
    str,
    typer.Option(
        "--log-format",
        envvar="RECONCILER_LOG_FORMAT",
        help="Logs on stderr: text or json.",
    ),
]


@app.callback(invoke_without_command=True)
def main_command(
    ctx: typer.Context,
    config: ConfigOption = None,
    once: Annotated[
        bool, typer.Option("--once", help="Run until converged (or --timeout), then exit.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan of one cycle; change nothing.")
    ] = False,
    as_json: JsonOption = False,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            min=0,
            max=MAX_ONCE_TIMEOUT,
            help=(
                "With --once: give up waiting for warm-ups and drains after this many seconds "
                "(also the most one HAProxy runtime command may take, if under 10)."
            ),
        ),
    ] = None,
    log_format: LogFormatOption = "text",
) -> None:
    """Reconcile HAProxy with the Auto Scaling groups."""
    if ctx.invoked_subcommand is not None:
        return
    _setup_logs(log_format)
    loaded = _load(config)
    if once or dry_run:
        raise typer.Exit(_run_once(loaded, dry_run=dry_run, as_json=as_json, timeout=timeout))
    raise typer.Exit(_run_daemon(loaded))


@app.command("drift")
def drift_command(
    config: ConfigOption = None,
    backends: BackendOption = None,
    as_json: JsonOption = False,
    log_format: LogFormatOption = "text",
) -> None:
    """
    Compare the groups with the config file and the running HAProxy; change nothing.

    Exit codes: 0 in sync, 3 drift found, 1 AWS or HAProxy could not be read (or a backend
    cannot be managed), 2 bad usage or configuration.
    """
    _setup_logs(log_format)
    loaded = _load(config)
    try:
        # Only the selected backends are read, so --backend also saves their reads.
        loaded = replace(loaded, backends=drift.selected(loaded, backends))
        observed = _observe_with_retries(loaded, build_ports(loaded))
    except ConfigError as exc:
        _config_failure(exc)
    except ReconcilerError as exc:
        _fail(str(exc), EXIT_FAILURE)
    found = drift.assess(loaded, observed)
    if as_json:
        typer.echo(json.dumps(drift_table.to_json(found), indent=2))
    else:
        out = Console(color_system=drift_table.color_system(os.environ))
        out.print(drift_table.tables(found))
    raise typer.Exit(drift_table.exit_code(found))


@app.command("health")
def health_command(config: ConfigOption = None) -> None:
    """
    Ask the running controller's /healthz, at the [server] listen address the settings give
    (file, environment and image default alike); print the answer.

    Exit codes: 0 healthy, 1 anything else (unhealthy, no answer, bad configuration, no listen
    address): it is the container image's HEALTHCHECK, and Docker reserves 2.
    """
    loaded = _load(config, failure=EXIT_FAILURE)
    listen = loaded.server.listen
    if not listen:
        _fail("server.listen is not set: no status listener to ask", EXIT_FAILURE)
    try:
        status, body = probe_health(listen, HEALTH_TIMEOUT)
    except OSError as exc:
        _fail(f"no answer from http://{listen}/healthz: {exc}", EXIT_FAILURE)
    typer.echo(logs.escaped(body.rstrip("\n")))
    raise typer.Exit(EXIT_OK if status == HTTPStatus.OK else EXIT_FAILURE)


def _setup_logs(log_format: str) -> None:
    if log_format not in ("text", "json"):
        _fail(f"--log-format: expected text or json, not {log_format!r}", EXIT_USAGE)
    logs.setup("json" if log_format == "json" else "text")


def _load(config: str | None, failure: int = EXIT_USAGE) -> settings.Settings:
    path = settings_file.config_path(config, os.environ)
    try:
        return settings_file.load(path)
    except ConfigError as exc:
        _config_failure(exc, failure)


def _config_failure(exc: ConfigError, code: int = EXIT_USAGE) -> NoReturn:
    _print_error("configuration error", f" in {exc.source or 'settings'}:")
    for problem in exc.problems:
        _print_error("", f"  - {problem}")
    raise typer.Exit(code)


def _fail(message: str, code: int) -> NoReturn:
    _print_error("error:", f" {message}")
    raise typer.Exit(code)


def _print_error(head: str, message: str) -> None:
    """
    A line on stderr: *head* in bold red, then *message*. Both are text, never markup (paths,
    group names and AWS errors contain brackets), control characters are escaped, and the line
    is not wrapped, so that it can be searched for whole in a log.
    """
    line = Text.assemble((head, "bold red"), logs.escaped(message))
    Console(stderr=True).print(line, soft_wrap=True, highlight=False)


def build_ports(
    loaded: settings.Settings,
    clients: AwsClients | None = None,
    *,
    command_timeout: float = haproxy_socket.DEFAULT_TIMEOUT,
) -> Ports:
    """The real adapters for *loaded* settings; each runtime command gets *command_timeout* s."""
    hap = loaded.haproxy
    aws = clients or AwsClients(loaded.aws.region)
    hooks = any(b.complete_lifecycle_actions for b in loaded.backends)
    return Ports(
        membership=AwsMembership(aws),
        store=FileStore(
            hap.config, hap.check_command, hap.reload_command, create=hap.template is not None
        ),
        runtime=haproxy_socket.RuntimeSocket(hap.socket, command_timeout) if hap.socket else None,
        lifecycle=AwsLifecycle(aws) if hooks else None,
    )


def _prepare(
    loaded: settings.Settings,
    clients: AwsClients | None = None,
    *,
    command_timeout: float = haproxy_socket.DEFAULT_TIMEOUT,
) -> Ports:
    """Build the adapters and check the config file's sections; exit on a bad configuration."""
    try:
        ports = build_ports(loaded, clients, command_timeout=command_timeout)
        problems = config_problems(loaded, ports.store.read())
        if problems:
            raise ConfigError(problems, str(loaded.haproxy.config))
    except ConfigError as exc:
        _config_failure(exc)
    except ReconcilerError as exc:
        _fail(str(exc), EXIT_FAILURE)
    except OSError as exc:
        _fail(f"cannot read {loaded.haproxy.config}: {exc.strerror}", EXIT_FAILURE)
    return ports


def _run_daemon(loaded: settings.Settings) -> int:
    """Run the controller until SIGTERM or SIGINT; exit 0 after the cycle in progress."""
    wakeups = Wakeups()
    receiver: SqsReceiver | None = None
    stopped_by: list[str] = []

    def stop(signum: int, _frame: object) -> None:
        # Flags only: a log line written from a signal handler can interleave with the one the
        # main thread is writing, or raise "reentrant call" inside the buffered stream.
        stopped_by.append(signal.Signals(signum).name)
        wakeups.stop()
        if receiver is not None:
            receiver.stop()

    # Before anything slow, so that a signal during startup also ends in a clean exit 0.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        clients = AwsClients(loaded.aws.region)
    except ConfigError as exc:
        _config_failure(exc)
    ports = _prepare(loaded, clients)
    stale_after = loaded.server.healthy_intervals * loaded.controller.resync_interval
    metrics = Metrics(stale_after=stale_after, api_calls=clients.calls.snapshot)
    status = _status_server(loaded, metrics)
    inbox = None
    if loaded.sqs.queue_url:
        inbox = SqsInbox(clients, loaded.sqs.queue_url, wait_seconds=loaded.sqs.wait_seconds)
        receiver = SqsReceiver(
            inbox,
            wakeups,
            on_message=lambda m: metrics.messages_received.labels(m.trigger.kind.value).inc(),
            on_delete=lambda m: metrics.messages_deleted.labels(m.trigger.kind.value).inc(),
        )
    if status is not None:
        status.start()
        log.info("health and metrics on http://%s/healthz and /metrics", status.address)
    if receiver is not None:
        receiver.start()
    log.info(
        "controller started",
        extra={"fields": {"backends": len(loaded.backends), "queue": loaded.sqs.queue_url or "-"}},
    )
    controller = Controller(
        loaded, ports, wakeups, metrics, inbox=inbox, api_calls=clients.calls.snapshot
    )
    try:
        controller.run()
    finally:
        if receiver is not None:
            receiver.stop()
        if status is not None:
            status.stop()
    log.info(
        "controller stopped",
        extra={"fields": {"cycles": controller.cycles, "signal": ",".join(stopped_by) or "-"}},
    )
    return EXIT_OK


def _status_server(loaded: settings.Settings, metrics: Metrics) -> StatusServer | None:
    """The ``/healthz`` and ``/metrics`` listener, bound now so that a port in use fails early."""
    if not loaded.server.listen:
        return None
    try:
        return StatusServer(loaded.server.listen, metrics)
    except OSError as exc:
        _fail(
            f"server.listen: cannot listen on {loaded.server.listen}: {exc.strerror}", EXIT_FAILURE
        )


def _run_once(
    loaded: settings.Settings, *, dry_run: bool, as_json: bool, timeout: float | None
) -> int:
    limit = timeout
    if limit is None:
        limit = max(b.drain_timeout for b in loaded.backends) + ONCE_TIMEOUT_MARGIN
    # A socket that trickles its replies must not keep the run going past its limit.
    ports = _prepare(loaded, command_timeout=haproxy_socket.timeout_within(limit))
    started = time.monotonic()
    merged: Plan | None = None
    errors: list[str] = []
    totals = {"cycles": 0, "commands": 0, "file_writes": 0, "reloads": 0}
    while True:
        try:
            result = _cycle_with_retries(loaded, ports, dry_run=dry_run)
        except ReconcilerError as exc:
            errors.append(str(exc))
            break
        totals["cycles"] += 1
        if result.outcome is not None:
            totals["commands"] += result.outcome.commands
            totals["file_writes"] += result.outcome.file_written
            totals["reloads"] += result.outcome.reloaded
        merged = plan_table.merge(merged, result.plan)
        errors.extend(e for e in result.errors if e not in errors)
        if dry_run or not result.pending:
            break
        if time.monotonic() - started >= limit:
            errors.append(
                f"not converged after {limit:g}s: warm-ups, drains or disagreeing AWS reads still "
                "in progress; run again later or raise --timeout"
            )
            break
        time.sleep(loaded.controller.poll_interval)
    _print(merged, errors, totals, dry_run=dry_run, as_json=as_json)
    return EXIT_FAILURE if errors else EXIT_OK


#: A transient failure (AWS throttled, socket briefly gone, file changed meanwhile) is retried.
_retry_transient = retry(
    retry=retry_if_exception_type(TransientError),
    stop=stop_after_attempt(3),
    wait=wait_exponential_jitter(multiplier=0.5, max=5),
    reraise=True,
)


@_retry_transient
def _cycle_with_retries(loaded: settings.Settings, ports: Ports, *, dry_run: bool) -> CycleResult:
    """A cycle; a transient failure (AWS throttled, file changed meanwhile) is retried briefly."""
    try:
        return run_cycle(loaded, ports, dry_run=dry_run)
    except TransientError as exc:
        log.warning("cycle failed, retrying: %s", exc)
        raise


@_retry_transient
def _observe_with_retries(loaded: settings.Settings, ports: Ports) -> Observation:
    """The reads of a cycle, for ``drift``; retried briefly like a cycle."""
    try:
        return observe(loaded, ports)[0]
    except TransientError as exc:
        log.warning("reading failed, retrying: %s", exc)
        raise


def _print(
    plan: Plan | None, errors: list[str], totals: dict[str, int], *, dry_run: bool, as_json: bool
) -> None:
    out = Console()
    if as_json:
        empty = Plan(())
        document = plan_table.plan_json(plan or empty, errors=errors, dry_run=dry_run, **totals)
        typer.echo(json.dumps(document, indent=2))
        return
    if plan is not None:
        title = "plan (dry run: nothing changed)" if dry_run else ""
        out.print(plan_table.plan_tables(plan, title=title))
    if not dry_run:
        out.print(
            f"{totals['cycles']} cycle(s), {totals['commands']} runtime command(s), "
            f"{totals['file_writes']} file write(s), {totals['reloads']} reload(s)",
            highlight=False,
        )
    for error in errors:
        _print_error("error:", f" {error}")


def main() -> None:
    """Console-script entry point."""
    app()
