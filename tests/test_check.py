"""
``reconcile check`` (all but its AWS rows, which ``test_check_aws`` covers): every area passing
against a real HAProxy, moto and real files, and a failure of each kind, each row saying what to
fix; the ``--json`` shape, the exit codes, and a report that reads at 80 columns.
"""

from __future__ import annotations

import json
import shlex
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from harness.faulty_socket import FaultyProxy, Refuse
from harness.haproxy import BackendSpec, HAProxyFactory, HAProxyProcess, free_port
from harness.stack import Stack
from reconciler import check_table, preflight
from reconciler.adapters import settings_file
from reconciler.adapters.config_store import FileStore
from reconciler.adapters.status_server import StatusServer
from reconciler.cli import app
from reconciler.core.checks import Check, Verdict
from reconciler.core.settings import Settings
from reconciler.metrics import Metrics


AREAS = ["settings", "haproxy.cfg", "runtime socket", "aws", "queue", "hooks", "listener"]
KEYWORDS = "List of keywords supported for dynamic server:\ncheck\ninter\nfall\nrise\nweight"


def invoke(*args: str, **environ: str) -> Any:
    """``reconcile <args>`` in this process, on an 80-column console, with *environ* added."""
    env = {"COLUMNS": "80", "NO_COLOR": "1", **environ}
    return CliRunner().invoke(app, list(args), env=env)


def settings_for(
    haproxy: HAProxyProcess,
    *,
    backend: str = "api",
    socket_path: Path | None = None,
    config: Path | None = None,
    options: str = "check inter 100ms",
    extra: str = "",
) -> Settings:
    """
    Settings for *haproxy*'s file (or *config*) and its admin socket (or *socket_path*), with
    its binary as the check command; written and loaded.
    """
    check = f"{shlex.quote(haproxy.binary)} -c -f {{path}}"
    sock = socket_path or haproxy.socket_path
    path = haproxy.workdir / "reconciler.toml"
    path.write_text(
        f"""
[aws]
region = "eu-west-1"

[haproxy]
config = "{config or haproxy.config_path}"
socket = "{sock}"
check_command = {json.dumps(check)}
{extra}
[[backend]]
name = "{backend}"
asg = "api-asg"
port = 8080
server_prefix = "api-"
server_options = "{options}"
"""
    )
    return settings_file.load(path, {})


def file_rows(loaded: Settings) -> list[Check]:
    """The haproxy.cfg rows of *loaded*."""
    hap = loaded.haproxy
    store = FileStore(hap.config, hap.check_command, hap.reload_command, template=hap.template)
    return preflight.file_checks(loaded, store)[0]


def row(rows: list[Check], subject: str) -> Check:
    """The one row about *subject*."""
    (found,) = [r for r in rows if r.subject == subject]
    return found


@pytest.fixture(name="haproxy")
def _haproxy(haproxy_factory: HAProxyFactory) -> HAProxyProcess:
    """A running HAProxy with the backend ``api`` and no server."""
    return haproxy_factory(BackendSpec("api"))


# -- everything passing ----------------------------------------------------------------------------


class TestAllPassing:
    """A deployment as the README sets it up: every row passes, exit 0."""

    @pytest.fixture(name="ready")
    def _ready(self, stack: Stack) -> Stack:
        stack.write_settings(server={"listen": f"127.0.0.1:{free_port()}"})
        return stack

    def test_json_has_every_area_in_order_and_nothing_fails(self, ready: Stack) -> None:
        """The JSON shape, each area's rows in the documented order, exit 0."""
        result = invoke("check", "--config", str(ready.settings), "--json")
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        assert report["ok"] is True
        for entry in report["checks"]:
            assert set(entry) == {"area", "subject", "verdict", "detail", "fix"}
            assert entry["verdict"] in {"ok", "warning", "skipped"}
        areas = list(dict.fromkeys(entry["area"] for entry in report["checks"]))
        assert areas == [area for area in AREAS if area in areas]
        assert {"settings", "haproxy.cfg", "runtime socket", "aws", "listener"} <= set(areas)
        by_subject = {(e["area"], e["subject"]): e for e in report["checks"]}
        assert by_subject["settings", "settings file"]["detail"] == (
            f"{ready.settings} (from --config)"
        )
        assert by_subject["haproxy.cfg", "backend 'api'"]["verdict"] == "ok"
        assert by_subject["haproxy.cfg", "check command"]["verdict"] == "ok"
        assert by_subject["runtime socket", "level"]["detail"] == "admin"
        assert by_subject["listener", "[server] listen"]["detail"].endswith(" is free")

    def test_table_reads_at_80_columns(self, ready: Stack) -> None:
        """Every line fits; each area is named; the totals line closes the report."""
        result = invoke("check", "--config", str(ready.settings))
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert max(len(line) for line in lines) <= 80
        for area in ("settings", "haproxy.cfg", "runtime socket", "aws", "listener"):
            assert area in lines
        assert any(line.startswith("✓ socket ") and "answers" in line for line in lines)
        assert lines[-1].startswith("check passed: 0 failed")

    def test_settings_from_the_environment_variable(self, ready: Stack) -> None:
        """Where the settings came from is said."""
        rows = preflight.run(None, {"RECONCILER_CONFIG": str(ready.settings)})
        assert row(rows[:1], "settings file").detail == (
            f"{ready.settings} (from $RECONCILER_CONFIG)"
        )


# -- settings --------------------------------------------------------------------------------------


class TestSettings:
    """A settings file that does not load fails; every other area is skipped, saying why."""

    def test_invalid_settings_name_the_keys_to_edit(self, tmp_path: Path) -> None:
        path = tmp_path / "reconciler.toml"
        path.write_text('[haproxy]\nconfig = 5\n[[backend]]\nname = "api"\nport = 80\n')
        variable = "RECONCILER_CONTROLLER_RESYNC_INTERVAL"
        result = invoke("check", "--config", str(path), "--json", **{variable: "soon"})
        assert result.exit_code == 1
        first, *others = json.loads(result.output)["checks"]
        assert (first["area"], first["verdict"]) == ("settings", "fail")
        problems = first["detail"].splitlines()
        assert "haproxy.config: must be a string, not 5" in problems
        assert "backend 'api'.asg: required" in problems
        assert any(p.startswith(f"controller.resync_interval (from {variable})") for p in problems)
        assert first["fix"] == (
            f"edit haproxy.config, backend 'api'.asg in {path} and correct ${variable} as said, "
            "then run check again"
        )
        assert [o["area"] for o in others] == AREAS[1:]
        assert {(o["verdict"], o["detail"]) for o in others} == {
            ("skipped", "the settings did not load")
        }

    def test_missing_file(self, tmp_path: Path) -> None:
        path = tmp_path / "nowhere.toml"
        result = invoke("check", "--config", str(path), "--json")
        assert result.exit_code == 1
        first = json.loads(result.output)["checks"][0]
        assert first["detail"].startswith(f"{path} (from --config):\nno such file")
        assert "--config" in first["fix"]
        result = invoke("check", "--config", str(path))
        assert "check failed: 1 failed, 0 warnings, 6 skipped, 0 ok" in result.output

    def test_unknown_option_is_bad_usage(self) -> None:
        assert invoke("check", "--no-such-option").exit_code == 2


# -- haproxy.cfg -----------------------------------------------------------------------------------


class TestConfigFile:
    """The file, each backend by the planner's own rules, the check command."""

    def test_backend_missing(self, haproxy: HAProxyProcess) -> None:
        found = row(file_rows(settings_for(haproxy, backend="web")), "backend 'web'")
        assert found.verdict is Verdict.FAIL
        assert found.detail == f"no backend or listen section 'web' in {haproxy.config_path}"
        assert found.fix == "add it or fix the [[backend]] name"

    def test_backend_refused_for_runtime_changes(self, haproxy_factory: HAProxyFactory) -> None:
        haproxy = haproxy_factory(BackendSpec("api", balance="static-rr"))
        found = row(file_rows(settings_for(haproxy)), "backend 'api'")
        assert found.verdict is Verdict.FAIL
        assert "'balance static-rr'" in found.detail
        assert found.fix.startswith("use roundrobin, leastconn")

    def test_check_command_rejects_the_file(self, haproxy: HAProxyProcess) -> None:
        """HAProxy's first alert lines as the detail; the file is checked as it is."""
        text = haproxy.config_path.read_text().replace(
            "backend api\n", "backend api\n    no-such-keyword 1\n"
        )
        haproxy.config_path.write_text(text)
        rows = file_rows(settings_for(haproxy))
        assert row(rows, "backend 'api'").verdict is Verdict.OK
        found = row(rows, "check command")
        assert found.verdict is Verdict.FAIL
        assert "rejects the file (exit 1):" in found.detail
        assert "no-such-keyword" in found.detail
        assert len(found.detail.splitlines()) <= 1 + preflight.ALERT_LINES
        assert "[NOTICE]" not in found.detail

    def test_file_missing_skips_what_needs_it(self, haproxy: HAProxyProcess) -> None:
        haproxy.config_path.unlink()
        rows = file_rows(settings_for(haproxy))
        assert (rows[0].verdict, rows[0].detail) == (
            Verdict.FAIL,
            f"{haproxy.config_path}: no such file",
        )
        assert rows[0].fix.startswith("point [haproxy] config at HAProxy's configuration file")
        assert [(r.subject, r.verdict) for r in rows[1:]] == [
            ("backend 'api'", Verdict.SKIP),
            ("check command", Verdict.SKIP),
        ]

    def test_template_that_renders(self, haproxy: HAProxyProcess) -> None:
        """A template of the file as it is renders it; another one says a reload comes."""
        template = haproxy.workdir / "haproxy.cfg.j2"
        template.write_text(haproxy.config_path.read_text())
        loaded = settings_for(haproxy, extra=f'template = "{template}"\n')
        found = row(file_rows(loaded), f"template {template}")
        size = len(haproxy.config_path.read_bytes())
        assert (found.verdict, found.detail) == (Verdict.OK, f"renders {size} bytes")
        template.write_text(template.read_text() + "# changed\n")
        found = row(file_rows(loaded), f"template {template}")
        assert found.detail.endswith("differs from the file, so the first run reloads HAProxy")

    def test_template_that_does_not_render(self, haproxy: HAProxyProcess) -> None:
        template = haproxy.workdir / "haproxy.cfg.j2"
        template.write_text("global\n{% for b in backends %}\n")
        rendered = haproxy.workdir / "rendered.cfg"
        loaded = settings_for(haproxy, config=rendered, extra=f'template = "{template}"\n')
        rows = file_rows(loaded)
        assert rows[0].detail == (
            f"{rendered}: not there yet; the first run writes it from the template"
        )
        found = row(rows, f"template {template}")
        assert found.verdict is Verdict.FAIL
        assert found.fix.startswith("correct the template")
        assert row(rows, "backend 'api'").verdict is Verdict.SKIP
        assert row(rows, "check command").verdict is Verdict.SKIP


# -- the runtime socket ----------------------------------------------------------------------------


@pytest.mark.haproxy_versions
class TestRuntimeSocket:
    """Reachable, admin, version, commands, each backend and its options, on each version."""

    def test_all_pass(self, haproxy: HAProxyProcess) -> None:
        rows = preflight.socket_checks(settings_for(haproxy), running=True)
        assert {r.verdict for r in rows if r.subject != "server_options of 'api'"} == {Verdict.OK}
        assert row(rows, "version").detail.startswith(
            f"HAProxy {haproxy.command('show version').strip()} (pid "
        )
        assert row(rows, "backend 'api'").detail == "running, 0 servers"

    def test_not_configured_is_a_warning_about_reloads(self, haproxy: HAProxyProcess) -> None:
        loaded = settings_for(haproxy)
        loaded = replace(loaded, haproxy=replace(loaded.haproxy, socket=None))
        (found,) = preflight.socket_checks(loaded, running=True)
        assert found.verdict is Verdict.WARN
        assert "reloads HAProxy" in found.detail
        assert "level admin" in found.fix

    def test_socket_missing(self, haproxy: HAProxyProcess) -> None:
        missing = haproxy.workdir / "missing.sock"
        rows = preflight.socket_checks(settings_for(haproxy, socket_path=missing), running=True)
        assert [r.verdict for r in rows] == [Verdict.FAIL, Verdict.SKIP]
        assert "cannot talk to the HAProxy runtime API" in rows[0].detail
        assert rows[0].fix == (
            f"start HAProxy with `stats socket {missing} level admin` in its global section"
        )

    def test_socket_not_admin(self, haproxy_factory: HAProxyFactory) -> None:
        haproxy = haproxy_factory.create()
        operator = haproxy.workdir / "operator.sock"
        haproxy.start(
            haproxy.basic_config(
                BackendSpec("api"), global_lines=(f"stats socket {operator} level operator",)
            )
        )
        rows = preflight.socket_checks(settings_for(haproxy, socket_path=operator), running=True)
        level = row(rows, "level")
        assert level.verdict is Verdict.FAIL
        assert level.detail == "operator: may not add or delete servers"
        assert level.fix == (
            f"add `level admin` to the `stats socket {operator}` line and reload HAProxy"
        )
        assert row(rows, "server_options of 'api'").verdict is Verdict.SKIP

    def test_backend_not_running(self, haproxy: HAProxyProcess) -> None:
        rows = preflight.socket_checks(settings_for(haproxy, backend="web"), running=True)
        found = row(rows, "backend 'web'")
        assert found.verdict is Verdict.FAIL
        assert found.fix == "reload HAProxy once so that it loads the section"

    @pytest.fixture(name="listing")
    def _listing(self, haproxy: HAProxyProcess) -> Iterator[FaultyProxy]:
        """The admin socket behind a proxy answering ``add server help`` as 3.2 does."""
        with FaultyProxy(haproxy.socket_path) as proxy:
            proxy.inject(r"^add server help$", Refuse(KEYWORDS))
            yield proxy

    def test_option_add_server_refuses(self, haproxy: HAProxyProcess, listing: FaultyProxy) -> None:
        loaded = settings_for(
            haproxy, socket_path=listing.path, options="check inter 100ms fall 2 enabled"
        )
        found = row(preflight.socket_checks(loaded, running=True), "server_options of 'api'")
        assert found.verdict is Verdict.FAIL
        assert "does not take 'enabled'" in found.detail
        assert found.fix == "remove 'enabled' from server_options of [[backend]] 'api'"

    def test_listed_options_pass(self, haproxy: HAProxyProcess, listing: FaultyProxy) -> None:
        loaded = settings_for(haproxy, socket_path=listing.path, options="check inter 3s weight 5")
        found = row(preflight.socket_checks(loaded, running=True), "server_options of 'api'")
        assert found.verdict is Verdict.OK

    def test_options_unchecked_where_haproxy_lists_no_keywords(
        self, haproxy: HAProxyProcess
    ) -> None:
        found = row(
            preflight.socket_checks(settings_for(haproxy), running=True), "server_options of 'api'"
        )
        if haproxy.command("add server help").startswith("List of keywords"):
            assert found.verdict is Verdict.OK
        else:
            assert found.verdict is Verdict.SKIP
            assert "does not list the keywords" in found.detail

    @pytest.mark.parametrize(
        ("options", "unlisted"),
        [
            (("check", "inter", "3s"), []),
            (("enabled", "check"), ["enabled"]),
            (("check", "inter", "3s", "enabled"), ["enabled"]),
            # An argument is never judged: 'none' follows a keyword.
            (("check", "none"), []),
        ],
    )
    def test_keyword_places(self, options: tuple[str, ...], unlisted: list[str]) -> None:
        assert preflight.unlisted_keywords(options, {"check", "inter"}) == unlisted


def test_an_error_in_the_aws_checks_is_a_failed_row(
    haproxy: HAProxyProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever goes wrong there, the other areas still report."""

    def broken(_loaded: Settings) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(preflight.probes, "read_facts", broken)
    (found,) = preflight.aws_rows(settings_for(haproxy))
    assert (found.area, found.verdict) == ("aws", Verdict.FAIL)
    assert found.detail == "stopped by an unexpected error: RuntimeError: boom"


# -- the listener ----------------------------------------------------------------------------------


@pytest.fixture(name="address")
def _address() -> str:
    return f"127.0.0.1:{free_port()}"


class TestListener:
    """Free, taken by a running controller (a warning), or taken by anything else."""

    def test_free(self, address: str) -> None:
        (found,) = preflight.listener_checks(address)
        assert (found.verdict, found.detail) == (Verdict.OK, f"{address} is free")

    def test_not_set(self) -> None:
        (found,) = preflight.listener_checks(None)
        assert found.verdict is Verdict.SKIP

    def test_busy_by_another_program(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        with socket.socket() as held:
            held.bind((host, int(port)))
            held.listen()

            def hang_up() -> None:
                """Something that is no controller: it hangs up on the probe."""
                connection, _ = held.accept()
                connection.close()

            threading.Thread(target=hang_up, daemon=True).start()
            (found,) = preflight.listener_checks(address)
        assert found.verdict is Verdict.FAIL
        assert found.detail == f"{address} is in use by another program"
        assert address in found.fix

    def test_answered_by_a_running_controller(self, address: str) -> None:
        server = StatusServer(address, Metrics(stale_after=60))
        server.start()
        try:
            (found,) = preflight.listener_checks(address)
        finally:
            server.stop()
        assert found.verdict is Verdict.WARN
        assert "a controller is already running there" in found.detail


# -- the table -------------------------------------------------------------------------------------


def test_table_is_text_and_fits_80_columns() -> None:
    """Markup and control characters in a row are shown as written; every line fits."""
    rows = [
        Check("settings", "settings file", Verdict.OK, "/etc/reconciler/reconciler.toml"),
        Check(
            "haproxy.cfg",
            "backend '[red]api[/red]'",
            Verdict.FAIL,
            "no backend or listen section '[red]api[/red]' in /a/very/long/path/" + "x" * 60,
            "add it or fix the [[backend]] name\x1b[2J",
        ),
        Check("runtime socket", "[haproxy] socket", Verdict.WARN, "not set", "set it"),
        Check("listener", "[server] listen", Verdict.SKIP, "not set"),
    ]
    console = Console(width=80, record=True, color_system=None)
    console.print(check_table.table(rows))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "[red]api[/red]" in text
    assert "[[backend]]" in text
    assert "\\x1b[2J" in text
    assert "\x1b" not in text
    assert text.splitlines()[-1] == "check failed: 1 failed, 1 warning, 1 skipped, 1 ok"
