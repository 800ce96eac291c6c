"""
Fixtures for real HAProxy processes and real HTTP backends (``harness.haproxy``), all on loopback.

A pytest plugin, registered in ``tests/conftest.py``:

- ``haproxy_bin``: the ``haproxy`` found on ``PATH``; the test fails (never skips) without it, since
  CI installs it and a silent skip would hide the integration tests.
- ``haproxy_factory``: a ``HAProxyFactory``; ``haproxy_factory(BackendSpec("api"))`` starts a real
  HAProxy in master-worker mode with an admin socket, and every process it started is stopped at
  teardown.
- ``http_backends``: an ``HTTPBackends``; ``http_backends.start("127.0.1.4", name="i-1")`` serves
  ``hello from i-1`` on a free port of that address, and every server is stopped at teardown.

Every test that uses one of them is marked ``integration``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from harness.haproxy import HAProxyFactory, HTTPBackends


_REAL_FIXTURES = frozenset({"haproxy_bin", "haproxy_factory", "http_backends"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a real HAProxy or real backends ``integration``."""
    for item in items:
        if _REAL_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(name="haproxy_bin")
def _haproxy_bin() -> str:
    """The ``haproxy`` executable on ``PATH``."""
    binary = shutil.which("haproxy")
    if binary is None:
        pytest.fail(
            "haproxy is not on PATH; install HAProxy 2.6 (Debian/Ubuntu: apt-get install "
            "haproxy) to run the integration tests"
        )
    return binary


@pytest.fixture(name="haproxy_factory")
def _haproxy_factory(haproxy_bin: str) -> Iterator[HAProxyFactory]:
    """Start real HAProxy processes; all of them are stopped at teardown."""
    factory = HAProxyFactory(haproxy_bin)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture(name="http_backends")
def _http_backends() -> Iterator[HTTPBackends]:
    """Start HTTP servers on loopback addresses; all of them are stopped at teardown."""
    backends = HTTPBackends()
    try:
        yield backends
    finally:
        backends.stop_all()
