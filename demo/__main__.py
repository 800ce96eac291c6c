"""
``python -m demo [--interactive] [--stay] [--steps N] [--verbose]``: play the demo; exit 0 when
every step converged.

While it plays, it prints how to reach its world from another shell: moto's endpoint, the
environment to export and a ``reconcile drift`` command line to paste. With ``--stay``
(``DEMO_STAY=1 make demo``) the world stays up after the last step, a playground for the CLI,
until Ctrl-C or SIGTERM; ``--steps N`` plays only the first N steps (with ``--stay``: a
playground in seconds).

Exit codes: 0 every step converged (a staying demo: also once Ctrl-C or SIGTERM ended its stay);
1 a step did not (the message names it, with the last lines of the logs); 130 interrupted (Ctrl-C
or SIGTERM) before the last step ended. Whatever the outcome, every process and server the demo
started is stopped and its temp dir removed before it exits.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from rich.console import Console

from demo.story import STAY_ENV, TITLES, Story
from demo.world import DemoError, running


EXIT_OK = 0
EXIT_FAILED = 1
#: What a shell reports for a process ended by SIGINT.
EXIT_INTERRUPTED = 130
#: Seconds a staying demo sleeps at a time: how late it may notice Ctrl-C or SIGTERM.
STAY_TURN = 0.2
INTERACTIVE_ENV = "DEMO_INTERACTIVE"


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m demo",
        description=(
            "The whole system on one machine: moto on loopback plays the AWS account, a real "
            "HAProxy serves the group, and the reconcile controller keeps them equal."
        ),
    )
    parser.add_argument(
        "--interactive",
        action="store_true",
        default=_switch(INTERACTIVE_ENV),
        help=f"pause before each step (press Enter); also ${INTERACTIVE_ENV}=1",
    )
    parser.add_argument(
        "--stay",
        action="store_true",
        default=_switch(STAY_ENV),
        help=(
            "after the last step, keep the world up until Ctrl-C (or SIGTERM), to run the CLI "
            f"against it with the lines it prints; also ${STAY_ENV}=1"
        ),
    )
    parser.add_argument(
        "--steps",
        type=int,
        choices=range(1, len(TITLES) + 1),
        default=len(TITLES),
        metavar="N",
        help=f"play only the first N of the {len(TITLES)} steps",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show the controller's log lines on the terminal too",
    )
    return parser.parse_args(argv)


def _switch(name: str) -> bool:
    """The environment variable *name* is set to anything but the empty string or ``0``."""
    return os.environ.get(name, "") not in ("", "0")


def main(argv: Sequence[str] | None = None) -> int:
    """Play the demo; the exit code."""
    args = parse(sys.argv[1:] if argv is None else argv)
    console = Console(highlight=False)
    # SIGTERM (a CI timeout, `kill`) stops the demo the way Ctrl-C does: cleaning up.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    started = time.monotonic()
    console.rule("haproxy-asg-reconciler demo")
    try:
        with running(console, verbose=args.verbose) as world:
            console.print(
                f"AWS is a moto server on 127.0.0.1; every file is in {world.directory}",
                soft_wrap=True,
            )
            story = Story(world, console, interactive=args.interactive)
            story.introduce(stay=args.stay)
            story.play(args.steps)
            story.summary()
            passed = _passed(args.steps, time.monotonic() - started)
            if args.stay:
                _stay(story, passed)
            console.print()
            console.rule("Stopping everything the demo started", align="left")
    except KeyboardInterrupt:
        console.print("interrupted: every process the demo started was stopped")
        return EXIT_INTERRUPTED
    # AssertionError: the harness's HarnessError (a wait timed out, a part answered wrongly).
    except (DemoError, AssertionError, OSError, subprocess.SubprocessError) as exc:
        console.print(f"[bold red]DEMO FAILED:[/] {exc}", soft_wrap=True)
        return EXIT_FAILED
    console.print(f"[bold green]DEMO PASSED:[/] {passed}")
    return EXIT_OK


def _passed(count: int, seconds: float) -> str:
    """What converged, and how fast: ``all 6 steps converged in 33 s``."""
    if count == len(TITLES):
        played = f"all {count} steps"
    else:
        played = f"step 1 of {len(TITLES)}" if count == 1 else f"steps 1-{count} of {len(TITLES)}"
    return f"{played} converged in {seconds:.0f} s"


def _stay(story: Story, passed: str) -> None:
    """
    Keep the world up until Ctrl-C or SIGTERM (both raise ``KeyboardInterrupt`` here), saying
    how to reach it; then return, so that it is stopped as after any passing run.
    """
    console = story.console
    console.print()
    console.rule("Playground", align="left")
    console.print(f"{passed[0].upper()}{passed[1:]}; the world runs on.")
    story.poke()
    console.print("The demo stays up until Ctrl-C (or SIGTERM), then stops everything it started.")
    # Returns on Ctrl-C or SIGTERM alone: nothing else ends the stay. Not signal.pause(): the
    # kernel may deliver the signal to another of the demo's threads (its servers), which leaves
    # the main thread paused; Python runs the handler once the main thread wakes, so it sleeps in
    # short turns.
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            time.sleep(STAY_TURN)


if __name__ == "__main__":
    sys.exit(main())
