"""amal_verified.audit: the differential audit of users' training functions, its CLI and pytest plugin."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import amal_verified as av
from amal_verified.audit import (
    Interference,
    NondeterministicTarget,
    TargetError,
    Variant,
    assert_noninterference,
    aux_variants,
    check_noninterference,
    compare,
    load_target,
    snapshot,
)
from amal_verified.cli import main as amal_main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "audit_target_example.py"


def _primary() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"x": torch.randn(16, 3, generator=g), "y": torch.randn(16, 1, generator=g)}


def _aux() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [{"x": torch.randn(8, 3, generator=g), "y": torch.randn(8, 1, generator=g)} for _ in range(2)]


def _fit(model: torch.nn.Module, primary: dict[str, torch.Tensor], steps: int = 3) -> torch.nn.Module:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(primary["x"]), primary["y"]).backward()
        opt.step()
    return model


def clean(primary: dict[str, torch.Tensor], aux: list[dict[str, torch.Tensor]]) -> torch.nn.Module:
    torch.manual_seed(0)
    _ = [a["x"].sum() for a in aux]  # reads aux, as a policy would
    return _fit(torch.nn.Linear(3, 1), primary)


def steps_from_aux_count(
    primary: dict[str, torch.Tensor], aux: list[dict[str, torch.Tensor]]
) -> torch.nn.Module:
    torch.manual_seed(0)
    return _fit(torch.nn.Linear(3, 1), primary, steps=1 + len(aux))


def batchnorm_on_aux(primary: dict[str, torch.Tensor], aux: list[dict[str, torch.Tensor]]) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 1))
    _fit(model, primary)
    with torch.no_grad():
        for a in aux:
            model(a["x"])  # train mode: the running statistics absorb aux data
    return model


# ------------------------------------------------------------------------------------------- results


def test_a_clean_trainer_passes_and_the_result_says_how_fast() -> None:
    result = check_noninterference(clean, _primary(), _aux(), max_examples=10, name="clean")
    assert result.ok and result.variant is None and not result.differences and result.raised is None
    assert result.examples == 10 and result.entries == 2
    assert result.search_seconds > 0 and result.seconds >= result.search_seconds
    assert result.examples_per_second == pytest.approx(10 / result.search_seconds)
    assert str(result).startswith("PASSED: the world model of clean is bit-for-bit independent")
    assert "10 variants" in str(result) and "variants/s" in str(result)
    assert assert_noninterference(clean, _primary(), _aux(), max_examples=3).ok


def test_interference_names_the_shrunk_variant_and_every_differing_entry() -> None:
    result = check_noninterference(steps_from_aux_count, _primary(), _aux(), max_examples=25)
    assert not result.ok and result.raised is None
    assert result.variant is not None and len(result.variant.value) != 2
    assert result.variant.changes == (f"aux: 2 elements -> {len(result.variant.value)}",)
    assert [d.name for d in result.differences] == ["param:weight", "param:bias"]
    for d in result.differences:
        assert d.count == d.numel and d.max_abs_difference is not None and d.max_abs_difference > 0
    text = str(result)
    assert "depends on the auxiliary data" in text and "aux variant (shrunk): aux: 2 elements" in text
    assert "param:weight: 3 of 3 values differ, largest finite difference" in text


def test_buffers_are_compared_batchnorm_statistics_from_aux_data_are_caught() -> None:
    result = check_noninterference(batchnorm_on_aux, _primary(), _aux(), max_examples=25)
    assert not result.ok
    names = {d.name for d in result.differences}
    assert {"buffer:0.running_mean", "buffer:0.running_var"} <= names
    assert not any(n.startswith("param:") for n in names)  # only the buffers moved


def test_assert_noninterference_raises_an_assertion_error_with_the_readable_diff() -> None:
    with pytest.raises(AssertionError) as failure:
        assert_noninterference(steps_from_aux_count, _primary(), _aux(), max_examples=25)
    assert isinstance(failure.value, Interference)
    assert not failure.value.result.ok
    assert str(failure.value) == str(failure.value.result)


def test_a_variant_that_makes_training_raise_is_interference() -> None:
    def refuses_nan(primary: dict[str, torch.Tensor], aux: list[dict[str, torch.Tensor]]) -> torch.nn.Module:
        if any(torch.isnan(a["x"]).any() for a in aux):
            raise FloatingPointError("NaN in auxiliary observations")
        return clean(primary, aux)

    result = check_noninterference(refuses_nan, _primary(), _aux(), max_examples=50)
    assert not result.ok and result.raised == "FloatingPointError: NaN in auxiliary observations"
    assert result.variant is not None and any("nan" in c for c in result.variant.changes)
    assert "auxiliary data stopped world-model training" in str(result)


def test_a_gate_refusal_on_the_example_inputs_is_a_failed_audit_not_an_error() -> None:
    def gated_but_mixed(primary: dict[str, torch.Tensor], aux: list[dict[str, torch.Tensor]]) -> Any:
        model = torch.nn.Linear(3, 1)
        opt = av.GatedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), names=model)
        x = torch.cat([av.primary(primary["x"], source="real"), av.aux(aux[0]["x"], source="aux-0")])
        y = torch.cat([primary["y"], aux[0]["y"]])
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        return model

    result = check_noninterference(gated_but_mixed, _primary(), _aux(), max_examples=5)
    assert not result.ok and result.examples == 0 and result.variant is None
    assert result.raised is not None and result.raised.startswith("IsolationViolation: refused")
    assert "refused its own example inputs" in str(result)


def test_the_audit_is_reproducible_from_its_seed() -> None:
    first = check_noninterference(batchnorm_on_aux, _primary(), _aux(), max_examples=25, seed=3)
    again = check_noninterference(batchnorm_on_aux, _primary(), _aux(), max_examples=25, seed=3)
    assert first.variant is not None and again.variant is not None
    assert first.variant.changes == again.variant.changes and first.examples == again.examples
    assert first.differences == again.differences


def test_global_generators_and_threads_are_restored_even_when_the_audit_fails() -> None:
    random.seed(11)
    np.random.seed(11)
    torch.manual_seed(11)
    threads = torch.get_num_threads()
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    random.seed(11)
    np.random.seed(11)
    torch.manual_seed(11)
    check_noninterference(steps_from_aux_count, _primary(), _aux(), max_examples=5, threads=1)
    with pytest.raises(TargetError):
        check_noninterference(lambda p, a: 1 / 0, _primary(), _aux())
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected
    assert torch.get_num_threads() == threads


def test_the_audit_does_not_mutate_the_callers_inputs() -> None:
    primary, aux = _primary(), _aux()
    before = snapshot({"px": primary["x"], "ax": aux[0]["x"]})

    def mutating(p: dict[str, torch.Tensor], a: list[dict[str, torch.Tensor]]) -> torch.nn.Module:
        p["x"].mul_(2.0)
        a[0]["x"].zero_() if a else None
        return clean(p, a)

    check_noninterference(mutating, primary, aux, max_examples=3)
    assert compare(before, snapshot({"px": primary["x"], "ax": aux[0]["x"]})) == ()
    assert len(aux) == 2


def test_unusable_targets_and_options_are_explained() -> None:
    with pytest.raises(TargetError, match=r"raised on its example inputs.*ZeroDivisionError"):
        check_noninterference(lambda p, a: 1 / 0, _primary(), _aux())
    with pytest.raises(TargetError, match=r"nn\.Module\) or a mapping of tensors, got list"):
        check_noninterference(lambda p, a: [1.0], _primary(), _aux())
    with pytest.raises(TargetError, match="'w' is a float, not a tensor"):
        check_noninterference(lambda p, a: {"w": 1.0}, _primary(), _aux())
    with pytest.raises(ValueError, match="max_examples must be at least 1"):
        check_noninterference(clean, _primary(), _aux(), max_examples=0)
    with pytest.raises(TypeError):
        check_noninterference("not callable", _primary(), _aux())  # type: ignore[arg-type]


def test_a_nondeterministic_trainer_makes_the_audit_inconclusive() -> None:
    own = torch.Generator().manual_seed(0)  # advances across calls: never reset by the audit

    def drifting(
        primary: dict[str, torch.Tensor], aux: list[dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        return {"w": torch.randn(2, generator=own)}

    with pytest.raises(NondeterministicTarget, match="different world model when run twice") as failure:
        check_noninterference(drifting, _primary(), _aux())
    assert isinstance(failure.value, TargetError)


# ---------------------------------------------------------------------------------------- comparison


def test_comparison_covers_buffers_and_is_nan_aware() -> None:
    model = torch.nn.BatchNorm1d(3)
    base = snapshot(model)
    assert {"param:weight", "buffer:running_mean", "buffer:num_batches_tracked"} <= set(base)
    with torch.no_grad():
        model.running_mean[1] = 1.0
    (difference,) = compare(base, snapshot(model))
    assert str(difference) == "buffer:running_mean: 1 of 3 values differ, largest finite difference 1"
    nan = {"w": torch.tensor([float("nan"), 1.0])}
    assert compare(nan, {"w": torch.tensor([float("nan"), 1.0])}) == ()
    assert compare({"w": torch.tensor([0.0])}, {"w": torch.tensor([-0.0])})[0].count == 1
    (nan_only,) = compare(nan, {"w": torch.tensor([1.0, 1.0])})
    assert nan_only.count == 1 and nan_only.max_abs_difference is None
    assert [str(d) for d in compare(nan, {"v": torch.tensor([1.0])})] == ["w: missing", "v: new entry"]
    (reshaped,) = compare(nan, {"w": torch.zeros(1, 2, dtype=torch.float64)})
    assert str(reshaped) == "w: torch.float32(2,) became torch.float64(1, 2)"
    assert str(compare({"i": torch.tensor([1, 2, 3])}, {"i": torch.tensor([1, 5, 3])})[0]) == (
        "i: 1 of 3 values differ"
    )
    with pytest.raises(TypeError, match=r"nn\.Module"):
        snapshot([1.0])


def test_snapshots_of_tagged_tensors_compare_their_data() -> None:
    x = torch.arange(3.0)
    assert compare({"w": av.primary(x.clone(), source="real")}, {"w": x.clone()}) == ()


@settings(max_examples=max(10, settings.default.max_examples))
@given(data=st.data())
def test_variants_keep_the_structure_and_vary_rows_consistently(data: st.DataObject) -> None:
    aux = [{"obs": torch.zeros(5, 2), "reward": torch.zeros(5), "action": torch.zeros(5, dtype=torch.int64)}]
    variant = data.draw(aux_variants((aux, 0.5, "tag", np.zeros((5, 1), dtype=np.float32))))
    assert isinstance(variant, Variant)
    agents, scalar, tag, array = variant.value
    assert isinstance(agents, list) and len(agents) <= 3 and tag == "tag" and isinstance(scalar, float)
    assert isinstance(array, np.ndarray) and array.dtype == np.float32 and array.shape[1:] == (1,)
    for agent in agents:
        assert set(agent) == {"obs", "reward", "action"}
        rows = agent["obs"].shape[0]
        assert rows >= 1 and agent["obs"].shape[1:] == (2,)
        assert agent["reward"].shape == (rows,) and agent["action"].shape == (rows,)
        assert agent["action"].dtype == torch.int64


# ------------------------------------------------------------------------------------------- targets


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "a target is module:function"),
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


def test_a_module_target_is_found_from_the_current_directory(tmp_path: Path, monkeypatch: Any) -> None:
    (tmp_path / "amal_user_trainer_xyz.py").write_text(
        "def amal_example_inputs():\n    return 1, [2]\n\ndef train(primary, aux):\n    return {}\n"
    )
    monkeypatch.chdir(tmp_path)
    target = load_target("amal_user_trainer_xyz:train")
    assert (target.primary, target.aux) == (1, [2])
    assert str(tmp_path) not in sys.path


# ----------------------------------------------------------------------------------------------- CLI


def test_cli_exit_codes_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert amal_main(["audit", f"{EXAMPLE}:train", "--max-examples", "5"]) == 0
    assert capsys.readouterr().out.startswith("PASSED")
    assert amal_main(["audit", f"{EXAMPLE}:train_leaking_batch", "--max-examples", "10", "--json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is False and document["aux_variant"] and document["differences"]
    assert document["variants_per_second"] > 0
    assert amal_main(["audit", f"{EXAMPLE}:nope"]) == 2
    assert "amal audit: error: " in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        amal_main(["audit", f"{EXAMPLE}:train", "--max-examples", "0"])
    assert usage.value.code == 2
    assert "expected a positive integer, got 0" in capsys.readouterr().err


# -------------------------------------------------------------------------------------- pytest plugin


def _pytest(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=directory,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_plugin_audits_a_trainer_in_a_five_line_test(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            f"""
            import sys; sys.path.insert(0, {str(EXAMPLE.parent)!r})
            from audit_target_example import amal_example_inputs, train, train_leaking_rng

            def test_gated(amal_audit):
                amal_audit(train, *amal_example_inputs(), max_examples=5)

            def test_leaky(amal_audit):
                amal_audit(train_leaking_rng, *amal_example_inputs(), max_examples=10)
            """
        )
    )
    done = _pytest(tmp_path)
    out = done.stdout
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, out + done.stderr
    assert "1 failed, 1 passed" in out
    assert "Interference: FAILED: the world model of audit_target_example:train_leaking_rng" in out
    assert "amal_verified audit" in out and "variants/s" in out


@pytest.mark.slow
def test_plugin_amal_target_fixture_skips_without_the_option(tmp_path: Path) -> None:
    (tmp_path / "test_target.py").write_text("def test_t(amal_target):\n    assert amal_target.name\n")
    skipped = _pytest(tmp_path, "-rs")
    assert skipped.returncode == pytest.ExitCode.OK and "no --amal-target" in skipped.stdout
    given_target = _pytest(tmp_path, f"--amal-target={EXAMPLE}:train")
    assert given_target.returncode == pytest.ExitCode.OK and "1 passed" in given_target.stdout


@pytest.mark.slow
def test_an_invalid_target_option_is_a_usage_error_not_a_traceback(tmp_path: Path) -> None:
    done = _pytest(tmp_path, str(ROOT / "properties"), "--amal-target=amal_nowhere:train")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert "ERROR: --amal-target=amal_nowhere:train: cannot import 'amal_nowhere'" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_inputs_that_cannot_be_copied_are_a_usage_error() -> None:
    class Uncopyable:
        def __deepcopy__(self, memo: Any) -> Any:
            raise RuntimeError("holds a live environment")

    with pytest.raises(TargetError, match="cannot be copied: RuntimeError: holds a live environment"):
        check_noninterference(clean, _primary(), [Uncopyable()])


def test_a_difference_that_does_not_replay_makes_the_audit_inconclusive() -> None:
    calls = iter(range(1_000))

    def once_different(primary: Any, aux: Any) -> dict[str, torch.Tensor]:
        return {"w": torch.tensor([2.0 if next(calls) == 6 else 1.0])}

    with pytest.raises(NondeterministicTarget, match="did not change it when replayed"):
        check_noninterference(once_different, 1, [torch.zeros(3)], max_examples=20)


def test_a_file_target_may_import_its_sibling_modules(tmp_path: Path, monkeypatch: Any) -> None:
    (tmp_path / "amal_sibling_helpers_xyz.py").write_text("INPUTS = (1, [2])\n")
    (tmp_path / "trainer.py").write_text(
        "from amal_sibling_helpers_xyz import INPUTS\n\n"
        "def amal_example_inputs():\n    return INPUTS\n\ndef train(primary, aux):\n    return {}\n"
    )
    monkeypatch.chdir(ROOT)
    target = load_target(f"{tmp_path / 'trainer.py'}:train")
    assert (target.primary, target.aux) == (1, [2])
    assert str(tmp_path) not in sys.path


@pytest.mark.slow
def test_the_theorem1_property_runs_against_the_given_target(tmp_path: Path) -> None:
    test_file = ROOT / "properties" / "test_theorem1_user_target.py"
    prop = f"{test_file}::test_world_model_of_the_target_ignores_auxiliary_inputs"
    leaky = _pytest(tmp_path, prop, f"--amal-target={EXAMPLE}:train_leaking_rng")
    assert leaky.returncode == pytest.ExitCode.TESTS_FAILED, leaky.stdout + leaky.stderr
    assert (
        "the world model of" in leaky.stdout
        and "train_leaking_rng depends on the auxiliary data" in leaky.stdout
    )
    gated = _pytest(tmp_path, prop, f"--amal-target={EXAMPLE}:train")
    assert gated.returncode == pytest.ExitCode.OK, gated.stdout + gated.stderr


def test_dicts_of_agents_change_their_number_of_items_records_keep_their_fields() -> None:
    by_agent = {"aux-0": _aux()[0], "aux-1": _aux()[1]}

    def steps_per_agent(primary: dict[str, torch.Tensor], aux: dict[str, Any]) -> torch.nn.Module:
        torch.manual_seed(0)
        assert all(set(record) == {"x", "y"} for record in aux.values())  # records keep their fields
        return _fit(torch.nn.Linear(3, 1), primary, steps=1 + len(aux))

    result = check_noninterference(steps_per_agent, _primary(), by_agent, max_examples=25)
    assert not result.ok and result.raised is None and result.variant is not None
    assert result.variant.changes[0].startswith("aux: 2 items -> ")
    grown = check_noninterference(steps_per_agent, _primary(), {"aux-0": _aux()[0]}, max_examples=25)
    assert grown.variant is not None and set(grown.variant.value) <= {"aux-0", "aux-0#2", "aux-0#3"}


def test_the_audit_runs_the_target_on_unlabelled_copies_of_labelled_memory() -> None:
    """Inputs recorded from a gated run hold labelled memory (tagging is in place); the audit runs the
    target as an untagged codebase would, so its copies carry no label."""
    recorded = torch.randn(4, 3)
    av.aux(recorded, source="sim")  # the recorded tensor is now tracked, its memory labelled
    seen: list[av.Label] = []

    def train(primary: dict[str, Any], aux: dict[str, torch.Tensor]) -> torch.nn.Module:
        seen.append(av.label_of(aux["x"]))
        return torch.nn.Linear(3, 1)

    assert check_noninterference(train, {}, {"x": recorded}, max_examples=2).ok
    assert seen and all(label.is_empty for label in seen)
    assert av.label_of(recorded).has_aux  # the caller's tensor keeps its label
