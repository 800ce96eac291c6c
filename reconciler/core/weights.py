"""
Server weights by instance type, for a mixed-instances group. Pure.

A backend sets weights one of two ways (``Binding.weights``):

- ``weight = "capacity"``: the group's own ``WeightedCapacity`` of each instance type (from the
  launch template overrides of its ``MixedInstancesPolicy``), scaled so the largest is HAProxy's
  highest weight: ``max(1, round(256 * capacity / largest capacity))``;
- ``[backend.weights]``: a table of instance type to weight, for groups that set no capacity.

An instance type neither gives a weight to (or an instance whose type DescribeInstances did not
return) gets ``default_weight``, else the smallest weight known: a type missing from the table is
most likely a new, unplanned one, and the smallest weight risks overloading it least. That is a
warning of the backend's plan, never a failure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from reconciler.core.model import Group, Instance
from reconciler.core.settings import WEIGHT, Binding, Weights


#: The weight the largest capacity gets: HAProxy's highest.
HIGHEST = int(WEIGHT.high)


@dataclass(frozen=True)
class Weighing:
    """The weight of every instance type of one backend this cycle."""

    #: By instance type, for the types the settings or the group give a weight.
    known: Mapping[str, int]
    #: The weight of any other type (and of an instance without a type).
    fallback: int
    #: One per instance type without a weight among the servers weighed.
    warnings: tuple[str, ...] = ()

    def of(self, instance: Instance) -> int:
        """The weight of *instance*'s server."""
        kind = instance.instance_type
        return self.fallback if kind is None else self.known.get(kind, self.fallback)


def weigh(binding: Binding, group: Group, instances: Iterable[Instance]) -> Weighing | None:
    """
    The weights of the servers of *instances* (those the backend wants), with a warning per
    instance type without one; ``None`` when the backend sets no weights.
    """
    weights = binding.weights
    if weights is None:
        return None
    known = by_type(weights, group.capacities)
    fallback = weights.default if weights.default is not None else min(known.values(), default=1)
    unweighed = Counter(i.instance_type for i in instances if i.instance_type not in known)
    # Types in name order, the instances without a type last.
    kinds = sorted(unweighed, key=lambda kind: (kind is None, kind or ""))
    warnings = tuple(
        _warning(weights, group.name, kind, unweighed[kind], fallback) for kind in kinds
    )
    return Weighing(known, fallback, warnings)


def by_type(weights: Weights, capacities: Mapping[str, int]) -> dict[str, int]:
    """The weight of each instance type the settings (or, for ``capacity``, the group) weigh."""
    if not weights.capacity:
        return dict(weights.table)
    # AWS takes WeightedCapacity from 1 to 999; anything else is no capacity at all.
    valid = {kind: capacity for kind, capacity in capacities.items() if capacity > 0}
    largest = max(valid.values(), default=0)
    return {kind: max(1, round(HIGHEST * c / largest)) for kind, c in valid.items()}


def _warning(weights: Weights, group: str, kind: str | None, count: int, weight: int) -> str:
    """What the report says about the *count* servers of instance type *kind* (``None``: none)."""
    servers = "its 1 server gets" if count == 1 else f"its {count} servers get"
    if kind is None:
        what = "1 instance has" if count == 1 else f"{count} instances have"
        servers = "its server gets" if count == 1 else "their servers get"
        subject = f"{what} no instance type (DescribeInstances gave none)"
    elif weights.capacity:
        subject = f"instance type '{kind}' has no WeightedCapacity in group '{group}'"
    else:
        subject = f"instance type '{kind}' is not in [backend.weights]"
    if weights.default is not None:
        return f"{subject}; {servers} default_weight {weight}"
    fix = "" if kind is None else " (set default_weight or add the type)"
    return f"{subject}; {servers} weight {weight}, the smallest known{fix}"
