"""The differential isolation audit of users' own training code (needs ``amal_verified[audit]``).

>>> from amal_verified.audit import check_noninterference
>>> result = check_noninterference(train, primary, aux)   # train(primary, aux) -> world model
>>> result.ok, result.variant, result.differences, result.seconds

``assert_noninterference`` raises :class:`Interference` (an ``AssertionError``) with a readable
diff, for tests; the pytest plugin's ``amal_audit`` fixture calls it; ``amal audit module:function``
runs it from the command line.
"""

from __future__ import annotations

try:
    import hypothesis  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "amal_verified.audit generates auxiliary variants with Hypothesis: pip install 'amal_verified[audit]'"
    ) from exc

from amal_verified.audit.comparison import Difference, compare, snapshot
from amal_verified.audit.noninterference import (
    assert_noninterference,
    check_noninterference,
    reset_global_rngs,
)
from amal_verified.audit.result import AuditResult, Interference, NondeterministicTarget
from amal_verified.audit.targets import EXAMPLE_INPUTS, Target, TargetError, load_target
from amal_verified.audit.variants import Variant, aux_variants

__all__ = [
    "EXAMPLE_INPUTS",
    "AuditResult",
    "Difference",
    "Interference",
    "NondeterministicTarget",
    "Target",
    "TargetError",
    "Variant",
    "assert_noninterference",
    "aux_variants",
    "check_noninterference",
    "compare",
    "load_target",
    "reset_global_rngs",
    "snapshot",
]
