"""
The ``reconcile`` command: parses the options, calls ``reconciler.runner``, prints, exits.

The exit codes are written once, in ``HELP`` (``reconcile --help``) and each command's help;
``reconcile drift`` adds 3: drift found (see ``reconciler.drift_table``). The help is click's plain
layout: it shows flags without a value, rewraps paragraphs to the terminal and prints text as it
is (rich's layout showed ``--once <bool>``, kept a docstring's line breaks and read
``[server]`` as markup).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from http import HTTPStatus
from importlib import metadata, resources
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from reconciler import check_table, drift_table, logs, plan_table, preflight, runner
from reconciler.adapters import settings_file
from reconciler.adapters.status_server import probe_health
from reconciler.core import checks, settings
from reconciler.core.errors import ConfigError, ReconcilerError
from reconciler.core.results import RunReport


EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
#: The longest ``--timeout``: a day, like the longest ``drain_timeout``.
MAX_ONCE_TIMEOUT = settings.DAY
#: Seconds ``reconcile health`` waits for an answer: within the image HEALTHCHECK's 5 s.
HEALTH_TIMEOUT = 4.0
#: The distribution whose version ``--version`` prints.
DISTRIBUTION = "haproxy-asg-reconciler"
#: The template of template mode, shipped inside the package (the repository's top-level
#: ``haproxy.cfg.j2`` is a symlink to it).
TEMPLATE = "haproxy.cfg.j2"
#: The main help: what running with no option does, and the exit codes with the one rule for a
#: backend that cannot be managed, the same under --once, --dry-run, drift and the controller.
HELP = """Keep HAProxy backends equal to the InService instances of AWS Auto Scaling groups.

Without --once or --dry-run, runs the long-running controller until SIGTERM or SIGINT (--json and
--timeout are for --once and --dry-run only).

Exit codes: 0 success, whether or not anything changed; 1 runtime failure: AWS or HAProxy
unreachable, a backend that cannot be managed (it is refused alone: the other backends are still
handled), validation or reload failed, not converged within --timeout; 2 bad usage or
configuration (the settings, an option, a missing haproxy.cfg), and nothing was changed. Each
command's --help lists its own.
"""

_T = TypeVar("_T")
app = typer.Typer(
    add_completion=False,
    no_args_is_help=False,
    rich_markup_mode=None,
    help=HELP,
)

ConfigOption = Annotated[
    str | None,
    typer.Option(
        "--config",
        "-c",
        metavar="PATH",
        help=f"Settings file (TOML). Default: ${settings.CONFIG_ENV} or ./reconciler.toml.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the report as JSON.")]
BackendOption = Annotated[
    list[str] | None,
    typer.Option(
        "--backend",
        "-b",
        metavar="NAME",
        help="Only this backend; repeat for several. Default: all.",
    ),
]
LogFormatOption = Annotated[
    str,
    typer.Option(
        "--log-format",
        envvar="RECONCILER_LOG_FORMAT",
        metavar="FORMAT",
        help="Logs on stderr: text or json.",
    ),
]


def _print_version(shown: bool) -> None:
    """``--version``: print the installed distribution's version, then exit."""
    if shown:
        typer.echo(f"{DISTRIBUTION} {metadata.version(DISTRIBUTION)}")
        raise typer.Exit(EXIT_OK)


VersionOption = Annotated[
    bool,
    typer.Option(
        "--version",
        "-V",
        callback=_print_version,
        is_eager=True,
        help="Print the version and exit.",
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
            metavar="SECONDS",
            help=(
                "With --once: give up waiting for warm-ups and drains after this many seconds "
                "(also the most one HAProxy runtime command may take, if under 10)."
            ),
        ),
    ] = None,
    log_format: LogFormatOption = "text",
    _version: VersionOption = False,
) -> None:
    """Reconcile HAProxy with the Auto Scaling groups."""
    if ctx.invoked_subcommand is not None:
        return
    if not (once or dry_run):
        _refuse_single_run_options(as_json=as_json, timeout=timeout)
    _setup_logs(log_format)
    loaded = _load(config)
    if once or dry_run:
        report = _guarded(lambda: runner.run_once(loaded, dry_run=dry_run, timeout=timeout))
        _print_report(report, dry_run=dry_run, as_json=as_json)
        raise typer.Exit(EXIT_FAILURE if report.errors else EXIT_OK)
    _guarded(lambda: runner.run_daemon(loaded))
    raise typer.Exit(EXIT_OK)


@app.command("drift", short_help="Compare the groups with haproxy.cfg and HAProxy; change nothing.")
def drift_command(
    config: ConfigOption = None,
    backends: BackendOption = None,
    as_json: JsonOption = False,
    log_format: LogFormatOption = "text",
) -> None:
    """
    Compare the groups with the config file and the running HAProxy; change nothing.

    Exit codes: 0 in sync; 3 drift found; 1 AWS, the file or HAProxy could not be read, or a
    backend cannot be managed (refused alone, as under --once: the others are still assessed),
    wins over 3; 2 bad usage or configuration (the settings, an unknown --backend, a missing
    haproxy.cfg).
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


@app.command("check")
def check_command(
    config: ConfigOption = None,
    as_json: JsonOption = False,
    log_format: LogFormatOption = "text",
) -> None:
    """
    Check everything a run needs, before the first one or whenever something is wrong: the
    settings, haproxy.cfg and its backends, the runtime socket, AWS, the queue, the lifecycle
    hooks and the listener. Changes nothing; one row per check, with what to fix.

    Exit codes: 0 nothing failed (warnings and skipped checks allowed), 1 a check failed, 2 bad
    usage.
    """
    _setup_logs(log_format)
    found = preflight.run(config, os.environ)
    if as_json:
        typer.echo(json.dumps(checks.to_json(found), indent=2))
    else:
        Console(color_system=drift_table.color_system(os.environ)).print(check_table.table(found))
    raise typer.Exit(checks.exit_code(found))


@app.command("health", short_help="Ask the running controller's /healthz; print the answer.")
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


@app.command("template", short_help="Print the shipped haproxy.cfg.j2, or write it (--output).")
def template_command(
    output: Annotated[
        str | None,
        typer.Option(
            "--output", "-o", metavar="PATH", help="Write it to this file instead of stdout."
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="With --output: replace the file if it exists.")
    ] = False,
) -> None:
    """
    Print the shipped haproxy.cfg.j2, the template of template mode, to start your own from
    (reconcile template > /etc/reconciler/haproxy.cfg.j2). Needs no settings file.

    Exit codes: 0 printed or written; 1 the file could not be written; 2 bad usage (the --output
    file exists and --force was not given, or --force without --output).
    """
    text = resources.files("reconciler").joinpath(TEMPLATE).read_text(encoding="utf-8")
    if output is None:
        if force:
            _fail("--force only applies with --output", EXIT_USAGE)
        typer.echo(text, nl=False)
        raise typer.Exit(EXIT_OK)
    try:
        # "x" creates the file only if it does not exist, in the same call: no race with a check.
        with Path(output).open("w" if force else "x", encoding="utf-8") as out:
            out.write(text)
    except FileExistsError:
        _fail(f"--output: {output} already exists; add --force to replace it", EXIT_USAGE)
    except OSError as exc:
        _fail(f"cannot write {output}: {exc.strerror or exc}", EXIT_FAILURE)
    raise typer.Exit(EXIT_OK)


def _refuse_single_run_options(*, as_json: bool, timeout: float | None) -> None:
    """
    Without --once or --dry-run the controller starts, which has no report to print as JSON and
    no time limit: an option only a single run uses is a usage error, never silently ignored.
    """
    given = [name for name, on in (("--json", as_json), ("--timeout", timeout is not None)) if on]
    if given:
        verb = "applies" if len(given) == 1 else "apply"
        _fail(
            f"{' and '.join(given)} only {verb} to a single run: add --once (or --dry-run); "
            "without them reconcile starts the long-running controller",
            EXIT_USAGE,
        )


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
