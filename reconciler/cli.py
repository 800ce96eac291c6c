"""
The ``reconcile`` command: parses the options, calls ``reconciler.runner``, prints, exits.

Exit codes: 0 success (changed or not), 1 runtime failure (AWS or HAProxy unreachable, a backend
refused, validation or reload failed, not converged in time), 2 bad usage or configuration.
``reconcile drift`` adds 3: drift found (see ``reconciler.drift_table``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from http import HTTPStatus
from typing import Annotated, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from reconciler import drift_table, logs, plan_table, runner
from reconciler.adapters import settings_file
from reconciler.adapters.status_server import probe_health
from reconciler.core import settings
from reconciler.core.errors import ConfigError, ReconcilerError
from reconciler.core.results import RunReport


EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
#: The longest ``--timeout``: a day, like the longest ``drain_timeout``.
MAX_ONCE_TIMEOUT = settings.DAY
#: Seconds ``reconcile health`` waits for an answer: within the image HEALTHCHECK's 5 s.
HEALTH_TIMEOUT = 4.0

_T = TypeVar("_T")
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
        report = _guarded(lambda: runner.run_once(loaded, dry_run=dry_run, timeout=timeout))
        _print_report(report, dry_run=dry_run, as_json=as_json)
        raise typer.Exit(EXIT_FAILURE if report.errors else EXIT_OK)
    _guarded(lambda: runner.run_daemon(loaded))
    raise typer.Exit(EXIT_OK)


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
    found = _guarded(lambda: runner.read_drift(loaded, backends))
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


def _guarded(run: Callable[[], _T]) -> _T:
    """What *run* returns; exit 2 on a ``ConfigError``, 1 on any other error it raises."""
    try:
        return run()
    except ConfigError as exc:
        _config_failure(exc)
    except ReconcilerError as exc:
        _fail(str(exc), EXIT_FAILURE)


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


def _print_report(report: RunReport, *, dry_run: bool, as_json: bool) -> None:
    """A ``--once`` run's report on stdout: JSON, or tables with the errors on stderr."""
    if as_json:
        typer.echo(json.dumps(plan_table.report_json(report, dry_run=dry_run), indent=2))
        return
    out = Console()
    if report.plan is not None:
        title = "plan (dry run: nothing changed)" if dry_run else ""
        out.print(plan_table.plan_tables(report.plan, title=title))
    if not dry_run:
        out.print(plan_table.totals_line(report), highlight=False)
    for error in report.errors:
        _print_error("error:", f" {error}")


def main() -> None:
    """Console-script entry point."""
    app()
