"""
``make demo`` as CI runs it, as a smoke test of the whole system: ``python -m demo`` in a child
process, non-interactive, with a deadline. It must pass every step, narrate them, and leave no
process and no file behind, both when it ends and when it is interrupted with Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from demo.story import TITLES


ROOT = Path(__file__).resolve().parent.parent
#: The issue's budget is two minutes on a 2-core machine; this leaves room for a slow CI.
DEADLINE = 180.0
#: Seconds the demo may take to clean up after Ctrl-C.
CLEANUP_DEADLINE = 60.0
#: The line that names the temp dir, and the one that names the processes.
DIRECTORY_LINE = re.compile(r"every file is in (\S+)")
PROCESSES_LINE = re.compile(r"controller pid (\d+), haproxy master pid (\d+)")


class DemoRun:
    """``python -m demo`` in its own session (as a terminal's foreground job), output collected."""

    def __init__(self) -> None:
        environment = {k: v for k, v in os.environ.items() if k != "DEMO_INTERACTIVE"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "demo"],
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


@pytest.fixture(name="demo")
def _demo(haproxy_binary: str) -> Iterator[DemoRun]:
    """A demo run (HAProxy must be on PATH); stopped at teardown if still running."""
    run = DemoRun()
    try:
        yield run
    finally:
        run.stop()


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


def test_demo_converges_at_every_step_and_leaves_nothing_behind(demo: DemoRun) -> None:
    """Exit 0 within the deadline, every step narrated, no process or file left over."""
    code = demo.wait()
    output = demo.output
    assert code == 0, output
    for number, title in enumerate(TITLES, start=1):
        assert f"Step {number}/{len(TITLES)}: {title}" in output
    assert "DEMO PASSED" in output
    assert PROCESSES_LINE.search(output), output
    for verdict in ("draining", "missing", "file-only", "in sync"):
        assert verdict in output, f"no drift table showed {verdict!r}"
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
