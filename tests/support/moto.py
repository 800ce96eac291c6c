"""
Fixtures for AWS played by a real moto server on loopback (``harness.moto``).

A pytest plugin, registered in ``tests/conftest.py``:

- ``moto_endpoint`` (session): one moto server on ``127.0.0.1`` with a free port, yielding
  ``http://127.0.0.1:<port>``.
- ``cloud`` (function): wipes moto's state, points the process's AWS environment at the server
  (``AWS_ENDPOINT_URL``, dummy credentials, region ``eu-west-1``; every other ``AWS_*`` variable
  removed) and yields a ``Cloud``; at teardown every fault it injected is removed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from harness.moto import Cloud, moto_environment, moto_server


def pytest_configure(config: pytest.Config) -> None:
    """Silence moto's warning about injected codes that its error model does not list."""
    # moto warns from its server thread at every such fault. Harmless: the client still gets the
    # code and status asked for. (A filter set at import time would not outlive plugin loading.)
    config.addinivalue_line(
        "filterwarnings",
        r"ignore:Exception\(\w+\) with code \S+ does not match an error shape:UserWarning",
    )


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto server on 127.0.0.1 for the whole session; yields its base URL."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def _session_cloud(moto_endpoint: str) -> Cloud:
    """One ``Cloud`` for the session: building its four boto3 clients takes a few tenths of a s."""
    return Cloud(moto_endpoint)


@pytest.fixture
def cloud(
    moto_endpoint: str, _session_cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Cloud]:
    """An empty moto account that every boto3 client made in the test talks to."""
    # Nothing from the developer's own AWS setup (profile, endpoints, keys) may leak in.
    for var in [v for v in os.environ if v.startswith("AWS_")]:
        monkeypatch.delenv(var)
    for var, value in moto_environment(moto_endpoint).items():
        monkeypatch.setenv(var, value)
    _session_cloud.reset()
    try:
        yield _session_cloud
    finally:
        _session_cloud.close()
