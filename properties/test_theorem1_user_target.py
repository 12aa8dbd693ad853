"""Theorem 1 against a training function: yours with ``--amal-target``, else the built-in example.

    pytest properties/ --amal-target=my_package.training:train
    pytest properties/ --amal-target=path/to/train.py:train

``train(primary, aux)`` trains from scratch and returns the world model (an ``nn.Module`` -- its
parameters and buffers are compared -- or a mapping of tensors); its module defines
``amal_example_inputs()`` returning one ``(primary, aux)`` pair.  Hypothesis generates auxiliary
inputs from the example's (values 0, ±1e38, NaN, ±Inf, noise; other row counts; other list lengths),
the global ``random``/NumPy/torch generators are reset identically before every call, and the world
model must come out bit for bit the same; a variant that makes training raise counts as interference.
The number of variants follows the Hypothesis profile (``default``: 25, ``audit``: 1000).  The audit
itself is ``properties/_amal_audit.py`` (issue 5 moves it into the library as
``amal_verified.audit.check_noninterference``).

Without ``--amal-target`` the audited function is ``examples/audit_target_example.py:train`` (a gated
world model beside a value head that reads auxiliary data), which must pass; its two leaky versions
(auxiliary rows in the world model's batch; a global random generator whose draws depend on the
number of auxiliary rows) must fail, and a missing or invalid target must be a usage error.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from _amal_audit import (
    Interference,
    NondeterministicTarget,
    TargetError,
    Variant,
    aux_variants,
    check_noninterference,
    first_difference,
    load_target,
    snapshot,
)
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "audit_target_example.py"


def test_world_model_of_the_target_ignores_auxiliary_inputs(amal_target: Any, evidence: Any) -> None:
    try:
        check_noninterference(amal_target.train, amal_target.primary, amal_target.aux)
    except Interference as exc:
        evidence.record("counterexample", {"target": amal_target.name, "interference": str(exc)})
        raise


@pytest.mark.parametrize("leak", ["train_leaking_batch", "train_leaking_rng"])
def test_leaky_example_trainers_fail_the_audit(leak: str) -> None:
    target = load_target(f"{EXAMPLE}:{leak}")
    with pytest.raises(Interference, match="depends on the auxiliary data"):
        check_noninterference(target.train, target.primary, target.aux, max_examples=10)


def test_a_trainer_that_refuses_non_finite_aux_data_fails_the_audit() -> None:
    target = load_target(f"{EXAMPLE}:train")

    def refusing(primary: Any, aux: Any) -> Any:
        if any(not torch.isfinite(a["obs"]).all() for a in aux):
            raise ValueError("non-finite auxiliary observations")
        return target.train(primary, aux)

    with pytest.raises(Interference, match="training raised ValueError"):
        check_noninterference(refusing, target.primary, target.aux, max_examples=25)


def test_a_nondeterministic_target_is_reported_as_such() -> None:
    target = load_target(f"{EXAMPLE}:train")
    draws = iter(range(1_000))

    def drifting(primary: Any, aux: Any) -> dict[str, torch.Tensor]:
        return {"w": torch.tensor([float(next(draws))])}

    with pytest.raises(NondeterministicTarget, match="different world model when run twice"):
        check_noninterference(drifting, target.primary, target.aux)


def test_comparison_covers_buffers_and_is_nan_aware() -> None:
    model = torch.nn.BatchNorm1d(3)
    base = snapshot(model)
    assert {"param:weight", "buffer:running_mean", "buffer:num_batches_tracked"} <= set(base)
    with torch.no_grad():
        model.running_mean[1] = 1.0  # a buffer-only change is a difference
    assert (first_difference(base, snapshot(model)) or "").startswith(
        "buffer:running_mean: 1 of 3 values differ"
    )
    nan = {"w": torch.tensor([float("nan"), 1.0])}
    assert first_difference(nan, {"w": torch.tensor([float("nan"), 1.0])}) is None
    assert first_difference({"w": torch.tensor([0.0])}, {"w": torch.tensor([-0.0])}) is not None
    assert (
        first_difference(nan, {"v": torch.tensor([1.0])}) == "different tensors: missing ['w'], extra ['v']"
    )
    with pytest.raises(TypeError, match=r"nn\.Module"):
        snapshot([1.0])


@settings(max_examples=max(10, settings.default.max_examples))
@given(data=st.data())
def test_variants_keep_the_structure_and_vary_rows_consistently(data: st.DataObject) -> None:
    aux = [{"obs": torch.zeros(5, 2), "reward": torch.zeros(5), "action": torch.zeros(5, dtype=torch.int64)}]
    variant = data.draw(aux_variants((aux, 0.5, "tag")))
    assert isinstance(variant, Variant)
    agents, scalar, tag = variant.value
    assert isinstance(agents, list) and len(agents) <= 3 and tag == "tag" and isinstance(scalar, float)
    for agent in agents:
        assert set(agent) == {"obs", "reward", "action"}
        rows = agent["obs"].shape[0]
        assert rows >= 1 and agent["obs"].shape[1:] == (2,)
        assert agent["reward"].shape == (rows,) and agent["action"].shape == (rows,)
        assert agent["action"].dtype == torch.int64


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "takes module:function"),
        ("amal_no_such_module_xyz:train", "cannot import 'amal_no_such_module_xyz': ModuleNotFoundError"),
        (f"{EXAMPLE}:no_such_function", "has no attribute 'no_such_function'"),
        (f"{EXAMPLE}:OBS_DIM", "is a int, not a function"),
        (f"{ROOT / 'missing.py'}:train", "no such file"),
        (f"{ROOT / 'examples' / 'gated_world_model.py'}:main", "must define amal_example_inputs()"),
    ],
)
def test_invalid_targets_are_explained(spec: str, message: str) -> None:
    with pytest.raises(TargetError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_target(spec)


def test_an_invalid_target_option_is_a_usage_error_not_a_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(ROOT / "properties"), "--amal-target=amal_nowhere:train", "-q"],
        cwd=tmp_path,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert "ERROR: --amal-target=amal_nowhere:train: cannot import 'amal_nowhere'" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
