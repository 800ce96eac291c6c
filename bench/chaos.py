"""
The chaos suite (issue 7): a seeded, randomized run of scale events with every fault at once.

Everything is real and on loopback: a moto server in this process plays the AWS account, the
real ``reconcile`` controller runs in a child process with an SQS queue, a real HAProxy serves
the group's instances (small HTTP servers on their 127.0.1.x addresses), and a load generator
sends requests through HAProxy the whole time (``bench.chaos_world``). Meanwhile:

- scale events of five kinds (``bench.chaos_scenario``): launches with and without the launch
  hook, scale-ins with and without the terminate hook, instances dying and being replaced; the
  instances of a plain scale-in (no hook) mostly keep answering for 1-4 s after they left the
  group, as a real instance does while it shuts down, and otherwise die at once;
- 30% of the notifications are dropped, 30% of the others duplicated, every copy delayed by up
  to two seconds (which shuffles their order), malformed messages mixed in;
- forged Spot warnings after 30% of the events (``drain_on_spot_warning = true``): well-formed
  EventBridge interruption warnings and rebalance recommendations for on-demand instances in
  service, warnings for instances of no group, malformed ones;
- 10% of the controller's AWS calls fail, throttled or with a 5xx (``bench.chaos_faults``);
  after 20% of the events DescribeInstances does not know an instance in service for 1-6 s
  (NotFound for its id, absent from filtered answers) while the group still lists it InService
  and Healthy (``Cloud.forget_instance``);
- 5% of the controller's runtime API commands go wrong between it and HAProxy's admin socket
  (``harness.faulty_socket``): replies cut short, dumps missing their version line or
  their managed rows, connections closed with no reply, refused commands, slow and trickling
  replies;
- the controller is SIGKILLed at random moments and restarted; HAProxy is reloaded from outside.

Invariants, checked throughout and reported with counts (``bench.chaos_verdict``):

1. every version of haproxy.cfg ever written passes ``haproxy -c``;
2. no byte outside the managed server lines ever changes;
3. no serving instance (InService and Healthy in the group, running in EC2) ever leaves the file
   or the runtime: sampled every 0.1 s, a server once established (a line in the file, taking
   requests) keeps its line and admin state 0 while its instance serves; the hand-written server
   keeps admin state 0;
4. no request to an instance that still answers fails, plain scale-ins included (one cut on an
   instance that had stopped answering without a hook is reported as excused: nothing could
   have saved it);
5. a terminate hook is completed only after the drain: at that moment neither the current worker
   nor the file has the server, and no old worker (still finishing after a reload) has a session
   on it; a launch hook only after a passing health check;
6. after the last event, HAProxy serves exactly the InService instances within one resync (plus
   one drain), every lifecycle action completed;
7. every message is deleted from the queue in the end;
8. the controller never crashes: no exit but the SIGKILLs, no crashed cycle, a clean SIGTERM.

Usage (the seed is printed first; the same seed replays the same scenario)::

    python -m bench.chaos                       # 200 events, 5 kills, 5 reloads (make chaos)
    python -m bench.chaos --quick               # 20 events, 1 kill, 1 reload (make test)
    python -m bench.chaos --seed N --events 20 --kills 1 --reloads 1 --report out.json

Exit codes: 0 no invariant violated (``--tolerate KEY`` lets a known defect's violations be
reported without failing the run); 1 an invariant was violated; 2 the run could not be carried
out (no haproxy, a part that did not start).
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from bench.chaos_scenario import generate
from bench.chaos_verdict import Invariant, judge, log_records
from bench.chaos_world import INITIAL_SIZE, Chaos, running
from harness import HarnessError


EXIT_OK = 0
EXIT_VIOLATED = 1
EXIT_BROKEN = 2
FULL = {"events": 200, "kills": 5, "reloads": 5}
QUICK = {"events": 20, "kills": 1, "reloads": 1}
#: Columns of the report when stdout is no terminal (rich assumes 80 there, and would wrap).
REPORT_WIDTH = 120


def chaos_rows(chaos: Chaos) -> list[tuple[str, str]]:
    """What was done to the system, one row each."""
    tally, mail, faults = chaos.tally, chaos.courier.counts, chaos.faults
    records = [r for d in chaos.daemons for r in log_records(d.log_path)[0]]
    cycles = Counter(r["message"] for r in records if r["message"].startswith("cycle "))
    events = ", ".join(f"{count} {kind}" for kind, count in sorted(tally.events.items()))
    failed, sent = sum(faults.failed.values()), sum(faults.calls.values())
    commands = chaos.proxy.log
    hit = Counter(fault.partition("(")[0] for _, fault in commands if fault)
    return [
        ("scale events", f"{sum(tally.events.values())}: {events}; {tally.skipped} skipped"),
        (
            "instances",
            f"{tally.launched} launched ({INITIAL_SIZE} at start), {tally.graceful} released "
            f"through the terminate hook, {tally.abrupt} terminated without one: "
            f"{tally.lingered} kept answering for a while ({tally.cut_short} cut short by a new "
            f"instance on their address), {tally.abrupt - tally.lingered} died at once"
            + (f", {len(tally.unexplained)} UNEXPLAINED" if tally.unexplained else ""),
        ),
        (
            "notifications",
            f"{mail.notifications}: {mail.dropped} dropped, {mail.duplicated} duplicated; "
            f"{mail.delivered} copies delivered ({mail.malformed} malformed), "
            f"{mail.reordered} after a later one" + (f", {mail.lost} LOST" if mail.lost else ""),
        ),
        (
            "Spot warnings",
            f"{sum(mail.forged.values())} forged: "
            + (", ".join(f"{n} {kind}" for kind, n in sorted(mail.forged.items())) or "none"),
        ),
        (
            "AWS requests",
            f"{failed} of {sent} failed by injection ({100 * failed / max(sent, 1):.1f}%), "
            f"{dict(faults.failed)}",
        ),
        (
            "AWS disagreeing",
            f"{tally.hidden} times an instance in service was unknown to DescribeInstances "
            f"(the group listing it InService and Healthy), {tally.hidden_seconds:.0f}s in all",
        ),
        (
            "controller",
            f"{tally.kills} SIGKILLs, {len(chaos.daemons)} processes, "
            f"{cycles['cycle done']} cycles ok, {cycles['cycle failed']} failed, "
            f"{tally.leftovers} temp file(s) left by kills",
        ),
        (
            "HAProxy runtime",
            f"{hit.total()} of {len(commands)} controller commands faulted "
            f"({100 * hit.total() / max(len(commands), 1):.1f}%), {dict(hit)}",
        ),
        ("HAProxy", f"{len(tally.reloads)} reloads from outside"),
        ("duration", f"{tally.seconds:.0f}s of events, {time.monotonic() - chaos.started:.0f}s"),
    ]


def print_report(
    console: Console,
    chaos: Chaos,
    invariants: Sequence[Invariant],
    tolerated: frozenset[str],
    replay: str,
) -> None:
    """The chaos done, the table of invariants, and the details of every violation."""
    done = Table("chaos", "what", box=box.SIMPLE, title="What was done")
    for name, value in chaos_rows(chaos):
        done.add_row(name, value)
    console.print(done)
    table = Table("key", "invariant", "checked", "violations", "notes", box=box.SIMPLE)
    table.title = "Invariants"
    for invariant in invariants:
        count = str(len(invariant.violations))
        if invariant.key in tolerated:
            count += " (tolerated)"
        table.add_row(
            invariant.key,
            invariant.name,
            f"{invariant.checked} {invariant.unit}",
            count,
            str(len(invariant.notes) or ""),
        )
    console.print(table)
    for invariant in invariants:
        for line in invariant.violations[:20]:
            console.print(f"VIOLATED [{invariant.key}] {line}", markup=False, highlight=False)
        for line in invariant.notes[:10]:
            console.print(f"note [{invariant.key}] {line}", markup=False, highlight=False)
    counted = sum(len(i.violations) for i in invariants if i.key not in tolerated)
    verdict = f"{counted} violation(s)" if counted else "no invariant violated"
    console.print(f"{verdict}; replay: {replay}", markup=False, highlight=False)


def report_json(
    chaos: Chaos, invariants: Sequence[Invariant], tolerated: frozenset[str]
) -> dict[str, Any]:
    """The report as JSON, for ``--report``."""
    return {
        "seed": chaos.scenario.seed,
        "events": len(chaos.scenario.events),
        "violations": sum(len(i.violations) for i in invariants if i.key not in tolerated),
        "tolerated": sorted(tolerated),
        "invariants": [asdict(i) for i in invariants],
        "chaos": dict(chaos_rows(chaos)),
        "faults": fault_counts(chaos),
    }


def fault_counts(chaos: Chaos) -> dict[str, int]:
    """How often each fault class hit, for ``--report`` (``chaos_rows`` says it in words)."""
    tally, mail = chaos.tally, chaos.courier.counts
    return {
        "aws_failed": sum(chaos.faults.failed.values()),
        "aws_hidden": tally.hidden,
        "runtime_faulted": sum(1 for _, fault in chaos.proxy.log if fault),
        "spot_forged": sum(mail.forged.values()),
        "notifications_dropped": mail.dropped,
        "malformed": mail.malformed,
        "lingered": tally.lingered,
        "died_at_once": tally.abrupt - tally.lingered,
        "kills": tally.kills,
        "reloads": len(tally.reloads),
    }


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos",
        description="Scale events with every fault at once; invariants checked throughout.",
    )
    parser.add_argument("--seed", type=int, help="replay this seed (default: a random one)")
    parser.add_argument("--events", type=int, default=FULL["events"], help="scale events")
    parser.add_argument("--kills", type=int, default=FULL["kills"], help="controller SIGKILLs")
    parser.add_argument("--reloads", type=int, default=FULL["reloads"], help="HAProxy reloads")
    parser.add_argument(
        "--quick", action="store_true", help="the reduced run: 20 events, 1 kill, 1 reload"
    )
    parser.add_argument("--report", type=Path, help="also write the report here, as JSON")
    parser.add_argument(
        "--tolerate",
        action="append",
        default=[],
        metavar="KEY",
        help="report this invariant's violations (a known defect) without failing; repeatable",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the run's files (kept anyway on violations)"
    )
    options = parser.parse_args(argv)
    if options.quick:
        vars(options).update(QUICK)
    if options.seed is None:
        options.seed = secrets.randbelow(2**31)
    if options.events < 1 or options.kills < 0 or options.reloads < 0:
        parser.error("--events must be 1 or more; --kills and --reloads 0 or more")
    return options


def main(argv: Sequence[str] | None = None) -> int:
    """Run the scenario and print the report; the exit code says whether the invariants held."""
    options = parse(argv)
    console = Console(width=max(shutil.get_terminal_size().columns, REPORT_WIDTH))
    replay = (
        f"python -m bench.chaos --seed {options.seed} --events {options.events} "
        f"--kills {options.kills} --reloads {options.reloads}"
    )
    console.print(f"bench.chaos: seed {options.seed} (replay: {replay})", highlight=False)
    binary = shutil.which("haproxy")
    if binary is None:
        console.print("haproxy is not on PATH: `make install` installs it")
        return EXIT_BROKEN
    scenario = generate(options.seed, options.events, options.kills, options.reloads)
    # Short (/tmp/chaos-xxxxxxxx): UNIX socket paths must stay under 108 bytes.
    directory = Path(tempfile.mkdtemp(prefix="chaos-"))
    try:
        with running(directory, binary, scenario) as chaos:
            chaos.play()
            chaos.settle()
    # A part that did not start or answer in time, or answered what no working part answers.
    except (HarnessError, OSError, subprocess.SubprocessError) as exc:
        console.print(f"the run broke down: {exc!r}; its files: {directory}", highlight=False)
        return EXIT_BROKEN
    invariants = judge(chaos, binary)
    tolerated = frozenset(options.tolerate)
    print_report(console, chaos, invariants, tolerated, replay)
    if options.report:
        document = report_json(chaos, invariants, tolerated)
        options.report.write_text(json.dumps(document, indent=2))
    violated = any(i.violations for i in invariants if i.key not in tolerated)
    if violated or options.keep:
        console.print(f"the run's files: {directory}", highlight=False)
    else:
        shutil.rmtree(directory, ignore_errors=True)
    return EXIT_VIOLATED if violated else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
