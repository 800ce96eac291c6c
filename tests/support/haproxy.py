"""
Fixtures for real HAProxy processes and real HTTP backends (``harness.haproxy``), all on loopback.

A pytest plugin, registered in ``tests/conftest.py``:

- ``haproxy_binary``: the path of the HAProxy a test runs: the ``haproxy`` found on ``PATH``, or,
  in a test marked ``@pytest.mark.haproxy_versions``, each version of ``haproxy_matrix`` in turn
  (the system's, then those of ``HAPROXY_MATRIX`` or built by ``.ci/haproxy-matrix``), with ids
  ``haproxy-2.6``, ``haproxy-3.0``... The test fails (never skips) without a system HAProxy, since
  CI installs it and a silent skip would hide the integration tests.
- ``haproxy_factory``: a ``HAProxyFactory``; ``haproxy_factory(BackendSpec("api"))`` starts a real
  HAProxy (``haproxy_binary``) in master-worker mode with an admin socket, and every process it
  started is stopped at teardown.
- ``http_backends``: an ``HTTPBackends``; ``http_backends.start("127.0.1.4", name="i-1")`` serves
  ``hello from i-1`` on a free port of that address, and every server is stopped at teardown.

Every test that uses one of them is marked ``integration``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import pytest

from harness.haproxy import (
    HAProxyBinary,
    HAProxyFactory,
    HTTPBackends,
    haproxy_matrix,
    system_haproxy,
)


_REAL_FIXTURES = frozenset({"haproxy_binary", "haproxy_factory", "http_backends"})
#: The reload command the README gives for the sidecar and the VM unit: ``reload`` on HAProxy's
#: master CLI. HAProxy 2.6 closes the connection when the master re-executes, which is what
#: ``recv`` waits for.
MASTER_CLI_RELOAD = (
    "{python} -c \"import socket; s = socket.socket(socket.AF_UNIX); s.connect('{master}'); "
    "s.sendall(b'reload\\n'); s.recv(1)\""
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a real HAProxy or real backends ``integration``."""
    for item in items:
        if _REAL_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@functools.cache
def _matrix() -> tuple[HAProxyBinary, ...]:
    """``haproxy_matrix()``, asked once per session: each binary answers ``-v`` only once."""
    return haproxy_matrix()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each test marked ``haproxy_versions`` that uses HAProxy once per version."""
    if "haproxy_binary" not in metafunc.fixturenames:
        return
    if metafunc.definition.get_closest_marker("haproxy_versions") is None:
        return
    binaries = _matrix()
    metafunc.parametrize(
        "haproxy_binary",
        [binary.path for binary in binaries],
        ids=[binary.label for binary in binaries],
        indirect=True,
    )


@pytest.fixture(name="haproxy_binary")
def _haproxy_binary(request: pytest.FixtureRequest) -> str:
    """The version's binary in a ``haproxy_versions`` test, else the ``haproxy`` on ``PATH``."""
    binary: str | None = getattr(request, "param", None) or system_haproxy()
    if binary is None:
        pytest.fail(
            "haproxy is not on PATH; install HAProxy 2.6 (Debian/Ubuntu: apt-get install "
            "haproxy) to run the integration tests"
        )
    return binary


@pytest.fixture(name="haproxy_factory")
def _haproxy_factory(haproxy_binary: str) -> Iterator[HAProxyFactory]:
    """Start real HAProxy processes; all of them are stopped at teardown."""
    factory = HAProxyFactory(haproxy_binary)
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
