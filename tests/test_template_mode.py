"""
Template mode end to end: the shipped ``haproxy.cfg.j2`` rendered for a moto Auto Scaling group and
served by a real HAProxy, with cycles run through the real adapters (``runner.build_ports``).

The node starts as a sidecar's does: no config file at all. The first cycle writes it, and HAProxy
is started from it (its container waits for that file). Later cycles apply server changes through
the runtime API with the worker untouched, and template changes with a validated reload through
the master CLI.
"""

from __future__ import annotations

import logging
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from harness.haproxy import HAProxyFactory, HAProxyProcess, HTTPBackends, free_port, wait_for
from harness.moto import REGION, Cloud
from reconciler.adapters.config_store import FileStore
from reconciler.core import next_config, template
from reconciler.core.errors import ConfigError, TransientError
from reconciler.core.model import CycleResult, ServerLine
from reconciler.core.settings import AwsSettings, Binding, HAProxySettings, Settings
from reconciler.cycle import run_cycle
from reconciler.ports import Ports
from reconciler.runner import build_ports
from tests.support.haproxy import MASTER_CLI_RELOAD


SHIPPED = Path(__file__).resolve().parent.parent / "haproxy.cfg.j2"
GROUP = "api-asg"
#: Answers ``GET /version`` from the frontend itself, to see which template is being served.
VERSION_RULE = (
    "    http-request return status 200 content-type text/plain "
    'string "{version}" if {{ path /version }}\n'
)


class Node:
    """One HAProxy node in template mode: its group, instances, template, HAProxy and settings."""

    def __init__(
        self, cloud: Cloud, haproxy: HAProxyProcess, backends: HTTPBackends, template_path: Path
    ) -> None:
        self.cloud = cloud
        self.haproxy = haproxy
        self.backends = backends
        self.template = template_path
        self.port = free_port()
        self.served: set[str] = set()
        self.settings = Settings(
            aws=AwsSettings(region=REGION),
            haproxy=HAProxySettings(
                config=haproxy.config_path,
                socket=haproxy.socket_path,
                reload_command=MASTER_CLI_RELOAD.format(
                    python=sys.executable, master=haproxy.master_socket_path
                ),
                template=template_path,
            ),
            backends=(
                Binding(
                    name="api",
                    asg=GROUP,
                    port=self.port,
                    server_prefix="api-",
                    server_options=("check", "inter", "100ms", "fall", "2", "rise", "1"),
                    drain_timeout=5,
                ),
            ),
        )
        self.ports: Ports = build_ports(self.settings)

    def serve_instances(self) -> set[str]:
        """Start an HTTP server on every serving instance that has none; all of them, by id."""
        serving = self.cloud.serving(GROUP)
        for instance_id, ip in serving.items():
            if instance_id not in self.served:
                self.backends.start(ip, self.port, name=instance_id)
                self.served.add(instance_id)
        return set(serving)

    def cycle(self) -> CycleResult:
        """One reconcile cycle, as the controller runs it."""
        return run_cycle(self.settings, self.ports)

    def converge(self) -> list[CycleResult]:
        """Cycles until no warm-up or drain is left; every one must succeed."""
        results: list[CycleResult] = []

        def converged() -> bool:
            result = self.cycle()
            results.append(result)
            assert result.ok, result.errors
            return not result.pending

        wait_for(converged, "the cycles to converge")
        return results

    def start(self) -> CycleResult:
        """
        The first cycle, then HAProxy from the file it wrote, as its container does; returns that
        cycle once every instance answers.
        """
        instances = self.serve_instances()
        first = self.cycle()
        assert first.ok, first.errors
        self.haproxy.start(self.haproxy.config_path.read_text())
        self.wait_answering(instances)
        return first

    def answers(self, requests: int = 30) -> set[str]:
        """The instances that answered *requests* requests, and any other status seen."""
        seen = set()
        for _ in range(requests):
            status, body = self.haproxy.get("/")
            seen.add(body.removeprefix("hello from ") if status == 200 else f"status {status}")
        return seen

    def wait_answering(self, instances: set[str]) -> None:
        """Wait until exactly *instances* answer through the frontend."""
        wait_for(lambda: self.answers() == instances, f"{sorted(instances)} answering")

    def edit_template(self, old: str, new: str) -> None:
        """Replace *old* (which must be there) by *new* in the node's template."""
        text = self.template.read_text()
        assert old in text
        self.template.write_text(text.replace(old, new))

    def is_template_output(self) -> bool:
        """The file is exactly the template rendered with the servers it holds."""
        stored = self.ports.store.read()
        maker = next_config.for_cycle(self.settings, stored)
        return maker.next_file({}) == next_config.NextFile(stored.file)

    def new_worker(self, old_pid: int) -> bool:
        """A worker other than *old_pid* answers the admin socket."""
        try:
            return self.haproxy.worker_pid() != old_pid
        except OSError:
            return False


@pytest.fixture(name="node")
def _node(
    cloud: Cloud,
    haproxy_factory: HAProxyFactory,
    http_backends: HTTPBackends,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Node:
    """Two InService instances, a copy of the shipped template, no config file yet."""
    cloud.create_group(GROUP, 2)
    haproxy = haproxy_factory.create()
    # The shipped template binds FRONTEND_BIND; the test's HAProxy must stay on loopback.
    monkeypatch.setenv("FRONTEND_BIND", f"127.0.0.1:{haproxy.port}")
    copy = tmp_path / "haproxy.cfg.j2"
    copy.write_text(SHIPPED.read_text())
    return Node(cloud, haproxy, http_backends, copy)


def test_shipped_template_passes_haproxy_check(haproxy_binary: str, tmp_path: Path) -> None:
    """Rendered with example settings and servers, ``haproxy -c`` accepts the shipped template."""
    settings = Settings(
        aws=AwsSettings(),
        haproxy=HAProxySettings(socket=Path("/var/run/haproxy/admin.sock"), template=SHIPPED),
        backends=(
            Binding("api", "api-asg", 8080, "api-", ("check", "inter", "2s")),
            Binding("web", "web-asg", 80, "web-"),
        ),
    )
    servers = [
        ServerLine(f"api-i-0123456789abcdef{n}", f"10.0.1.{n}", 8080, n, ("check", "inter", "2s"))
        for n in range(1, 4)
    ]
    candidate = tmp_path / "haproxy.cfg"
    candidate.write_bytes(template.render(SHIPPED.read_text(), settings, {"api": servers}, {}))
    checked = subprocess.run(
        [haproxy_binary, "-c", "-f", str(candidate)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_first_file_is_served_with_every_instance(node: Node) -> None:
    """
    With no file yet, one cycle writes the template's file with every InService instance, without
    reading a runtime or reloading; HAProxy started from it serves them all, and the next cycle
    has nothing left to do.
    """
    assert not node.haproxy.config_path.exists()
    first = node.start()
    assert first.outcome is not None
    assert (first.outcome.file_written, first.outcome.reloaded) == (True, False)
    assert first.outcome.commands == 0
    assert node.is_template_output()
    again = node.cycle()
    assert again.ok, again.errors
    assert again.outcome is not None
    assert (again.outcome.file_written, again.outcome.commands) == (False, 0)


def test_scale_out_goes_through_the_runtime_without_a_reload(node: Node) -> None:
    """A new instance is added at runtime: same worker, the file re-rendered with it."""
    node.start()
    worker = node.haproxy.worker_pid()
    node.cloud.set_desired(GROUP, 3)
    instances = node.serve_instances()
    results = node.converge()
    assert not any(r.outcome and r.outcome.reloaded for r in results)
    assert any(r.outcome and r.outcome.file_written for r in results)
    node.wait_answering(instances)
    assert node.haproxy.worker_pid() == worker
    assert (
        len(next_config.current_lines(node.settings, node.haproxy.config_path.read_bytes())["api"])
        == 3
    )
    assert node.is_template_output()


def test_template_change_is_validated_and_reloaded(node: Node) -> None:
    """An edited template is written and reloaded: a new worker serves the new config."""
    node.start()
    worker = node.haproxy.worker_pid()
    node.edit_template(
        "    default_backend", VERSION_RULE.format(version="template v2") + "    default_backend"
    )
    result = node.cycle()
    assert result.ok, result.errors
    assert result.outcome is not None
    assert (result.outcome.file_written, result.outcome.reloaded) == (True, True)
    wait_for(lambda: node.new_worker(worker), "the reloaded worker")
    # The master tells the old worker to stop listening only once the new one is up: in between,
    # a connection may still reach the old worker and its old config.
    wait_for(
        lambda: node.haproxy.get("/version") == (200, "template v2"), "the new template served"
    )
    node.wait_answering(node.serve_instances())
    assert node.is_template_output()
    again = node.cycle()
    assert again.ok, again.errors
    assert again.outcome is not None
    assert (again.outcome.file_written, again.outcome.reloaded) == (False, False)


def test_template_haproxy_rejects_keeps_the_file(node: Node) -> None:
    """A template ``haproxy -c`` rejects: error reported, old file kept, no reload."""
    node.start()
    worker = node.haproxy.worker_pid()
    before = node.haproxy.config_path.read_bytes()
    node.edit_template("    option dontlognull\n", "    option dontlognull\n    bogus-keyword\n")
    result = node.cycle()
    assert not result.ok
    assert "bogus-keyword" in " ".join(result.errors)
    assert result.outcome is not None
    assert (result.outcome.file_written, result.outcome.reloaded) == (False, False)
    assert node.haproxy.config_path.read_bytes() == before
    assert node.haproxy.worker_pid() == worker
    node.wait_answering(node.serve_instances())


def test_unrenderable_template_keeps_the_file_while_the_runtime_follows(node: Node) -> None:
    """
    A template jinja2 cannot render is reported with its line and the file is kept, while a
    scale-out still reaches the running HAProxy; once the template is fixed, the file follows
    without a reload.
    """
    node.start()
    worker = node.haproxy.worker_pid()
    before = node.haproxy.config_path.read_bytes()
    good = node.template.read_text()
    node.edit_template("{{ backends[0].name }}", "{{ backends[0].nmae }}")
    node.cloud.set_desired(GROUP, 3)
    instances = node.serve_instances()
    result = node.cycle()
    lines = node.template.read_text().splitlines()
    line = next(n for n, text in enumerate(lines, start=1) if "nmae" in text)
    (error,) = result.errors
    assert error.startswith(f"{node.template}: line {line}: ")
    assert "no attribute 'nmae'" in error
    assert node.haproxy.config_path.read_bytes() == before
    wait_for(lambda: not node.cycle().plan.pending, "the new server to warm up")
    node.wait_answering(instances)
    node.template.write_text(good)
    fixed = node.cycle()
    assert fixed.ok, fixed.errors
    assert fixed.outcome is not None
    assert (fixed.outcome.file_written, fixed.outcome.reloaded) == (True, False)
    assert node.haproxy.worker_pid() == worker
    assert node.is_template_output()


def test_template_modes_store_creates_the_first_file(tmp_path: Path) -> None:
    """
    The store of template mode reads a missing file as empty and its first write creates it,
    readable by all (HAProxy may run as another user); once the file exists, a write planned
    from "missing" is a conflict. Without template mode a missing file is a configuration error.
    """
    path = tmp_path / "haproxy.cfg"
    template_path = tmp_path / "haproxy.cfg.j2"
    template_path.write_text("global\n")
    store = FileStore(path, "true {path}", None, template=template_path)
    assert store.read().file == b""
    store.write(b"", b"global\n")
    assert store.read().file == b"global\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    with pytest.raises(TransientError, match="changed while reconciling"):
        store.write(b"", b"defaults\n")
    with pytest.raises(ConfigError, match=r"no such file; point \[haproxy\] config at") as missing:
        FileStore(tmp_path / "other.cfg", "true {path}", None).read()
    assert missing.value.source == str(tmp_path / "other.cfg")


def reloads(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The reload lines logged so far."""
    return [r for r in caplog.records if r.getMessage() == "haproxy reloaded"]


def test_a_template_driven_reload_is_logged_with_its_cause(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    """
    The first file needs no reload (nothing runs from it yet) and a membership change goes
    through the runtime API: neither logs one. An edited template is reloaded, logged at INFO
    with the cause ``template``.
    """
    with caplog.at_level(logging.INFO, logger="reconciler"):
        node.start()
        node.cloud.set_desired(GROUP, 3)
        node.serve_instances()
        node.converge()
        assert not reloads(caplog)
        node.edit_template(
            "    default_backend", VERSION_RULE.format(version="v2") + "    default_backend"
        )
        result = node.cycle()
    assert result.outcome is not None, result.errors
    assert result.outcome.reloaded, result.errors
    (record,) = reloads(caplog)
    assert record.levelno == logging.INFO
    assert record.__dict__["fields"] == {"cause": "template"}
