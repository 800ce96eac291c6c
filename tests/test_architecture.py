"""
The architecture holds, and the checks that hold it would notice a break.

The import contracts live in ``pyproject.toml`` and ``make lint`` runs them; here each one is shown
to fail on a copy of the package with one forbidden import added. The rest are what imports cannot
show: the core calls nothing that reads or writes, no function grows long without saying why, and
no module imports a test module.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grimp
import pytest


ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "reconciler"
CONTRACTS = {
    contract["id"]: contract["name"]
    for contract in tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
        "importlinter"
    ]["contracts"]
}
LONGEST = 40


@dataclass(frozen=True)
class Breach:
    """One forbidden import added to one file, and the contract that must report it."""

    file: str
    added: str
    contract: str
    #: What the report must name: the illegal edge "importer -> imported", or a module.
    names: str


BREACHES = {
    "boto3 in the core": Breach(
        "core/model.py", "import boto3", "core-libraries", "reconciler.core.model -> boto3"
    ),
    "botocore outside the AWS adapter": Breach(
        "cycle.py", "import botocore", "aws-sdk", "reconciler.cycle -> botocore"
    ),
    "os in the core": Breach(
        "core/template.py", "import os", "core-no-io", "reconciler.core.template -> os"
    ),
    "a clock in the core": Breach(
        "core/drift.py", "import time", "core-no-io", "reconciler.core.drift -> time"
    ),
    "socket in the cycle": Breach(
        "cycle.py", "import socket", "haproxy-socket", "reconciler.cycle -> socket"
    ),
    "subprocess outside the store": Breach(
        "adapters/status_server.py",
        "import subprocess",
        "processes",
        "reconciler.adapters.status_server -> subprocess",
    ),
    "an adapter in the core": Breach(
        "core/plan.py",
        "from reconciler.adapters import config_store",
        "core-inward",
        "reconciler.core.plan -> reconciler.adapters.config_store",
    ),
    "the CLI in the loop": Breach(
        "loop.py", "from reconciler import cli", "layers", "reconciler.loop -> reconciler.cli"
    ),
    "a report table in the loop": Breach(
        "loop.py",
        "from reconciler import plan_table",
        "engine-through-ports",
        "reconciler.loop -> reconciler.plan_table",
    ),
    "the runner in the loop": Breach(
        "loop.py",
        "from reconciler import runner",
        "engine-through-ports",
        "reconciler.loop -> reconciler.runner",
    ),
    "a report table in the runner": Breach(
        "runner.py",
        "from reconciler import plan_table",
        "layers",
        "reconciler.runner -> reconciler.plan_table",
    ),
    "printing in the runner": Breach(
        "runner.py", "import rich", "presentation", "reconciler.runner -> rich"
    ),
    "an adapter in apply": Breach(
        "apply.py",
        "from reconciler.adapters import haproxy_socket",
        "engine-through-ports",
        "reconciler.apply -> reconciler.adapters.haproxy_socket",
    ),
    "the loop in the ports": Breach(
        "ports.py", "from reconciler import loop", "layers", "reconciler.ports -> reconciler.loop"
    ),
    "one adapter in another": Breach(
        "adapters/haproxy_socket.py",
        "from reconciler.adapters import config_store",
        "adapters-apart",
        "reconciler.adapters.haproxy_socket -> reconciler.adapters.config_store",
    ),
    "a module no layer names": Breach("unplaced.py", "", "layers", "- reconciler.unplaced"),
}


def _lint_copy(workdir: Path, breach: Breach | None) -> subprocess.Popen[str]:
    """Start lint-imports on a copy of the package in *workdir*, with *breach* added."""
    shutil.copytree(PACKAGE, workdir / "reconciler", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", workdir)
    if breach is not None:
        target = workdir / "reconciler" / breach.file
        before = target.read_text(encoding="utf-8") if target.exists() else ""
        target.write_text(f"{before}\n{breach.added}\n", encoding="utf-8")
    # lint-imports puts its working directory first on sys.path, ahead of the editable install.
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache", "--no-logo"],
        cwd=workdir,
        env={**os.environ, "COLUMNS": "1000"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str]]:
    """Exit code and report of lint-imports for the pristine copy and each breach, run at once."""
    cases: dict[str, Breach | None] = {"pristine": None, **BREACHES}
    running = {
        case: _lint_copy(tmp_path_factory.mktemp("copy"), breach) for case, breach in cases.items()
    }
    return {case: (run.wait(timeout=60), run.communicate()[0]) for case, run in running.items()}


def _broken_sections(report: str) -> dict[str, str]:
    """Each broken contract's part of a lint-imports report, by contract id."""
    _, _, broken = report.partition("Broken contracts")
    starts = sorted(
        (broken.find(f"\n{name}\n"), ident) for ident, name in CONTRACTS.items() if name in broken
    )
    ends = [start for start, _ in starts[1:]] + [len(broken)]
    return {ident: broken[start:end] for (start, ident), end in zip(starts, ends, strict=True)}


def test_the_package_keeps_every_contract(verdicts: dict[str, tuple[int, str]]) -> None:
    code, report = verdicts["pristine"]
    assert code == 0, report


@pytest.mark.parametrize("case", BREACHES)
def test_a_forbidden_import_breaks_its_contract(
    case: str, verdicts: dict[str, tuple[int, str]]
) -> None:
    breach = BREACHES[case]
    code, report = verdicts[case]
    sections = _broken_sections(report)
    assert code == 1, report
    assert breach.contract in sections, report
    assert breach.names in sections[breach.contract], report


def _modules(where: Path) -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(where.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _functions(tree: ast.Module) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def test_no_function_is_long_without_saying_why() -> None:
    """Over LONGEST lines (signature, docstring and body), the docstring says "Long because"."""
    long = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)"
        for path, tree in _modules(PACKAGE)
        for node in _functions(tree)
        if (length := (node.end_lineno or node.lineno) - node.lineno + 1) > LONGEST
        and "Long because" not in (ast.get_docstring(node) or "")
    ]
    assert long == [], "\n".join(long)


# What the import contracts cannot see: builtins, and pathlib.Path's methods that touch the disk
# (the core keeps Path values, for settings, but never reads or writes through them).
_IO_BUILTINS = frozenset({"open", "print", "input", "__import__", "exec", "eval"})
_PATH_IO = frozenset(
    {
        "read_text",
        "read_bytes",
        "write_text",
        "write_bytes",
        "open",
        "touch",
        "mkdir",
        "unlink",
        "rmdir",
        "iterdir",
        "glob",
        "rglob",
        "exists",
        "is_file",
        "is_dir",
        "stat",
        "resolve",
        "expanduser",
    }
)


def test_the_core_calls_nothing_that_reads_or_writes() -> None:
    calls = [
        f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node.func)}"
        for path, tree in _modules(PACKAGE / "core")
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Name) and node.func.id in _IO_BUILTINS)
            or (isinstance(node.func, ast.Attribute) and node.func.attr in _PATH_IO)
        )
    ]
    assert calls == [], "\n".join(calls)


def test_nothing_imports_a_test_module() -> None:
    """Shared helpers live in packages of their own; a test module is imported by pytest alone."""
    packages = [name for name in ("tests", "bench", "demo", "harness") if (ROOT / name).is_dir()]
    graph = grimp.build_graph(*packages, cache_dir=None)
    importers = {
        module: sorted(graph.find_modules_that_directly_import(module))
        for module in graph.modules
        if module.rpartition(".")[2].startswith("test_")
    }
    assert {module: found for module, found in importers.items() if found} == {}
