"""
How soon to look at HAProxy again while a warm-up, a drain or a postponed delete is under way.
Pure.

Such a step waits on HAProxy alone: a warm-up on the server's first passing check, a drain on its
last session, a postponed delete on its last connection. The AWS read that decided the step
cannot tell when it is done, so the next look is at HAProxy only, soon enough to finish the step
close to when HAProxy allows it: a quarter of the shortest check interval among the servers in
question, bounded to ``[MIN_DELAY, poll_interval]``. HAProxy checks a server every ``inter``
(``fastinter`` while it changes state, ``downinter`` while it is down), so no answer can come
sooner than that; a quarter of it finishes a warm-up at most a quarter of an interval late. The
longer the looks find nothing to do, the rarer they get (a quarter of the time waited), so a
check that never passes costs little.

A backend with zone routing is looked at all the time, pending or not: HAProxy's health checks
decide whether its local zone can carry the node's requests, and a spill must follow a failing
zone within one look. Its looks come at the same cadence, a quarter of its check interval (at
most ``poll_interval``), and never grow rarer: nothing being to do is its normal state. It is
no work left for a later cycle either, so ``--once`` does not wait for it.

The servers in question are those of the backends the plan says wait on HAProxy (or that the
cycle sent steps to: one more look confirms HAProxy took them); their options are the backend's
``server_options``, the only ones a managed server has (HAProxy 2.6 does not apply
``default-server`` to servers added at runtime, and the file's lines are written from the same
words).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence

from reconciler.core.model import CycleResult
from reconciler.core.settings import Binding, ControllerSettings, Settings


#: HAProxy's default check interval (``inter``), in seconds.
DEFAULT_INTER = 2.0
#: The shortest wait between two looks: below it a poll would be a busy loop.
MIN_DELAY = 0.02
#: The server keywords that set a check interval.
_INTERVAL_KEYWORDS = frozenset({"inter", "fastinter", "downinter"})
#: A HAProxy time: a number and an optional unit; a bare number is milliseconds.
_TIME = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h|d)?")
_UNIT_SECONDS = {"us": 1e-6, "ms": 1e-3, None: 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def check_interval(options: Sequence[str]) -> float:
    """
    The shortest check interval (seconds) that *options* (a server's words) set, ``inter``
    when none does. A value HAProxy would refuse is ignored: the check command rejects the file.
    """
    found = [
        _seconds(value)
        for keyword, value in itertools.pairwise(options)
        if keyword in _INTERVAL_KEYWORDS
    ]
    valid = [seconds for seconds in found if seconds is not None and seconds > 0]
    return min(valid, default=DEFAULT_INTER)


def delay(bindings: Iterable[Binding], config: ControllerSettings, waited: float = 0.0) -> float:
    """
    How soon to look again at the servers of *bindings* (at least one), after *waited* seconds
    of looks that found nothing to do: never sooner than a quarter of that either, so a warm-up
    whose check never passes (or a long drain) is looked at less and less often, down to
    ``poll_interval``, while one that ends is seen at most a quarter of its wait late.
    """
    shortest = min(check_interval(binding.server_options) for binding in bindings)
    return min(max(shortest / 4, waited / 4, MIN_DELAY), config.poll_interval)


def next_look(settings: Settings, result: CycleResult, waited: float = 0.0) -> float | None:
    """
    How soon to look at HAProxy again after the cycle that returned *result*: ``delay`` for the
    servers of its ``watched`` backends (after *waited*), or of those ``watching_health`` (never
    longer for waiting), whichever comes first; ``None`` when nothing waits on HAProxy.
    """
    looks = [
        delay(bindings, settings.controller, after)
        for names, after in ((watched(result), waited), (watching_health(result), 0.0))
        if (bindings := [binding for binding in settings.backends if binding.name in names])
    ]
    return min(looks, default=None)


def watched(result: CycleResult) -> frozenset[str]:
    """
    The backends to look at in HAProxy again after the cycle that returned *result*: those whose
    steps wait on HAProxy, and those it sent steps to, whose result one more look confirms (so
    that what the cycle reports, drift included, is what HAProxy then runs).
    """
    waiting = {
        b.backend for b in result.plan.backends if (b.awaits_haproxy or b.steps) and not b.refused
    }
    if result.outcome is not None:
        waiting.update(d.backend for d in result.outcome.deferred)
    return frozenset(waiting)


def watching_health(result: CycleResult) -> frozenset[str]:
    """The backends whose plan follows HAProxy's health checks (zone routing) all the time."""
    return frozenset(b.backend for b in result.plan.backends if b.watches_health and not b.refused)


def _seconds(text: str) -> float | None:
    """A HAProxy time in seconds, ``None`` when it is not one."""
    match = _TIME.fullmatch(text)
    if match is None:
        return None
    return float(match[1]) * _UNIT_SECONDS[match[2]]
