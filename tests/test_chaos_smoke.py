"""
The chaos suite, reduced (``python -m bench.chaos --quick``: 20 scale events, one controller
SIGKILL, one HAProxy reload, with every other fault of the full run: runtime API faults, forged
Spot warnings, AWS answers that disagree, plain scale-ins whose instances keep answering), run
as a user runs it: a child process with a deadline, judged by its exit code and its JSON report,
once per HAProxy version of the matrix. ``make chaos`` runs the full 200 events.

CI replays one seed, so a red build replays with the command the test prints; locally every run
draws a new seed, and a failure prints its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


pytestmark = [pytest.mark.integration, pytest.mark.haproxy_versions]

ROOT = Path(__file__).resolve().parent.parent
#: The quick run takes well under a minute; this bounds a hung one, on a loaded CI machine.
DEADLINE = 150
CI_SEED = 20260


def test_quick_chaos_run_violates_no_invariant(haproxy_binary: str, tmp_path: Path) -> None:
    """Exit code 0, and a report that checked every invariant and found no violation."""
    report = tmp_path / "chaos.json"
    command = [sys.executable, "-m", "bench.chaos", "--quick", "--report", str(report)]
    if os.environ.get("CI"):
        command += ["--seed", str(CI_SEED)]
    # The run uses the `haproxy` on PATH, as a user's does: this version's comes first.
    path = os.pathsep.join([str(Path(haproxy_binary).parent), os.environ["PATH"]])
    done = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        env={**os.environ, "PATH": path},
        check=False,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    result = json.loads(report.read_text())
    assert result["violations"] == 0, done.stdout
    checked = {row["key"]: row["checked"] for row in result["invariants"]}
    # Every kind of event happens in a quick run, so every invariant is checked at least once.
    assert all(checked.values()), checked
    assert checked["requests"] > 500, checked
    # And every class of fault hit at least once: a quiet run proves nothing about it.
    faults = result["faults"]
    assert all(faults[key] for key in ("aws_hidden", "runtime_faulted", "spot_forged")), faults
