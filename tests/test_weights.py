"""
Capacity-aware weights: each server's weight from its instance type, set at runtime and in the
file, never through a reload; a type without a weight gets the documented default and a warning.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from reconciler.core import weights
from reconciler.core.model import Change, Group, Instance, StepKind
from reconciler.core.settings import Weights
from reconciler.cycle import run_cycle
from tests.support.worlds import ASG, BACKEND, PREFIX, World, instance, make_settings


CAPACITY = Weights(capacity=True)
MIXED = {"c5.large": 2, "c5.xlarge": 4, "c5.4xlarge": 16}


def typed(n: int, kind: str | None) -> Instance:
    """Instance *n* of instance type *kind*."""
    return replace(instance(n), instance_type=kind)


def mixed(*members: Instance, capacities: dict[str, int] | None = None) -> Group:
    """The group of *members*, with the launch template overrides' capacities."""
    return Group(ASG, len(members), members, capacities=MIXED if capacities is None else capacities)


def name(n: int) -> str:
    return f"{PREFIX}i-{n:017x}"


def weighing(binding_weights: Weights, group: Group) -> weights.Weighing:
    settings = make_settings(weights=binding_weights)
    found = weights.weigh(settings.backends[0], group, group.instances)
    assert found is not None
    return found


class TestScaling:
    """The desired weight of each instance type."""

    def test_capacity_is_scaled_so_the_largest_gets_256(self) -> None:
        """2, 4 and 16 units of capacity: weights 32, 64 and 256."""
        assert weights.by_type(CAPACITY, MIXED) == {
            "c5.large": 32,
            "c5.xlarge": 64,
            "c5.4xlarge": 256,
        }

    def test_a_tiny_capacity_still_gets_weight_1(self) -> None:
        """0 would take the server out of traffic: the smallest weight is 1."""
        assert weights.by_type(CAPACITY, {"t3.nano": 1, "x2.huge": 999}) == {
            "t3.nano": 1,
            "x2.huge": 256,
        }

    def test_a_table_gives_its_own_weights(self) -> None:
        """[backend.weights] is taken as written, whatever the group's capacities."""
        table = Weights(capacity=False, table={"c5.large": 10, "c5.4xlarge": 80})
        assert weights.by_type(table, MIXED) == {"c5.large": 10, "c5.4xlarge": 80}

    @given(st.dictionaries(st.text(min_size=1, max_size=8), st.integers(1, 999), min_size=1))
    def test_any_capacities_give_weights_in_range_in_the_same_order(
        self, capacities: dict[str, int]
    ) -> None:
        """Every weight is in 1..256, the largest capacity gets 256, and order is kept."""
        found = weights.by_type(CAPACITY, capacities)
        assert set(found) == set(capacities)
        assert all(1 <= w <= 256 for w in found.values())
        assert found[max(capacities, key=capacities.__getitem__)] == 256
        for a, small in capacities.items():
            for b, large in capacities.items():
                if small <= large:
                    assert found[a] <= found[b]


class TestUnknownTypes:
    """A type without a weight: the documented default and one warning per type, no failure."""

    def test_smallest_known_weight_and_a_warning_per_type(self) -> None:
        """Two m5.large servers get the smallest known weight; one warning names them."""
        group = mixed(typed(1, "c5.large"), typed(2, "m5.large"), typed(3, "m5.large"))
        found = weighing(CAPACITY, group)
        assert [found.of(i) for i in group.instances] == [32, 32, 32]
        assert found.warnings == (
            "instance type 'm5.large' has no WeightedCapacity in group 'api-asg'; its 2 servers "
            "get weight 32, the smallest known (set default_weight or add the type)",
        )

    def test_default_weight_wins(self) -> None:
        """default_weight is the weight of every type without one; the warning says so."""
        table = Weights(capacity=False, table={"c5.large": 10}, default=5)
        group = mixed(typed(1, "c5.large"), typed(2, "m5.large"))
        found = weighing(table, group)
        assert [found.of(i) for i in group.instances] == [10, 5]
        assert found.warnings == (
            "instance type 'm5.large' is not in [backend.weights]; its 1 server gets "
            "default_weight 5",
        )

    def test_no_capacity_at_all_gives_weight_1(self) -> None:
        """A group without WeightedCapacity: every server weighs 1, one warning per type."""
        group = mixed(typed(1, "c5.large"), typed(2, None), capacities={})
        found = weighing(CAPACITY, group)
        assert [found.of(i) for i in group.instances] == [1, 1]
        assert len(found.warnings) == 2
        assert found.warnings[1].startswith("1 instance has no instance type")

    def test_the_warnings_reach_the_plan_and_the_cycle_succeeds(self) -> None:
        """Warnings are no errors: the cycle is ok and the servers are added."""
        world = World(mixed(typed(4, "c5.large"), typed(5, "m5.large")), weights=CAPACITY)
        result = run_cycle(world.settings, world.ports)
        assert result.ok
        assert len(result.plan.backends[0].warnings) == 1
        assert [s.kind for s in result.plan.backends[0].steps] == [StepKind.ADD, StepKind.ADD]


class TestApplied:
    """Weights reach the runtime and the file without a reload."""

    def test_new_servers_are_added_with_their_weight(self) -> None:
        """add server carries `weight N`, and the file line says the same."""
        world = World(mixed(typed(4, "c5.large"), typed(5, "c5.4xlarge")), weights=CAPACITY)
        world.converge()
        running = world.runtime.servers[BACKEND]
        assert (running[name(4)].weight, running[name(5)].weight) == (32, 256)
        assert b"127.0.1.4:8080 id 2 check inter 1s weight 32\n" in world.store.content
        assert b"127.0.1.5:8080 id 3 check inter 1s weight 256\n" in world.store.content

    def test_a_capacity_change_is_a_weight_step_and_a_file_line(self) -> None:
        """The group's capacities change: `set server weight`, the line rewritten, no reload."""
        world = World(mixed(typed(4, "c5.large"), typed(5, "c5.4xlarge")), weights=CAPACITY)
        world.converge()
        doubled = {**MIXED, "c5.large": 8}
        world.membership.groups[ASG] = replace(world.membership.groups[ASG], capacities=doubled)
        result = run_cycle(world.settings, world.ports)
        decided = result.plan.backends[0]
        assert [(s.kind, s.server) for s in decided.steps] == [(StepKind.WEIGHT, name(4))]
        (row,) = [r for r in decided.rows if r.server == name(4)]
        assert (row.change, row.reason) == (Change.WEIGHT, "weight 32 -> 128")
        assert not decided.needs_reload
        assert world.store.reloads == 0
        assert world.runtime.servers[BACKEND][name(4)].weight == 128
        assert b"check inter 1s weight 128\n" in world.store.content
        assert world.converge() == 1

    def test_a_weight_differing_only_in_the_file_is_written_without_a_reload(self) -> None:
        """The runtime has the weight, the file does not (an old file): the line is rewritten."""
        world = World(mixed(typed(4, "c5.large")), weights=CAPACITY)
        world.converge()
        world.store.content = world.store.content.replace(b" weight 32", b" weight 9")
        result = run_cycle(world.settings, world.ports)
        (row,) = result.plan.backends[0].rows
        assert (row.change, row.reason) == (Change.WEIGHT, "weight 32 written to the file")
        assert result.plan.backends[0].steps == ()
        assert not result.plan.backends[0].needs_reload
        assert b" weight 32\n" in world.store.content

    def test_new_server_options_still_need_a_reload(self) -> None:
        """Only the controller's own words are exempt from the reload."""
        world = World(mixed(typed(4, "c5.large")), weights=CAPACITY)
        world.converge()
        world.settings = make_settings(options="check inter 2s", weights=CAPACITY)
        world.converge()
        assert world.store.reloads == 1
        assert b"check inter 2s weight 32\n" in world.store.content

    def test_without_a_socket_the_file_carries_the_weights(self) -> None:
        """File mode: the weights are in the lines the reload loads."""
        world = World(mixed(typed(4, "c5.large"), typed(5, "c5.xlarge")), weights=CAPACITY)
        world = World(world.membership.groups[ASG], socket=False, weights=CAPACITY)
        world.converge()
        assert b"check inter 1s weight 32\n" in world.store.content
        assert b"check inter 1s weight 64\n" in world.store.content

    def test_a_draining_server_gets_its_weight_with_its_step(self) -> None:
        """A warming server waits for its check and has its weight set meanwhile."""
        world = World(mixed(typed(4, "c5.large")), weights=CAPACITY)
        run_cycle(world.settings, world.ports)
        world.runtime.servers[BACKEND][name(4)] = replace(
            world.runtime.servers[BACKEND][name(4)], weight=7
        )
        decided = run_cycle(world.settings, world.ports).plan.backends[0]
        assert [s.kind for s in decided.steps] == [StepKind.WEIGHT]
        assert decided.rows[0].change is Change.WARMING
        assert decided.pending
