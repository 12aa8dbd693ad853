"""Hypothesis profiles shared by tests/ and properties/.

``default`` is fast enough for CI on two cores; ``audit`` is the thorough run
auditors use: ``pytest properties --hypothesis-profile=audit``.  Also the session's Ray instance
(fixture ``ray_instance``).
"""

import os
from collections.abc import Iterator
from types import ModuleType

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.register_profile(
    "audit",
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("default")


@pytest.fixture(scope="session", autouse=True)
def _sb3_log_folder(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Stable-Baselines3 models the tests train log under the session's temporary directory, not
    into a new ``<tempdir>/SB3-<time>`` folder each (SB3's default)."""
    os.environ.setdefault("SB3_LOGDIR", str(tmp_path_factory.mktemp("sb3-logs")))


@pytest.fixture(scope="session")
def ray_instance() -> Iterator[ModuleType]:
    """One local Ray instance for the session's tests of ``aux_backend="ray"`` (skipped without Ray):
    four logical CPUs, no dashboard, quiet; populations attach to it and leave it running."""
    ray = pytest.importorskip("ray", reason="the [distributed] extra (Ray) is not installed")
    if not ray.is_initialized():
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()
