"""Reading Auto Scaling groups and their instances from AWS (a moto server on loopback)."""

from __future__ import annotations

import socket
from typing import cast

import pytest
from botocore.retries.standard import ExponentialBackoff

from harness.moto import UNIMPLEMENTED, Cloud
from reconciler.adapters.aws.clients import AwsClients, CallCounts
from reconciler.adapters.aws.membership import INSTANCE_IDS_PER_CALL, AwsMembership
from reconciler.core.errors import ConfigError
from reconciler.core.model import Instance


pytestmark = pytest.mark.integration

DESCRIBE_GROUPS = "autoscaling:DescribeAutoScalingGroups"
DESCRIBE_INSTANCES = "ec2:DescribeInstances"


@pytest.fixture
def clients(cloud: Cloud) -> AwsClients:
    """Clients without botocore retries, so each injected fault reaches the adapter."""
    return AwsClients(max_attempts=1)


@pytest.fixture
def retrying_clients(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> AwsClients:
    """
    Clients as the controller builds them, botocore's retries included, whose waits between
    attempts are cut to nothing: up to 3 s per throttled call would slow the suite for no gain.
    """
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda *_: 0.0)
    return AwsClients()


def membership(
    clients: AwsClients, *, instance_ids_per_call: int = INSTANCE_IDS_PER_CALL
) -> AwsMembership:
    """The adapter, describing at most *instance_ids_per_call* ids per call."""
    return AwsMembership(clients, instance_ids_per_call=instance_ids_per_call)


def counts(clients: AwsClients, action: str) -> CallCounts:
    """What the call counter saw of *action* so far."""
    return clients.calls.snapshot().get(action, CallCounts())


# -- reading ---------------------------------------------------------------------------------------


def test_reads_in_service_instances_with_their_loopback_addresses(
    cloud: Cloud, clients: AwsClients
) -> None:
    """Every member comes back InService, Healthy and running, with its private IP."""
    ids = cloud.create_group("web", 3)

    seen = membership(clients).read_groups(["web"])

    assert seen.errors == {}
    group = seen.groups["web"]
    assert group.desired_capacity == 3
    assert [i.instance_id for i in group.instances] == ids
    assert {i.instance_id: i.private_ip for i in group.instances} == cloud.serving("web")
    assert all(i.private_ip and i.private_ip.startswith("127.0.1.") for i in group.instances)
    assert {(i.lifecycle_state, i.health_status, i.ec2_state) for i in group.instances} == {
        ("InService", "Healthy", "running")
    }


def test_reads_more_than_fifty_groups_fifty_names_per_call(
    cloud: Cloud, clients: AwsClients
) -> None:
    """120 names take three DescribeAutoScalingGroups calls and all come back."""
    names = [f"group-{n:03d}" for n in range(120)]
    for name in names:
        cloud.create_group(name, 0)

    seen = membership(clients).read_groups(names)

    assert sorted(seen.groups) == names
    assert counts(clients, DESCRIBE_GROUPS).calls == 3


def test_follows_next_token_when_a_page_is_short(cloud: Cloud, clients: AwsClients) -> None:
    """A page with fewer groups than asked for is not the last one: NextToken decides."""
    names = [f"group-{n:02d}" for n in range(20)]
    for name in names:
        cloud.create_group(name, 0)
    cloud.limit_group_pages(7)

    seen = membership(clients).read_groups(names)

    assert sorted(seen.groups) == names
    assert counts(clients, DESCRIBE_GROUPS).calls == 3


def test_follows_next_token_across_describe_instances_pages(
    cloud: Cloud, clients: AwsClients
) -> None:
    """moto pages DescribeInstances by 100 reservations; each group launch is one."""
    names = [f"group-{n:03d}" for n in range(101)]
    for name in names:
        cloud.create_group(name, 1)

    seen = membership(clients).read_groups(names)

    assert len(seen.groups) == 101
    assert all(g.instances[0].private_ip for g in seen.groups.values())
    assert counts(clients, DESCRIBE_INSTANCES).calls == 2


def test_describes_instances_in_chunks_of_the_configured_size(
    cloud: Cloud, clients: AwsClients
) -> None:
    """250 instances with 100 ids per call take three DescribeInstances calls."""
    cloud.create_group("big", 250, max_size=250)

    seen = membership(clients, instance_ids_per_call=100).read_groups(["big"])

    assert len(seen.groups["big"].instances) == 250
    assert all(i.serving for i in seen.groups["big"].instances)
    assert counts(clients, DESCRIBE_INSTANCES).calls == 3


def test_unknown_group_is_absent_and_not_an_error(cloud: Cloud, clients: AwsClients) -> None:
    """A name AWS does not know is in neither groups nor errors: the planner calls it missing."""
    cloud.create_group("web", 1)

    seen = membership(clients).read_groups(["web", "ghost"])

    assert set(seen.groups) == {"web"}
    assert seen.errors == {}


def test_empty_group_needs_no_describe_instances_call(cloud: Cloud, clients: AwsClients) -> None:
    """A group scaled to zero is read with one call; DescribeInstances is never asked about []."""
    cloud.create_group("idle", 0)

    seen = membership(clients).read_groups(["idle"])

    assert seen.groups["idle"].desired_capacity == 0
    assert seen.groups["idle"].instances == ()
    assert counts(clients, DESCRIBE_INSTANCES).calls == 0
    assert counts(clients, DESCRIBE_GROUPS).calls == 1


def test_no_names_need_no_call(cloud: Cloud, clients: AwsClients) -> None:
    """Reading nothing asks AWS nothing."""
    seen = membership(clients).read_groups([])

    assert (seen.groups, seen.errors) == ({}, {})
    assert clients.calls.snapshot() == {}


@pytest.mark.parametrize("state", ["Pending:Wait", "Terminating:Wait", "Standby"])
def test_lifecycle_states_come_through(cloud: Cloud, clients: AwsClients, state: str) -> None:
    """A member in a wait or standby state is returned with that state, not left out."""
    held, other = cloud.create_group("web", 2)
    cloud.set_lifecycle_state("web", held, state)

    seen = membership(clients).read_groups(["web"])

    states = {i.instance_id: i.lifecycle_state for i in seen.groups["web"].instances}
    assert states == {held: state, other: "InService"}


def test_health_status_comes_through(cloud: Cloud, clients: AwsClients) -> None:
    """An Unhealthy member is returned as Unhealthy (and so does not serve)."""
    (sick,) = cloud.create_group("web", 1)
    cloud.set_health(sick, "Unhealthy")

    (instance,) = membership(clients).read_groups(["web"]).groups["web"].instances

    assert instance.health_status == "Unhealthy"
    assert not instance.serving


def test_terminated_instance_comes_through_with_its_ec2_state(
    cloud: Cloud, clients: AwsClients
) -> None:
    """A member whose machine is already terminated carries EC2's word for it."""
    (dead,) = cloud.create_group("web", 1)
    cloud.set_ec2_state(dead, "terminated")

    (instance,) = membership(clients).read_groups(["web"]).groups["web"].instances

    assert instance.ec2_state == "terminated"
    assert instance.gone


def test_instance_unknown_to_ec2_is_read_through_the_filter(
    cloud: Cloud, clients: AwsClients
) -> None:
    """An id EC2 does not know yet fails the id query; the filter query reads the others."""
    ids = cloud.create_group("web", 3)
    cloud.forget_instance(ids[0])

    seen = membership(clients).read_groups(["web"])

    assert seen.errors == {}
    unknown, *known = seen.groups["web"].instances
    assert unknown == Instance(ids[0], "InService", "Healthy", ec2_state=None, private_ip=None)
    assert all(i.serving for i in known)
    assert counts(clients, DESCRIBE_INSTANCES) == CallCounts(calls=2, errors=1)


def test_instance_ec2_knows_again_is_described_again(cloud: Cloud, clients: AwsClients) -> None:
    """Once EC2 catches up, the instance comes back with its EC2 state and address."""
    ids = cloud.create_group("web", 2)
    cloud.forget_instance(ids[0])
    assert membership(clients).read_groups(["web"]).groups["web"].instances[0].ec2_state is None
    cloud.remember_instance(ids[0])

    seen = membership(clients).read_groups(["web"])

    assert all(i.serving for i in seen.groups["web"].instances)


def test_spot_instances_are_told_from_on_demand_ones(cloud: Cloud, clients: AwsClients) -> None:
    """DescribeInstances' ``InstanceLifecycle`` says which members are Spot instances."""
    on_demand = cloud.create_group("web", 2)
    spot = cloud.attach_spot_instance("web")

    seen = membership(clients).read_groups(["web"])

    flags = {i.instance_id: i.spot for i in seen.groups["web"].instances}
    assert flags == {**dict.fromkeys(on_demand, False), spot: True}
    assert all(i.serving for i in seen.groups["web"].instances)


def test_malformed_address_comes_through_as_returned(cloud: Cloud, clients: AwsClients) -> None:
    """
    The adapter passes AWS's words on untouched; the model, whatever feeds it, refuses them:
    the instance does not serve, and says why.
    """
    odd, fine = cloud.create_group("web", 2)
    cloud.misreport_address(odd, "127.0.1.4\nset server api/backup state drain")

    instances = membership(clients).read_groups(["web"]).groups["web"].instances

    by_id = {i.instance_id: i for i in instances}
    assert by_id[odd].private_ip == "127.0.1.4\nset server api/backup state drain"
    assert by_id[odd].malformed == (
        "malformed private IPv4 address '127.0.1.4\\nset server api/backup state drain'"
    )
    assert not by_id[odd].serving
    assert by_id[fine].serving


def test_reads_what_botocore_itself_makes_of_the_same_answers(
    cloud: Cloud, clients: AwsClients
) -> None:
    """
    The adapter reads both answers straight from their XML; what it keeps is what botocore's
    own parse (a plain boto3 client's) says, field for field, whatever the states, zones,
    instance types and capacities.
    """
    ids = cloud.create_group(
        "web",
        4,
        zones={"a": 2, "b": 2},
        instance_types=["c5.large", "c5.4xlarge"],
        overrides={"c5.large": 1, "c5.4xlarge": 8, "m5.large": None},
    )
    spot = cloud.attach_spot_instance("web")
    cloud.set_lifecycle_state("web", ids[0], "Pending:Wait")
    cloud.set_health(ids[1], "Unhealthy")
    cloud.set_ec2_state(ids[2], "stopped")

    seen = membership(clients).read_groups(["web"])

    (group,) = cloud.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["web"])[
        "AutoScalingGroups"
    ]
    answer = cloud.ec2.describe_instances(InstanceIds=[*ids, spot])
    ec2 = {i["InstanceId"]: i for r in answer["Reservations"] for i in r["Instances"]}
    expected = [
        Instance(
            m["InstanceId"],
            m["LifecycleState"],
            m["HealthStatus"],
            ec2_state=ec2[m["InstanceId"]]["State"]["Name"],
            private_ip=ec2[m["InstanceId"]]["PrivateIpAddress"],
            spot=ec2[m["InstanceId"]].get("InstanceLifecycle") == "spot",
            instance_type=ec2[m["InstanceId"]]["InstanceType"],
            zone=ec2[m["InstanceId"]]["Placement"]["AvailabilityZone"],
        )
        for m in group["Instances"]
    ]
    overrides = group["MixedInstancesPolicy"]["LaunchTemplate"]["Overrides"]
    assert seen.groups["web"].capacities == {
        o["InstanceType"]: int(o["WeightedCapacity"]) for o in overrides if "WeightedCapacity" in o
    }
    assert seen.groups["web"].desired_capacity == group["DesiredCapacity"] == 5
    assert list(seen.groups["web"].instances) == sorted(expected, key=lambda i: i.instance_id)
    assert {i.spot for i in expected} == {True, False}
    assert {i.zone for i in expected} == {"eu-west-1a", "eu-west-1b"}
    assert {i.instance_type for i in expected} == {"c5.large", "c5.4xlarge", "t3.micro"}


def test_adapters_sharing_clients_each_read_everything(cloud: Cloud, clients: AwsClients) -> None:
    """Two adapters on the same clients (one reduction each call, not two) both read it all."""
    cloud.create_group("web", 3)
    first, second = membership(clients), membership(clients)

    for adapter in (first, second, first):
        instances = adapter.read_groups(["web"]).groups["web"].instances
        assert {i.instance_id: i.private_ip for i in instances} == cloud.serving("web")


def test_filter_fallback_sends_at_most_200_ids_per_call(cloud: Cloud, clients: AwsClients) -> None:
    """250 ids fall back to two filter calls, as a filter takes at most 200 values."""
    ids = cloud.create_group("big", 250, max_size=250)
    cloud.forget_instance(ids[-1])

    seen = membership(clients).read_groups(["big"])

    described = [i for i in seen.groups["big"].instances if i.ec2_state == "running"]
    assert len(described) == 249
    assert counts(clients, DESCRIBE_INSTANCES) == CallCounts(calls=3, errors=1)


# -- failures --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "code", "status"),
    [
        pytest.param("DescribeAutoScalingGroups", "Throttling", 400, id="asg-throttling"),
        pytest.param("DescribeInstances", "RequestLimitExceeded", 503, id="ec2-throttling"),
        pytest.param("DescribeInstances", "EC2ThrottledException", 400, id="ec2-throttled"),
        pytest.param("DescribeAutoScalingGroups", "InternalFailure", 500, id="asg-5xx"),
    ],
)
def test_transient_failures_are_retried_within_the_call(
    cloud: Cloud, retrying_clients: AwsClients, operation: str, code: str, status: int
) -> None:
    """Two transient failures in a row: botocore's standard mode retries, the read succeeds."""
    cloud.create_group("web", 2)
    cloud.fail(operation, code, 2, status=status)

    seen = membership(retrying_clients).read_groups(["web"])

    assert seen.errors == {}
    assert all(i.serving for i in seen.groups["web"].instances)
    service = "autoscaling" if operation == "DescribeAutoScalingGroups" else "ec2"
    assert counts(retrying_clients, f"{service}:{operation}") == CallCounts(calls=1, retries=2)


def test_persistent_throttling_gives_up_after_the_attempt_budget(
    cloud: Cloud, retrying_clients: AwsClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    Throttling that outlasts botocore's three attempts becomes a per-group error: the adapter
    adds no retry of its own, and the environment cannot raise the bound.
    """
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "10")
    monkeypatch.setenv("AWS_RETRY_MODE", "legacy")
    cloud.create_group("web", 1)
    cloud.fail("DescribeAutoScalingGroups", "Throttling", 100)

    seen = membership(retrying_clients).read_groups(["web"])

    assert seen.errors["web"].startswith("DescribeAutoScalingGroups failed (Throttling: ")
    assert "AWS kept throttling" in seen.errors["web"]
    assert counts(retrying_clients, DESCRIBE_GROUPS) == CallCounts(calls=1, retries=2, errors=1)


@pytest.mark.parametrize(
    ("code", "status", "failures", "advice"),
    [
        pytest.param("RequestLimitExceeded", 503, 3, "AWS kept throttling", id="throttled"),
        # botocore retries no answer it cannot parse, such as a proxy's or emulator's HTML page.
        pytest.param(UNIMPLEMENTED, 500, 1, "check AWS_ENDPOINT_URL", id="html-page"),
    ],
)
def test_the_next_read_recovers_what_the_call_retries_did_not(
    cloud: Cloud, retrying_clients: AwsClients, code: str, status: int, failures: int, advice: str
) -> None:
    """
    A call that still fails after botocore's retries fails its groups for this read only: the
    cycle-level retry reads again, and once AWS answers the group comes back whole.
    """
    cloud.create_group("web", 2)
    cloud.fail("DescribeInstances", code, failures, status=status)
    reader = membership(retrying_clients)

    failed = reader.read_groups(["web"])
    seen = reader.read_groups(["web"])

    assert advice in failed.errors["web"]
    assert seen.errors == {}
    assert all(i.serving for i in seen.groups["web"].instances)


def test_denied_group_read_is_a_per_group_error_naming_the_permission(
    cloud: Cloud, clients: AwsClients
) -> None:
    """AccessDenied is not retried; every group of the call gets an error saying what to allow."""
    cloud.create_group("web", 1)
    cloud.fail("DescribeAutoScalingGroups", "AccessDenied", 1)

    seen = membership(clients).read_groups(["web", "api"])

    expected = (
        "DescribeAutoScalingGroups failed (AccessDenied: injected by the test): "
        "allow autoscaling:DescribeAutoScalingGroups for this identity"
    )
    assert seen.errors == {"web": expected, "api": expected}
    assert seen.groups == {}
    assert counts(clients, DESCRIBE_GROUPS).calls == 1
    assert counts(clients, DESCRIBE_INSTANCES).calls == 0


def test_failed_instance_chunk_marks_only_the_groups_in_it(
    cloud: Cloud, clients: AwsClients
) -> None:
    """A DescribeInstances chunk that fails takes down its groups only; the rest are read."""
    cloud.create_group("web", 2)
    cloud.create_group("api", 2)
    cloud.fail("DescribeInstances", "UnauthorizedOperation", 1)

    seen = membership(clients, instance_ids_per_call=2).read_groups(["web", "api"])

    assert seen.errors == {
        "web": "DescribeInstances failed (UnauthorizedOperation: injected by the test): "
        "allow ec2:DescribeInstances for this identity"
    }
    assert set(seen.groups) == {"api"}


def test_html_error_page_is_a_per_group_error(cloud: Cloud, clients: AwsClients) -> None:
    """An answer that is not AWS's (moto's page for an unimplemented call) names the endpoint."""
    cloud.create_group("web", 1)
    cloud.fail("DescribeInstances", UNIMPLEMENTED, 100)

    seen = membership(clients).read_groups(["web"])

    assert seen.errors["web"].startswith("DescribeInstances failed (ResponseParserError: ")
    assert seen.errors["web"].endswith("check AWS_ENDPOINT_URL and any proxy")


def test_unreachable_endpoint_is_a_per_group_error(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No answer at all (connection refused) is reported per group, not raised."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed}")

    seen = membership(AwsClients(max_attempts=1)).read_groups(["web", "api"])

    assert set(seen.errors) == {"web", "api"}
    assert "EndpointConnectionError" in seen.errors["web"]
    assert seen.errors["web"].endswith("check the network path, proxy and AWS_ENDPOINT_URL")


# -- clients ---------------------------------------------------------------------------------------


def test_clients_take_the_endpoint_from_aws_endpoint_url(cloud: Cloud) -> None:
    """boto3 itself honours AWS_ENDPOINT_URL; the factory adds no endpoint setting of its own."""
    clients = AwsClients()

    assert clients.client("ec2").meta.endpoint_url == cloud.endpoint
    assert clients.client("sqs").meta.endpoint_url == cloud.endpoint


@pytest.mark.parametrize(
    ("configured", "aws_region", "expected"),
    [
        pytest.param("us-east-2", "eu-central-1", "us-east-2", id="setting-wins"),
        pytest.param(None, "eu-central-1", "eu-central-1", id="aws-region-next"),
        pytest.param(None, None, "eu-west-1", id="aws-default-region-last"),
    ],
)
def test_region_comes_from_the_setting_then_aws_region_then_the_chain(
    cloud: Cloud,
    monkeypatch: pytest.MonkeyPatch,
    configured: str | None,
    aws_region: str | None,
    expected: str,
) -> None:
    """``[aws] region`` beats AWS_REGION, which beats AWS_DEFAULT_REGION."""
    monkeypatch.delenv("AWS_REGION")
    if aws_region:
        monkeypatch.setenv("AWS_REGION", aws_region)

    clients = AwsClients(configured)

    assert clients.region == expected
    assert clients.client("autoscaling").meta.region_name == expected


def test_missing_region_is_a_config_error_saying_what_to_set(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no region anywhere, the error tells the user which two places to set one."""
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")

    with pytest.raises(ConfigError, match=r"set \[aws\] region or AWS_REGION"):
        AwsClients()


def test_each_call_is_counted_once(cloud: Cloud, clients: AwsClients) -> None:
    """Asking for a service's client twice gives the same client, so hooks are not doubled."""
    assert clients.client("ec2") is clients.client("ec2")

    clients.client("ec2").describe_instances()

    assert counts(clients, DESCRIBE_INSTANCES) == CallCounts(calls=1)


def test_an_answer_the_reader_cannot_read_is_left_to_botocore(clients: AwsClients) -> None:
    """
    A DesiredCapacity that is no number (or a body that is no XML) is handed to botocore's own
    parser untouched, which raises what it always raises for it: the reader never makes up
    an answer, and never fails the read with an error of its own.
    """
    autoscaling = clients.client("autoscaling")
    AwsMembership(clients)
    body = (
        b'<DescribeAutoScalingGroupsResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/">'
        b"<DescribeAutoScalingGroupsResult><AutoScalingGroups><member>"
        b"<AutoScalingGroupName>web</AutoScalingGroupName><DesiredCapacity>two</DesiredCapacity>"
        b"</member></AutoScalingGroups></DescribeAutoScalingGroupsResult>"
        b"</DescribeAutoScalingGroupsResponse>"
    )

    def reduced(page: bytes) -> tuple[bytes, dict[str, object]]:
        response = {"status_code": 200, "body": page, "headers": {}}
        customized: dict[str, object] = {}
        autoscaling.meta.events.emit(
            "before-parse.auto-scaling.DescribeAutoScalingGroups",
            operation_model=autoscaling.meta.service_model.operation_model(
                "DescribeAutoScalingGroups"
            ),
            response_dict=response,
            customized_response_dict=customized,
        )
        return cast("bytes", response["body"]), customized

    # The reader does take a readable page, so the event reaches it.
    _, readable = reduced(body.replace(b">two<", b">2<"))
    assert readable == {
        "AutoScalingGroups": [{"AutoScalingGroupName": "web", "DesiredCapacity": 2}]
    }
    for unreadable in (body, b"<not xml"):
        assert reduced(unreadable) == (unreadable, {})
