"""Theorem 1 against a training function: yours with ``--amal-target``, else the built-in example.

    pytest properties/ --amal-target=my_package.training:train
    pytest properties/ --amal-target=path/to/train.py:train

``train(primary, aux)`` trains from scratch and returns the world model (an ``nn.Module`` -- its
parameters and buffers are compared -- or a mapping of tensors); its module defines
``amal_example_inputs()`` returning one ``(primary, aux)`` pair.  :mod:`amal_verified.audit`
generates auxiliary inputs from the example's (values 0, ±1e38, NaN, ±Inf, noise; other row counts;
other list lengths), resets the global ``random``/NumPy/torch generators identically before every
call, and requires the world model to come out bit for bit the same; a variant that makes training
raise counts as interference.  The number of variants follows the Hypothesis profile (``default``:
25, ``audit``: 1000).

Without ``--amal-target`` the audited function is ``examples/audit_target_example.py:train`` (a gated
world model beside a value head that reads auxiliary data), which must pass; its two leaky versions
(auxiliary rows in the world model's batch; a global random generator whose draws depend on the
number of auxiliary rows) must fail, as must a trainer that refuses non-finite auxiliary data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from amal_verified.audit import NondeterministicTarget, Target, check_noninterference, load_target

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "audit_target_example.py"


def test_world_model_of_the_target_ignores_auxiliary_inputs(amal_target: Target, evidence: Any) -> None:
    result = check_noninterference(
        amal_target.train, amal_target.primary, amal_target.aux, name=amal_target.name
    )
    evidence.record(
        "audit",
        {
            "target": amal_target.name,
            "variants": result.examples,
            "variants_per_second": result.examples_per_second,
        },
    )
    if not result.ok:
        evidence.record("counterexample", {"target": amal_target.name, "interference": str(result)})
    assert result.ok, str(result)


@pytest.mark.parametrize("leak", ["train_leaking_batch", "train_leaking_rng"])
def test_leaky_example_trainers_fail_the_audit(leak: str) -> None:
    target = load_target(f"{EXAMPLE}:{leak}")
    result = check_noninterference(target.train, target.primary, target.aux, max_examples=10)
    assert not result.ok and result.raised is None
    assert result.variant is not None and result.differences
    assert "depends on the auxiliary data" in str(result)


def test_a_trainer_that_refuses_non_finite_aux_data_fails_the_audit() -> None:
    target = load_target(f"{EXAMPLE}:train")

    def refusing(primary: Any, aux: Any) -> Any:
        if any(not torch.isfinite(a["obs"]).all() for a in aux):
            raise ValueError("non-finite auxiliary observations")
        return target.train(primary, aux)

    result = check_noninterference(refusing, target.primary, target.aux, max_examples=25)
    assert not result.ok
    assert result.raised == "ValueError: non-finite auxiliary observations"
    assert result.variant is not None
    assert any("nan" in c or "inf" in c for c in result.variant.changes), result.variant.changes
    assert "auxiliary data stopped world-model training" in str(result)


def test_a_nondeterministic_target_is_reported_as_such() -> None:
    target = load_target(f"{EXAMPLE}:train")
    draws = iter(range(1_000))

    def drifting(primary: Any, aux: Any) -> dict[str, torch.Tensor]:
        return {"w": torch.tensor([float(next(draws))])}

    with pytest.raises(NondeterministicTarget, match="different world model when run twice"):
        check_noninterference(drifting, target.primary, target.aux)
