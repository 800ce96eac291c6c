"""
Capacity-aware weights against the real HAProxy and moto: a mixed-instances group whose launch
template overrides give ``c5.large`` a ``WeightedCapacity`` of 2 and ``c5.4xlarge`` one of 16,
``reconcile --once`` as a user runs it.

- ``weight = "capacity"``: each server's runtime weight and its file line say 32 or 256 (16 / 2
  scaled into 1..256), and HAProxy sends each server requests in that proportion;
- a changed ``WeightedCapacity``, an instance of another type, a changed ``[backend.weights]``
  table: ``set server weight`` at runtime and the file line, never a reload;
- an instance type the group gives no weight: the smallest known weight, and a warning in the
  drift report naming the type, never a failure.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness.haproxy import HAProxyFactory, HTTPBackends
from harness.moto import Cloud
from harness.stack import GROUP, RECONCILE
from harness.zones import ZoneStack, build_zone_stack


SMALL, LARGE = "c5.large", "c5.4xlarge"
#: ``WeightedCapacity`` by instance type, as the group's overrides give it.
CAPACITIES = {SMALL: 2, LARGE: 16}
CAPACITY_WEIGHTS = {SMALL: 32, LARGE: 256}
CAPACITY: dict[str, Any] = {"weight": "capacity"}


@pytest.fixture(name="stack")
def _stack(
    cloud: Cloud, haproxy_factory: HAProxyFactory, http_backends: HTTPBackends, tmp_path: Path
) -> ZoneStack:
    """A mixed-instances group of both types, two per zone; HAProxy with no managed server."""
    return build_zone_stack(
        cloud, haproxy_factory, http_backends, tmp_path, per_zone=2, types=CAPACITIES
    )


def run(stack: ZoneStack, *args: str) -> str:
    """``reconcile --once``, which must succeed; its output."""
    done = stack.reconcile(*args)
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout + done.stderr


def table(weights: dict[str, int]) -> dict[str, int]:
    """A ``[backend.weights]`` table for ``write_settings``: type names quoted (they hold dots)."""
    return {json.dumps(kind): weight for kind, weight in weights.items()}


def expected(stack: ZoneStack, weights: dict[str, int]) -> dict[str, int]:
    """Instance id → the weight *weights* (by type) give it."""
    types = stack.types()
    return {instance: weights[types[instance]] for instance in stack.servers}


def test_capacity_weights_in_haproxy_and_in_traffic(stack: ZoneStack) -> None:
    """Runtime and file weights follow WeightedCapacity; so do the requests each server gets."""
    assert set(stack.types().values()) >= set(CAPACITIES)
    stack.write_settings(CAPACITY)

    run(stack)

    weights = expected(stack, CAPACITY_WEIGHTS)
    assert stack.runtime_weights() == weights
    assert stack.file_weights() == weights
    total = sum(weights.values())
    requests = 4 * total // min(weights.values())
    answered = stack.answering(requests)
    for instance, weight in weights.items():
        assert answered[instance] == pytest.approx(requests * weight / total, rel=0.15)


def test_changed_capacity_and_type_set_weights_without_reload(stack: ZoneStack) -> None:
    """
    The group's c5.large capacity goes from 2 to 8 (weight 128), and one c5.large becomes a
    c5.4xlarge (256): the next run sets both at runtime and in the file, and HAProxy keeps its
    worker.
    """
    stack.write_settings(CAPACITY)
    run(stack)
    worker = stack.haproxy.worker_pid()
    small = sorted(i for i, kind in stack.types().items() if kind == SMALL)
    stack.cloud.set_overrides(GROUP, {SMALL: 8, LARGE: 16})
    stack.cloud.set_instance_type(small[0], LARGE)

    output = run(stack)

    weights = expected(stack, {SMALL: 128, LARGE: 256})
    assert weights[small[0]] == 256
    assert stack.runtime_weights() == weights
    assert stack.file_weights() == weights
    assert "32 -> 128" in output
    assert "32 -> 256" in output
    assert stack.haproxy.worker_pid() == worker


def test_weight_table_change_sets_weights_without_reload(stack: ZoneStack) -> None:
    """A ``[backend.weights]`` table, then a new value for one type: runtime and file follow."""
    stack.write_settings(**{"backend.weights": table({SMALL: 10, LARGE: 80})})
    run(stack)
    worker = stack.haproxy.worker_pid()
    assert stack.runtime_weights() == expected(stack, {SMALL: 10, LARGE: 80})

    stack.write_settings(**{"backend.weights": table({SMALL: 40, LARGE: 80})})
    run(stack)

    weights = expected(stack, {SMALL: 40, LARGE: 80})
    assert stack.runtime_weights() == weights
    assert stack.file_weights() == weights
    assert stack.haproxy.worker_pid() == worker


@pytest.mark.parametrize(("default", "weight"), [(None, 32), (5, 5)])
def test_unknown_type_gets_the_default_weight_and_a_warning(
    stack: ZoneStack, default: int | None, weight: int
) -> None:
    """
    An m5.large the overrides do not name: weight 32 (the smallest known), or `default_weight`
    when set; a warning naming the type in the drift report and its JSON; the run and the
    report succeed.
    """
    stack.write_settings(CAPACITY | ({} if default is None else {"default_weight": default}))
    odd = sorted(stack.servers)[0]
    stack.cloud.set_instance_type(odd, "m5.large")

    run(stack)

    assert stack.runtime_weights()[odd] == weight
    assert stack.file_weights()[odd] == weight
    assert set(stack.runtime_weights().values()) == {weight, *CAPACITY_WEIGHTS.values()}
    drift = stack_drift(stack)
    assert drift.returncode == 0, drift.stdout + drift.stderr
    assert "m5.large" in drift.stdout
    report = stack_drift(stack, "--json")
    assert "m5.large" in json.dumps(json.loads(report.stdout))


def stack_drift(stack: ZoneStack, *args: str) -> subprocess.CompletedProcess[str]:
    """``reconcile drift`` on *stack*'s settings."""
    return subprocess.run(
        [*RECONCILE, "drift", "--config", str(stack.settings), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
