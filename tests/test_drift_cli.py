"""
``reconcile drift`` as a user runs it: settings file in, report and exit code out, against moto
and a real HAProxy on loopback.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from harness.haproxy import BackendSpec, HAProxyFactory, HAProxyProcess
from harness.moto import REGION, Cloud
from reconciler import drift_table
from reconciler.cli import app
from reconciler.core.drift import BackendDrift, DriftReport, DriftRow, RuntimeState, Verdict
from tests.support.schema import validate


ASG = "api-asg"


@pytest.fixture(name="haproxy")
def _haproxy(haproxy_factory: HAProxyFactory) -> HAProxyProcess:
    """A real HAProxy with an empty ``api`` backend."""
    return haproxy_factory(BackendSpec("api"))


def write_settings(path: Path, haproxy: HAProxyProcess) -> Path:
    """A settings file binding ``api`` to the group, through the runtime socket."""
    path.write_text(
        f'[aws]\nregion = "{REGION}"\n\n'
        f'[haproxy]\nconfig = "{haproxy.config_path}"\nsocket = "{haproxy.socket_path}"\n\n'
        f'[[backend]]\nname = "api"\nasg = "{ASG}"\nport = 8080\nserver_prefix = "api-"\n'
    )
    return path


def run(*args: str, columns: int | None = None) -> tuple[int, str]:
    """
    Run ``reconcile`` with *args*; its exit code and output (no terminal: no colour), 80 columns
    wide as when piped, or *columns* wide.
    """
    env = {} if columns is None else {"COLUMNS": str(columns)}
    result = CliRunner(env=env).invoke(app, list(args))
    return result.exit_code, result.output


def stacked_fields(row: dict[str, object]) -> str:
    """
    The ``name value`` pairs a stacked row shows for a JSON *row* of a backend without weights
    or zones, comma-separated as the report prints them.
    """
    asg = f"{row['lifecycle_state']} {row['health_status']}" if row["lifecycle_state"] else "-"
    running = row["runtime_state"] or "not read"
    check = row["check_status"] or row["check"] or "-"
    return (
        f"ASG {asg}, EC2 {row['ec2_state'] or '-'}, IP {row['private_ip'] or '-'}, "
        f"server {row['server'] or '-'}, file {'yes' if row['in_file'] else 'no'}, "
        f"runtime {running}, check {check}"
    )


def words(text: str) -> str:
    """*text* with every run of blanks and line breaks as one space: what it says, not where."""
    return " ".join(text.split())


def test_exit_codes_follow_the_state(cloud: Cloud, haproxy: HAProxyProcess, tmp_path: Path) -> None:
    """3 with an unreconciled group, 0 once ``--once`` ran; no escape codes when piped."""
    config = str(write_settings(tmp_path / "reconciler.toml", haproxy))
    cloud.create_group(ASG, 2)
    code, output = run("drift", "--config", config)
    assert code == drift_table.EXIT_DRIFT, output
    assert "2 drifted: 2 missing" in output
    assert "\x1b" not in output
    assert run("--once", "--config", config)[0] == 0
    code, output = run("drift", "--config", config)
    assert code == drift_table.EXIT_IN_SYNC, output
    assert "overall: in sync (1 backend)" in output


def test_json_follows_the_schema(cloud: Cloud, haproxy: HAProxyProcess, tmp_path: Path) -> None:
    """``--json`` prints one document that validates against the published schema."""
    config = str(write_settings(tmp_path / "reconciler.toml", haproxy))
    cloud.create_group(ASG, 1)
    code, output = run("drift", "--config", config, "--json")
    assert code == drift_table.EXIT_DRIFT
    validate(json.loads(output), drift_table.JSON_SCHEMA)


def test_missing_group_exits_1(cloud: Cloud, haproxy: HAProxyProcess, tmp_path: Path) -> None:
    """The group does not exist: the backend is refused with the reason, exit 1."""
    config = str(write_settings(tmp_path / "reconciler.toml", haproxy))
    code, output = run("drift", "--config", config)
    assert code == drift_table.EXIT_UNREADABLE
    assert "REFUSED" in output


def test_unknown_backend_exits_2(cloud: Cloud, haproxy: HAProxyProcess, tmp_path: Path) -> None:
    """``--backend`` naming no configured backend is a usage error, before any read."""
    config = str(write_settings(tmp_path / "reconciler.toml", haproxy))
    code, output = run("drift", "--config", config, "--backend", "nope")
    assert code == 2
    assert "--backend nope" in output


@pytest.mark.haproxy_versions
def test_report_names_the_running_haproxy(
    cloud: Cloud, haproxy: HAProxyProcess, tmp_path: Path
) -> None:
    """The version ``show info`` gives heads the tables and is ``haproxy.version`` in JSON."""
    config = str(write_settings(tmp_path / "reconciler.toml", haproxy))
    cloud.create_group(ASG, 1)
    (version,) = [
        row.removeprefix("Version: ")
        for row in haproxy.command("show info").splitlines()
        if row.startswith("Version: ")
    ]
    code, output = run("drift", "--config", config)
    assert code == drift_table.EXIT_DRIFT, output
    assert output.splitlines()[0].startswith(f"HAProxy {version} — runtime API: add/del server")
    code, output = run("drift", "--config", config, "--json")
    found = json.loads(output)["haproxy"]
    assert (found["version"], found["missing_commands"], found["level"]) == (version, [], "admin")
    assert {"add server", "del server", "show servers state"} <= set(found["commands"])


def test_weights_and_zones_are_shown_and_judged(
    cloud: Cloud, haproxy_factory: HAProxyFactory, tmp_path: Path
) -> None:
    """
    A mixed-instances group over two zones, weighted by capacity, routed by zone: in sync once
    ``--once`` ran, with the zone line, each server's zone and weight; a weight set by hand is
    drift, with its verdict.
    """
    haproxy = haproxy_factory(BackendSpec("api", lines=("option allbackups",)))
    settings = write_settings(tmp_path / "reconciler.toml", haproxy)
    text = settings.read_text().replace(
        f'socket = "{haproxy.socket_path}"\n',
        f'socket = "{haproxy.socket_path}"\nzone = "{cloud.zone("a")}"\n',
    )
    settings.write_text(text + 'weight = "capacity"\nzone_routing = true\n')
    ids = cloud.create_group(
        ASG,
        4,
        zones={"a": 2, "b": 2},
        instance_types=["c5.large", "c5.4xlarge"],
        overrides={"c5.large": 2, "c5.4xlarge": 8},
    )
    config = str(settings)
    assert run("--once", "--config", config)[0] == 0
    code, output = run("drift", "--config", config, "--json")
    assert code == drift_table.EXIT_IN_SYNC, output
    document = json.loads(output)
    validate(document, drift_table.JSON_SCHEMA)
    (backend,) = document["backends"]
    assert backend["weights"] is True
    assert backend["zone_routing"]["mode"] == "local"
    placed = cloud.placements(ASG)
    rows = {row["instance_id"]: row for row in backend["rows"] if row["instance_id"]}
    for instance_id in ids:
        row = rows[instance_id]
        weight = 256 if placed[instance_id].instance_type == "c5.4xlarge" else 64
        assert (row["zone"], row["local"]) == (
            placed[instance_id].zone,
            row["zone"] == cloud.zone("a"),
        )
        assert (row["weight_desired"], row["weight_runtime"], row["weight_file"]) == (weight,) * 3
    code, output = run("drift", "--config", config)
    assert "zone routing local: the local zone" in output
    assert "(local)" in output
    haproxy.command(f"set server api/api-{ids[0]} weight 5")
    code, output = run("drift", "--config", config)
    assert code == drift_table.EXIT_DRIFT, output
    assert "1 drifted: 1 weight" in output


def test_stacked_rows_keep_every_comma_at_80_columns(
    cloud: Cloud, haproxy: HAProxyProcess, tmp_path: Path
) -> None:
    """
    Piped (80 columns), rows are stacked: each row's pairs, read across its lines, are separated
    by commas, also where a line ends exactly at the width (the server's name fills the second
    line to its last column: a verdict of 7, an instance id of 19 and the gaps leave 50 columns,
    and ``server <15-character prefix><instance id>, file no`` is 50 long).
    """
    settings = write_settings(tmp_path / "reconciler.toml", haproxy)
    settings.write_text(settings.read_text().replace('"api-"', '"api-node-group-"'))
    cloud.create_group(ASG, 2)
    code, output = run("drift", "--config", str(settings), columns=80)
    assert code == drift_table.EXIT_DRIFT, output
    assert max(len(line) for line in output.splitlines()) <= 80
    assert "api-node-group-i-" in output
    code, document = run("drift", "--config", str(settings), "--json")
    (backend,) = json.loads(document)["backends"]
    for row in backend["rows"]:
        assert stacked_fields(row) in words(output), output


def stacked(ip: str) -> DriftRow:
    """A missing instance's row at address *ip*."""
    return DriftRow(
        verdict=Verdict.MISSING,
        detail="InService; not in the file or the running HAProxy",
        server="api-i-0123456789abcdef0",
        instance_id="i-0123456789abcdef0",
        lifecycle_state="InService",
        health_status="Healthy",
        ec2_state="running",
        private_ip=ip,
        in_file=False,
        file_address=None,
        runtime_state=RuntimeState.ABSENT,
        runtime_address=None,
        check=None,
        check_status=None,
    )


#: Addresses that end the first stacked line (``ASG InService Healthy, EC2 running, IP <ip>``, in
#: 50 columns) two columns short of the width, one short, exactly at it, one and two past it.
ADDRESSES = ("127.0.1.1", "127.0.10.1", "127.0.100.1", "127.0.100.10", "127.0.100.100")


@pytest.mark.parametrize("ip", ADDRESSES)
def test_a_stacked_line_that_fills_the_width_keeps_its_comma(ip: str) -> None:
    """Wherever the pairs break, each break is after a comma, and no line is cropped."""
    row = stacked(ip)
    report = DriftReport((BackendDrift("api", "api-asg", rows=(row,)),), runtime=True)
    out = Console(file=io.StringIO(), width=80, force_terminal=False)
    out.print(drift_table.tables(report))
    assert isinstance(out.file, io.StringIO)
    text = out.file.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80, text
    pairs = (
        f"ASG InService Healthy, EC2 running, IP {ip}, server {row.server}, file no, "
        "runtime absent, check -"
    )
    assert pairs in words(text), text
