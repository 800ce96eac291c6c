"""
The scenario of a ``bench.chaos`` run: scale events and disruptions, all drawn from one seed.

A scenario is decided before the run starts, so the same seed replays the same sequence of
events, gaps, kills and reloads, and of the faults that ride on the events: how long the
instances of a plain scale-in keep answering, forged Spot warnings, and instances in service
that DescribeInstances does not know for a while. What an event does to which instance is
settled when it is applied (a scale-in of two picks two of the instances then in service, from a
position the seed chose), since the group's state also depends on the controller's timing.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass


class Kind(enum.Enum):
    """What a scale event does to the group."""

    #: Instances launched straight into service (no launch hook).
    SCALE_OUT = "scale-out"
    #: Instances launched behind the launch hook: ``Pending:Wait`` until the controller completes.
    HOOKED_SCALE_OUT = "scale-out, launch hook"
    #: Instances terminated without a terminate hook: they leave the group at once, and keep
    #: answering for a few seconds (a shutdown takes that long) or die that very moment.
    SCALE_IN = "scale-in"
    #: Instances held in ``Terminating:Wait`` by the terminate hook until the controller completes.
    HOOKED_SCALE_IN = "scale-in, terminate hook"
    #: One instance dies; the group launches its replacement at once.
    REPLACEMENT = "replacement"


#: How often each kind is drawn, out of 100.
WEIGHTS = {
    Kind.SCALE_OUT: 25,
    Kind.HOOKED_SCALE_OUT: 20,
    Kind.SCALE_IN: 20,
    Kind.HOOKED_SCALE_IN: 25,
    Kind.REPLACEMENT: 10,
}
#: The kind an event turns into when the group is too small or too large for its own.
OPPOSITE = {
    Kind.SCALE_OUT: Kind.SCALE_IN,
    Kind.SCALE_IN: Kind.SCALE_OUT,
    Kind.HOOKED_SCALE_OUT: Kind.HOOKED_SCALE_IN,
    Kind.HOOKED_SCALE_IN: Kind.HOOKED_SCALE_OUT,
    Kind.REPLACEMENT: Kind.SCALE_OUT,
}
#: Seconds between two events: short enough that drains, warm-ups, kills and reloads overlap.
GAP = (0.3, 2.0)
#: Seconds a new instance's health check may fail after launch (a slow boot), when it does.
BOOT = (0.3, 2.0)
#: Share of events whose new instances boot slowly.
SLOW_BOOT = 0.3
#: Share of events followed by a malformed message.
JUNK = 0.25
#: Seconds a killed controller stays down before it is restarted (a supervisor's restart delay).
DOWNTIME = (0.0, 1.5)
#: Seconds the instances of a plain scale-in keep answering after they left the group, as a real
#: instance does while it shuts down; below the drain timeout, so a drain outlasts every one.
LINGER = (1.0, 4.0)
#: Share of plain scale-ins whose instances stop answering at once instead (a replacement's dying
#: instance always does).
DIE_AT_ONCE = 0.3
#: Share of events followed by a forged or malformed Spot warning.
FORGE = 0.3
#: Share of events after which DescribeInstances does not know one instance in service while the
#: group lists it (eventual consistency), and for how many seconds: up to a few cycles.
HIDE = 0.2
HIDE_SECONDS = (1.0, 6.0)


class Forgery(enum.Enum):
    """A Spot warning nothing true stands behind, sent straight to the queue."""

    #: A well-formed Spot interruption warning for an on-demand instance in service.
    ON_DEMAND = "well-formed, on-demand instance"
    #: A well-formed rebalance recommendation for an on-demand instance in service.
    REBALANCE = "rebalance recommendation, on-demand instance"
    #: A well-formed warning for an instance of no group.
    UNKNOWN = "unknown instance"
    #: A malformed body naming an instance in service (wrong source, bad detail, bad id...).
    MALFORMED = "malformed"


class Disruption(enum.Enum):
    """Something done to a process from outside."""

    #: SIGKILL the controller, then start a new one.
    KILL = "controller SIGKILL"
    #: Reload HAProxy through its master CLI, as an operator or a package upgrade does.
    RELOAD = "HAProxy reload"


@dataclass(frozen=True)
class Event:
    """One scale event."""

    kind: Kind
    #: Instances it launches or takes out (1 for a replacement).
    count: int
    #: Where in the sorted list of instances in service a scale-in starts picking (0-1).
    pick: float
    #: Seconds the new instances fail their health checks (0: they boot at once).
    boot: float
    #: Seconds to the next event.
    gap: float
    #: A malformed message follows it.
    junk: bool
    #: For a plain scale-in: seconds its instances keep answering (0: they die at once).
    linger: float = 0.0
    #: A forged Spot warning follows it.
    forgery: Forgery | None = None
    #: Seconds DescribeInstances does not know an instance in service (0: none).
    hide: float = 0.0
    #: Where in the sorted list of instances in service the forged warning and the hidden
    #: instance pick theirs (0-1).
    target: float = 0.0


@dataclass(frozen=True)
class Moment:
    """A disruption, *delay* seconds after event number *after* (within its gap)."""

    what: Disruption
    after: int
    delay: float
    #: For a kill: seconds before the new controller starts.
    downtime: float = 0.0


@dataclass(frozen=True)
class Scenario:
    """Everything a run will do, in order."""

    seed: int
    events: tuple[Event, ...]
    moments: tuple[Moment, ...]

    def moments_after(self, index: int) -> list[Moment]:
        """The disruptions in the gap after event *index*, earliest first."""
        return sorted((m for m in self.moments if m.after == index), key=lambda m: m.delay)


def generate(seed: int, events: int, kills: int, reloads: int) -> Scenario:
    """
    The scenario of *seed*: *events* scale events (every kind at least once when there are
    enough), *kills* controller kills and *reloads* HAProxy reloads at random moments between
    the first and the last event.
    """
    rng = random.Random(seed)
    kinds = list(WEIGHTS)
    # The first events are one of each kind, in a random order, so that even a short run covers
    # every path; the rest are drawn by weight. Likewise the faults that ride on them: the first
    # events carry one forgery of each kind, the first one hides an instance, and the first plain
    # scale-in lingers.
    first = rng.sample(kinds, k=min(len(kinds), events))
    drawn = rng.choices(kinds, weights=list(WEIGHTS.values()), k=events - len(first))
    chosen = [*first, *drawn]
    forced = rng.sample(list(Forgery), k=min(len(Forgery), events))
    scale = []
    for index, kind in enumerate(chosen):
        lingers = kind is Kind.SCALE_IN and chosen.index(kind) == index
        forgery = forced[index] if index < len(forced) else None
        if forgery is None and rng.random() < FORGE:
            forgery = rng.choice(list(Forgery))
        scale.append(
            Event(
                kind=kind,
                count=1 if kind is Kind.REPLACEMENT else rng.choice((1, 1, 2)),
                pick=rng.random(),
                boot=rng.uniform(*BOOT) if rng.random() < SLOW_BOOT else 0.0,
                gap=rng.uniform(*GAP),
                junk=rng.random() < JUNK,
                linger=rng.uniform(*LINGER) if rng.random() >= DIE_AT_ONCE or lingers else 0.0,
                forgery=forgery,
                hide=rng.uniform(*HIDE_SECONDS) if rng.random() < HIDE or not index else 0.0,
                target=rng.random(),
            )
        )
    # Never after the last event: the run then measures how soon everything settles, undisturbed.
    slots = max(events - 1, 1)
    moments = [
        Moment(Disruption.KILL, after, 0.0, rng.uniform(*DOWNTIME))
        for after in rng.sample(range(slots), k=min(kills, slots))
    ]
    moments += [
        Moment(Disruption.RELOAD, after, 0.0)
        for after in rng.sample(range(slots), k=min(reloads, slots))
    ]
    timed = tuple(
        Moment(m.what, m.after, rng.uniform(0, scale[m.after].gap), m.downtime) for m in moments
    )
    return Scenario(seed, tuple(scale), timed)
