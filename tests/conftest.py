"""Shared fixtures live in tests/support; this file registers them and the hypothesis profiles."""

import os

from hypothesis import settings


pytest_plugins = ["tests.support.moto", "tests.support.haproxy"]

# CI replays the same examples every run, so a red build is reproducible; locally they vary.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
