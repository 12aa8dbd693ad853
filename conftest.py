"""Hypothesis profiles shared by tests/ and properties/.

``default`` is fast enough for CI on two cores; ``audit`` is the thorough run
auditors use: ``pytest properties --hypothesis-profile=audit``.
"""

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
