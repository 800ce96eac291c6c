"""
How often the membership adapter reads lifecycle hooks (a moto server on loopback): once per
``hooks_max_age`` (the resync interval), again when an instance in a wait state appears that the
last read did not see, and again after a failed read; never on every cycle.
"""

from __future__ import annotations

import pytest

from harness.lifecycle import LAUNCH_HOOK, TERMINATE_HOOK
from harness.moto import LAUNCHING, TERMINATING, Cloud
from reconciler.adapters.aws.clients import AwsClients, CallCounts
from reconciler.adapters.aws.membership import AwsMembership
from reconciler.core.model import LifecycleHook


pytestmark = pytest.mark.integration

DESCRIBE_HOOKS = "autoscaling:DescribeLifecycleHooks"
#: The resync interval the adapter is given.
MAX_AGE = 60.0
GROUP = "web"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        """Start at 1000 s."""
        self.now = 1000.0

    def __call__(self) -> float:
        """The current time."""
        return self.now


@pytest.fixture
def clients(cloud: Cloud) -> AwsClients:
    """Clients without botocore retries, so an injected fault reaches the adapter."""
    return AwsClients(max_attempts=1)


@pytest.fixture
def clock() -> Clock:
    """The adapter's clock."""
    return Clock()


@pytest.fixture
def membership(clients: AwsClients, clock: Clock) -> AwsMembership:
    """The adapter as the controller builds it, keeping hooks for ``MAX_AGE`` seconds."""
    return AwsMembership(clients, hooks_max_age=MAX_AGE, clock=clock)


@pytest.fixture
def members(cloud: Cloud) -> list[str]:
    """Group ``web`` of three instances with a terminate hook."""
    ids = cloud.create_group(GROUP, 3)
    cloud.put_lifecycle_hook(GROUP, TERMINATE_HOOK, TERMINATING, heartbeat_timeout=45)
    return ids


def hook_reads(clients: AwsClients) -> int:
    """DescribeLifecycleHooks calls made so far."""
    return clients.calls.snapshot().get(DESCRIBE_HOOKS, CallCounts()).calls


def hooks(membership: AwsMembership) -> set[LifecycleHook]:
    """The hooks of ``web`` as one read reports them (failing on any read error)."""
    seen = membership.read_groups([GROUP], with_hooks={GROUP})
    assert seen.errors == {}
    return set(seen.groups[GROUP].hooks)


TERMINATE = LifecycleHook(TERMINATE_HOOK, TERMINATING, 45)
LAUNCH = LifecycleHook(LAUNCH_HOOK, LAUNCHING, 3600)


@pytest.mark.usefixtures("members")
def test_hooks_are_read_once_per_max_age_not_every_cycle(
    membership: AwsMembership, clients: AwsClients, clock: Clock
) -> None:
    """Ten reads within the resync interval cost one hook read; the first one after it, one."""
    for _ in range(10):
        assert hooks(membership) == {TERMINATE}
        clock.now += MAX_AGE / 20
    assert hook_reads(clients) == 1

    clock.now += MAX_AGE
    assert hooks(membership) == {TERMINATE}
    assert hook_reads(clients) == 2


def test_a_hook_added_meanwhile_shows_at_the_next_resync(
    membership: AwsMembership, clients: AwsClients, clock: Clock, cloud: Cloud, members: list[str]
) -> None:
    """The copy is kept while nothing waits; a new hook is seen once the copy is too old."""
    assert hooks(membership) == {TERMINATE}
    cloud.put_lifecycle_hook(GROUP, LAUNCH_HOOK, LAUNCHING)
    assert hooks(membership) == {TERMINATE}

    clock.now += MAX_AGE
    assert hooks(membership) == {TERMINATE, LAUNCH}
    assert hook_reads(clients) == 2


def test_a_new_instance_in_a_wait_state_reads_the_hooks_again_once(
    membership: AwsMembership, clients: AwsClients, cloud: Cloud, members: list[str]
) -> None:
    """
    A hook added, then an instance waiting on it: read at once, without waiting for the resync;
    the same instance still waiting costs no further read, another one does.
    """
    assert hooks(membership) == {TERMINATE}
    cloud.put_lifecycle_hook(GROUP, LAUNCH_HOOK, LAUNCHING)
    cloud.set_lifecycle_state(GROUP, members[0], "Pending:Wait")

    assert hooks(membership) == {TERMINATE, LAUNCH}
    assert hooks(membership) == {TERMINATE, LAUNCH}
    assert hook_reads(clients) == 2

    cloud.set_lifecycle_state(GROUP, members[1], "Terminating:Wait")
    assert hooks(membership) == {TERMINATE, LAUNCH}
    assert hook_reads(clients) == 3


def test_a_failed_hook_read_is_retried_at_the_next_read(
    membership: AwsMembership, clients: AwsClients, cloud: Cloud, members: list[str]
) -> None:
    """A refused read is that group's error now, and read again next time, within the age."""
    assert hooks(membership) == {TERMINATE}
    cloud.set_lifecycle_state(GROUP, members[0], "Terminating:Wait")
    cloud.fail("DescribeLifecycleHooks", "Throttling", 1)

    failed = membership.read_groups([GROUP], with_hooks={GROUP})
    assert "DescribeLifecycleHooks failed" in failed.errors[GROUP]
    assert hooks(membership) == {TERMINATE}
    assert hooks(membership) == {TERMINATE}
    assert hook_reads(clients) == 3


@pytest.mark.usefixtures("members")
def test_groups_not_asked_for_hooks_cost_no_read(
    membership: AwsMembership, clients: AwsClients
) -> None:
    """Without ``with_hooks`` the group comes back hookless and no hook read is made."""
    seen = membership.read_groups([GROUP])
    assert seen.groups[GROUP].hooks == ()
    assert hook_reads(clients) == 0
