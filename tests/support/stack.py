"""
Fixtures for a whole deployment on loopback (``harness.stack``).

A pytest plugin, registered in ``tests/conftest.py``: ``stack`` (two instances, nothing reconciled
yet), ``converged_stack`` (three, after a first ``reconcile --once``), ``daemons`` (controllers in
child processes, killed at teardown) and ``queue`` (the trigger queue). A module that needs another
stack defines its own ``stack`` fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.haproxy import HAProxyFactory, HTTPBackends
from harness.moto import Cloud
from harness.stack import Daemons, Notifications, Stack, build_stack


@pytest.fixture(name="stack")
def _stack(
    cloud: Cloud, haproxy_factory: HAProxyFactory, http_backends: HTTPBackends, tmp_path: Path
) -> Stack:
    """Two InService instances serving, HAProxy with only a hand-written backup server."""
    return build_stack(cloud, haproxy_factory, http_backends, tmp_path)


@pytest.fixture(name="converged_stack")
def _converged_stack(
    cloud: Cloud, haproxy_factory: HAProxyFactory, http_backends: HTTPBackends, tmp_path: Path
) -> Stack:
    """Three InService instances, each in the file and served by HAProxy after a first run."""
    stack = build_stack(cloud, haproxy_factory, http_backends, tmp_path, size=3)
    assert stack.reconcile().returncode == 0
    return stack


@pytest.fixture(name="daemons")
def _daemons(tmp_path: Path) -> Iterator[Daemons]:
    """Start controllers; any still running at teardown is killed."""
    daemons = Daemons(tmp_path)
    yield daemons
    daemons.stop_all()


@pytest.fixture(name="queue")
def _queue(cloud: Cloud) -> Notifications:
    """The trigger queue (visibility timeout 2 s), subscribed to the groups' SNS topic."""
    return Notifications(cloud)
