"""
The deployment files of ``deploy/systemd`` and ``deploy/kubernetes``, checked offline: the unit
with ``systemd-analyze`` (where it exists) and its ExecStart run as a plain process; the manifests
against Kubernetes' own schemas (``kubernetes-validate``), and against each other, the Dockerfile
and the project: every path, port, user and variable one names is the one the other uses, the
ConfigMap's settings load with the project's loader and its template is the repository's
``haproxy.cfg.j2``, whose first file ``haproxy -c`` accepts.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from reconciler.adapters import settings_file
from reconciler.core.settings import Settings
from reconciler.core.template import render
from tests.support.dockerfile import Image, read_image
from tests.support.haproxy import MASTER_CLI_RELOAD


ROOT = Path(__file__).resolve().parent.parent
SYSTEMD = ROOT / "deploy" / "systemd"
UNIT = SYSTEMD / "haproxy-asg-reconciler.service"
KUBERNETES = ROOT / "deploy" / "kubernetes"
#: The CloudFormation stack of one node, whose names the settings must use.
STACK = ROOT / "deploy" / "aws" / "reconciler-node.yaml"
#: The virtual environment the unit runs the controller from; here, this interpreter's.
UNIT_VENV = "/opt/haproxy-asg-reconciler"
#: The oldest Kubernetes release the manifests are meant for, and the newest whose schemas
#: kubernetes-validate ships: a field one of them lacks fails.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None,
    reason="systemd-analyze is not installed (Debian: apt-get install systemd)",
)

Unit = dict[str, list[tuple[str, str]]]


def read_unit(path: Path) -> Unit:
    """Each section of a unit file with its ``key=value`` lines in order (a key may repeat)."""
    unit: Unit = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            unit[section] = []
            continue
        key, _, value = line.partition("=")
        unit[section].append((key.strip(), value.strip()))
    return unit


def values(unit: Unit, section: str, key: str) -> list[str]:
    """Every value of *key* in *section*, each split into words."""
    return [word for k, v in unit[section] if k == key for word in shlex.split(v)]


def unit_environment(unit: Unit) -> dict[str, str]:
    """The unit's ``Environment=`` assignments."""
    return dict(pair.partition("=")[::2] for pair in values(unit, "Service", "Environment"))


def assert_named_by_the_stack(settings: Settings, node: str) -> None:
    """
    The queue and the hooks in *settings* are those the stack creates for NodeName *node*, as its
    template spells them (``haproxy-${NodeName}``, ``haproxy-${NodeName}-launch``...).
    """
    stack = STACK.read_text()
    assert settings.sqs.queue_url is not None
    queue = settings.sqs.queue_url.rpartition("/")[2].replace(node, "${NodeName}")
    assert f"QueueName: !Sub {queue}\n" in stack, queue
    for backend in settings.backends:
        for key, hook in (("launch", backend.launch_hook), ("terminate", backend.terminate_hook)):
            assert hook is not None
            assert f'{key}_hook = "{hook.replace(node, "${NodeName}")}"' in stack, hook


@pytest.fixture(name="unit")
def _unit() -> Unit:
    return read_unit(UNIT)


@pytest.fixture(name="image")
def _image() -> Image:
    return read_image(ROOT / "Dockerfile")


def here(text: str) -> str:
    """*text* with the unit's virtual environment mapped to this one."""
    return text.replace(UNIT_VENV, sys.prefix)


@needs_systemd_analyze
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """
    ``systemd-analyze verify`` finds nothing to say: no unknown key or bad value, and the
    command ExecStart names is executable (the venv mapped to this one).
    """
    assert SYSTEMD_ANALYZE is not None
    copy = tmp_path / UNIT.name
    copy.write_text(here(UNIT.read_text()))
    done = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


@needs_systemd_analyze
def test_unit_sandbox_exposure_stays_low(tmp_path: Path) -> None:
    """``systemd-analyze security`` rates the sandbox at most 3.0 of 10 (it is 2.4, "OK")."""
    assert SYSTEMD_ANALYZE is not None
    copy = tmp_path / UNIT.name
    copy.write_text(here(UNIT.read_text()))
    done = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", "--threshold=30", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr


def test_unit_runs_after_haproxy_restarts_on_failure_and_is_sandboxed(unit: Unit) -> None:
    """Ordering, restart policy and the sandbox the README describes."""
    for key in ("After", "Wants"):
        assert {"haproxy.service", "network-online.target"} <= set(values(unit, "Unit", key))
    assert "haproxy.service" not in values(unit, "Unit", "Requires")
    service = dict(unit["Service"])
    assert service["Restart"] == "on-failure"
    assert 1 <= int(service["RestartSec"].removesuffix("s")) <= 60
    assert service["RestartPreventExitStatus"] == "2", "a configuration error is not retried"
    assert "User" not in service, "root: see the unit's comment"
    for key, value in {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
    }.items():
        assert service[key] == value, key
    assert values(unit, "Service", "ReadWritePaths") == ["/etc/haproxy"]
    assert values(unit, "Install", "WantedBy") == ["multi-user.target"]


def test_unit_environment_follows_the_image_conventions(unit: Unit, image: Image) -> None:
    """The settings path is the image's; the log format is one the CLI accepts."""
    env = unit_environment(unit)
    assert env["RECONCILER_CONFIG"] == image.env_as_written()["RECONCILER_CONFIG"]
    assert env["RECONCILER_LOG_FORMAT"] in ("text", "json")


def test_exec_start_is_the_packaged_entry_point_and_runs(unit: Unit) -> None:
    """
    ExecStart is the package's ``reconcile`` script in the unit's venv; run as a plain process
    with the unit's environment (the venv mapped to this one), ``--help`` works.
    """
    command = values(unit, "Service", "ExecStart")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert command[0] == f"{UNIT_VENV}/bin/reconcile"
    assert Path(command[0]).name in scripts
    done = subprocess.run(
        [here(command[0]), *command[1:], "--help"],
        env={"PATH": os.environ["PATH"], **unit_environment(unit)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Usage" in done.stdout


WRITE_AS_THE_UNIT = """
import sys
from pathlib import Path
from reconciler.adapters.config_store import FileStore
path = Path(sys.argv[1])
FileStore(path, "haproxy -c -f {path}", None).write(path.read_bytes(), sys.argv[2].encode())
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv (util-linux) to run with the unit's capabilities only",
)
def test_unit_capabilities_let_root_check_and_write_files_it_does_not_own(
    unit: Unit, tmp_path: Path, haproxy_binary: str
) -> None:
    """
    Root holding only the unit's CapabilityBoundingSet rewrites a haproxy.cfg owned by another
    user (CAP_DAC_READ_SEARCH reads it, CAP_CHOWN keeps its owner), after `haproxy -c` read an
    error file only that user may read. Without any capability, root cannot even read the file,
    which stays as it was: the capabilities are what makes it work, not root as such.
    """
    nobody = 65534
    errors = tmp_path / "503.http"
    errors.write_text("HTTP/1.0 503 Service Unavailable\r\n\r\nbusy\n")
    config = tmp_path / "haproxy.cfg"
    text = (
        "defaults\n    mode http\n    timeout connect 1s\n    timeout client 1s\n"
        f"    timeout server 1s\n    errorfile 503 {errors}\n\n"
        "frontend main\n    bind 127.0.0.1:8080\n    default_backend api\n\n"
        "backend api\n    server s1 127.0.0.1:8081\n"
    )
    config.write_text(text)
    for path, mode in ((errors, 0o600), (config, 0o640)):
        os.chown(path, nobody, nobody)
        path.chmod(mode)
    new = text + "# written as the unit\n"
    bounding = ",".join(
        [
            "-all",
            *(
                f"+{cap.lower().removeprefix('cap_')}"
                for cap in values(unit, "Service", "CapabilityBoundingSet")
            ),
        ]
    )
    env = {**os.environ, "PATH": f"{Path(haproxy_binary).parent}:{os.environ['PATH']}"}

    def write(caps: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "setpriv",
                f"--bounding-set={caps}",
                "--inh-caps=-all",
                sys.executable,
                "-c",
                WRITE_AS_THE_UNIT,
                str(config),
                new,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    refused = write("-all")
    assert refused.returncode != 0
    assert "Permission denied" in refused.stderr
    assert config.read_text() == text
    done = write(bounding)
    assert done.returncode == 0, done.stderr
    assert config.read_text() == new
    status = config.stat()
    assert (status.st_uid, status.st_gid, status.st_mode & 0o777) == (nobody, nobody, 0o640)


def test_vm_example_settings_load_and_fit_the_unit(unit: Unit) -> None:
    """
    The example settings load with the project's loader, edit a file in the one directory the
    unit may write, and reload through the master CLI of Debian's haproxy.service with the
    command the template-mode tests run against a real master.
    """
    loaded = settings_file.load(SYSTEMD / "reconciler.toml", environ={})
    assert [str(loaded.haproxy.config.parent)] == values(unit, "Service", "ReadWritePaths")
    assert loaded.haproxy.template is None, "edited in place"
    assert loaded.haproxy.reload_command == MASTER_CLI_RELOAD.format(
        python=f"{UNIT_VENV}/bin/python", master="/run/haproxy-master.sock"
    )
    assert loaded.haproxy.socket is not None
    assert loaded.sqs.queue_url is not None
    assert loaded.server.listen is not None
    assert loaded.server.listen.startswith("127.0.0.1:")
    assert_named_by_the_stack(loaded, "node-a")


# -- Kubernetes ---------------------------------------------------------------------------------


def manifests() -> Iterator[tuple[str, dict[str, Any]]]:
    """Each document of the manifests ``kubectl apply -f deploy/kubernetes`` applies."""
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            yield path.name, document


def resource(kind: str, name: str | None = None) -> dict[str, Any]:
    """The one manifest of *kind* (named *name*)."""
    (found,) = [
        d for _, d in manifests() if d["kind"] == kind and name in (None, d["metadata"]["name"])
    ]
    return found


def container(name: str) -> dict[str, Any]:
    """A container of the StatefulSet's pod."""
    spec = resource("StatefulSet")["spec"]["template"]["spec"]
    (found,) = [c for c in spec["containers"] if c["name"] == name]
    return found


def mount(container_name: str, volume: str) -> Path:
    """Where *container_name* mounts *volume*."""
    (path,) = [
        m["mountPath"] for m in container(container_name)["volumeMounts"] if m["name"] == volume
    ]
    return Path(path)


def port(container_name: str, name: str) -> int:
    """The number of a named container port."""
    (number,) = [
        p["containerPort"] for p in container(container_name)["ports"] if p["name"] == name
    ]
    return int(number)


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion of an env value, from the variables defined before it."""
    return re.sub(r"\$\((\w+)\)", lambda m: env[m[1]], value)


def pod_environment(image: Image, pod_name: str) -> dict[str, str]:
    """The controller container's environment in pod *pod_name*: the image's, then the pod's."""
    env = image.env_as_written()
    for variable in container("reconciler")["env"]:
        if "valueFrom" in variable:
            assert variable["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
            env[variable["name"]] = pod_name
        else:
            env[variable["name"]] = expand(variable["value"], env)
    return env


def pod_names() -> list[str]:
    """The StatefulSet's pods: <name>-<ordinal>."""
    statefulset = resource("StatefulSet")
    name = statefulset["metadata"]["name"]
    return [f"{name}-{ordinal}" for ordinal in range(statefulset["spec"]["replicas"])]


def pod_settings(image: Image, pod_name: str, tmp_path: Path) -> tuple[Settings, dict[str, str]]:
    """
    The settings the controller of *pod_name* loads, with the project's loader: the ConfigMap's
    files written where the pod mounts them (moved under *tmp_path*), and the pod's environment.
    """
    env = pod_environment(image, pod_name)
    mounted = Path(env["RECONCILER_CONFIG"])
    assert mounted.parent == mount("reconciler", "reconciler")
    local = tmp_path / mounted.name
    local.write_text(resource("ConfigMap")["data"][mounted.name])
    return settings_file.load(local, environ=env), env


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_are_valid_kubernetes_resources(version: str) -> None:
    """Every manifest validates against the release's schemas, strictly (no unknown field)."""
    found = list(manifests())
    assert {d["kind"] for _, d in found} == {
        "ConfigMap",
        "Service",
        "ServiceAccount",
        "StatefulSet",
    }
    for file, document in found:
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{file} {document['kind']}: {exc.json_path}: {exc.message}")


def test_one_settings_file_per_replica_with_its_own_queue_and_hooks(
    image: Image, tmp_path: Path
) -> None:
    """
    The ConfigMap holds the template and one settings file per pod of the StatefulSet, each
    loading with the project's loader; no two pods share a queue or a lifecycle hook.
    """
    names = pod_names()
    assert len(names) >= 2
    data = resource("ConfigMap")["data"]
    assert set(data) == {f"{name}.toml" for name in names} | {"haproxy.cfg.j2"}
    loaded = [pod_settings(image, name, tmp_path)[0] for name in names]
    queues = [settings.sqs.queue_url for settings in loaded]
    assert None not in queues
    assert len(set(queues)) == len(names)
    hooks = [
        (backend.name, hook)
        for settings in loaded
        for backend in settings.backends
        for hook in (backend.launch_hook, backend.terminate_hook)
    ]
    assert None not in {hook for _, hook in hooks}
    assert len(set(hooks)) == len(hooks)
    assert all(b.complete_lifecycle_actions for s in loaded for b in s.backends)
    for name, settings in zip(names, loaded, strict=True):
        assert_named_by_the_stack(settings, name)


def test_configmap_template_is_the_repository_template(image: Image, tmp_path: Path) -> None:
    """The template the pods render is haproxy.cfg.j2, byte for byte, at the path they name."""
    assert resource("ConfigMap")["data"]["haproxy.cfg.j2"] == (ROOT / "haproxy.cfg.j2").read_text()
    for name in pod_names():
        settings, _ = pod_settings(image, name, tmp_path)
        assert settings.haproxy.template == mount("reconciler", "reconciler") / "haproxy.cfg.j2"


def test_both_containers_share_the_file_and_the_sockets(image: Image, tmp_path: Path) -> None:
    """
    The file the controller writes and the sockets it talks to are on the emptyDir volumes
    HAProxy uses, at the paths HAProxy's command line names; the reload goes to its master CLI.
    """
    settings, _ = pod_settings(image, pod_names()[0], tmp_path)
    for name in ("haproxy", "reconciler"):
        assert mount(name, "haproxy-config") == settings.haproxy.config.parent
        assert settings.haproxy.socket is not None
        assert mount(name, "haproxy-run") == settings.haproxy.socket.parent
    volumes = resource("StatefulSet")["spec"]["template"]["spec"]["volumes"]
    assert all("emptyDir" in v for v in volumes if v["name"] in ("haproxy-config", "haproxy-run"))
    haproxy = container("haproxy")
    assert haproxy["image"] == "haproxy:2.6", "the version of the controller image's haproxy -c"
    command = shlex.split(" ".join(haproxy["args"]))
    started = command[command.index("exec") + 1 :]
    master = started[started.index("-S") + 1]
    assert started[started.index("-f") + 1] == str(settings.haproxy.config)
    assert settings.haproxy.reload_command is not None
    assert f"'{master}'" in settings.haproxy.reload_command
    assert "/tmp" in [str(mount("reconciler", "tmp"))], "a writable /tmp on a read-only root"


def test_health_and_metrics_are_where_probes_and_services_look(
    image: Image, tmp_path: Path
) -> None:
    """
    The controller listens (image default) on the port the liveness probe asks for /healthz
    and the metrics Service and ServiceMonitor scrape; the Services select the pods.
    """
    settings, _ = pod_settings(image, pod_names()[0], tmp_path)
    assert settings.server.listen is not None
    listen_port = int(settings.server.listen.rpartition(":")[2])
    assert listen_port == port("reconciler", "metrics") == int(image.only("EXPOSE"))
    probe = container("reconciler")["livenessProbe"]["httpGet"]
    assert probe == {"path": "/healthz", "port": "metrics"}
    statefulset = resource("StatefulSet")
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert statefulset["spec"]["selector"]["matchLabels"].items() <= labels.items()
    governing = resource("Service", statefulset["spec"]["serviceName"])
    assert governing["spec"]["clusterIP"] == "None"
    assert [p["targetPort"] for p in governing["spec"]["ports"]] == ["metrics"]
    traffic = resource("Service", "haproxy")
    assert [p["targetPort"] for p in traffic["spec"]["ports"]] == ["http"]
    frontend = pod_environment(image, pod_names()[0])["FRONTEND_BIND"]
    assert port("haproxy", "http") == int(frontend.rpartition(":")[2])
    for service in (governing, traffic):
        assert service["spec"]["selector"].items() <= labels.items()
    monitor = yaml.safe_load(
        (KUBERNETES / "prometheus-operator" / "servicemonitor.yaml").read_text()
    )
    selects = monitor["spec"]["selector"]["matchLabels"].items()
    assert selects <= governing["metadata"]["labels"].items()
    assert not selects <= traffic["metadata"]["labels"].items(), "one target per pod, not two"
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]


def test_pod_runs_as_the_image_user_without_privileges(image: Image) -> None:
    """Non-root as the image's uid, read-only roots, no capability, no escalation, IRSA."""
    spec = resource("StatefulSet")["spec"]["template"]["spec"]
    uid, _, gid = image.only("USER").partition(":")
    context = spec["securityContext"]
    assert context["runAsNonRoot"] is True
    assert (str(context["runAsUser"]), str(context["runAsGroup"])) == (uid, gid)
    for each in spec["containers"]:
        assert each["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }, each["name"]
    account = resource("ServiceAccount", spec["serviceAccountName"])
    role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@/-]+", role)


def test_first_rendered_file_passes_haproxy_check(
    image: Image, tmp_path: Path, haproxy_binary: str
) -> None:
    """
    The file the controller writes first (no server yet) from the ConfigMap's template, with
    the pod's settings and environment, is one HAProxy 2.6 accepts and can start from.
    """
    settings, env = pod_settings(image, pod_names()[0], tmp_path)
    text = resource("ConfigMap")["data"]["haproxy.cfg.j2"]
    rendered = tmp_path / "haproxy.cfg"
    rendered.write_bytes(render(text, settings, {}, env))
    assert f"bind {env['FRONTEND_BIND']}" in rendered.read_text()
    done = subprocess.run(
        [haproxy_binary, "-c", "-f", str(rendered)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
