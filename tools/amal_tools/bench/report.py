"""``benchmarks/RESULTS.md`` from run records, levels, the ratio table and the run's metadata.

:func:`render_results` returns the Markdown (template ``templates/results.md.j2``);
:func:`write_results` also draws the figures (:mod:`amal_tools.bench.plots`) and writes the file.

Contracts:

- Every number in the document is computed from the inputs: the records, the levels, the
  naive predictors' errors (:mod:`amal_tools.bench.naive_predictors`), the metadata
  (embedded verbatim as JSON, its ``command`` shown as the reproduction command) and the
  performance-ratio table (embedded as given).  The statistics are those of
  :mod:`amal_tools.bench.stats`, whose definitions the document restates.
- An absent ``extras`` key is "not measured" (a dash or the words), never 0.
- Isolation: a record of ``amal`` whose ``extras["isolation"]`` shows any non-zero distance or KL,
  or ``identical = false``, is listed in an alert at the top of the document and in the isolation
  section, with its exact values.  Failed cells (``failed``) are listed at the top as well.
- A partial run says so: the grid's cells not run yet (``pending``, e.g. a full run between
  sittings) are counted at the top and listed per (task, method) in their own section.
- Deterministic: the same inputs give the same text (no clock is read; times come from metadata).
- A quick-mode run (``metadata["mode"] == "quick"``) is a smoke run (:mod:`amal_tools.bench.tasks`):
  the document says so at the top and in its limits, and draws no statistical conclusion from it —
  the exploration-efficiency comparisons get no interval and no verdict ("not tested (smoke run)"),
  and the auxiliary-data comparison no reading.  Its numbers are still all shown.  In any mode, a
  cell with one seed gets no interval ("n = 1: no interval").

``metadata`` keys read (all optional; the whole dict is embedded verbatim in any case):
``command`` (str or list of str: the commands that reproduce the run), ``mode``, ``seeds``,
``versions`` (dict name → version), ``git_commit`` (or ``commit``), ``machine`` (str or dict),
``start``/``end`` (or ``started``/``finished``), ``networks`` (str or dict name → description: the
network sizes used, quoted in the limits paragraph; a dict as a nested list, one line per entry),
``sittings`` (list of dicts with ``command``, ``start``, ``end``, ``git_commit``, ``versions``: a run
spread over several invocations; their commands replace ``command``, and with more than one they are
tabled, with a warning when their package versions differ).  Each record's ``provenance`` gives the
commit that produced it; the document counts the records per commit.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, final

import jinja2
import scipy.stats  # type: ignore[import-untyped]  # no stubs installed

from amal_tools.bench.isolation import PRIMARY_FIT_TRANSITIONS
from amal_tools.bench.naive_predictors import NaiveErrors, seed_means
from amal_tools.bench.plots import curve_file, method_order, write_plots
from amal_tools.bench.records import RunRecord
from amal_tools.bench.stats import (
    BEST_OBSERVED,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    CLAIMED_IMPROVEMENT,
    EfficiencyResult,
    Level,
    MeanCI,
    ResolvedLevels,
    exploration_efficiency,
    mean_ci,
    normalised_auc,
    resolve_levels,
    samples_to_fraction,
)
from amal_tools.bench.tasks import TASKS
from amal_verified.common.runtime_checks import checked

__all__ = [
    "EFFICIENCY_BASELINES",
    "FRACTION",
    "GATED_METHODS",
    "SMOKE_VERDICT",
    "Skipped",
    "isolation_violations",
    "render_results",
    "write_results",
]

_TEMPLATES: Final = Path(__file__).with_name("templates")
FRACTION: Final = 0.9
"""The "90 % of optimal" of the paper's sample-complexity metric (§6.1.3)."""
EFFICIENCY_BASELINES: Final[Mapping[str, str]] = {
    "amal-no-info": "the same trainer with λ = 0: the information-gain objective's own effect",
    "sb3-ppo": "standard single-agent PPO (Stable-Baselines3)",
    "sb3-sac": "standard single-agent SAC (Stable-Baselines3)",
    "sb3-td3": "standard single-agent TD3 (Stable-Baselines3)",
    "unsafe-mix": "the paper's standard MARL: world model trained on D_P ∪ D_A",
}
"""Baselines of the exploration-efficiency test (against ``amal``), with what each comparison shows."""
_ISOLATION_KEYS: Final = ("param_l2", "param_max_abs", "kl_mean", "kl_max")
_GAP_KEYS: Final = ("next_obs_mse", "reward_mse", "nll")
_FIT_PARTS: Final = ("with_aux", "primary_only", "naive")
_DASH: Final = "—"


@final
@dataclass(frozen=True)
class Skipped:
    """A (method, task) pair not run, with the reason (e.g. SAC on a discrete action space)."""

    method: str
    task: str
    reason: str


# ---------------------------------------------------------------- number formatting


def _int(n: int) -> str:
    return f"{n:,}".replace(",", " ")


def _num(x: float) -> str:
    """About 3 significant digits, thousands grouped, no exponent above 1e-3."""
    if x == 0:
        return "0"
    if not math.isfinite(x):
        return str(x)
    a = abs(x)
    if a >= 1000:
        return _int(round(x))
    if a >= 1:
        return f"{x:.{max(0, 2 - math.floor(math.log10(a)))}f}"
    if a >= 1e-3:
        return f"{x:.3g}"
    return f"{x:.2e}"


def _ci(ci: MeanCI) -> str:
    if ci.half_width is None:
        return f"{_num(ci.mean)} (n = 1: no interval)"
    return f"{_num(ci.mean)} ± {_num(ci.half_width)}"


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _exact(x: float) -> str:
    return "0 (exact)" if x == 0 else f"{x:.3e}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# ---------------------------------------------------------------- per-task table


def _level_line(
    task: str, seeds: Sequence[int], levels: Mapping[str, Mapping[int, Level]], resolved: ResolvedLevels
) -> str:
    given = levels.get(task, {})
    parts = []
    for s in seeds:
        lv, rv = given.get(s), resolved.get(task, s)
        if lv is None:
            parts.append(f"seed {s}: no level measured")
        elif rv is None:
            parts.append(f"seed {s}: random {_num(lv.random)}, no usable optimum")
        else:
            assert rv.optimal is not None  # resolved levels always have one
            parts.append(f"seed {s}: random {_num(rv.random)}, optimal {_num(rv.optimal)} ({rv.source})")
    return "; ".join(parts)


def _samples_cell(runs: Sequence[RunRecord], resolved: ResolvedLevels) -> str:
    usable = [(r, resolved.get(r.task, r.seed)) for r in runs]
    measured = [(r, lv) for r, lv in usable if lv is not None]
    if not measured:
        return "not measured (no usable level)"
    samples = [samples_to_fraction(r, lv, FRACTION) for r, lv in measured]
    reached = sorted(s for s in samples if s is not None)
    n, k = len(samples), len(reached)
    if k == 0:
        return f"not reached (0/{n})"
    # median over all seeds, a run that did not reach counted beyond its budget (right-censored)
    ordered: list[float] = [float(s) for s in reached] + [math.inf] * (n - k)
    median = statistics.median(ordered)
    if math.isinf(median) or math.isnan(median):
        budget = max(r.budget for r, _ in measured)
        return f"> {_int(budget)} (median not reached; {k}/{n})"
    return f"{_int(round(median))} ({k}/{n})"


def _auc_cell(runs: Sequence[RunRecord], resolved: ResolvedLevels) -> str:
    values = [normalised_auc(r, lv) for r in runs if (lv := resolved.get(r.task, r.seed)) is not None]
    return _ci(mean_ci(values)) if values else "not measured"


def _shift_cells(runs: Sequence[RunRecord]) -> tuple[str, str]:
    """The shifted return (mean ± t half-width) and Δ under shift: per seed shifted − nominal (the
    same run's final mean return), mean ± t half-width over the seeds measured."""
    pairs: list[tuple[float, float]] = []
    successes: list[float] = []
    for r in runs:
        shift = r.extras.get("shift")
        if isinstance(shift, Mapping) and shift.get("returns"):
            returns = [float(x) for x in shift["returns"]]
            pairs.append((r.final.mean_return, math.fsum(returns) / len(returns)))
            if shift.get("success") is not None:
                successes.append(float(shift["success"]))
    if not pairs:
        return "not measured", _DASH
    shifted = mean_ci([s for _, s in pairs])
    delta = mean_ci([s - n for n, s in pairs])
    note = f" ({len(pairs)}/{len(runs)} seeds)" if len(pairs) < len(runs) else ""
    if successes:
        note += f"; success {_pct(math.fsum(successes) / len(successes))}"
    return _ci(shifted) + note, _ci(delta)


def _success_cell(runs: Sequence[RunRecord]) -> str:
    rates = [r.final.success for r in runs if r.final.success is not None]
    if not rates:
        return _DASH
    return _pct(math.fsum(rates) / len(rates)) + (
        f" ({len(rates)}/{len(runs)} seeds)" if len(rates) < len(runs) else ""
    )


def _cost_cell(runs: Sequence[RunRecord]) -> str:
    seconds = math.fsum(r.train_seconds for r in runs) / len(runs)
    rates = [
        float(r.extras["env_steps_per_second"])
        for r in runs
        if r.extras.get("env_steps_per_second") is not None
    ]
    rate = f"; {_num(math.fsum(rates) / len(rates))} env steps/s" if rates else ""
    return f"{_num(seconds)} s{rate}"


def _task_section(
    task: str,
    records: Sequence[RunRecord],
    levels: Mapping[str, Mapping[int, Level]],
    resolved: ResolvedLevels,
    plots_link: str | None,
) -> dict[str, Any]:
    mine = [r for r in records if r.task == task]
    spec = TASKS.get(task)
    seeds = sorted({r.seed for r in mine})
    raw = not levels.get(task) or any(lv.optimal is None for lv in levels[task].values())
    best_observed = any(lv.optimal is None for lv in levels.get(task, {}).values())
    rows = []
    for method in method_order([r.method for r in mine]):
        runs = sorted((r for r in mine if r.method == method), key=lambda r: r.seed)
        shifted, delta = _shift_cells(runs)
        rows.append(
            [
                method,
                str(len(runs)),
                _ci(mean_ci([r.final.mean_return for r in runs])),
                _success_cell(runs),
                _samples_cell(runs, resolved),
                _auc_cell(runs, resolved),
                shifted,
                delta,
                _cost_cell(runs),
            ]
        )
    shift_descriptions = sorted(
        {
            str(r.extras["shift"]["description"])
            for r in mine
            if isinstance(r.extras.get("shift"), Mapping) and "description" in r.extras["shift"]
        }
    )
    budgets = sorted({r.budget for r in mine})
    episodes = sorted({len(r.final.returns) for r in mine})
    return {
        "name": task,
        "family": spec.family if spec else "not in the task catalogue",
        "reference": (
            "best observed (no known optimum)"
            if raw
            else "the task's maximum return"
            if spec is not None and spec.reference == "known"
            else "reference solution"
        ),
        "budgets": ", ".join(_int(b) for b in budgets),
        "episodes": ", ".join(str(e) for e in episodes),
        "levels": _level_line(task, seeds, levels, resolved),
        "shift": "; ".join(shift_descriptions) or "not measured",
        "figure": None if plots_link is None else f"{plots_link}/{curve_file(task)}",
        "samples_header": f"samples to {100 * FRACTION:g} %" + (" of best observed" if best_observed else ""),
        "rows": [[_cell(c) for c in row] for row in rows],
    }


# ---------------------------------------------------------------- isolation and reality gap


GATED_METHODS: Final = ("amal", "amal-no-info", "amal-aux-policy")
"""Methods trained by the library's gated trainer: Theorem 1 says their isolation distance is 0."""


@checked
def isolation_violations(records: Sequence[RunRecord], methods: Sequence[str] = GATED_METHODS) -> list[str]:
    """One line per record of ``methods`` whose isolation measurement is not exactly zero / identical,
    with the exact values."""
    out = []
    for r in records:
        iso = r.extras.get("isolation")
        if r.method not in methods or not isinstance(iso, Mapping):
            continue
        nonzero = {k: iso[k] for k in _ISOLATION_KEYS if iso.get(k) is not None and float(iso[k]) != 0.0}
        if nonzero or iso.get("identical") is False:
            values = ", ".join(f"{k} = {float(v)!r}" for k, v in nonzero.items())
            out.append(f"{r.key}: identical = {iso.get('identical')!r}" + (f", {values}" if values else ""))
    return out


_ISOLATION_HEADER: Final = (
    "task",
    "method",
    "seeds measured",
    "max param L2",
    "max param max-abs",
    "max KL (mean)",
    "max KL (max)",
    "identical",
)


def _has_certified(records: Sequence[RunRecord]) -> bool:
    """Whether any record carries ``extras["certified"]`` (the bench itself does not certify)."""
    return any(r.extras.get("certified") is not None for r in records)


def _isolation_rows(records: Sequence[RunRecord]) -> list[list[str]]:
    rows = []
    with_certified = _has_certified(records)
    order = method_order([r.method for r in records])
    cells = {(r.task, r.method) for r in records if isinstance(r.extras.get("isolation"), Mapping)}
    for task, method in sorted(cells, key=lambda c: (c[0], order.index(c[1]))):
        runs = [r for r in records if r.task == task and r.method == method]
        isos = [r.extras["isolation"] for r in runs if isinstance(r.extras.get("isolation"), Mapping)]
        row = [task, method, f"{len(isos)}/{len(runs)}"]
        for key in _ISOLATION_KEYS:
            values = [float(i[key]) for i in isos if i.get(key) is not None]
            row.append(_exact(max(values)) if values else "not measured")
        identical = [bool(i["identical"]) for i in isos if i.get("identical") is not None]
        row.append(f"{sum(identical)}/{len(identical)}" if identical else "not measured")
        if with_certified:
            certified = [bool(r.extras["certified"]) for r in runs if r.extras.get("certified") is not None]
            row.append(f"{sum(certified)}/{len(certified)}" if certified else _DASH)
        if method in GATED_METHODS and isolation_violations(runs):
            row[1] = f"**{method} — ⚠ NON-ZERO**"
        rows.append(row)
    return rows


def _seeds_below(
    gaps: Sequence[tuple[int, Mapping[str, Any]]],
    naive_errors: Mapping[int, NaiveErrors],
    bar: str,
) -> tuple[int, int]:
    """``(k, n)``: ``k`` of the ``n`` seeds with naive errors have a run model below ``bar``."""
    pairs = [
        (float(g["with_aux"]["next_obs_mse"]), getattr(naive_errors[seed], bar))
        for seed, g in gaps
        if seed in naive_errors
        and isinstance(g.get("with_aux"), Mapping)
        and g["with_aux"].get("next_obs_mse") is not None
    ]
    return sum(mse < ref for mse, ref in pairs), len(pairs)


def _gap_rows(
    records: Sequence[RunRecord], naive_errors: Mapping[str, Mapping[int, NaiveErrors]]
) -> list[list[str]]:
    rows = []
    cells = sorted(
        {(r.task, r.method) for r in records if isinstance(r.extras.get("wm_real_error"), Mapping)}
    )
    for task, method in cells:
        gaps = [
            (r.seed, r.extras["wm_real_error"])
            for r in records
            if r.task == task and r.method == method and isinstance(r.extras.get("wm_real_error"), Mapping)
        ]
        row = [task, method, str(len(gaps))]
        for key in _GAP_KEYS:
            for variant in ("with_aux", "primary_only"):
                values = [
                    float(g[variant][key])
                    for _, g in gaps
                    if isinstance(g.get(variant), Mapping) and g[variant].get(key) is not None
                ]
                row.append(_num(math.fsum(values) / len(values)) if values else "not measured")
        for bar in ("no_change_next_obs_mse", "best_constant_next_obs_mse"):
            below, n = _seeds_below(gaps, naive_errors.get(task, {}), bar)
            row.append(f"{below}/{n}" if n else "not measured")
        rows.append(row)
    return rows


def _fit_rows(records: Sequence[RunRecord]) -> list[list[str]]:
    """Per (task, method) with ``extras["wm_primary_fit"]``: the world models' errors on the run's own
    primary transitions beside the naive predictors' on the same transitions (means over seeds)."""
    fits: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in records:
        fit = r.extras.get("wm_primary_fit")
        if isinstance(fit, Mapping) and all(isinstance(fit.get(k), Mapping) for k in _FIT_PARTS):
            fits.setdefault((r.task, r.method), []).append(fit)

    def value(fit: Mapping[str, Any], part: str, key: str) -> float | None:
        found = fit[part].get(key)
        return None if found is None else float(found)

    def mean(runs: Sequence[Mapping[str, Any]], part: str, key: str) -> str:
        values = [v for f in runs if (v := value(f, part, key)) is not None]
        return _num(math.fsum(values) / len(values)) if values else "not measured"

    rows = []
    for (task, method), runs in sorted(fits.items()):
        pairs = [
            (m, c)
            for f in runs
            if (m := value(f, "with_aux", "next_obs_mse")) is not None
            and (c := value(f, "naive", "best_constant_next_obs_mse")) is not None
        ]
        rows.append(
            [
                task,
                method,
                str(len(runs)),
                mean(runs, "with_aux", "next_obs_mse"),
                mean(runs, "primary_only", "next_obs_mse"),
                mean(runs, "naive", "no_change_next_obs_mse"),
                mean(runs, "naive", "best_constant_next_obs_mse"),
                f"{sum(m < c for m, c in pairs)}/{len(pairs)}" if pairs else "not measured",
                mean(runs, "with_aux", "reward_mse"),
                mean(runs, "naive", "best_constant_reward_mse"),
            ]
        )
    return rows


def _never_below_constant(
    records: Sequence[RunRecord], naive_errors: Mapping[str, Mapping[int, NaiveErrors]]
) -> list[str]:
    """Tasks where no run world model scored against the best constant is below it (at least one is)."""
    tasks = []
    for task in sorted({r.task for r in records}):
        gaps = [
            (r.seed, r.extras["wm_real_error"])
            for r in records
            if r.task == task and isinstance(r.extras.get("wm_real_error"), Mapping)
        ]
        below, n = _seeds_below(gaps, naive_errors.get(task, {}), "best_constant_next_obs_mse")
        if n and not below:
            tasks.append(task)
    return tasks


def _naive_rows(
    records: Sequence[RunRecord], naive_errors: Mapping[str, Mapping[int, NaiveErrors]]
) -> list[list[str]]:
    """Per task with a reality-gap measurement: the naive predictors' errors, mean over its seeds."""
    rows = []
    for task in sorted({r.task for r in records if isinstance(r.extras.get("wm_real_error"), Mapping)}):
        seeds, means = seed_means(records, task, naive_errors)
        if not seeds:
            rows.append([task, "0", *(["not measured"] * 3)])
            continue
        fields = ("no_change_next_obs_mse", "best_constant_next_obs_mse", "best_constant_reward_mse")
        rows.append([task, str(seeds), *(_num(means[f]) for f in fields)])
    return rows


# ---------------------------------------------------------------- auxiliary data in the policy


AUX_POLICY_PAIR: Final = ("amal-aux-policy", "amal")
"""The runs that test whether the auxiliary agents' data helps the primary agent, and their control."""


SMOKE_VERDICT: Final = "not tested (smoke run)"
"""What a quick-mode (smoke) run reports in place of an interval-based verdict or reading."""


_SMOKE_LIMIT: Final = (
    "A smoke run: quick mode trains every method of its grid end to end at budgets sized for minutes, to "
    "show that training, evaluation, the shift, the isolation check and this report work; its numbers "
    "compare no methods, and no interval-based verdict is drawn from them."
)


def _smoke(metadata: Mapping[str, Any]) -> bool:
    """Whether ``metadata`` is that of a quick-mode run, a smoke run (module docstring)."""
    return metadata.get("mode") == "quick"


def _aux_policy_reading(differences: Sequence[float], smoke: bool) -> str:
    if smoke:
        return SMOKE_VERDICT
    if not any(differences):
        return "equal in every seed"
    ci = mean_ci(differences)
    if ci.low is None or ci.high is None:
        return "one pair: no interval"
    if ci.low > 0:
        return "**helped**"
    if ci.high < 0:
        return "**hurt**"
    return "no difference resolved"


def _aux_policy_rows(records: Sequence[RunRecord], resolved: ResolvedLevels, smoke: bool) -> list[list[str]]:
    """Per task: the paired (same seed) differences amal-aux-policy − amal of the final return and the
    normalised AUC, with t-intervals over the seeds, and how many seeds ended higher with the data
    (no reading in a smoke run)."""
    method, control = AUX_POLICY_PAIR
    by_key = {(r.method, r.task, r.seed): r for r in records}
    rows = []
    for task in sorted({r.task for r in records if r.method == method}):
        runs = sorted((r for r in records if r.method == method and r.task == task), key=lambda r: r.seed)
        pairs = [(r, by_key[(control, task, r.seed)]) for r in runs if (control, task, r.seed) in by_key]
        if not pairs:
            continue
        differences = [a.final.mean_return - b.final.mean_return for a, b in pairs]
        final = mean_ci(differences)
        aucs = [
            normalised_auc(a, lv) - normalised_auc(b, lv)
            for a, b in pairs
            if (lv := resolved.get(task, a.seed)) is not None
        ]
        higher = sum(a.final.mean_return > b.final.mean_return for a, b in pairs)
        rows.append(
            [
                _cell(task),
                str(len(pairs)),
                _ci(final),
                _ci(mean_ci(aucs)) if aucs else "not measured (no usable level)",
                f"{higher}/{len(pairs)}",
                _aux_policy_reading(differences, smoke),
            ]
        )
    return rows


# ---------------------------------------------------------------- the 40 % test


def _counts(by_task: Mapping[str, int]) -> str:
    """``{"T": 3, "U": 1}`` as ``"T: 3, U: 1"``."""
    return ", ".join(f"{t}: {n}" for t, n in by_task.items())


def _efficiency(result: EfficiencyResult, what: str, smoke: bool) -> dict[str, Any]:
    level = f"{100 * result.fraction:g} %"
    verdict: str = result.verdict
    used = result.informative_pairs
    excluded = result.excluded_by_task
    n_excluded = sum(excluded.values())
    if not result.pairs:
        sentence = (
            f"Not measured: no (task, seed) with a known optimum has records of both {result.method} and "
            f"{result.baseline} with a usable level."
        )
        interval = _DASH
    elif smoke:
        interval, verdict = "none (smoke run)", SMOKE_VERDICT
        sentence = (
            "Not tested: a smoke run (quick mode: budgets sized for minutes, one seed per cell by "
            f"default) supports no claim about the paper's {100 * CLAIMED_IMPROVEMENT:g} %, so neither an "
            f"interval nor a verdict is drawn from its {len(result.pairs)} (task, seed) pair(s). The samples "
            "per pair are listed below to show that the measurement runs."
        )
    else:
        if result.low is not None and result.high is not None:
            interval = f"[{_pct(result.low)}, {_pct(result.high)}]"
        elif len(used) < 2:
            interval = "none (fewer than 2 informative pairs)"
        else:
            interval = "none"
        excluded_text = ""
        if n_excluded:
            budgets = sorted({max(p.method_budget, p.baseline_budget) for p in result.pairs if p.excluded})
            excluded_text = (
                f"In {n_excluded} pair(s) ({_counts(excluded)}) neither {result.method} nor "
                f"{result.baseline} reached {level} of optimal: the budget(s) "
                f"({', '.join(_int(b) for b in budgets)} primary steps) were too small for either method "
                f"to get there on {', '.join(excluded)}, so these pairs carry no information about the "
                "ratio and are excluded from the estimate and the interval."
            )
        if len(used) < 2:
            one = (
                f" The one informative pair gives an improvement of {_pct(result.estimate)}, "
                "with no interval."
                if result.estimate is not None
                else ""
            )
            how_many = (
                f"none of the {len(result.pairs)} (task, seed) pair(s) is informative"
                if not used
                else f"only 1 of the {len(result.pairs)} (task, seed) pair(s) is informative"
            )
            sentence = (
                f"Inconclusive: {how_many}, too few for an interval (the paper claims "
                f"{100 * CLAIMED_IMPROVEMENT:g} %). "
                + excluded_text
                + one
                + f" Verdict: **{result.verdict}**."
            )
        else:
            assert result.estimate is not None  # informative pairs give an estimate
            sentence = (
                f"We measured a mean improvement of {_pct(result.estimate)} {interval} in samples to "
                f"{level} of optimal over {len(used)} informative (task, seed) pair(s); the paper claims "
                f"{100 * CLAIMED_IMPROVEMENT:g} %. Verdict: **{result.verdict}**. "
                + (excluded_text + " " if excluded_text else "")
                + f"Censoring: {result.censoring_note}"
            )
    pairs = [
        [
            p.task,
            str(p.seed),
            _int(p.method_samples)
            if p.method_samples is not None
            else ("not reached" if p.excluded else f"not reached (counted {_int(p.method_budget)})"),
            _int(p.baseline_samples)
            if p.baseline_samples is not None
            else ("not reached" if p.excluded else f"not reached (counted {_int(p.baseline_budget)})"),
            f"excluded (neither reached {level})" if p.improvement is None else _pct(p.improvement),
        ]
        for p in result.pairs
    ]
    return {
        "baseline": result.baseline,
        "what": what,
        "n": str(len(used)),
        "excluded": f"{n_excluded} ({_counts(excluded)})" if n_excluded else "0",
        "estimate": _DASH if result.estimate is None or smoke else _pct(result.estimate),
        "interval": interval,
        "verdict": verdict,
        "censored": f"{result.n_method_censored_only} / {result.n_baseline_censored_only}",
        "sentence": sentence,
        "pairs": pairs,
        "unpaired": _by_task(result.unpaired),
        "no_optimum": _by_task(result.no_optimum),
    }


def _by_task(cells: Sequence[str]) -> str:
    """``["T/0", "T/1", "U/2"]`` as ``"T (seeds 0, 1); U (seed 2)"``."""
    seeds: dict[str, list[str]] = {}
    for cell in cells:
        task, _, seed = cell.rpartition("/")
        seeds.setdefault(task, []).append(seed)
    return "; ".join(f"{t} (seed{'s' if len(ss) > 1 else ''} {', '.join(ss)})" for t, ss in seeds.items())


# ---------------------------------------------------------------- limits


def _network_value(value: Any) -> str:
    """One entry of a networks dict on one line (a non-string value as JSON)."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return " ".join(text.split("\n"))


def _network_entry(name: Any, value: Any) -> str:
    return f"{_network_value(str(name))}: {_network_value(value)}"


def _limits(records: Sequence[RunRecord], resolved: ResolvedLevels, metadata: Mapping[str, Any]) -> list[str]:
    if not records:
        return ["Nothing: no run record was given, so nothing was measured."]
    methods = method_order([r.method for r in records])
    tasks = sorted({r.task for r in records})
    by_budget: dict[int, set[str]] = {}
    for r in records:
        by_budget.setdefault(r.budget, set()).add(r.task)
    counts = [len([r for r in records if r.method == m and r.task == t]) for m in methods for t in tasks]
    counts = [c for c in counts if c]
    lo, hi = min(counts), max(counts)
    episodes = sorted({len(r.final.returns) for r in records})
    out = [_SMOKE_LIMIT] if _smoke(metadata) else []
    out += [
        f"Scale: {len(tasks)} task(s) of the catalogue's {len(TASKS)}, {len(methods)} method(s) "
        f"({', '.join(methods)}), mode {metadata.get('mode', 'not recorded')}.",
        "Budgets (primary environment steps per run): "
        + "; ".join(f"{_int(b)} ({', '.join(sorted(ts))})" for b, ts in sorted(by_budget.items()))
        + ". Conclusions about sample efficiency hold only within these budgets: a method that needs more "
        "steps than the budget shows as 'not reached', and samples-to-90 % cannot rank methods beyond it.",
    ]
    seeds_text = f"{lo}" if lo == hi else f"{lo}–{hi}"
    t_note = ""
    if lo >= 2:
        t_note = (
            f" With n = {lo}, a 95 % t-interval is ±{float(scipy.stats.t.ppf(0.975, lo - 1)):.2f} standard "
            "errors wide on each side: only large differences are resolved."
        )
    elif lo == 1:
        t_note = " Cells with one seed have no interval at all."
    out.append(f"Seeds: {seeds_text} per (method, task).{t_note}")
    out.append(
        f"Evaluation: {', '.join(map(str, episodes))} episode(s) per evaluation point, deterministic policy, "
        "the same episodes for every method of a seed."
    )
    networks = metadata.get("networks")
    if isinstance(networks, Mapping):
        out.append(
            "Network sizes (compare the paper's §6.3.1 architecture):"
            + "".join(f"\n  - {_network_entry(name, size)}" for name, size in networks.items())
        )
    else:
        sizes = "not recorded in the run metadata" if networks is None else networks
        sizes = sizes if isinstance(sizes, str) else json.dumps(sizes, ensure_ascii=False)
        out.append(f"Network sizes: {sizes} (compare the paper's §6.3.1 architecture).")
    absent = [m for m in ("qmix", "maddpg", "mappo") if m not in methods]
    if absent:
        out.append(
            "Not compared: the paper's multi-agent baselines (QMIX, MADDPG, MAPPO). They learn policies "
            "for several agents acting together in one shared environment; in AMAL's setting only the "
            "primary agent acts in the real environment and the auxiliary agents act in a separate "
            "auxiliary environment, so none of these tasks has a team for them to train. Running them "
            "would mean putting the auxiliary agents into the real environment, which changes the task "
            "(and is what AMAL exists to avoid); a PettingZoo task would measure something else. The "
            "paper's 'standard MARL' comparison, learning from the pooled experience of all agents, is "
            "what unsafe-mix measures: the same trainer with its world model trained on D_P ∪ D_A."
        )
    best = sorted(
        {t for t, seeds in resolved.levels.items() for lv in seeds.values() if lv.source == "best observed"}
    )
    if best:
        out.append(
            f"Best-observed tasks ({', '.join(best)}): 'optimal' is the best final mean return of any "
            "method in these records, so normalised scores and samples-to-90 % there compare methods "
            "with each other, not with an optimum, and change when another method is added."
        )
    if resolved.unusable:
        out.append(
            "Normalised metrics not measured for: "
            + "; ".join(f"{t}/{s} ({why})" for t, s, why in resolved.unusable)
            + "."
        )
    out.append(
        "What they do show: isolation numbers are exact measurements on these runs (Theorem 1 predicts 0 for "
        "amal); returns and samples-to-90 % are evidence at this scale, not a reproduction of the paper's "
        "full-scale experiments (the paper reports only preliminary small-scale results, §6.2)."
    )
    return out


# ---------------------------------------------------------------- rendering


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def _sittings(metadata: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    sittings = metadata.get("sittings")
    if not isinstance(sittings, list):
        return []
    return [s for s in sittings if isinstance(s, Mapping)]


def _commands(metadata: Mapping[str, Any]) -> list[str]:
    sittings = _sittings(metadata)
    if sittings:
        commands = [str(s["command"]) for s in sittings if "command" in s]
        return list(dict.fromkeys(commands))  # each distinct command once, in the order first run
    command = metadata.get("command")
    if command is None:
        return []
    return [command] if isinstance(command, str) else [str(c) for c in command]


def _sitting_rows(metadata: Mapping[str, Any]) -> list[tuple[str, ...]]:
    return [
        (
            _cell(str(s.get("start", "not recorded"))),
            _cell(str(s.get("end", "not recorded"))),
            _cell(str(s.get("git_commit", "not recorded"))),
            "`" + _cell(str(s.get("command", "not recorded"))) + "`",
        )
        for s in _sittings(metadata)
    ]


def _versions_differ(metadata: Mapping[str, Any]) -> bool:
    seen = [s["versions"] for s in _sittings(metadata) if isinstance(s.get("versions"), Mapping)]
    return any(v != seen[0] for v in seen[1:])


def _pending_rows(pending: Sequence[str]) -> list[tuple[str, str, str]]:
    seeds: dict[tuple[str, str], list[int]] = {}
    for key in pending:
        method, task, seed = key.split("__")
        seeds.setdefault((task, method), []).append(int(seed))
    order = method_order([method for _, method in seeds])
    return [
        (_cell(task), _cell(method), ", ".join(map(str, sorted(s))))
        for (task, method), s in sorted(seeds.items(), key=lambda kv: (kv[0][0], order.index(kv[0][1])))
    ]


def _skipped_rows(skipped: Sequence[Skipped]) -> list[tuple[str, str, str]]:
    """One row per (method, reason): the reason with its task's name generalised, then the tasks.

    A method the catalogue rules out of every discrete-action task would otherwise fill a row per
    task with the same sentence.
    """
    tasks: dict[tuple[str, str], set[str]] = {}
    originals: dict[tuple[str, str], str] = {}
    for s in skipped:
        key = (s.method, s.reason.replace(s.task, "the task"))
        tasks.setdefault(key, set()).add(s.task)
        originals[key] = s.reason
    order = method_order([method for method, _ in tasks])
    rows = []
    for (method, reason), names in sorted(tasks.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1])):
        text = originals[(method, reason)] if len(names) == 1 else reason
        rows.append((_cell(method), _cell(", ".join(sorted(names))), _cell(text)))
    return rows


def _records_by_commit(records: Sequence[RunRecord]) -> list[tuple[str, int]]:
    if not any(r.provenance for r in records):
        return []  # none says: the metadata's commit is all there is to go by
    counts: dict[str, int] = {}
    for r in records:
        commit = r.provenance.get("git_commit", "not recorded (written before records carried provenance)")
        counts[commit] = counts.get(commit, 0) + 1
    return sorted(counts.items())


def _seed_counts(records: Sequence[RunRecord]) -> str:
    """How many seeds the (method, task) cells have: ``"1"``, ``"3"`` or a range ``"1–3"``."""
    counts: dict[tuple[str, str], int] = {}
    for r in records:
        counts[(r.method, r.task)] = counts.get((r.method, r.task), 0) + 1
    if not counts:
        return "0"
    lo, hi = min(counts.values()), max(counts.values())
    return f"{lo}" if lo == hi else f"{lo}–{hi}"


@checked
def render_results(
    records: Sequence[RunRecord],
    levels: Mapping[str, Mapping[int, Level]],
    *,
    skipped: Sequence[Skipped] = (),
    ratios_markdown: str | None = None,
    metadata: Mapping[str, Any],
    plots_dir: Path | None = None,
    plots_link: str | None = None,
    failed: Mapping[str, str] | None = None,
    pending: Sequence[str] = (),
    naive_errors: Mapping[str, Mapping[int, NaiveErrors]] | None = None,
) -> str:
    """The Markdown of ``RESULTS.md`` (see the module docstring).

    With ``plots_dir`` the figures are drawn there and linked as ``<plots_link>/<file>``
    (``plots_link`` defaults to ``plots_dir`` as given).  ``failed``: cell key → traceback of cells
    that raised; ``pending``: keys (``method__task__seed``) of the grid's cells not run yet;
    ``naive_errors``: task → seed → the naive predictors' errors on that seed's held-out
    transitions (:mod:`amal_tools.bench.naive_predictors`), set beside the world models'.  With no
    records at all (every cell failed or was skipped) the document says so.
    ``ValueError`` for a given level with optimal <= random.
    """
    resolved = resolve_levels(records, levels)
    link = None
    if plots_dir is not None:
        write_plots(records, levels, plots_dir, naive_errors)
        link = plots_link if plots_link is not None else plots_dir.as_posix()
        written = {p.name for p in plots_dir.iterdir()}
    else:
        written = set()
    tasks = sorted({r.task for r in records})
    methods = {r.method for r in records}
    smoke = _smoke(metadata)
    comparisons = [
        _efficiency(
            exploration_efficiency(records, resolved, method="amal", baseline=b, fraction=FRACTION),
            what,
            smoke,
        )
        for b, what in EFFICIENCY_BASELINES.items()
        if b in methods and "amal" in methods
    ]
    no_optimum_tasks = sorted(
        {t for t in tasks for lv in resolved.levels.get(t, {}).values() if lv.source == BEST_OBSERVED}
        | {t for t in tasks for lv in levels.get(t, {}).values() if lv.optimal is None}
    )
    versions = metadata.get("versions")
    machine = metadata.get("machine")
    context = {
        "n_records": len(records),
        "n_methods": len(methods),
        "n_tasks": len(tasks),
        "commands": _commands(metadata),
        "versions": sorted((str(k), str(v)) for k, v in versions.items())
        if isinstance(versions, Mapping)
        else [],
        "machine": json.dumps(machine, ensure_ascii=False) if isinstance(machine, Mapping) else machine,
        "commit": metadata.get("git_commit", metadata.get("commit")),
        "start": metadata.get("start", metadata.get("started")),
        "end": metadata.get("end", metadata.get("finished")),
        "mode": metadata.get("mode"),
        "smoke": smoke,
        "seed_counts": _seed_counts(records),
        "metadata_json": json.dumps(metadata, indent=2, ensure_ascii=False, default=str),
        "sittings": _sitting_rows(metadata) if len(_sittings(metadata)) > 1 else [],
        "versions_differ": _versions_differ(metadata),
        "records_by_commit": _records_by_commit(records),
        "fraction": f"{100 * FRACTION:g} %",
        "claim": f"{100 * CLAIMED_IMPROVEMENT:g} %",
        "resamples": _int(BOOTSTRAP_RESAMPLES),
        "bootstrap_seed": f"{BOOTSTRAP_SEED:#x}",
        "tasks": [_task_section(t, records, levels, resolved, link) for t in tasks],
        "violations": isolation_violations(records),
        "failed": [
            (key, (tb.strip().splitlines() or ["(no traceback)"])[-1])
            for key, tb in sorted((failed or {}).items())
        ],
        "n_pending": len(pending),
        "pending_rows": _pending_rows(pending),
        "isolation_rows": _isolation_rows(records),
        "isolation_header": list(_ISOLATION_HEADER) + (["certified"] if _has_certified(records) else []),
        "no_optimum_tasks": ", ".join(no_optimum_tasks),
        "isolation_figure": f"{link}/isolation.png"
        if link is not None and "isolation.png" in written
        else None,
        "gap_rows": _gap_rows(records, naive_errors or {}),
        "naive_rows": _naive_rows(records, naive_errors or {}),
        "fit_rows": _fit_rows(records),
        "fit_transitions": _int(PRIMARY_FIT_TRANSITIONS),
        "never_below_constant": ", ".join(_never_below_constant(records, naive_errors or {})),
        "gated_methods": ", ".join(GATED_METHODS),
        "aux_policy_rows": _aux_policy_rows(records, resolved, smoke),
        "aux_policy_pending": AUX_POLICY_PAIR[0] not in methods,
        "gap_figure": f"{link}/reality_gap.png"
        if link is not None and "reality_gap.png" in written
        else None,
        "comparisons": comparisons,
        "ratios": ratios_markdown.strip() if ratios_markdown else None,
        "skipped": _skipped_rows(skipped),
        "limits": _limits(records, resolved, metadata),
    }
    text = _environment().get_template("results.md.j2").render(**context)
    return re.sub(r"\n{3,}", "\n\n", text)  # blank lines left by template blocks that rendered nothing


@checked
def write_results(
    path: str | os.PathLike[str],
    records: Sequence[RunRecord],
    levels: Mapping[str, Mapping[int, Level]],
    *,
    skipped: Sequence[Skipped] = (),
    ratios_markdown: str | None = None,
    metadata: Mapping[str, Any],
    plots_dir: str | os.PathLike[str] | None = None,
    failed: Mapping[str, str] | None = None,
    pending: Sequence[str] = (),
    naive_errors: Mapping[str, Mapping[int, NaiveErrors]] | None = None,
) -> Path:
    """Write ``RESULTS.md`` to ``path`` (figures into ``plots_dir``, default ``<path's dir>/plots``,
    linked relative to ``path``); returns ``path``."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    plots = out.parent / "plots" if plots_dir is None else Path(plots_dir)
    text = render_results(
        records,
        levels,
        skipped=skipped,
        ratios_markdown=ratios_markdown,
        metadata=metadata,
        plots_dir=plots,
        plots_link=Path(os.path.relpath(plots, out.parent)).as_posix(),
        failed=failed,
        pending=pending,
        naive_errors=naive_errors,
    )
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
    return out
