"""
Bursts (issue 7, part 2): 200 notifications within one second.

The group replaces 100 of its instances at once (100 launched, then the 100 old ones terminated,
as an instance refresh does), then the 200 notifications are published to SNS, ten per
``PublishBatch`` call. moto spends about 5 ms of CPU on each, so on a small machine they take a
little over a second (the time is in the results), longer while the handler reads the queue.
Measured, for the controller (queue + runtime API) and for the naive script, each in a fresh
world: cycles run (messages handled, for the script), AWS read calls and read pairs (see
``bench.handlers``), queue calls, HAProxy reloads (counted from HAProxy's own log), runtime
commands, the handler's CPU time, and the time from the first publication until HAProxy serves
exactly the new instances. The servers have no health check
(``server_options = ""``), so the time measures the handling, not checks; the instances need no
HTTP server.

Counting stops once the handler is idle again (``handlers.wait_idle``): the queue is empty and
(for the controller) no cycle ran for the profile's ``quiet`` seconds, follow-up cycles included.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from bench import handlers
from bench.profile import Profile
from bench.stats import figure
from bench.world import Lab, reloads, server_states, serving
from harness.haproxy import wait_for
from harness.moto import Cloud
from harness.stack import GROUP, Notifications, Stack, asg_notification


if TYPE_CHECKING:
    from mypy_boto3_sns.type_defs import PublishBatchRequestEntryTypeDef


#: ``[[backend]]`` keys of the burst: no health check, so a server serves as soon as it is added.
BACKEND = {"server_options": ""}
PUBLISHERS = 2
#: How an Auto Scaling notification's subject names each event.
SUBJECTS = {"LAUNCH": "launch", "TERMINATE": "termination"}
#: Entries per ``PublishBatch`` call (SNS's limit).
BATCH = 10
#: Seconds a handler may take to converge after the burst before it counts as not converged. The
#: naive script takes about 20 s when it converges at all: a SIGUSR2 that reaches HAProxy's
#: master while it is still reloading is lost (2.6.12), so after its last reload HAProxy may go
#: on running a file one change older than the one on disk.
CONVERGE_TIMEOUT = 60.0
POLL = 0.01
HANDLERS = (handlers.EVENT, handlers.NAIVE)


def replace_instances(stack: Stack, count: int) -> tuple[list[str], list[str]]:
    """Launch *count* instances, then terminate the *count* oldest; the launched and the gone."""
    cloud = stack.cloud
    old = set(cloud.serving(GROUP))
    cloud.set_desired(GROUP, len(old) + count)
    # moto scales in from the front of the group's member list: the oldest, here all of them.
    cloud.set_desired(GROUP, len(old))
    now = set(cloud.serving(GROUP))
    return sorted(now - old), sorted(old - now)


def publish(queue: Notifications, launched: list[str], gone: list[str]) -> float:
    """
    Publish a LAUNCH per launched and a TERMINATE per gone instance, ten per ``PublishBatch``
    call from ``PUBLISHERS`` threads: the fastest way into moto (about 5 ms of its CPU per
    message); return the seconds it took.
    """
    notices = [("LAUNCH", i) for i in launched] + [("TERMINATE", i) for i in gone]
    batches = [notices[start : start + BATCH] for start in range(0, len(notices), BATCH)]
    started = time.monotonic()
    with ThreadPoolExecutor(PUBLISHERS) as pool:
        for done in [pool.submit(_publish_batch, queue, batch) for batch in batches]:
            done.result()
    return time.monotonic() - started


def _publish_batch(queue: Notifications, batch: list[tuple[str, str]]) -> None:
    entries: list[PublishBatchRequestEntryTypeDef] = [
        {
            "Id": str(n),
            "Subject": f'Auto Scaling: {SUBJECTS[event]} for group "{GROUP}"',
            "Message": json.dumps(asg_notification(event, instance)),
        }
        for n, (event, instance) in enumerate(batch)
    ]
    reply = queue.cloud.sns.publish_batch(
        TopicArn=queue.topic_arn, PublishBatchRequestEntries=entries
    )
    if reply.get("Failed"):
        raise RuntimeError(f"publishing failed: {reply['Failed']}")


def wrong_servers(stack: Stack, wanted: set[str]) -> int | None:
    """
    How many managed servers HAProxy has wrong: missing or not serving among *wanted*, or there
    but not wanted; ``None`` when the admin socket did not answer.
    """
    states = server_states(stack.haproxy)
    if states is None:
        return None
    return len(wanted - serving(states)) + len(set(states) - wanted)


def converged(stack: Stack, wanted: set[str]) -> bool:
    """HAProxy has exactly the *wanted* managed servers, each of them serving."""
    return wrong_servers(stack, wanted) == 0


def run_once(cloud: Cloud, mode: handlers.Mode, profile: Profile) -> dict[str, Any]:
    """One burst handled by *mode*'s handler, in a world of its own."""
    size = profile.burst_instances
    with Lab(cloud) as lab:
        stack = lab.stack(size, max_size=2 * size)
        queue = Notifications(cloud)
        counts = handlers.start(mode, lab, stack, queue, backend=BACKEND)
        first = set(cloud.serving(GROUP))
        wait_for(lambda: converged(stack, first), f"{mode.key}: the first convergence", 60)
        before, reloads_before = counts.snapshot(), reloads(stack.haproxy)
        launched, gone = replace_instances(stack, size)
        started = time.monotonic()
        published = publish(queue, launched, gone)
        wanted = set(launched)
        deadline = started + CONVERGE_TIMEOUT
        while not converged(stack, wanted) and time.monotonic() < deadline:
            time.sleep(POLL)
        ok = converged(stack, wanted)
        seconds = time.monotonic() - started
        handlers.wait_idle(mode, counts, queue, len(launched) + len(gone), profile.quiet)
        return {
            "converged": ok,
            # Once idle: a handler that stopped short of the truth stays there.
            "wrong_servers_when_idle": wrong_servers(stack, wanted),
            "notifications": len(launched) + len(gone),
            "published_seconds": published,
            "converged_seconds": seconds if ok else None,
            "converged_after_last_publication_seconds": seconds - published if ok else None,
            "reloads": reloads(stack.haproxy) - reloads_before,
            **counts.since(before),
        }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Every numeric field of *runs* as a median with its spread; how many converged."""
    keys = [key for key in runs[0] if key != "converged"]
    summary: dict[str, Any] = {
        key: figure([run[key] for run in runs if run[key] is not None]) for key in keys
    }
    summary["converged_runs"] = sum(1 for run in runs if run["converged"])
    return summary


def run(cloud: Cloud, profile: Profile, log: Callable[[str], None]) -> dict[str, Any]:
    """Every repeat for every handler, interleaved; the JSON of ``burst``."""
    runs: dict[str, list[dict[str, Any]]] = {mode.key: [] for mode in HANDLERS}
    for repeat in range(profile.burst_repeats):
        for mode in HANDLERS:
            log(f"burst: {mode.key}, run {repeat + 1} of {profile.burst_repeats}")
            runs[mode.key].append(run_once(cloud, mode, profile))
    return {
        "notifications": 2 * profile.burst_instances,
        "repeats": profile.burst_repeats,
        "handlers": {
            mode.key: {"label": mode.label, **summarize(runs[mode.key])} for mode in HANDLERS
        },
    }
