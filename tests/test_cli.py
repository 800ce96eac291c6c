"""
The ``reconcile`` command line as a user meets it: the help and the version, which options go
together, what a missing haproxy.cfg and a backend that cannot be managed exit with, the shipped
template, and the wheel that carries it (built offline, installed, run with nothing else).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from harness.haproxy import DEADLINE, BackendSpec, HAProxyFactory, HAProxyProcess, wait_for
from harness.moto import REGION, Cloud
from reconciler.cli import app


ROOT = Path(__file__).resolve().parent.parent
DISTRIBUTION = "haproxy-asg-reconciler"
SHIPPED = ROOT / "haproxy.cfg.j2"
COMMANDS = ("drift", "check", "health", "template")
#: Help is read the way a user's 80-column terminal shows it.
COLUMNS = 80


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run ``reconcile *args*`` in this process, in an 80-column terminal."""
    return CliRunner(env={"COLUMNS": str(COLUMNS), **(env or {})}).invoke(app, list(args))


def settings_without_haproxy_cfg(tmp_path: Path) -> tuple[Path, Path]:
    """A valid settings file whose ``[haproxy] config`` names no file; both paths."""
    missing = tmp_path / "haproxy.cfg"
    settings = tmp_path / "reconciler.toml"
    settings.write_text(
        f'[aws]\nregion = "{REGION}"\n\n[haproxy]\nconfig = "{missing}"\n\n'
        '[[backend]]\nname = "api"\nasg = "api-asg"\nport = 8080\n'
    )
    return settings, missing


# -- version and help --------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_prints_the_package_version(flag: str, tmp_path: Path) -> None:
    """Exit 0 with the installed version, no settings file needed."""
    done = invoke(flag, env={"RECONCILER_CONFIG": str(tmp_path / "none.toml")})
    assert done.exit_code == 0, done.output
    assert done.stdout == f"{DISTRIBUTION} {metadata.version(DISTRIBUTION)}\n"


def description(help_text: str) -> list[list[str]]:
    """The paragraphs of a help page above its option list, each as its lines."""
    above = help_text.split("\nOptions:", maxsplit=1)[0].split("\n\n")[1:]
    return [paragraph.splitlines() for paragraph in above]


def assert_fits_and_flows(help_text: str) -> None:
    """
    Every line fits the terminal, and each paragraph of the description is filled: a line
    ends early only when the next word would not have fitted on it.
    """
    for line in help_text.splitlines():
        assert len(line) <= COLUMNS, line
    for paragraph in description(help_text):
        for line, following in itertools.pairwise(paragraph):
            next_word = following.split()[0]
            assert len(line) + 1 + len(next_word) > COLUMNS - 10, (line, following)


def test_main_help_says_what_no_option_does_and_lists_exit_codes() -> None:
    """Plain flags, the controller as the default, and the exit codes, at 80 columns."""
    done = invoke("--help")
    assert done.exit_code == 0, done.output
    page = done.stdout
    assert_fits_and_flows(page)
    assert "<bool>" not in page
    options = page.split("\nOptions:\n", maxsplit=1)[1]
    shown = {line.split("  ")[1].strip() for line in options.splitlines() if line[2:3] == "-"}
    assert {"--once", "--dry-run", "--json", "-V, --version", "--timeout SECONDS"} <= shown
    text = " ".join(" ".join(p) for p in description(page))
    assert "Without --once or --dry-run, runs the long-running controller" in text
    for code in ("Exit codes: 0", "; 1 ", "; 2 "):
        assert code in text
    assert "a backend that cannot be managed" in text


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_lists_its_exit_codes(command: str) -> None:
    """Each command's help has its exit codes, wrapped at 80 columns like the rest."""
    done = invoke(command, "--help")
    assert done.exit_code == 0, done.output
    assert_fits_and_flows(done.stdout)
    assert "<bool>" not in done.stdout
    assert "Exit codes: 0" in " ".join(" ".join(p) for p in description(done.stdout))


def test_flags_take_no_value(tmp_path: Path) -> None:
    """The help shows ``--once`` as a plain flag, so ``--once=yes`` is a usage error."""
    done = invoke("--once=yes", env={"RECONCILER_CONFIG": str(tmp_path / "none.toml")})
    assert done.exit_code == 2
    assert "Option '--once' does not take a value" in done.output


@pytest.mark.parametrize("options", [("--json",), ("--timeout", "5"), ("--json", "--timeout", "1")])
def test_once_only_options_need_once(options: tuple[str, ...], tmp_path: Path) -> None:
    """Without --once or --dry-run they are refused (exit 2) instead of starting the controller."""
    settings, _ = settings_without_haproxy_cfg(tmp_path)
    done = invoke(*options, "--config", str(settings))
    assert done.exit_code == 2, done.output
    names = " and ".join(o for o in options if o.startswith("--"))
    assert f"error: {names} only appl" in done.output
    assert "add --once" in done.output
    assert "configuration error" not in done.output, "nothing else is read"


def test_json_goes_with_dry_run(tmp_path: Path) -> None:
    """--dry-run runs one cycle: --json is accepted with it (the missing file stops it here)."""
    settings, missing = settings_without_haproxy_cfg(tmp_path)
    done = invoke("--dry-run", "--json", "--config", str(settings))
    assert done.exit_code == 2, done.output
    assert f"configuration error in {missing}:" in done.output


# -- a missing haproxy.cfg ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [("--once",), ("--once", "--dry-run"), ("drift",), ()],
    ids=["once", "dry-run", "drift", "controller"],
)
def test_missing_haproxy_cfg_is_a_configuration_error(
    args: tuple[str, ...], tmp_path: Path
) -> None:
    """Exit 2 at once, naming the file and what to do; nothing says it will retry, nothing does."""
    settings, missing = settings_without_haproxy_cfg(tmp_path)
    done = invoke(*args, "--config", str(settings))
    assert done.exit_code == 2, done.output
    assert f"configuration error in {missing}:" in done.output
    assert "no such file" in done.output
    assert "[haproxy] config" in done.output
    assert "retry" not in done.output
    assert "retrying" not in done.output


# -- a backend that cannot be managed: one rule ----------------------------------------------


@pytest.fixture(name="refusing")
def _refusing(
    cloud: Cloud, haproxy_factory: HAProxyFactory, tmp_path: Path
) -> tuple[Path, HAProxyProcess]:
    """
    Settings with two backends through the runtime socket of a real HAProxy: ``api``, and
    ``static`` whose ``balance static-rr`` takes no server added at runtime; a group each.
    """
    haproxy = haproxy_factory(BackendSpec("api"), BackendSpec("static", balance="static-rr"))
    cloud.create_group("api-asg", 2)
    cloud.create_group("static-asg", 1)
    settings = tmp_path / "reconciler.toml"
    settings.write_text(
        f'[aws]\nregion = "{REGION}"\n\n'
        f'[haproxy]\nconfig = "{haproxy.config_path}"\nsocket = "{haproxy.socket_path}"\n\n'
        '[[backend]]\nname = "api"\nasg = "api-asg"\nport = 8080\nserver_prefix = "api-"\n\n'
        '[[backend]]\nname = "static"\nasg = "static-asg"\nport = 8080\n'
        'server_prefix = "static-"\n'
    )
    return settings, haproxy


def api_servers(haproxy: HAProxyProcess) -> int:
    """The servers the controller added to ``api``."""
    return haproxy.command("show servers state api").count("api-i-")


def test_a_backend_that_cannot_be_managed_fails_alone(
    refusing: tuple[Path, HAProxyProcess],
) -> None:
    """
    --once --dry-run, --once and drift all exit 1 naming the ``static-rr`` backend, and the good
    backend is handled.
    """
    settings, haproxy = refusing
    config = ("--config", str(settings))

    done = invoke("--once", "--dry-run", "--json", *config)
    assert done.exit_code == 1, done.output
    report = {b["backend"]: b for b in json.loads(done.stdout)["backends"]}
    assert "static-rr" in report["static"]["refused"]
    assert report["api"]["refused"] is None
    assert report["api"]["counts"]["add"] == 2

    done = invoke("--once", *config)
    assert done.exit_code == 1, done.output
    assert "static-rr" in done.output
    assert api_servers(haproxy) == 2

    done = invoke("drift", *config)
    assert done.exit_code == 1, done.output
    assert "static-rr" in done.output
    assert invoke("drift", "--backend", "api", *config).exit_code == 0


def test_the_controller_refuses_that_backend_alone(
    refusing: tuple[Path, HAProxyProcess], tmp_path: Path
) -> None:
    """
    The controller does the same: it starts, serves ``api``, and reports the ``static-rr``
    backend in each failed cycle; SIGTERM stops it cleanly.
    """
    settings, haproxy = refusing
    log = tmp_path / "reconcile.log"
    command = [sys.executable, "-m", "reconciler", "--config", str(settings)]
    with log.open("wb") as out:
        daemon = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        wait_for(lambda: api_servers(haproxy) == 2, f"api served (log: {log})")
        wait_for(lambda: "static-rr" in log.read_text(), "the refusal logged")
        assert "cycle failed" in log.read_text()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(DEADLINE) == 0, log.read_text()
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()


# -- the shipped template ------------------------------------------------------------------------


def test_template_prints_the_shipped_template() -> None:
    """Exactly the repository's haproxy.cfg.j2, on stdout."""
    done = invoke("template")
    assert done.exit_code == 0, done.output
    assert done.stdout == SHIPPED.read_text(encoding="utf-8")


def test_template_output_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    """--output writes the file; an existing one is kept (exit 2) unless --force."""
    target = tmp_path / "haproxy.cfg.j2"
    assert invoke("template", "--output", str(target)).exit_code == 0
    assert target.read_text(encoding="utf-8") == SHIPPED.read_text(encoding="utf-8")
    target.write_text("mine\n")
    done = invoke("template", "--output", str(target))
    assert done.exit_code == 2
    assert f"{target} already exists" in done.output
    assert "--force" in done.output
    assert target.read_text() == "mine\n"
    assert invoke("template", "--output", str(target), "--force").exit_code == 0
    assert target.read_text(encoding="utf-8") == SHIPPED.read_text(encoding="utf-8")


def test_template_output_into_a_missing_directory_fails(tmp_path: Path) -> None:
    """A path that cannot be written: exit 1 with the reason."""
    target = tmp_path / "no" / "haproxy.cfg.j2"
    done = invoke("template", "--output", str(target))
    assert done.exit_code == 1
    assert f"cannot write {target}" in done.output


# -- the wheel -----------------------------------------------------------------------------------


@pytest.fixture(scope="module", name="installed")
def _installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The project's wheel, built offline, and the directory it was installed into."""
    work = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(work)]
    subprocess.run([*build, str(ROOT)], check=True, timeout=120, capture_output=True)
    (wheel,) = work.glob("*.whl")
    target = work / "installed"
    install = [*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)]
    subprocess.run(install, check=True, timeout=120, capture_output=True)
    return wheel, target


def test_wheel_ships_the_template(installed: tuple[Path, Path]) -> None:
    """The template is inside the wheel, byte for byte."""
    wheel, _ = installed
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read("reconciler/haproxy.cfg.j2") == SHIPPED.read_bytes()


@pytest.mark.parametrize("args", [("--help",), ("--version",), ("template",)])
def test_installed_wheel_runs_with_nothing_else(
    installed: tuple[Path, Path], args: tuple[str, ...], tmp_path: Path
) -> None:
    """
    The installed console script, importing the installed package (not this checkout), in an
    empty directory with no settings file: --help, --version and template all work.
    """
    _, target = installed
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    env["PYTHONPATH"] = str(target)
    where = subprocess.run(
        [sys.executable, "-c", "import reconciler; print(reconciler.__file__)"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(target))
    done = subprocess.run(
        [str(target / "bin" / "reconcile"), *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    if args == ("template",):
        assert done.stdout == SHIPPED.read_text(encoding="utf-8")
    elif args == ("--version",):
        assert done.stdout == f"{DISTRIBUTION} {metadata.version(DISTRIBUTION)}\n"
    else:
        assert "Usage: reconcile" in done.stdout
