"""
What ``reconcile check`` runs: every check it can, read-only, as ``core.checks.Check`` rows in the
order a user fixes things: the settings, haproxy.cfg, the runtime socket, AWS (with the queue and
the hooks: ``core.aws_checks`` judges what ``adapters.aws.probes`` read), then the listener.

It never stops at the first problem: a check that depends on one that failed (the file for its
backends, the socket for its level) becomes a ``SKIP`` row saying why, and the other areas run on.
Every rule is the one a run applies (``cycle.config_problems``, the runtime read of
``RuntimeSocket``, the check command of ``FileStore``), so what passes here is what a run accepts.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from http import HTTPStatus
from http.client import HTTPException

from reconciler.adapters import settings_file, status_server
from reconciler.adapters.aws import probes
from reconciler.adapters.config_store import FileStore
from reconciler.adapters.haproxy_socket import ProcessInfo, RuntimeSocket
from reconciler.core import aws_checks, next_config
from reconciler.core.checks import Check, Verdict
from reconciler.core.errors import ConfigError, ReconcilerError
from reconciler.core.model import HAProxyFeatures, RuntimeObservation
from reconciler.core.next_config import StoredConfig
from reconciler.core.settings import CONFIG_ENV, Binding, Settings
from reconciler.cycle import config_problems


SETTINGS = "settings"
FILE = "haproxy.cfg"
SOCKET = "runtime socket"
LISTENER = "listener"
#: The areas ``core.aws_checks`` reports on, in their order.
AWS_AREAS = ("aws", "queue", "hooks")
#: Seconds each runtime command, and the probe of a busy listener, may take.
TIMEOUT = 3.0
#: Lines of the check command's complaint shown in a row.
ALERT_LINES = 3

OK, WARN, FAIL, SKIP = Verdict.OK, Verdict.WARN, Verdict.FAIL, Verdict.SKIP
#: The key a settings problem starts with (``backend 'api'.port: ...``, ``aws.region (from
#: RECONCILER_AWS_REGION): ...``); problems of the whole file (not TOML, missing) name none.
_KEY = re.compile(
    r"(?P<key>(?:backend '[^']*'|backend\[\d+\]|[a-z_]+)(?:\.[a-z_]+)*)"
    r"(?: \(from (?P<var>\w+)\))?: "
)


def run(explicit: str | None, environ: Mapping[str, str]) -> tuple[Check, ...]:
    """
    Every check, for the settings file ``--config`` (*explicit*), else ``$RECONCILER_CONFIG``
    of *environ*, else the default names.
    """
    path = settings_file.config_path(explicit, environ)
    origin = "the default"
    if explicit:
        origin = "from --config"
    elif environ.get(CONFIG_ENV):
        origin = f"from ${CONFIG_ENV}"
    try:
        loaded = settings_file.load(path, environ)
    except ConfigError as exc:
        failed = settings_failed(str(path), origin, exc)
        later = (FILE, SOCKET, *AWS_AREAS, LISTENER)
        why = "the settings did not load"
        return (failed, *(Check(area, "every check", SKIP, why) for area in later))
    store = FileStore(
        loaded.haproxy.config,
        loaded.haproxy.check_command,
        loaded.haproxy.reload_command,
        template=loaded.haproxy.template,
    )
    file_rows, stored = file_checks(loaded, store)
    # Template mode before its first file: HAProxy waits for that file, so none runs yet.
    bootstrapping = stored is not None and not stored.file and loaded.haproxy.template is not None
    return (
        Check(SETTINGS, "settings file", OK, f"{path} ({origin})"),
        *file_rows,
        *socket_checks(loaded, running=not bootstrapping),
        *aws_rows(loaded),
        *listener_checks(loaded.server.listen),
    )


def settings_failed(path: str, origin: str, exc: ConfigError) -> Check:
    """The row of a settings file that did not load: its problems, and the keys to edit."""
    named = [_KEY.match(problem) for problem in exc.problems]
    keys = dict.fromkeys(m["key"] for m in named if m and not m["var"])
    variables = dict.fromkeys(m["var"] for m in named if m and m["var"])
    edits = [f"edit {', '.join(keys)} in {path}"] if keys else []
    edits += [f"correct ${', $'.join(variables)}"] if variables else []
    problems = exc.problems
    if edits:
        fix = f"{' and '.join(edits)} as said, then run check again"
    elif len(problems) == 1:  # the whole file: missing, unreadable, not TOML
        first, fix = _detail_and_fix(problems[0], f"correct {path} (README, Configuration)")
        problems = (first,)
    else:
        fix = f"correct {path} where the detail points (README, Configuration)"
    detail = "\n".join((f"{path} ({origin}):", *problems))
    return Check(SETTINGS, "settings file", FAIL, detail, fix)


# -- haproxy.cfg -----------------------------------------------------------------------------------


def file_checks(loaded: Settings, store: FileStore) -> tuple[list[Check], StoredConfig | None]:
    """
    The file (and template) rows, each backend's, the check command's; and what was read (``None``
    when the file could not be read: every later file row is then a skip).
    """
    hap = loaded.haproxy
    subject = str(hap.config)
    try:
        stored = store.read()
    except ReconcilerError as exc:
        if isinstance(exc, ConfigError):
            detail, fix = _detail_and_fix("; ".join(exc.problems))
        else:
            detail = str(exc)
            fix = "let this user read and write the file and its directory"
        why = "the file could not be read"
        return [
            Check(FILE, "file", FAIL, f"{subject}: {detail}", fix),
            *(Check(FILE, f"backend '{b.name}'", SKIP, why) for b in loaded.backends),
            Check(FILE, "check command", SKIP, why),
        ], None
    if stored.file or hap.template is None:
        found = f"{subject}: readable, {len(stored.file)} bytes"
    else:
        found = f"{subject}: not there yet; the first run writes it from the template"
    rows = [Check(FILE, "file", OK, found)]
    template = template_check(loaded, stored)
    if template is not None:
        rows.append(template)
    if template is not None and template.verdict is FAIL and not stored.file:
        why = "the template does not render, and there is no file yet"
        rows += [Check(FILE, f"backend '{b.name}'", SKIP, why) for b in loaded.backends]
    else:
        rows += [backend_check(loaded, binding, stored) for binding in loaded.backends]
    rows.append(check_command_check(loaded, store, stored))
    return rows, stored


def template_check(loaded: Settings, stored: StoredConfig) -> Check | None:
    """Whether ``[haproxy] template`` renders with the file's servers; ``None`` without one."""
    if stored.template is None:
        return None
    subject = f"template {loaded.haproxy.template}"
    fix = "correct the template where the detail points (docs: template reference)"
    try:
        maker = next_config.for_cycle(loaded, stored)
    except ConfigError as exc:
        return Check(FILE, subject, FAIL, "\n".join(exc.problems), fix)
    # With a file, a template that cannot be read or rendered is kept as the render's error.
    rendered = maker.now if isinstance(maker, next_config.FromTemplate) else b""
    if isinstance(rendered, ConfigError):
        return Check(FILE, subject, FAIL, "\n".join(rendered.problems), fix)
    differs = bool(stored.file) and rendered != stored.file
    after = "; differs from the file, so the first run reloads HAProxy" if differs else ""
    return Check(FILE, subject, OK, f"renders {len(rendered)} bytes{after}")


def backend_check(loaded: Settings, binding: Binding, stored: StoredConfig) -> Check:
    """The section of *binding*: there, and manageable by the planner's own rules."""
    subject = f"backend '{binding.name}'"
    problems = config_problems(replace(loaded, backends=(binding,)), stored)
    if problems:
        detail, fix = _detail_and_fix(problems[0])
        return Check(FILE, subject, FAIL, detail, fix)
    section = next_config.for_cycle(loaded, stored).config[binding.name]
    managed = sum(binding.instance_of(s.name) is not None for s in section.servers)
    lines = _count(len(section.servers), "server line")
    return Check(FILE, subject, OK, f"found; {lines}, {managed} managed")


def check_command_check(loaded: Settings, store: FileStore, stored: StoredConfig) -> Check:
    """``[haproxy] check_command`` run on the file as it is."""
    hap = loaded.haproxy
    shown = f"`{hap.check_command.replace('{path}', str(hap.config))}`"
    if not stored.file and hap.template is not None:
        return Check(FILE, "check command", SKIP, "no file yet: each file is checked when written")
    try:
        rejected = store.check_live()
    except ReconcilerError as exc:
        fix = "set [haproxy] check_command to a command that runs here (haproxy -c -f {path})"
        return Check(FILE, "check command", FAIL, str(exc), fix)
    if rejected is None:
        return Check(FILE, "check command", OK, f"{shown} accepts the file")
    code, alerts = rejected
    lines = [line for line in alerts.splitlines() if line.strip()][:ALERT_LINES]
    detail = "\n".join([f"{shown} rejects the file (exit {code}):", *lines])
    fix = f"correct haproxy.cfg where HAProxy points; run {shown} for its whole report"
    return Check(FILE, "check command", FAIL, detail, fix)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _detail_and_fix(
    message: str, otherwise: str = "edit the section in haproxy.cfg as said"
) -> tuple[str, str]:
    """
    A message split into what is wrong and what to do, which the planner's refusals (and the
    settings' and the file's problems) say after their last ``; ``; else *otherwise* is the fix.
    """
    detail, sep, fix = message.rpartition("; ")
    return (detail, fix) if sep else (message, otherwise)


# -- the runtime socket ----------------------------------------------------------------------------


def socket_checks(loaded: Settings, *, running: bool) -> list[Check]:
    """
    The socket's rows: answers, level, version, commands, each backend and its options. Not
    *running*: template mode before its first file, when no HAProxy runs yet.
    """
    path = loaded.haproxy.socket
    if path is None:
        return [
            Check(
                SOCKET,
                "[haproxy] socket",
                WARN,
                "not set: every change of servers rewrites the file and reloads HAProxy (no "
                "warm-up, no drain, no lifecycle hooks)",
                "add `stats socket /run/haproxy/admin.sock level admin` to the global section "
                "and set [haproxy] socket to that path",
            )
        ]
    if not running:
        return [Check(SOCKET, "socket", SKIP, f"{path}: no HAProxy runs before the first file")]
    runtime = RuntimeSocket(path, TIMEOUT)
    try:
        process, features = runtime.process()
        observed = runtime.read_servers([b.name for b in loaded.backends])
    except ReconcilerError as exc:
        fix = f"start HAProxy with `stats socket {path} level admin` in its global section"
        return [
            Check(SOCKET, "socket", FAIL, str(exc), fix),
            Check(SOCKET, "level, version, backends", SKIP, "the socket did not answer"),
        ]
    rows = [Check(SOCKET, "socket", OK, f"{path} answers")]
    rows += _feature_checks(process, features, str(path))
    for binding in loaded.backends:
        rows += _runtime_backend_checks(binding, observed, features)
    return rows


def _feature_checks(process: ProcessInfo, features: HAProxyFeatures, path: str) -> list[Check]:
    """Level, version and the runtime commands of the answering HAProxy."""
    if features.below_admin:
        level = Check(
            SOCKET,
            "level",
            FAIL,
            f"{features.level}: may not add or delete servers",
            f"add `level admin` to the `stats socket {path}` line and reload HAProxy",
        )
    else:
        level = Check(SOCKET, "level", OK, str(features.level))
    missing = features.missing_commands
    if missing:
        commands = Check(
            SOCKET,
            "runtime commands",
            FAIL,
            f"`help` does not list {', '.join(missing)}",
            "upgrade HAProxy to 2.6 or later, or remove [haproxy] socket (file edits and reloads)",
        )
    else:
        commands = Check(SOCKET, "runtime commands", OK, "add server and the rest are listed")
    running = f"HAProxy {features.version} (pid {process.pid}, up {process.uptime:.0f} s)"
    return [level, Check(SOCKET, "version", OK, running), commands]


def _runtime_backend_checks(
    binding: Binding, observed: RuntimeObservation, features: HAProxyFeatures
) -> list[Check]:
    """*binding*'s backend in the running HAProxy, and its ``server_options`` in ``add server``."""
    subject = f"backend '{binding.name}'"
    if binding.name in observed.errors:
        detail, fix = _detail_and_fix(observed.errors[binding.name])
        running = Check(SOCKET, subject, FAIL, detail, fix)
    elif binding.name not in observed.backends:
        running = Check(
            SOCKET,
            subject,
            FAIL,
            "the running HAProxy has no such backend",
            "reload HAProxy once so that it loads the section",
        )
    else:
        servers = _count(len(observed.backends[binding.name]), "server")
        running = Check(SOCKET, subject, OK, f"running, {servers}")
    return [running, options_check(binding, features)]


def options_check(binding: Binding, features: HAProxyFeatures) -> Check:
    """Whether ``add server`` on this HAProxy takes *binding*'s ``server_options``."""
    subject = f"server_options of '{binding.name}'"
    keywords = features.server_keywords
    if features.below_admin:
        return Check(SOCKET, subject, SKIP, "the socket is not at level admin")
    if keywords is None:
        return Check(
            SOCKET,
            subject,
            SKIP,
            f"HAProxy {features.version} does not list the keywords `add server` takes (3.2 and "
            "later do); one it refuses shows at the first add",
        )
    refused = unlisted_keywords(binding.server_options, keywords)
    if not refused:
        return Check(SOCKET, subject, OK, "add server takes each keyword")
    words = ", ".join(f"'{word}'" for word in refused)
    return Check(
        SOCKET,
        subject,
        FAIL,
        f"`add server` of HAProxy {features.version} does not take {words}",
        f"remove {words} from server_options of [[backend]] '{binding.name}'",
    )


def unlisted_keywords(options: Sequence[str], keywords: Iterable[str]) -> list[str]:
    """
    The words of *options* in a keyword's place that are not *keywords*. A word right after a
    keyword may be its argument (``inter 3s``, ``verify none``): only the words that cannot be
    (first, or after an argument) are judged, so an unknown word is missed rather than invented.
    """
    known = frozenset(keywords)
    unlisted = []
    after_keyword = False
    for word in options:
        if word in known:
            after_keyword = True
            continue
        if not after_keyword:
            unlisted.append(word)
        after_keyword = False
    return unlisted


# -- AWS, the queue, the hooks ---------------------------------------------------------------------


def aws_rows(loaded: Settings) -> tuple[Check, ...]:
    """The rows of ``core.aws_checks`` from what ``adapters.aws.probes`` read."""
    try:
        return tuple(aws_checks.judge(loaded, probes.read_facts(loaded)))
    except Exception as exc:  # noqa: BLE001 - a bug there must not hide every other area's rows
        return (
            Check(
                AWS_AREAS[0],
                "AWS checks",
                FAIL,
                f"stopped by an unexpected error: {type(exc).__name__}: {exc}",
                "run check again with --log-format json and report it with this row",
            ),
        )


# -- the listener ----------------------------------------------------------------------------------


def listener_checks(listen: str | None) -> list[Check]:
    """``[server] listen``: free, held by a running controller (a warning), or taken."""
    subject = "[server] listen"
    if not listen:
        return [Check(LISTENER, subject, SKIP, "not set: no /healthz or /metrics listener")]
    error = status_server.bind_error(listen)
    if error is None:
        return [Check(LISTENER, subject, OK, f"{listen} is free")]
    if error.errno != errno.EADDRINUSE:
        return [
            Check(
                LISTENER,
                subject,
                FAIL,
                f"cannot listen on {listen}: {error.strerror or error}",
                "set [server] listen to an address of this host and a port this user may bind",
            )
        ]
    return [_taken(listen)]


def _taken(listen: str) -> Check:
    """The row of *listen* in use: by a controller (its ``/healthz`` answers) or anything else."""
    subject = "[server] listen"
    try:
        status, body = status_server.probe_health(listen, TIMEOUT)
    except (OSError, HTTPException):
        status, body = None, ""
    if status in (HTTPStatus.OK, HTTPStatus.SERVICE_UNAVAILABLE):
        said = body.strip().splitlines()[0] if body.strip() else ""
        return Check(
            LISTENER,
            subject,
            WARN,
            f"{listen} is in use: a controller is already running there (its /healthz "
            f"answered {status}{': ' + said if said else ''})",
            "stop it before starting another, or give this one another [server] listen",
        )
    return Check(
        LISTENER,
        subject,
        FAIL,
        f"{listen} is in use by another program",
        f"stop what listens on {listen}, or set [server] listen to a free port",
    )
