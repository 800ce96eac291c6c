"""
The verdict of a ``bench.chaos`` run: each invariant judged from what the run recorded.

Each ``Invariant`` says what was checked and how often, every violation found (one line each,
with the time since the world started and what explains it), and notes: checks that passed only
with an excuse (a request cut on an instance that had stopped answering) or could not be made
(HAProxy unreadable at that instant).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.chaos_checks import Departure, access_log, check_versions
from bench.chaos_world import Chaos
from harness.lifecycle import COMPLETE, LAUNCH_HOOK, TERMINATE_HOOK, calls, released_after_drain
from harness.stack import BACKEND, SERVER_PREFIX


PASSING_CHECKS = frozenset({"L4OK", "L6OK", "L7OK", "L7OKC"})
#: Seconds after a reload began during which a launch may be completed on what the controller
#: saw in the old worker: the reload itself, plus a cycle of the controller.
RELOAD_RACE = 3.0
#: Controller log messages that only a bug produces.
CRASHES = frozenset({"cycle crashed", "the SQS receiver failed unexpectedly"})
#: Seconds before a departure in which a fault aimed at its instance is named as a suspect.
SUSPECT_WINDOW = 15.0


@dataclass
class Invariant:
    """One invariant: what was checked, how often, and what violated it."""

    #: Short name, for ``--tolerate``.
    key: str
    name: str
    checked: int
    unit: str
    violations: list[str] = field(default_factory=list)
    #: Checked but not counted against it (excused, or could not be verified), with why.
    notes: list[str] = field(default_factory=list)


def judge(chaos: Chaos, binary: str) -> list[Invariant]:
    """Every invariant, judged from what the run recorded."""
    left = chaos.tally.queue_left
    return [
        *_config_invariants(chaos, binary),
        _serving_invariant(chaos),
        _request_invariant(chaos),
        *_terminate_invariants(chaos),
        _launch_invariant(chaos),
        _convergence_invariant(chaos),
        Invariant(
            "queue",
            "every message deleted from the queue in the end",
            chaos.courier.counts.delivered,
            "messages",
            [f"{left} message(s) still in the queue"] if left else [],
        ),
        _controller_invariant(chaos),
    ]


def _config_invariants(chaos: Chaos, binary: str) -> list[Invariant]:
    """Every version of the file the watcher copied: valid, and unchanged outside its servers."""
    versions = chaos.watcher.versions
    invalid, altered = check_versions(
        versions, binary, chaos.directory / "versions", backend=BACKEND, prefix=SERVER_PREFIX
    )
    return [
        Invariant(
            "config-valid",
            "every config version passes haproxy -c",
            len(versions),
            "versions",
            [p.problem for p in invalid],
        ),
        Invariant(
            "config-bytes",
            "no byte outside the managed server lines changes",
            len(versions),
            "versions",
            [p.problem for p in altered],
        ),
    ]


def _serving_invariant(chaos: Chaos) -> Invariant:
    """
    Every episode (consecutive samples) in which a serving instance's server was missing from
    the file or not taking requests in the runtime, with the faults aimed at it just before.
    """
    watch = chaos.serving
    invariant = Invariant(
        "serving",
        "no serving instance leaves the file or the runtime (sampled)",
        watch.samples,
        "samples",
    )
    episodes: list[list[Departure]] = []
    for departure in sorted(watch.departures, key=lambda d: (d.server, d.sample)):
        last = episodes[-1][-1] if episodes else None
        if last and last.server == departure.server and last.sample + 1 == departure.sample:
            episodes[-1].append(departure)
        else:
            episodes.append([departure])
    for episode in sorted(episodes, key=lambda e: e[0].time):
        first, end = episode[0], episode[-1]
        instance = first.server.removeprefix(SERVER_PREFIX)
        suspects = [
            f"{what} at {chaos.since(moment)}"
            for moment, what in chaos.aimed.get(instance, [])
            if 0 <= first.time - moment <= SUSPECT_WINDOW
        ]
        invariant.violations.append(
            f"{first.server} at {chaos.since(first.time)}-{chaos.since(end.time)} "
            f"({len(episode)} samples): {first.problem}"
            + (f"; just before: {', '.join(suspects)}" if suspects else "")
        )
    invariant.notes.append(f"{watch.established} servers held to it once established")
    if watch.unreadable:
        invariant.notes.append(f"samples not taken (HAProxy unreadable): {dict(watch.unreadable)}")
    return invariant


def _request_invariant(chaos: Chaos) -> Invariant:
    """
    Every failed request, with the server and the end the access log gives it; excused only
    when its instance had stopped answering (left without a hook) before it ended.
    """
    requests = chaos.ledger.requests()
    log = access_log(chaos.stack.haproxy.log_path)
    invariant = Invariant(
        "requests", "no request to an instance that still answers fails", len(requests), "requests"
    )
    for request in requests:
        if request.status == 200:
            continue
        record = log.get(request.number)
        got = f"got {request.status or request.detail[:100]}"
        where = (
            f"{record.backend}/{record.server} logged {record.status} {record.term}"
            if record
            else "no access log line"
        )
        what = f"#{request.number} {request.path} at {chaos.since(request.ended)}: {got}, {where}"
        instance = record.server.removeprefix(SERVER_PREFIX) if record else ""
        died = chaos.abrupt.get(instance)
        if died is not None and died <= request.ended:
            invariant.notes.append(f"excused, {instance} had stopped answering (no hook): {what}")
        else:
            invariant.violations.append(what)
    return invariant


def _terminate_invariants(chaos: Chaos) -> list[Invariant]:
    """
    A terminate hook completed (CONTINUE) only once the server is gone from the current worker
    and the file, and no worker (old ones, after a reload, included) has a session on it: the
    instance is terminated right after, cutting whatever it still serves.
    """
    releases = [c for c in calls(chaos.cloud, COMPLETE) if c["hook"] == TERMINATE_HOOK]
    current = Invariant(
        "drain",
        "terminate hook completed only after the drain (current worker, file)",
        len(releases),
        "calls",
    )
    old = Invariant(
        "drain-old-workers",
        "... and no old worker (after a reload) still has a session on it",
        len(releases),
        "calls",
    )
    for call in releases:
        what, witness = _witnessed(chaos, call, current)
        if witness is None:
            continue
        if not released_after_drain(call):
            current.violations.append(f"{what}: still in the current worker or the file")
        if witness["workers"] is None:
            old.notes.append(f"not verified (master CLI unreadable): {what}")
            continue
        name = f"{SERVER_PREFIX}{call['instance_id']}"
        busy = {pid: s[name] for pid, s in witness["workers"].items() if s.get(name)}
        if busy:
            old.violations.append(f"{what}: sessions on it by worker pid: {busy}")
    return [current, old]


def _launch_invariant(chaos: Chaos) -> Invariant:
    """A launch hook completed (CONTINUE) only once its server passed a health check."""
    launches = [c for c in calls(chaos.cloud, COMPLETE) if c["hook"] == LAUNCH_HOOK]
    invariant = Invariant(
        "launch",
        "launch hook completed only after a passing health check",
        len(launches),
        "calls",
    )
    for call in launches:
        what, witness = _witnessed(chaos, call, invariant)
        if witness is None:
            continue
        row = witness["stat"].get(call["instance_id"])
        if row is None and any(0 <= call["time"] - r <= RELOAD_RACE for r in chaos.tally.reloads):
            # Seen passing in the old worker; the new one, started from the file (which lists no
            # launching server), does not have it yet. Nothing was sent to it unchecked.
            invariant.notes.append(f"not verified (HAProxy reloaded just before): {what}")
            continue
        # "* L7OK": the last check passed, and the next one is running now.
        status = row["check_status"].removeprefix("* ") if row else "no server"
        if call["result"] != "CONTINUE" or status not in PASSING_CHECKS:
            invariant.violations.append(f"{what}: check {status}")
    return invariant


def _witnessed(
    chaos: Chaos, call: dict[str, Any], invariant: Invariant
) -> tuple[str, dict[str, Any] | None]:
    """
    How the report names lifecycle *call*, and what HAProxy held at its moment: ``None`` (and
    a note on *invariant*) when HAProxy could not be read then.
    """
    what = f"{call['result']} {call['instance_id']} at {chaos.since(call['time'])}"
    witness: dict[str, Any] = call["witness"]
    if "error" in witness:
        invariant.notes.append(f"not verified ({witness['error']}): {what}")
        return what, None
    return what, witness


def _convergence_invariant(chaos: Chaos) -> Invariant:
    """How soon after the last event HAProxy and the file held exactly the InService set."""
    tally = chaos.tally
    invariant = Invariant(
        "convergence",
        f"HAProxy = InService within one resync + one drain ({tally.settle_bound:g}s)",
        1,
        "run",
    )
    if tally.settled_after is None:
        invariant.violations.append(
            f"not converged {tally.settle_bound:g}s after the last event: {tally.unsettled}"
        )
    else:
        invariant.notes.append(f"converged {tally.settled_after:.1f}s after the last event")
    return invariant


def _controller_invariant(chaos: Chaos) -> Invariant:
    """No exit but ours, no crash logged, and a clean exit on SIGTERM at the end."""
    invariant = Invariant(
        "controller", "the controller never crashes", len(chaos.daemons), "processes"
    )
    exits = chaos.tally.unexpected_exits
    invariant.violations += [f"exited by itself with code {code}" for code in exits]
    for daemon in chaos.daemons:
        records, torn = log_records(daemon.log_path)
        invariant.violations += [
            f"{daemon.log_path.name}: {r['message']}: {r.get('exception', '')[-300:]}"
            for r in records
            if r["message"] in CRASHES
        ]
        # A SIGKILL may cut the last line of a killed controller's log short; not the last one's.
        if torn and daemon is chaos.daemon:
            invariant.violations.append(f"{daemon.log_path.name}: {torn} line(s) not JSON")
    if chaos.tally.stop_code != 0:
        invariant.violations.append(f"SIGTERM at the end: exit code {chaos.tally.stop_code}")
    return invariant


def log_records(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The JSON records of a controller's log, and how many lines were not JSON."""
    records, torn = [], 0
    for line in path.read_text(errors="replace").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            torn += 1
    return records, torn
