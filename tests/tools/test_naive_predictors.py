"""The naive predictors of the reality-gap table: values by hand, the cache file, the report.

Hand-computed case: obs rows (0, 0) and (2, 4), next_obs rows (1, 0) and (3, 2), rewards 1 and 3.
s' = s errors: (1, 0) and (1, −2) → squares 1, 0, 1, 4 → mean 6/4 = 1.5.  Best constant: the mean
next_obs is (2, 1); deviations (−1, −1) and (1, 1) → mean square 1.  Reward variance: mean 2,
deviations ±1 → 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from amal_tools.bench.held_out import real_transitions
from amal_tools.bench.naive_predictors import (
    NAIVE_ERRORS_FILE,
    NaiveErrors,
    load_naive_errors,
    measure_naive_errors,
    seed_means,
    update_naive_errors,
)
from amal_tools.bench.plots import reality_gap_figure
from amal_tools.bench.records import EvalPoint, RunRecord
from amal_tools.bench.report import render_results
from amal_tools.bench.stats import Level

GAP = {
    "with_aux": {"next_obs_mse": 0.02, "reward_mse": 0.1, "nll": -1.0},
    "primary_only": {"next_obs_mse": 0.02, "reward_mse": 0.1, "nll": -1.0},
}


def _transitions() -> dict[str, torch.Tensor]:
    return {
        "obs": torch.tensor([[0.0, 0.0], [2.0, 4.0]]),
        "next_obs": torch.tensor([[1.0, 0.0], [3.0, 2.0]]),
        "reward": torch.tensor([1.0, 3.0]),
    }


def _record(task: str, seed: int, extras: dict[str, Any]) -> RunRecord:
    curve = (EvalPoint(step=100, returns=(1.0, 2.0), success=None),)
    return RunRecord("amal", task, seed, 100, curve, train_seconds=1.0, extras=extras)


def test_naive_errors_by_hand() -> None:
    got = measure_naive_errors("Toy-v0", _transitions())
    assert got == NaiveErrors("Toy-v0", 2, 1.5, 1.0, 1.0)
    assert NaiveErrors.from_json(json.loads(json.dumps(got.to_json()))) == got


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.pop("reward"), "lack reward"),
        (lambda t: t.update(next_obs=torch.zeros(2, 3)), "must both be"),
        (lambda t: t.update(obs=torch.zeros(0, 2), next_obs=torch.zeros(0, 2)), "n >= 1"),
        (lambda t: t.update(reward=torch.zeros(3)), r"reward must be \(2,\)"),
        (lambda t: t["obs"].__setitem__((0, 0), float("nan")), "non-finite"),
    ],
)
def test_naive_errors_refuses_bad_transitions(edit: Any, message: str) -> None:
    transitions = _transitions()
    edit(transitions)
    with pytest.raises(ValueError, match=message):
        measure_naive_errors("Toy-v0", transitions)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ([], "must be an object"),
        ({"env_id": "x", "transitions": 2}, "lack no_change_next_obs_mse"),
        (
            {
                "env_id": "x",
                "transitions": 2.0,
                "no_change_next_obs_mse": 1,
                "best_constant_next_obs_mse": 1,
                "best_constant_reward_mse": 1,
            },
            "transitions an integer",
        ),
        (
            {
                "env_id": "x",
                "transitions": 2,
                "no_change_next_obs_mse": -1.0,
                "best_constant_next_obs_mse": 1,
                "best_constant_reward_mse": 1,
            },
            "non-negative",
        ),
    ],
)
def test_malformed_entries_are_refused_naming_file_task_and_seed(
    tmp_path: Path, entry: Any, message: str
) -> None:
    path = tmp_path / NAIVE_ERRORS_FILE
    path.write_text(json.dumps({"CartPole": {"1": entry}}))
    with pytest.raises(ValueError, match=rf"{NAIVE_ERRORS_FILE}: task 'CartPole' seed '1': .*{message}"):
        load_naive_errors(path)


def test_missing_file_is_empty_and_corrupt_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / NAIVE_ERRORS_FILE
    assert load_naive_errors(path) == {}
    path.write_text("{not json")
    with pytest.raises(ValueError, match=f"{NAIVE_ERRORS_FILE}: not readable as JSON"):
        load_naive_errors(path)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="must be a JSON object"):
        load_naive_errors(path)


def test_update_measures_what_is_missing_once_and_again_when_the_count_changes(tmp_path: Path) -> None:
    path = tmp_path / NAIVE_ERRORS_FILE
    scored = {"wm_real_error": GAP, "real_transitions": 16}
    records = [
        _record("CartPole", 0, scored),
        _record("CartPole", 0, scored),  # a second method on the same seed: one measurement
        _record("CartPole", 1, {"wm_real_error": GAP, "real_transitions": 16, "env_id": "CartPole-v1"}),
        _record("CartPole", 2, {}),  # not scored on real transitions: no reference needed
        _record("NotInTheCatalogue", 0, scored),  # cannot be regenerated: left out
    ]
    log: list[str] = []
    got = update_naive_errors(path, records, log=log.append)
    assert sorted((t, s) for t, seeds in got.items() for s in seeds) == [("CartPole", 0), ("CartPole", 1)]
    assert got["CartPole"][0] == measure_naive_errors(
        "CartPole-v1", real_transitions("CartPole-v1", seed=0, count=16)
    )
    assert log == ["measuring the naive predictors' errors for 2 (task, seed) pairs"]
    assert load_naive_errors(path) == got

    log.clear()
    assert update_naive_errors(path, records, log=log.append) == got
    assert log == []  # nothing missing: nothing measured

    recounted = [_record("CartPole", 0, {"wm_real_error": GAP, "real_transitions": 32})]
    again = update_naive_errors(path, recounted, log=log.append)
    assert again["CartPole"][0].transitions == 32
    assert again["CartPole"][1] == got["CartPole"][1]  # kept


def test_records_scored_on_different_transitions_are_refused(tmp_path: Path) -> None:
    records = [
        _record("CartPole", 0, {"wm_real_error": GAP, "real_transitions": 16}),
        _record("CartPole", 0, {"wm_real_error": GAP, "real_transitions": 32}),
    ]
    with pytest.raises(ValueError, match="CartPole seed 0 were scored on different held-out transitions"):
        update_naive_errors(tmp_path / NAIVE_ERRORS_FILE, records)


def test_seed_means_average_only_the_seeds_of_the_tasks_records_that_were_measured() -> None:
    records = [_record("Toy", s, {}) for s in (0, 1, 2)] + [_record("Other", 7, {})]
    naive = {
        "Toy": {s: NaiveErrors("Toy-v0", 2, 1.0 + s, 2.0 * s, 3.0) for s in (0, 1, 5)},
        "Other": {},
    }
    assert seed_means(records, "Toy", naive) == (  # seeds 0 and 1: seed 2 unmeasured, seed 5 has no record
        2,
        {"no_change_next_obs_mse": 1.5, "best_constant_next_obs_mse": 1.0, "best_constant_reward_mse": 3.0},
    )
    assert seed_means(records, "Other", naive) == (0, {}) == seed_means(records, "Missing", naive)


def test_report_sets_the_world_models_beside_the_references() -> None:
    worse = {
        "with_aux": {"next_obs_mse": 2.0, "reward_mse": 0.1, "nll": -1.0},
        "primary_only": {"next_obs_mse": 2.0, "reward_mse": 0.1, "nll": -1.0},
    }
    records = [
        _record("Toy", 0, {"wm_real_error": GAP}),  # 0.02: below both bars
        _record("Toy", 1, {"wm_real_error": worse}),  # 2.0: above both
        _record("Toy", 2, {"wm_real_error": GAP}),  # no reference for seed 2: not counted
    ]
    naive = {"Toy": {s: NaiveErrors("Toy-v0", 2, 1.5, 1.0, 0.5 + s) for s in (0, 1)}}
    levels = {"Toy": dict.fromkeys(range(3), Level(0.0, 10.0, "test"))}
    text = render_results(records, levels, metadata={}, naive_errors=naive)
    assert "| Toy | amal | 3 | 0.68 | 0.68 | 0.1 | 0.1 | -1.00 | -1.00 | 1/2 | 1/2 |" in text
    assert "| Toy | 2 | 1.50 | 1.00 | 1.00 |" in text  # reward: mean of 0.5 and 1.5
    assert "No run's world model" not in text  # seed 0's is below the best constant
    above = {"Toy": {s: NaiveErrors("Toy-v0", 2, 1.5, 0.01, 0.5) for s in (0, 1)}}
    assert (
        "No run's world model, of any method or seed, is below the best constant on: Toy."
        in render_results(records, levels, metadata={}, naive_errors=above)
    )
    without = render_results(records, levels, metadata={})
    assert (
        "| Toy | amal | 3 | 0.68 | 0.68 | 0.1 | 0.1 | -1.00 | -1.00 | not measured | not measured |"
        in without
    )
    assert "| Toy | 0 | not measured | not measured | not measured |" in without


def test_reality_gap_figure_draws_the_naive_errors_deterministically(tmp_path: Path) -> None:
    records = [_record("Toy", s, {"wm_real_error": GAP}) for s in range(2)]
    naive = {"Toy": {s: NaiveErrors("Toy-v0", 2, 1.5, 1.0, 0.5) for s in (0, 1)}}
    with_lines = [reality_gap_figure(records, tmp_path / f"with{k}.png", naive) for k in range(2)]
    without = reality_gap_figure(records, tmp_path / "without.png")
    assert all(p is not None for p in (*with_lines, without))
    first, second = ((tmp_path / f"with{k}.png").read_bytes() for k in range(2))
    assert first == second != (tmp_path / "without.png").read_bytes()


def test_report_tables_the_fit_on_the_runs_own_primary_data() -> None:
    def fit(run: float) -> dict[str, Any]:
        errors = {"next_obs_mse": run, "reward_mse": 0.5, "nll": 0.0, "transitions": 4096}
        naive = NaiveErrors("Toy-v0", 4096, 3.0, 1.0, 2.0).to_json()
        return {"with_aux": errors, "primary_only": {**errors, "next_obs_mse": 2 * run}, "naive": naive}

    levels = {"Toy": dict.fromkeys(range(2), Level(0.0, 10.0, "test"))}
    records = [
        _record("Toy", 0, {"wm_primary_fit": fit(0.5)}),
        _record("Toy", 1, {"wm_primary_fit": fit(1.5)}),
    ]
    text = render_results(records, levels, metadata={})
    assert "| Toy | amal | 2 | 1.00 | 2.00 | 3.00 | 1.00 | 1/2 | 0.5 | 2.00 |" in text
    # A value missing from a record (an edited or damaged file) is left out of that column's mean.
    damaged = fit(9.0)
    del damaged["with_aux"]["next_obs_mse"]
    partial = render_results([*records, _record("Toy", 2, {"wm_primary_fit": damaged})], levels, metadata={})
    assert "| Toy | amal | 3 | 1.00 | 7.33 | 3.00 | 1.00 | 1/2 | 0.5 | 2.00 |" in partial
    older = render_results([_record("Toy", 0, {"wm_real_error": GAP})], levels, metadata={})
    assert "Not measured: no record holds it (records written before the measurement existed" in older
