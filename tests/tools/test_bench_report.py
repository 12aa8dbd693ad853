"""Statistics, plots and ``RESULTS.md`` of ``amal bench`` on synthetic run records.

The numbers checked here are computed by hand (the Student-t quantile t_{0.975, 2} = 4.302652729...
is the textbook value); the report is rendered from records with missing extras, skipped pairs, a
best-observed task, and an AMAL record whose isolation is not zero.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from amal_tools.bench.plots import curve_file, write_plots
from amal_tools.bench.records import EvalPoint, RunRecord
from amal_tools.bench.report import (
    SMOKE_VERDICT,
    Skipped,
    isolation_violations,
    render_results,
    write_results,
)
from amal_tools.bench.stats import (
    BEST_OBSERVED,
    Level,
    ResolvedLevels,
    efficiency_verdict,
    exploration_efficiency,
    load_levels,
    mean_ci,
    normalised,
    normalised_auc,
    resolve_levels,
    samples_to_fraction,
)

T_975_2 = 4.302652729749464  # Student-t 97.5 % quantile, 2 degrees of freedom


def record(
    method: str,
    task: str,
    seed: int,
    means: Sequence[float],
    *,
    budget: int = 1000,
    extras: Mapping[str, Any] | None = None,
    success: float | None = None,
) -> RunRecord:
    """A run whose evaluation i (of len(means)) is at step budget*(i+1)/n with mean return means[i]
    (two episodes at mean ± 1)."""
    n = len(means)
    curve = tuple(
        EvalPoint(step=budget * (i + 1) // n, returns=(m - 1.0, m + 1.0), success=success)
        for i, m in enumerate(means)
    )
    return RunRecord(method, task, seed, budget, curve, train_seconds=1.5, extras=dict(extras or {}))


LEVEL = Level(random=10.0, optimal=110.0, source="exact DP")


def levels_of(task: str, seeds: Sequence[int], level: Level = LEVEL) -> dict[str, dict[int, Level]]:
    return {task: dict.fromkeys(seeds, level)}


# ---------------------------------------------------------------- statistics


def test_mean_ci_student_t_for_three_values() -> None:
    ci = mean_ci([1.0, 2.0, 3.0])
    half = T_975_2 * 1.0 / math.sqrt(3)  # sample sd of 1, 2, 3 is 1
    assert ci.n == 3
    assert ci.mean == pytest.approx(2.0)
    assert ci.low == pytest.approx(2.0 - half, rel=1e-9)
    assert ci.high == pytest.approx(2.0 + half, rel=1e-9)
    assert ci.half_width == pytest.approx(half, rel=1e-9)


def test_mean_ci_single_value_has_no_interval_and_empty_is_an_error() -> None:
    ci = mean_ci([4.0])
    assert (ci.mean, ci.low, ci.high, ci.half_width) == (4.0, None, None, None)
    with pytest.raises(ValueError, match="at least one"):
        mean_ci([])
    with pytest.raises(ValueError, match="confidence"):
        mean_ci([1.0, 2.0], confidence=1.0)


def test_normalised_score_and_degenerate_level_names_the_task() -> None:
    assert normalised(100.0, LEVEL) == pytest.approx(0.9)
    assert normalised(10.0, LEVEL) == 0.0
    with pytest.raises(ValueError, match="'TSP-20'"):
        normalised(1.0, Level(5.0, 5.0, "solver"), task="TSP-20")
    with pytest.raises(ValueError, match="best-observed"):
        normalised(1.0, Level(5.0, None, "none"), task="Ant")


def test_samples_to_fraction_first_step_reaching_90_percent_or_censored() -> None:
    run = record("amal", "T", 0, [20.0, 60.0, 99.0, 100.0, 50.0], budget=1000)
    assert samples_to_fraction(run, LEVEL) == 800  # 100 → 0.9 at the fourth point; 99 → 0.89
    assert samples_to_fraction(run, LEVEL, fraction=0.5) == 400
    slow = record("amal", "T", 0, [20.0, 30.0], budget=1000)
    assert samples_to_fraction(slow, LEVEL) is None  # censored, not 1000


def test_normalised_auc_is_the_trapezoid_over_the_evaluated_span() -> None:
    run = record("amal", "T", 0, [10.0, 60.0, 110.0, 110.0], budget=400)  # scores 0, 0.5, 1, 1
    # steps 100..400: (0 + .5)/2·100 + (.5 + 1)/2·100 + (1 + 1)/2·100 = 200 over a span of 300
    assert normalised_auc(run, LEVEL) == pytest.approx(200.0 / 300.0)
    assert normalised_auc(record("amal", "T", 0, [60.0]), LEVEL) == pytest.approx(0.5)


def test_resolve_levels_best_observed_unusable_and_invalid() -> None:
    runs = [record("amal", "Ant", 0, [5.0, 50.0]), record("sb3-sac", "Ant", 0, [5.0, 80.0])]
    resolved = resolve_levels(runs, {"Ant": {0: Level(1.0, None, "none"), 1: Level(100.0, None, "none")}})
    assert resolved.get("Ant", 0) == Level(1.0, 80.0, BEST_OBSERVED)
    assert resolved.get("Ant", 1) is None  # best observed 80 does not beat random 100
    assert [(t, s) for t, s, _ in resolved.unusable] == [("Ant", 1)]
    missing = resolve_levels(runs, {})
    assert [(t, s) for t, s, _ in missing.unusable] == [("Ant", 0)]
    with pytest.raises(ValueError, match=r"task 'TSP-20' seed 3"):
        resolve_levels(runs, {"TSP-20": {3: Level(2.0, 2.0, "solver")}})


def test_levels_json_round_trip(tmp_path: Path) -> None:
    levels = {"TSP-20": {0: Level(1.0, 9.0, "exact DP", episodes=3)}, "Ant": {2: Level(-3.5, None, "none")}}
    path = tmp_path / "levels.json"
    path.write_text(
        json.dumps({t: {str(s): lv.to_json() for s, lv in seeds.items()} for t, seeds in levels.items()})
    )
    assert load_levels(path) == levels
    path.write_text(json.dumps({"Ant": {"0": {"random": 1.0}}}))
    with pytest.raises(ValueError, match=r"task 'Ant' seed '0'"):
        load_levels(path)


def _efficiency_records() -> list[RunRecord]:
    """amal reaches 90 % at 200/400/…; baseline at 1000 or never (censored), per seed."""
    amal = [[50.0, 100.0, 100.0, 100.0, 100.0], [50.0, 60.0, 100.0, 100.0, 100.0], [20.0] * 5]
    base = [[20.0, 30.0, 40.0, 50.0, 100.0], [20.0] * 5, [20.0, 30.0, 40.0, 100.0, 100.0]]
    return [record("amal", "T", s, m) for s, m in enumerate(amal)] + [
        record("unsafe-mix", "T", s, m) for s, m in enumerate(base)
    ]


def test_exploration_efficiency_pairs_censoring_and_bootstrap_determinism() -> None:
    runs = _efficiency_records()
    resolved = resolve_levels(runs, levels_of("T", [0, 1, 2]))
    result = exploration_efficiency(runs, resolved, baseline="unsafe-mix")
    # seed 0: 1 - 400/1000; seed 1: baseline censored, counted at 1000: 1 - 600/1000;
    # seed 2: amal censored, counted at 1000: 1 - 1000/800
    expected = [0.6, 0.4, -0.25]
    assert [p.improvement for p in result.pairs] == pytest.approx(expected)
    assert [(p.method_censored, p.baseline_censored) for p in result.pairs] == [
        (False, False),
        (False, True),
        (True, False),
    ]
    assert result.estimate == pytest.approx(sum(expected) / 3)
    assert (result.n_method_censored_only, result.n_baseline_censored_only, result.n_both_censored) == (
        1,
        1,
        0,
    )
    assert "upward" in result.censoring_note
    assert "downward" in result.censoring_note
    assert "unknown" in result.censoring_note
    again = exploration_efficiency(runs, resolved, baseline="unsafe-mix")
    assert (again.low, again.high) == (result.low, result.high)
    assert result.low is not None
    assert result.high is not None
    assert result.estimate is not None
    assert min(expected) <= result.low < result.estimate < result.high <= max(expected)
    # the interval is the percentile interval of the documented paired bootstrap
    rng = np.random.Generator(np.random.PCG64(result.seed))
    means = np.asarray(expected)[rng.integers(0, 3, size=(result.resamples, 3))].mean(axis=1)
    assert result.low == pytest.approx(float(np.quantile(means, 0.025)))
    assert result.high == pytest.approx(float(np.quantile(means, 0.975)))
    assert result.verdict == "inconclusive"


def test_exploration_efficiency_not_measured_and_single_pair() -> None:
    runs = _efficiency_records()
    resolved = resolve_levels(runs, levels_of("T", [0, 1, 2]))
    none = exploration_efficiency(runs, resolved, baseline="sb3-ppo")
    assert (none.verdict, none.estimate, none.pairs) == ("not measured", None, ())
    one = exploration_efficiency(runs[:1] + runs[3:4], resolved, baseline="unsafe-mix")
    assert one.estimate == pytest.approx(0.6)
    assert (one.low, one.high, one.verdict) == (None, None, "inconclusive")


def test_efficiency_verdict_boundaries() -> None:
    assert efficiency_verdict(0.40, 0.9) == "supported"
    assert efficiency_verdict(0.3999, 0.9) == "inconclusive"
    assert efficiency_verdict(0.1, 0.40) == "inconclusive"
    assert efficiency_verdict(0.1, 0.3999) == "refuted"
    assert efficiency_verdict(None, None) == "inconclusive"


def test_all_pairs_equal_give_a_point_interval_and_a_verdict() -> None:
    # every seed: amal at 200, baseline at 1000 → improvement 0.8 exactly, interval [0.8, 0.8]
    runs = [record("amal", "T", s, [100.0] * 5) for s in range(3)] + [
        record("amal-no-info", "T", s, [20.0, 30.0, 40.0, 50.0, 100.0]) for s in range(3)
    ]
    result = exploration_efficiency(
        runs, resolve_levels(runs, levels_of("T", range(3))), baseline="amal-no-info"
    )
    assert result.low == pytest.approx(0.8)
    assert result.high == pytest.approx(0.8)
    assert result.verdict == "supported"
    assert result.censoring_note.startswith("no run was censored")


# ---------------------------------------------------------------- report

ISO_ZERO = {"param_l2": 0.0, "param_max_abs": 0.0, "kl_mean": 0.0, "kl_max": 0.0, "identical": True}
ISO_MIX = {"param_l2": 0.31, "param_max_abs": 0.02, "kl_mean": 0.004, "kl_max": 0.05, "identical": False}
GAP = {
    "with_aux": {"next_obs_mse": 0.02, "reward_mse": 0.1, "nll": -1.0},
    "primary_only": {"next_obs_mse": 0.02, "reward_mse": 0.1, "nll": -1.0},
}
METADATA = {
    "command": "amal bench --full --seeds 0 1 2 --out bench-out",
    "mode": "full",
    "seeds": [0, 1, 2],
    "versions": {"python": "3.11.9", "numpy": "2.1.0", "amal_verified": "0.1.0"},
    "machine": "2-core test box",
    "start": "2026-11-24T10:00:00Z",
    "end": "2026-11-24T11:00:00Z",
}


def _grid(amal_iso: Mapping[str, Any] = ISO_ZERO) -> tuple[list[RunRecord], dict[str, dict[int, Level]]]:
    runs: list[RunRecord] = []
    for s in range(3):
        shift = {"description": "clustered", "returns": [80.0, 84.0], "success": None}
        runs.append(
            record(
                "amal",
                "TSP-20",
                s,
                [40.0, 80.0, 100.0 + s, 105.0],
                extras={
                    "isolation": amal_iso,
                    "wm_real_error": GAP,
                    "shift": shift,
                    "certified": True,
                    "env_steps_per_second": 900.0,
                },
                budget=1800,
            )
        )
        runs.append(
            record(
                "unsafe-mix",
                "TSP-20",
                s,
                [30.0, 50.0, 60.0, 100.0],
                extras={"isolation": ISO_MIX},
                budget=1800,
            )
        )
        runs.append(record("sb3-ppo", "TSP-20", s, [20.0, 25.0, 30.0, 35.0], budget=1800))  # no extras
        # a best-observed task: raw returns, optimum = best final mean return
        runs.append(record("amal", "HalfCheetah", s, [-50.0, 10.0, 40.0 + s], budget=1500))
        runs.append(record("sb3-sac", "HalfCheetah", s, [-60.0, -20.0, 30.0], budget=1500, success=None))
    levels = {
        "TSP-20": dict.fromkeys(range(3), Level(10.0, 110.0, "exact DP")),
        "HalfCheetah": dict.fromkeys(range(3), Level(-100.0, None, "none")),
    }
    return runs, levels


def test_report_renders_with_missing_extras_skipped_pairs_and_best_observed(tmp_path: Path) -> None:
    runs, levels = _grid()
    text = render_results(
        runs,
        levels,
        skipped=[Skipped("sb3-sac", "TSP-20", "SAC needs a continuous action space")],
        ratios_markdown="| ratio | value |\n| --- | --- |\n| gate | 1.02 |",
        metadata=METADATA,
        plots_dir=tmp_path / "plots",
        plots_link="plots",
    )
    assert "amal bench --full --seeds 0 1 2 --out bench-out" in text
    assert "Smoke run" not in text and "smoke run" not in text
    assert '"machine": "2-core test box"' in text  # metadata verbatim
    assert "| sb3-sac | TSP-20 | SAC needs a continuous action space |" in text
    assert "| gate | 1.02 |" in text
    assert "ISOLATION VIOLATED" not in text
    assert "best observed" in text
    # amal on TSP-20 reaches 90 % (100 + s ≥ 100) at step 3·1800/4 = 1350 on every seed
    assert "1 350 (3/3)" in text
    assert "not reached (0/3)" in text  # PPO never gets past 35
    assert "not measured" in text  # PPO has no shift / isolation / gap extras
    assert "0 (exact)" in text
    assert "We measured" in text
    assert "the paper claims 40 %" in text
    assert "![TSP-20 learning curves](plots/curve_TSP-20.png)" in text
    assert "Budgets (primary environment steps per run): 1 500 (HalfCheetah); 1 800 (TSP-20)" in text
    assert "Seeds: 3 per (method, task)" in text
    assert "{{" not in text
    assert "{%" not in text
    # deterministic text (figures aside, which test_plots_are_written_and_byte_identical checks)
    texts = {render_results(runs, levels, metadata=METADATA) for _ in range(2)}
    assert len(texts) == 1


def test_report_without_plots_ratios_or_metadata_says_not_measured() -> None:
    runs = [record("sb3-ppo", "Ant", 0, [1.0, 2.0])]
    text = render_results(runs, {}, metadata={})
    assert "does not record the command" in text
    assert "Not provided with this run." in text
    assert "no record holds an isolation measurement" in text
    assert "no random/optimal level was measured" in text
    assert "(n = 1: no interval)" in text


def test_best_observed_task_where_no_method_beats_random_is_reported_unusable(tmp_path: Path) -> None:
    runs = [record("amal", "Ant", 0, [-300.0, -200.0]), record("sb3-sac", "Ant", 0, [-250.0, -150.0])]
    levels = {"Ant": {0: Level(-100.0, None, "none")}}
    text = render_results(runs, levels, metadata=METADATA, plots_dir=tmp_path)
    assert "seed 0: random -100, no usable optimum" in text
    assert "not measured (no usable level)" in text
    assert (
        "Ant/0 (no method's final mean return (best observed -150) exceeds the random policy's -100)" in text
    )
    assert (tmp_path / curve_file("Ant")).stat().st_size > 0


def test_report_without_records_lists_the_failed_and_skipped_cells(tmp_path: Path) -> None:
    text = render_results(
        [],
        {},
        skipped=[Skipped("sb3-td3", "TSP-20", "TD3 needs a continuous action space")],
        metadata=METADATA,
        plots_dir=tmp_path,
        failed={"amal__TSP-20__0": "RuntimeError: boom"},
    )
    assert "No run record: every cell failed or was skipped." in text
    assert "`amal__TSP-20__0`: RuntimeError: boom" in text
    assert "| sb3-td3 | TSP-20 | TD3 needs a continuous action space |" in text
    assert list(tmp_path.iterdir()) == []


def test_skipped_pairs_with_one_reason_share_a_row_per_method() -> None:
    def why(method: str, task: str) -> str:
        return f"{method.upper()} needs a continuous (Box) action space; {task}'s actions are discrete"

    skipped = [
        Skipped(method, task, why(method, task))
        for method in ("sb3-td3", "sb3-sac")
        for task in ("TSP-20", "CartPole", "Trading")
    ]
    skipped.append(Skipped("sb3-sac", "Ant", "worker crashed twice"))
    text = render_results([], {}, skipped=skipped, metadata=METADATA)
    section = text.split("## Skipped pairs")[1]
    rows = [line for line in section.splitlines() if line.startswith("| sb3-")]
    assert rows == [
        "| sb3-sac | CartPole, TSP-20, Trading | SB3-SAC needs a continuous (Box) action space;"
        " the task's actions are discrete |",
        "| sb3-sac | Ant | worker crashed twice |",
        "| sb3-td3 | CartPole, TSP-20, Trading | SB3-TD3 needs a continuous (Box) action space;"
        " the task's actions are discrete |",
    ]


def test_auxiliary_data_in_the_policy_is_compared_with_amal_seed_by_seed() -> None:
    runs = [record("amal", "T", s, [30.0, 50.0 + 10 * s]) for s in range(3)]
    runs += [record("amal-aux-policy", "T", s, [30.0, f]) for s, f in enumerate([40.0, 45.0, 58.0])]
    runs += [record("amal", "U", 0, [20.0, 30.0]), record("amal-aux-policy", "U", 0, [20.0, 35.0])]
    runs.append(record("amal-aux-policy", "U", 1, [20.0, 90.0]))  # no amal run of seed 1: not paired
    runs += [record(m, "V", s, [0.0, 0.0]) for m in ("amal", "amal-aux-policy") for s in range(2)]
    levels = {**levels_of("T", range(3)), **levels_of("U", range(2)), **levels_of("V", range(2))}
    text = render_results(runs, levels, metadata=METADATA)
    section = text.split("## Does the auxiliary agents' data help the primary agent?")[1].split("## ")[0]
    # T: differences −10, −15, −12 → mean −12.3, t(2) half-width 4.303 · 2.517 / √3 = 6.25, below 0
    # AUC differences: the curves differ only at their last point, by Δ/100 normalised, half weighted
    assert "| T | 3 | -12.3 ± 6.25 | -0.0617 ± 0.0313 | 0/3 | **hurt** |" in section
    one = "| U | 1 | 5.00 (n = 1: no interval) | 0.025 (n = 1: no interval) | 1/1 | one pair: no interval |"
    assert one in section
    assert "| V | 2 | 0 ± 0 |" in section and "| 0/2 | equal in every seed |" in section
    assert "amal-aux-policy" in text.split("## Isolation (Theorem 1)")[1].split("\n")[2]  # gated: must be 0
    without = render_results(runs[:3], levels, metadata=METADATA)
    assert "Not measured: the records hold no amal-aux-policy run." in without


def test_nonzero_amal_isolation_is_flagged_loudly() -> None:
    bad = {**ISO_ZERO, "param_l2": 3.5e-09, "identical": False}
    runs, levels = _grid(amal_iso=bad)
    assert isolation_violations(runs) == [
        f"amal/TSP-20/{s}: identical = False, param_l2 = 3.5e-09" for s in range(3)
    ]
    text = render_results(runs, levels, metadata=METADATA)
    assert "ISOLATION VIOLATED" in text
    assert "amal/TSP-20/0: identical = False, param_l2 = 3.5e-09" in text
    assert "**amal — ⚠ NON-ZERO**" in text
    assert text.index("ISOLATION VIOLATED") < text.index("## How to reproduce")


def test_write_results_links_plots_relative_to_the_file(tmp_path: Path) -> None:
    runs, levels = _grid()
    out = write_results(
        tmp_path / "benchmarks" / "RESULTS.md",
        runs,
        levels,
        metadata=METADATA,
        plots_dir=tmp_path / "benchmarks" / "figures",
        failed={"pbt__TSP-20__0": "Traceback...\nRuntimeError: out of memory"},
    )
    text = out.read_text()
    assert "](figures/isolation.png)" in text
    assert "](figures/reality_gap.png)" in text
    assert "`pbt__TSP-20__0`: RuntimeError: out of memory" in text


# ---------------------------------------------------------------- plots


def test_plots_are_written_and_byte_identical(tmp_path: Path) -> None:
    runs, levels = _grid()
    first = write_plots(runs, levels, tmp_path / "a")
    second = write_plots(runs, levels, tmp_path / "b")
    names = sorted(p.name for p in first)
    assert names == sorted(
        [curve_file("TSP-20"), curve_file("HalfCheetah"), "isolation.png", "reality_gap.png"]
    )
    for a, b in zip(sorted(first), sorted(second), strict=True):
        data = a.read_bytes()
        assert data.startswith(b"\x89PNG")
        assert len(data) > 1000
        assert data == b.read_bytes(), a.name


def test_figures_without_data_are_not_written(tmp_path: Path) -> None:
    runs = [record("sb3-ppo", "Ant", 0, [1.0, 2.0])]
    paths = write_plots(runs, {}, tmp_path)
    assert [p.name for p in paths] == [curve_file("Ant")]
    assert isinstance(resolve_levels(runs, {}), ResolvedLevels)


# ---------------------------------------------------------------- review fixes


def _row(text: str, first_cells: str) -> list[str]:
    """The cells of the first table row of ``text`` starting with ``| <first_cells>``."""
    line = next(ln for ln in text.splitlines() if ln.startswith(f"| {first_cells}"))
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_both_censored_pairs_are_excluded_from_the_estimate_and_the_bootstrap() -> None:
    amal = [[50.0, 100.0, 100.0, 100.0, 100.0], [50.0, 60.0, 100.0, 100.0, 100.0], [20.0] * 5]
    base = [[20.0, 30.0, 40.0, 50.0, 100.0], [20.0] * 5, [20.0] * 5]  # seed 2: neither reaches 90 %
    runs = [record("amal", "T", s, m) for s, m in enumerate(amal)] + [
        record("unsafe-mix", "T", s, m) for s, m in enumerate(base)
    ]
    result = exploration_efficiency(
        runs, resolve_levels(runs, levels_of("T", [0, 1, 2])), baseline="unsafe-mix"
    )
    assert [p.improvement for p in result.pairs[:2]] == pytest.approx([0.6, 0.4])
    assert result.pairs[2].improvement is None
    assert result.pairs[2].excluded
    assert [p.seed for p in result.informative_pairs] == [0, 1]
    assert result.excluded_by_task == {"T": 1}
    assert result.n_both_censored == 1
    assert result.estimate == pytest.approx(0.5)  # not (0.6 + 0.4 + 0) / 3
    rng = np.random.Generator(np.random.PCG64(result.seed))
    means = np.asarray([0.6, 0.4])[rng.integers(0, 2, size=(result.resamples, 2))].mean(axis=1)
    assert result.low == pytest.approx(float(np.quantile(means, 0.025)))
    assert result.high == pytest.approx(float(np.quantile(means, 0.975)))
    assert "excluded from the estimate" in result.censoring_note


def test_fewer_than_two_informative_pairs_is_inconclusive_and_names_the_tasks() -> None:
    runs = [
        record(m, t, s, [20.0, 30.0], budget=1500)
        for m in ("amal", "unsafe-mix")
        for t in ("TSP-20", "Trading")
        for s in range(2)
    ]
    levels = {t: dict.fromkeys(range(2), LEVEL) for t in ("TSP-20", "Trading")}
    result = exploration_efficiency(runs, resolve_levels(runs, levels), baseline="unsafe-mix")
    assert len(result.pairs) == 4
    assert result.informative_pairs == ()
    assert (result.estimate, result.low, result.high) == (None, None, None)
    assert result.verdict == "inconclusive"  # was "refuted" from four manufactured zeros
    assert result.excluded_by_task == {"TSP-20": 2, "Trading": 2}
    text = render_results(runs, levels, metadata=METADATA)
    row = _row(text, "unsafe-mix | the paper's standard MARL")
    assert row[2:4] == ["0", "4 (TSP-20: 2, Trading: 2)"]
    assert row[6] == "**inconclusive**"
    assert "none of the 4 (task, seed) pair(s) is informative" in text
    assert "too small for either method to get there on TSP-20, Trading" in text
    assert "| TSP-20 | 0 | not reached | not reached | excluded (neither reached 90 %) |" in text
    assert "refuted" not in text.split("## Exploration efficiency")[1].split("## Isolation")[0].replace(
        "**refuted** if", ""
    )


def test_best_observed_tasks_are_excluded_from_the_40_percent_test() -> None:
    # HalfCheetah: amal "reaches" 90 % of the best observed at the first evaluation, sb3-sac never
    runs = [record("amal", "HalfCheetah", s, [9.0, 9.5, 10.0]) for s in range(3)] + [
        record("sb3-sac", "HalfCheetah", s, [-90.0, -80.0, -70.0]) for s in range(3)
    ]
    levels = {"HalfCheetah": dict.fromkeys(range(3), Level(-100.0, None, "none"))}
    result = exploration_efficiency(runs, resolve_levels(runs, levels), baseline="sb3-sac")
    assert result.pairs == ()
    assert result.no_optimum == ("HalfCheetah/0", "HalfCheetah/1", "HalfCheetah/2")
    assert result.no_optimum_tasks == ("HalfCheetah",)
    assert result.verdict == "not measured"  # was "supported" against a best-observed level
    text = render_results(runs, levels, metadata=METADATA)
    assert "Tasks without a known optimum are not part of this test: HalfCheetah." in text
    assert "Not in the test (no known optimum): HalfCheetah (seeds 0, 1, 2)." in text
    assert "| samples to 90 % of best observed |" in text  # the per-task table keeps it, labelled
    assert _row(text, "amal | 3")[4] == "333 (3/3)"


def test_shift_is_reported_as_the_paired_absolute_change() -> None:
    # nominal finals 0, 0.5, -0.5 (near zero): shifted − nominal per seed = 1, 2, 3
    shifted = [[1.0, 1.0], [2.5], [2.5, 2.5]]
    runs = [
        record("amal", "Trading", s, [m], extras={"shift": {"description": "volatile", "returns": r}})
        for s, (m, r) in enumerate(zip([0.0, 0.5, -0.5], shifted, strict=True))
    ]
    text = render_results(runs, {}, metadata=METADATA)
    assert "| shifted return | Δ under shift |" in text
    assert "drop vs nominal" not in text
    assert "%" not in _row(text, "amal | 3")[7]
    half = T_975_2 * 1.0 / math.sqrt(3)  # deltas 1, 2, 3: sd 1
    assert _row(text, "amal | 3")[7] == f"2.00 ± {half:.2f}"
    assert "- **Δ under shift**: per seed, the shifted return minus the nominal final return" in text


def test_network_sizes_dict_is_a_nested_list_and_a_string_stays() -> None:
    runs = [record("sb3-ppo", "Ant", 0, [1.0, 2.0])]
    networks = {"AMAL world model": "encoder 64-64", "AMAL policy": "actor 64-64"}
    text = render_results(runs, {}, metadata={**METADATA, "networks": networks})
    assert (
        "- Network sizes (compare the paper's §6.3.1 architecture):\n"
        "  - AMAL world model: encoder 64-64\n"
        "  - AMAL policy: actor 64-64\n"
    ) in text
    assert '{"AMAL world model"' not in text.split("## What these numbers")[1]
    text = render_results(runs, {}, metadata={**METADATA, "networks": "tiny MLPs"})
    assert "- Network sizes: tiny MLPs (compare the paper's §6.3.1 architecture)." in text


def test_certified_column_only_when_some_record_carries_it() -> None:
    runs, levels = _grid()
    header = (
        "| task | method | seeds measured | max param L2 | max param max-abs | max KL (mean) "
        "| max KL (max) | identical |"
    )
    assert header + " certified |" in render_results(runs, levels, metadata=METADATA)
    uncertified = [
        RunRecord(
            r.method,
            r.task,
            r.seed,
            r.budget,
            r.curve,
            r.train_seconds,
            extras={k: v for k, v in r.extras.items() if k != "certified"},
        )
        for r in runs
    ]
    text = render_results(uncertified, levels, metadata=METADATA)
    assert header + "\n" in text
    assert "certified" not in text.split("## Isolation")[1].split("## Reality gap")[0]
    assert _row(text, "TSP-20 | amal")[-1] == "3/3"


def test_one_informative_pair_gives_its_value_without_an_interval() -> None:
    amal = [[50.0, 100.0, 100.0, 100.0, 100.0], [20.0] * 5, [20.0] * 5]
    base = [[20.0, 30.0, 40.0, 50.0, 100.0], [20.0] * 5, [20.0] * 5]  # seeds 1, 2: neither reaches
    runs = [record("amal", "T", s, m) for s, m in enumerate(amal)] + [
        record("unsafe-mix", "T", s, m) for s, m in enumerate(base)
    ]
    levels = levels_of("T", [0, 1, 2])
    result = exploration_efficiency(runs, resolve_levels(runs, levels), baseline="unsafe-mix")
    assert result.estimate == pytest.approx(0.6)  # not 0.2 from two manufactured zeros
    assert (result.low, result.high, result.verdict) == (None, None, "inconclusive")
    text = render_results(runs, levels, metadata=METADATA)
    assert "only 1 of the 3 (task, seed) pair(s) is informative" in text
    assert "The one informative pair gives an improvement of 60.0 %, with no interval." in text
    assert "In 2 pair(s) (T: 2) neither amal nor unsafe-mix reached 90 % of optimal" in text


def test_a_run_over_several_sittings_tables_them_and_counts_records_per_commit() -> None:
    import dataclasses

    a = dataclasses.replace(record("sb3-ppo", "Ant", 0, [1.0, 2.0]), provenance={"git_commit": "aaa"})
    b = dataclasses.replace(record("sb3-ppo", "Ant", 1, [1.0, 2.0]), provenance={"git_commit": "bbb"})
    old = record("sb3-ppo", "Ant", 2, [1.0, 2.0])
    sittings = [
        {"command": "amal bench --full --tasks Ant", "start": "s1", "end": "e1", "git_commit": "aaa",
         "versions": {"torch": "2.13.0"}},
        {"command": "amal bench --full --tasks Ant", "start": "s2", "end": "e2", "git_commit": "bbb",
         "versions": {"torch": "2.13.0"}},
    ]  # fmt: skip
    metadata = {**METADATA, "git_commit": "bbb", "sittings": sittings}
    text = render_results([a, b, old], {}, metadata=metadata)
    assert "spread over 2 sittings" in text and "| s1 | e1 | aaa |" in text
    assert text.split("## How to reproduce")[1].split("```")[1].count("amal bench --full --tasks Ant") == 1
    assert "different package versions" not in text
    assert f"`amal bench --{METADATA['mode']} --out <that directory>` runs the whole grid" in text
    assert "1 from aaa; 1 from bbb; 1 from not recorded" in text
    sittings[1]["versions"] = {"torch": "2.14.0"}
    assert "different package versions" in render_results([a, b], {}, metadata=metadata)
    # One sitting, every record from its commit: nothing extra is said.
    single = render_results([b], {}, metadata={**METADATA, "git_commit": "bbb"})
    assert "sittings" not in single.split("<details>")[0] and "Records per producing commit" not in single
    assert "runs the whole grid" not in single
    # Records from before provenance existed: the metadata's commit is all there is, nothing to count.
    assert "Records per producing commit" not in render_results([old], {}, metadata=metadata)


def test_a_partial_run_says_so_and_lists_the_cells_not_run_yet() -> None:
    runs = [record("sb3-ppo", "Ant", 0, [1.0, 2.0])]
    pending = ["sb3-ppo__Ant__2", "amal__Ant__1", "sb3-ppo__Ant__1", "amal__Walker2d__0"]
    text = render_results(runs, {}, metadata=METADATA, pending=pending)
    assert "Partial run: 4 cell(s) of the grid have not been run yet" in text
    section = text.split("## Cells not run yet")[1].split("##")[0]
    assert section.index("| Ant | amal | 1 |") < section.index("| Ant | sb3-ppo | 1, 2 |")
    assert "| Walker2d | amal | 0 |" in section
    complete = render_results(runs, {}, metadata=METADATA)
    assert "Partial run" not in complete and "Cells not run yet" not in complete


def _efficiency_row(text: str, baseline: str) -> list[str]:
    section = text.split("## Exploration efficiency")[1].split("## Does the auxiliary", maxsplit=1)[0]
    (line,) = [ln for ln in section.splitlines() if ln.startswith(f"| {baseline} |")]
    return [c.strip() for c in line.strip("|").split("|")]


def test_a_quick_mode_run_is_reported_as_a_smoke_run_without_verdicts_or_intervals() -> None:
    # One seed per cell, as quick mode runs: two tasks with an optimum give two informative pairs, which
    # would otherwise give a bootstrap interval and a verdict.
    runs = [record("amal", t, 0, [100.0] * 5) for t in ("T", "U")] + [
        record("amal-no-info", t, 0, [20.0, 30.0, 40.0, 50.0, 100.0]) for t in ("T", "U")
    ]
    runs += [record("amal-aux-policy", t, 0, [100.0, 90.0, 90.0, 90.0, 80.0]) for t in ("T", "U")]
    levels = {**levels_of("T", [0]), **levels_of("U", [0])}
    full = render_results(runs, levels, metadata=METADATA)
    assert _efficiency_row(full, "amal-no-info")[6] == "**supported**"  # what a full run would claim
    quick = {**METADATA, "mode": "quick", "command": "amal bench --quick --out bench-out", "seeds": [0]}
    text = render_results(runs, levels, metadata=quick)
    assert "> **Smoke run (quick mode).**" in text and "with 1 seed(s) per (method, task)" in text
    assert text.index("Smoke run (quick mode)") < text.index("## How to reproduce")
    row = _efficiency_row(text, "amal-no-info")
    assert (row[4], row[5], row[6]) == ("—", "none (smoke run)", f"**{SMOKE_VERDICT}**")
    section = text.split("## Exploration efficiency")[1].split("## Does the auxiliary")[0]
    assert "Not tested: a smoke run" in section
    claims = section.split("| amal vs |")[1]  # the definitions above name every verdict
    assert not any(w in claims for w in ("**supported**", "**refuted**", "**inconclusive**", "We measured"))
    assert "2 (task, seed) pair(s)" in section and "| T | 0 | 200 | 1 000 | 80.0 % |" in section
    aux = text.split("## Does the auxiliary agents' data help the primary agent?")[1].split("## ")[0]
    assert f"| 0/1 | {SMOKE_VERDICT} |" in aux and "**hurt**" not in aux
    assert "±" not in text.split("## Results per task")[1].split("## Exploration efficiency")[0]
    assert "(n = 1: no interval)" in text
    limits = text.split("## What these numbers do and don't show")[1]
    assert (
        "A smoke run" in limits
        and "Seeds: 1 per (method, task). Cells with one seed have no interval" in limits
    )


def test_a_quick_mode_run_draws_no_verdict_even_with_three_seeds() -> None:
    runs = [record("amal", "T", s, [100.0] * 5) for s in range(3)] + [
        record("amal-no-info", "T", s, [20.0, 30.0, 40.0, 50.0, 100.0]) for s in range(3)
    ]
    quick = {**METADATA, "mode": "quick"}
    text = render_results(runs, levels_of("T", range(3)), metadata=quick)
    assert _efficiency_row(text, "amal-no-info")[5:7] == ["none (smoke run)", f"**{SMOKE_VERDICT}**"]
    assert "with 3 seed(s) per (method, task)" in text
