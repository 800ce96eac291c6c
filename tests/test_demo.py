"""
``make demo`` as CI runs it, as a smoke test of the whole system: ``python -m demo`` in a child
process, non-interactive, with a deadline. It must pass every step, narrate them, and leave no
process and no file behind, both when it ends and when it is interrupted with Ctrl-C.

As a playground (``DEMO_STAY=1``, ``--stay``) it stays up after its last step: the lines it
prints for another shell must work as pasted, and Ctrl-C or SIGTERM must then end it with exit 0,
leaving nothing behind. One whole story runs per test session at most (it takes about half a
minute); the other playground test plays only the first step.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import platform
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from demo.story import TITLES
from harness.stack import GROUP


ROOT = Path(__file__).resolve().parent.parent
#: The issue's budget is two minutes on a 2-core machine; this leaves room for a slow CI.
DEADLINE = 180.0
#: Seconds the demo may take to clean up after Ctrl-C.
CLEANUP_DEADLINE = 60.0
#: The line that names the temp dir, and the one that names the processes.
DIRECTORY_LINE = re.compile(r"every file is in (\S+)")
PROCESSES_LINE = re.compile(r"controller pid (\d+), haproxy master pid (\d+)")
#: The line a staying demo prints once it waits for Ctrl-C.
STAYING_LINE = "stays up"
#: The line above the lines to paste into another shell, each indented by two spaces.
PASTE_LINE = "paste these lines"
#: The variables of the test's own environment that the pasted lines must set themselves.
WORLD_VARIABLES = ("AWS_", "RECONCILER_", "FRONTEND_BIND", "DEMO_")


class DemoRun:
    """``python -m demo`` in its own session (as a terminal's foreground job), output collected."""

    def __init__(self, *args: str, **environ: str) -> None:
        """Start ``python -m demo *args`` with the environment plus *environ*, no DEMO_ switch."""
        environment = {k: v for k, v in os.environ.items() if not k.startswith("DEMO_")}
        environment.update(environ)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "demo", *args],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=environment,
            # Its own process group, so Ctrl-C can be sent the way a terminal sends it.
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def output(self) -> str:
        """Everything printed so far."""
        with self._changed:
            return "".join(self.lines)

    def wait_for_line(self, text: str, timeout: float = DEADLINE) -> None:
        """Wait until a printed line contains *text*; fail if the demo ends or time runs out."""
        with self._changed:
            self._changed.wait_for(
                lambda: any(text in line for line in self.lines) or self.process.poll() is not None,
                timeout,
            )
        assert text in self.output, f"no line with {text!r}:\n{self.output}"

    def interrupt(self) -> None:
        """Ctrl-C: SIGINT to the whole foreground process group."""
        os.killpg(self.process.pid, signal.SIGINT)

    def wait(self, timeout: float = DEADLINE) -> int:
        """The exit code; after *timeout*, interrupt it, clean up, and fail."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"the demo took over {timeout:g} s:\n{self.output}")

    def stop(self) -> None:
        """Stop it whatever it is doing: Ctrl-C first, so that it stops what it started."""
        if self.process.poll() is None:
            self.interrupt()
            try:
                self.process.wait(CLEANUP_DEADLINE)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._reader.join(10)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def pasted(self) -> list[str]:
        """The last lines printed for pasting into another shell, without their indent."""
        lines = self.output.splitlines()
        (*_, start) = [n for n, line in enumerate(lines) if PASTE_LINE in line]
        block = []
        for line in lines[start + 1 :]:
            if not line.startswith("  "):
                break
            block.append(line.strip())
        return block


@pytest.fixture(name="start_demo")
def _start_demo(haproxy_binary: str) -> Iterator[Callable[..., DemoRun]]:
    """Start demo runs (HAProxy must be on PATH); each is stopped at teardown if still running."""
    runs: list[DemoRun] = []

    def start(*args: str, **environ: str) -> DemoRun:
        runs.append(DemoRun(*args, **environ))
        return runs[-1]

    try:
        yield start
    finally:
        for run in runs:
            run.stop()


@pytest.fixture(name="demo")
def _demo(start_demo: Callable[..., DemoRun]) -> DemoRun:
    """A demo run, plain ``make demo``."""
    return start_demo()


def paste(lines: list[str], directory: Path) -> subprocess.CompletedProcess[str]:
    """
    Run *lines* as a user pasting them into a new shell would: in another directory, with none
    of the demo's variables in the environment.
    """
    environment = {k: v for k, v in os.environ.items() if not k.startswith(WORLD_VARIABLES)}
    return subprocess.run(
        ["bash", "-c", "set -e\n" + "\n".join(lines)],
        cwd=directory,
        env=environment,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )


def assert_nothing_left(output: str) -> None:
    """The temp dir is gone, and so is every process the demo printed or that names that dir."""
    directory = DIRECTORY_LINE.search(output)
    assert directory, output
    assert not Path(directory[1]).exists(), f"{directory[1]} still exists"
    leftovers = subprocess.run(
        ["pgrep", "-af", directory[1]], capture_output=True, text=True, check=False
    )
    assert leftovers.returncode == 1, f"processes left behind:\n{leftovers.stdout}"
    processes = PROCESSES_LINE.search(output)
    if processes:
        for pid in processes.groups():
            # A PID reused since is fine: only one still running from the temp dir is a leftover.
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                command_line = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                assert directory[1] not in command_line, f"pid {pid} is still running"


def test_demo_converges_at_every_step_then_stays_up_for_the_cli(
    start_demo: Callable[..., DemoRun], tmp_path: Path
) -> None:
    """
    ``DEMO_STAY=1 make demo``: every step narrated and converged, then the world stays up; the
    lines it printed (the moto endpoint and keys, the settings, ``reconcile drift`` by full path)
    run ``reconcile drift`` against it from a new shell; SIGTERM then ends it with exit 0 and no
    process or file left over.
    """
    demo = start_demo(DEMO_STAY="1")
    demo.wait_for_line(STAYING_LINE)
    output = demo.output
    for number, title in enumerate(TITLES, start=1):
        assert f"Step {number}/{len(TITLES)}: {title}" in output
    assert PROCESSES_LINE.search(output), output
    for verdict in ("draining", "missing", "file-only", "in sync"):
        assert verdict in output, f"no drift table showed {verdict!r}"
    lines = demo.pasted()
    endpoint = re.search(r"AWS is moto at (http://127\.0\.0\.1:\d+)", output)
    assert endpoint, output
    assert f"export AWS_ENDPOINT_URL={endpoint[1]}" in lines
    assert lines[-1].startswith(f"{Path(sys.executable).with_name('reconcile')} drift --config /")
    done = paste(lines, tmp_path)
    assert done.returncode in (0, 3), done.stdout + done.stderr
    assert "backend api" in done.stdout
    assert "overall: " in done.stdout
    demo.process.send_signal(signal.SIGTERM)
    code = demo.wait(CLEANUP_DEADLINE)
    output = demo.output
    assert code == 0, output
    assert "DEMO PASSED" in output
    assert_nothing_left(output)


def test_ctrl_c_stops_everything(demo: DemoRun) -> None:
    """Ctrl-C in the middle of the story: exit 130, every process stopped, the temp dir gone."""
    demo.wait_for_line(f"Step 2/{len(TITLES)}")
    demo.interrupt()
    code = demo.wait(CLEANUP_DEADLINE)
    output = demo.output
    assert code == 130, output
    assert "interrupted" in output
    assert_nothing_left(output)


def test_ctrl_c_ends_a_staying_demo_cleanly(
    start_demo: Callable[..., DemoRun], tmp_path: Path
) -> None:
    """
    ``python -m demo --stay --steps 1``: the first step, then the world stays up (printing how
    to reach it; ``reconcile check`` there passes and finds the topic that feeds the queue) until
    Ctrl-C, which ends it with exit 0 and nothing left over.
    """
    demo = start_demo("--stay", "--steps", "1")
    demo.wait_for_line(STAYING_LINE)
    assert f"Step 2/{len(TITLES)}" not in demo.output
    *exports, drift = demo.pasted()
    checked = paste([*exports, drift.replace(" drift ", " check --json ", 1)], tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rows = json.loads(checked.stdout)["checks"]
    verdicts = {(row["area"], row["subject"]): row["verdict"] for row in rows}
    assert verdicts[("queue", "dead-letter queue")] == "ok", verdicts
    assert verdicts[("queue", f"events of group '{GROUP}'")] == "ok", verdicts
    demo.interrupt()
    code = demo.wait(CLEANUP_DEADLINE)
    output = demo.output
    assert code == 0, output
    assert "DEMO PASSED" in output
    assert_nothing_left(output)


#: tgkill(2), which signals one thread of a process, by machine (Python has no call for another
#: process's thread).
TGKILL = {"x86_64": 234, "aarch64": 131}


@pytest.mark.skipif(platform.machine() not in TGKILL, reason="tgkill's number is known here")
def test_a_signal_taken_by_another_thread_still_ends_the_stay(
    start_demo: Callable[..., DemoRun],
) -> None:
    """
    The kernel hands a process's signal to any of its threads: SIGTERM taken by one of the
    demo's server threads, not the main one, still ends the stay at once, exit 0.
    """
    demo = start_demo("--stay", "--steps", "1")
    demo.wait_for_line(STAYING_LINE)
    pid = demo.process.pid
    tids = (int(task.name) for task in Path(f"/proc/{pid}/task").iterdir())
    other = min(tid for tid in tids if tid != pid)
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.syscall(TGKILL[platform.machine()], pid, other, signal.SIGTERM) == 0
    code = demo.wait(CLEANUP_DEADLINE)
    assert code == 0, demo.output
    assert_nothing_left(demo.output)
