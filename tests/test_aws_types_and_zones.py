"""
Instance types, Availability Zones and ``WeightedCapacity`` as the membership adapter reads them
from AWS (a moto server on loopback), through the streaming XML reader and through botocore's
own parse alike.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from harness.moto import ZONE_OCTETS, Cloud
from reconciler.adapters.aws import membership
from reconciler.adapters.aws.clients import AwsClients
from reconciler.adapters.aws.membership import AwsMembership
from reconciler.core.model import Group


pytestmark = pytest.mark.integration

Read = Callable[[str], Group]


@pytest.fixture(params=["xml-reader", "botocore-parse"])
def read(request: pytest.FixtureRequest, cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> Read:
    """
    Reads one group without error, answers parsed by the adapter's XML reader, or (with the
    reader never hooked in) by botocore: both must give the same groups.
    """
    if request.param == "botocore-parse":
        monkeypatch.setattr(membership, "reduce_answers", lambda *_: None)
    adapter = AwsMembership(AwsClients(max_attempts=1))

    def read_one(name: str) -> Group:
        seen = adapter.read_groups([name])
        assert seen.errors == {}
        return seen.groups[name]

    return read_one


# -- zones -----------------------------------------------------------------------------------------


def test_instances_report_the_zone_of_their_subnet(cloud: Cloud, read: Read) -> None:
    """Two instances in each of three zones: each in its zone, with an address of its subnet."""
    ids = cloud.create_group("web", 6, zones={"a": 2, "b": 2, "c": 2})

    group = read("web")

    assert [i.instance_id for i in group.instances] == ids
    by_zone: dict[str, list[str]] = {}
    for instance in group.instances:
        by_zone.setdefault(instance.zone or "-", []).append(instance.private_ip or "-")
    assert sorted(by_zone) == ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
    for zone, addresses in by_zone.items():
        octet = ZONE_OCTETS[zone[-1]]
        assert sorted(addresses) == [f"127.0.{octet}.4", f"127.0.{octet}.5"]
    assert all(i.serving for i in group.instances)


def test_zones_match_what_ec2_says(cloud: Cloud, read: Read) -> None:
    """Uneven zones, and an instance added to one later: as DescribeInstances places them."""
    cloud.create_group("web", 4, zones={"a": 3, "c": 1})
    (late,) = cloud.add_instances("web", 1, zone="b")

    group = read("web")

    placed = cloud.placements("web")
    assert {i.instance_id: i.zone for i in group.instances} == {
        instance_id: where.zone for instance_id, where in placed.items()
    }
    assert placed[late].zone == "eu-west-1b"
    assert group.desired_capacity == 5


def test_a_plain_group_has_its_one_zone_and_type_and_no_capacities(
    cloud: Cloud, read: Read
) -> None:
    """A group without a mixed-instances policy: the template's type, zone a, no capacities."""
    cloud.create_group("web", 2)

    group = read("web")

    assert {(i.instance_type, i.zone) for i in group.instances} == {("t3.micro", "eu-west-1a")}
    assert group.capacities == {}


# -- instance types and WeightedCapacity -----------------------------------------------------------


def test_mixed_instances_group_gives_capacities_and_types(cloud: Cloud, read: Read) -> None:
    """
    The overrides that set a ``WeightedCapacity`` give the capacity of their type; one without
    leaves its type out. Each instance carries its own type.
    """
    ids = cloud.create_group(
        "mixed",
        4,
        zones={"a": 2, "b": 2},
        instance_types=["c5.large", "c5.4xlarge"],
        overrides={"c5.large": 1, "c5.4xlarge": 8, "m5.large": None},
    )

    group = read("mixed")

    assert group.capacities == {"c5.large": 1, "c5.4xlarge": 8}
    placed = cloud.placements("mixed")
    assert {i.instance_id: i.instance_type for i in group.instances} == {
        instance_id: placed[instance_id].instance_type for instance_id in ids
    }
    assert sorted(i.instance_type or "" for i in group.instances) == [
        "c5.4xlarge",
        "c5.4xlarge",
        "c5.large",
        "c5.large",
    ]


#: What AWS would never return as a ``WeightedCapacity`` (a whole number from 1 to 999), each on
#: the override of its own instance type.
MALFORMED = {
    "m5.large": "0",
    "m5.xlarge": "1000",
    "m5.2xlarge": "-1",
    "m5.4xlarge": "abc",
    "r5.large": "1.5",
    "r5.xlarge": " 5",
    "r5.2xlarge": "5 ",
    "r5.4xlarge": "+5",
    "c6i.large": "\u0665",  # a digit, but not an ASCII one
    "c6i.xlarge": "2" * 32,
}


def test_malformed_weighted_capacities_leave_their_overrides_out(cloud: Cloud, read: Read) -> None:
    """
    A ``WeightedCapacity`` that is not a whole number from 1 to 999 gives its type no capacity;
    the well-formed override and the read are unharmed.
    """
    cloud.create_group(
        "mixed", 2, instance_types=["c5.large"], overrides={"c5.large": 2, **MALFORMED}
    )

    group = read("mixed")

    assert group.capacities == {"c5.large": 2}
    assert all(i.serving for i in group.instances)


def test_capacity_bounds_are_kept(cloud: Cloud, read: Read) -> None:
    """1 and 999, the ends of AWS's range, and a leading zero, are capacities."""
    cloud.create_group(
        "mixed", 1, overrides={"c5.large": 1, "c5.24xlarge": 999, "c5.xlarge": "007"}
    )

    assert read("mixed").capacities == {"c5.large": 1, "c5.24xlarge": 999, "c5.xlarge": 7}


def test_a_new_instance_type_and_new_capacities_are_read_next_time(
    cloud: Cloud, read: Read
) -> None:
    """An instance resized, then the group's weights changed: each read says what is true now."""
    small, _ = cloud.create_group(
        "mixed", 2, instance_types=["c5.large"], overrides={"c5.large": 1, "c5.4xlarge": 8}
    )
    cloud.set_instance_type(small, "c5.4xlarge")

    resized = read("mixed")
    cloud.set_overrides("mixed", {"c5.large": 2, "c5.4xlarge": 4})
    reweighted = read("mixed")

    assert {i.instance_id: i.instance_type for i in resized.instances}[small] == "c5.4xlarge"
    assert resized.capacities == {"c5.large": 1, "c5.4xlarge": 8}
    assert reweighted.capacities == {"c5.large": 2, "c5.4xlarge": 4}


def test_an_instance_ec2_does_not_know_has_no_type_or_zone(cloud: Cloud, read: Read) -> None:
    """DescribeInstances did not return it: neither its type nor its zone is known."""
    unknown, known = cloud.create_group("web", 2, zones={"b": 2})
    cloud.forget_instance(unknown)

    by_id = {i.instance_id: i for i in read("web").instances}

    assert (by_id[unknown].instance_type, by_id[unknown].zone) == (None, None)
    assert (by_id[known].instance_type, by_id[known].zone) == ("t3.micro", "eu-west-1b")
