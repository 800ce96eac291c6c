"""Shared fixtures live in tests/support; this file registers them and the hypothesis profiles."""

import logging
import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from reconciler.logs import LOGGER_NAME


pytest_plugins = ["tests.support.moto", "tests.support.haproxy", "tests.support.stack"]

# CI replays the same examples every run, so a red build is reproducible; locally they vary.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(autouse=True)
def _isolated_logger() -> Iterator[None]:
    """Tests that run the CLI in-process reconfigure the package logger; undo it after each."""
    logger = logging.getLogger(LOGGER_NAME)
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved
