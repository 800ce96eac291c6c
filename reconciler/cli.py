"""
The ``reconcile`` command: options in, adapters wired, exit codes out.

Exit codes: 0 success (changed or not), 1 runtime failure (AWS or HAProxy unreachable, a backend
refused, validation or reload failed, not converged in time), 2 bad usage or configuration.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Annotated

import typer
from rich.console import Console
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from reconciler import logs, report, settings
from reconciler.aws.clients import AwsClients
from reconciler.aws.membership import AwsMembership
from reconciler.errors import ConfigError, ReconcilerError, TransientError
from reconciler.haproxy.runtime import RuntimeSocket
from reconciler.haproxy.store import FileStore
from reconciler.model import Plan
from reconciler.reconcile import CycleResult, Ports, config_problems, run_cycle


EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
#: Seconds between the cycles ``--once`` runs while warm-ups and drains are in progress.
ONCE_POLL_INTERVAL = 0.5
#: ``--once`` waits for the longest drain timeout plus this margin unless told otherwise.
ONCE_TIMEOUT_MARGIN = 30.0

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
            help="With --once: give up waiting for warm-ups and drains after this many seconds.",
        ),
    ] = None,
    log_format: LogFormatOption = "text",
) -> None:
    """Reconcile HAProxy with the Auto Scaling groups."""
    if ctx.invoked_subcommand is not None:
        return
    _setup_logs(log_format)
    loaded = _load(config)
    if not (once or dry_run):
        _fail(
            "the long-running controller is not available in this version; "
            "run `reconcile --once` (for example from a timer) instead",
            EXIT_USAGE,
        )
    code = _run_once(loaded, dry_run=dry_run, as_json=as_json, timeout=timeout)
    raise typer.Exit(code)


def _setup_logs(log_format: str) -> None:
    if log_format not in ("text", "json"):
        _fail(f"--log-format: expected text or json, not {log_format!r}", EXIT_USAGE)
    logs.setup("json" if log_format == "json" else "text")


def _load(config: str | None) -> settings.Settings:
    path = settings.config_path(config, os.environ)
    try:
        return settings.load(path)
    except ConfigError as exc:
        _config_failure(exc)
        raise  # unreachable: _config_failure exits


def _config_failure(exc: ConfigError) -> None:
    err = Console(stderr=True)
    err.print(f"[bold red]configuration error[/] in {exc.source or 'settings'}:", highlight=False)
    for problem in exc.problems:
        err.print(f"  - {problem}", highlight=False, markup=False)
    raise typer.Exit(EXIT_USAGE)


def _fail(message: str, code: int) -> None:
    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def build_ports(loaded: settings.Settings) -> Ports:
    """The real adapters for *loaded* settings."""
    hap = loaded.haproxy
    return Ports(
        membership=AwsMembership(AwsClients(loaded.aws.region)),
        store=FileStore(hap.config, hap.check_command, hap.reload_command),
        runtime=RuntimeSocket(hap.socket) if hap.socket else None,
    )


def _run_once(
    loaded: settings.Settings, *, dry_run: bool, as_json: bool, timeout: float | None
) -> int:
    try:
        ports = build_ports(loaded)
        problems = config_problems(loaded, ports.store.read())
        if problems:
            raise ConfigError(problems, str(loaded.haproxy.config))
    except ConfigError as exc:
        _config_failure(exc)
    except ReconcilerError as exc:
        _fail(str(exc), EXIT_FAILURE)
    except OSError as exc:
        _fail(f"cannot read {loaded.haproxy.config}: {exc.strerror}", EXIT_FAILURE)
    limit = timeout
    if limit is None:
        limit = max(b.drain_timeout for b in loaded.backends) + ONCE_TIMEOUT_MARGIN
    started = time.monotonic()
    merged: Plan | None = None
    errors: list[str] = []
    cycles = 0
    result: CycleResult | None = None
    while True:
        try:
            result = _cycle_with_retries(loaded, ports, dry_run=dry_run)
        except ReconcilerError as exc:
            errors.append(str(exc))
            break
        cycles += 1
        merged = report.merge(merged, result.plan)
        errors.extend(e for e in result.errors if e not in errors)
        if dry_run or not result.pending:
            break
        if time.monotonic() - started >= limit:
            errors.append(
                f"not converged after {limit:g}s: warm-ups or drains still in progress; "
                "run again later or raise --timeout"
            )
            break
        time.sleep(ONCE_POLL_INTERVAL)
    _print(merged, errors, cycles=cycles, dry_run=dry_run, as_json=as_json)
    return EXIT_FAILURE if errors else EXIT_OK


@retry(
    retry=retry_if_exception_type(TransientError),
    stop=stop_after_attempt(3),
    wait=wait_exponential_jitter(initial=0.5, max=5),
    reraise=True,
)
def _cycle_with_retries(loaded: settings.Settings, ports: Ports, *, dry_run: bool) -> CycleResult:
    """A cycle; a transient failure (AWS throttled, file changed meanwhile) is retried briefly."""
    try:
        return run_cycle(loaded, ports, dry_run=dry_run)
    except TransientError as exc:
        log.warning("cycle failed, retrying: %s", exc)
        raise


def _print(
    plan: Plan | None, errors: list[str], *, cycles: int, dry_run: bool, as_json: bool
) -> None:
    out = Console()
    if as_json:
        empty = Plan(())
        document = report.plan_json(plan or empty, errors=errors, dry_run=dry_run, cycles=cycles)
        typer.echo(json.dumps(document, indent=2))
        return
    if plan is not None:
        out.print(
            report.plan_tables(plan, title="plan (dry run: nothing changed)" if dry_run else "")
        )
    err = Console(stderr=True)
    for error in errors:
        err.print(f"[bold red]error:[/] {error}", highlight=False)


def main() -> None:
    """Console-script entry point."""
    app()
