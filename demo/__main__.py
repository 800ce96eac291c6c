"""
``python -m demo [--interactive] [--verbose]``: play the demo; exit 0 when every step converged.

Exit codes: 0 every step converged; 1 a step did not (the message names it, with the last lines of
the logs); 130 interrupted (Ctrl-C or SIGTERM). Whatever the outcome, every process and server the
demo started is stopped and its temp dir removed before it exits.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from rich.console import Console

from demo.story import TITLES, Story
from demo.world import DemoError, running


EXIT_OK = 0
EXIT_FAILED = 1
#: What a shell reports for a process ended by SIGINT.
EXIT_INTERRUPTED = 130
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
        default=os.environ.get(INTERACTIVE_ENV, "") not in ("", "0"),
        help=f"pause before each step (press Enter); also ${INTERACTIVE_ENV}=1",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show the controller's log lines on the terminal too",
    )
    return parser.parse_args(argv)


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
            story.play()
            story.summary()
            console.print()
            console.rule("Stopping everything the demo started", align="left")
    except KeyboardInterrupt:
        console.print("interrupted: every process the demo started was stopped")
        return EXIT_INTERRUPTED
    # AssertionError: the harness's HarnessError (a wait timed out, a part answered wrongly).
    except (DemoError, AssertionError, OSError, subprocess.SubprocessError) as exc:
        console.print(f"[bold red]DEMO FAILED:[/] {exc}", soft_wrap=True)
        return EXIT_FAILED
    console.print(
        f"[bold green]DEMO PASSED:[/] all {len(TITLES)} steps converged in "
        f"{time.monotonic() - started:.0f} s"
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
