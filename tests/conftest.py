"""Test-wide hygiene: no test may reach a real AWS account or depend on the developer's shell."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

# No timing checks in the suite: a busy machine makes them fail without any bug (input generation
# "too slow", a deadline missed). Properties are judged by what they find, not by how fast.
settings.register_profile("shelfstream", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("shelfstream")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `serial` run one at a time, on one pytest-xdist worker (`--dist loadgroup`, as the
    Makefile runs it), beside the parallel rest; without xdist the group changes nothing."""
    for item in items:
        if item.get_closest_marker("serial") is not None:
            item.add_marker(pytest.mark.xdist_group("serial"))


@pytest.fixture(scope="session", autouse=True)
def isolated_aws_env() -> Iterator[None]:
    """Drop every AWS/shelfstream setting inherited from the shell; tests that need AWS set their own.

    The instance-metadata probe is disabled too, so looking for credentials costs nothing.
    """
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith(("AWS_", "SHELFSTREAM_")):
                mp.delenv(key)
        mp.setenv("AWS_CONFIG_FILE", os.devnull)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """`shelfstream.cli.main()` points the root logger at the running test's captured stderr; give the
    next test its own."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
