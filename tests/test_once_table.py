"""
``reconcile --once``'s table as a user reads it, piped or on an 80-column terminal: change,
instance, address and reason, every one of them whole. The server's name is ``--json``'s only: a
fifth column does not fit 80 columns readably (the instance id and the server name, which is the
prefix and that id, would each take over 20 columns, leaving the reason a handful).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from harness.haproxy import BackendSpec, HAProxyFactory
from harness.moto import REGION, Cloud
from reconciler import plan_table
from reconciler.cli import app
from reconciler.core.model import BackendPlan, Change, Plan, Row


ASG = "api-asg"
COLUMNS = ("change", "instance", "address", "reason")
#: The widest values a row can have: the widest change word, an instance id, and an address.
WIDEST = Row(
    "api-i-0123456789abcdef0",
    "i-0123456789abcdef0",
    "255.255.255.255:65535",
    Change.UNCHANGED,
    "InService; added, warming up until its first check passes",
)


def rendered(plan: Plan, width: int) -> list[str]:
    """The lines ``--once`` prints for *plan* on a colourless console of *width* columns."""
    out = Console(file=io.StringIO(), width=width, force_terminal=False)
    out.print(plan_table.plan_tables(plan))
    assert isinstance(out.file, io.StringIO)
    return out.file.getvalue().splitlines()


def header(lines: list[str]) -> list[str]:
    """The column titles, from the table's header line."""
    (titles,) = [line for line in lines if line.startswith("┃")]
    return titles.replace("┃", " ").split()


def test_the_widest_row_fits_80_columns_whole() -> None:
    """Every line of the table, borders included, within 80 columns; every word shown."""
    lines = rendered(Plan((BackendPlan("api", ASG, rows=(WIDEST,)),)), 80)
    assert header(lines) == list(COLUMNS)
    table = [line for line in lines if line[:1] in "┏┃┡│└"]
    assert all(len(line) <= 80 for line in lines), "\n".join(lines)
    assert all(line[-1] in "┓┃┩│┘" for line in table), "\n".join(lines)
    text = " ".join(" ".join(lines).replace("│", " ").split())
    for fact in (WIDEST.change.value, WIDEST.instance_id, WIDEST.address):
        assert fact in text
    assert all(word in text for word in WIDEST.reason.split())


@pytest.mark.parametrize("width", [80, 200], ids=["piped", "wide"])
def test_once_prints_the_columns_the_readme_names(
    cloud: Cloud, haproxy_factory: HAProxyFactory, tmp_path: Path, width: int
) -> None:
    """
    The table ``--once`` prints has the four columns, one row per server with its instance id
    and address whole; ``--json`` names each server too.
    """
    haproxy = haproxy_factory(BackendSpec("api"))
    settings = tmp_path / "reconciler.toml"
    settings.write_text(
        f'[aws]\nregion = "{REGION}"\n\n'
        f'[haproxy]\nconfig = "{haproxy.config_path}"\nsocket = "{haproxy.socket_path}"\n\n'
        f'[[backend]]\nname = "api"\nasg = "{ASG}"\nport = 8080\nserver_prefix = "api-"\n'
    )
    cloud.create_group(ASG, 2)
    runner = CliRunner(env={"COLUMNS": str(width)})
    planned = runner.invoke(app, ["--once", "--dry-run", "--json", "--config", str(settings)])
    assert planned.exit_code == 0, planned.output
    (backend,) = json.loads(planned.output)["backends"]
    servers = backend["servers"]
    assert [s["server"] for s in servers] == [f"api-{s['instance_id']}" for s in servers]
    result = runner.invoke(app, ["--once", "--config", str(settings)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert header(lines) == list(COLUMNS)
    assert all(len(line) <= width for line in lines), result.output
    rows = [line for line in lines if line.startswith("│")]
    for server in servers:
        (row,) = [line for line in rows if server["instance_id"] in line]
        cells = [cell.strip() for cell in row.split("│")[1:-1]]
        assert cells[:3] == ["add", server["instance_id"], server["address"]], row
