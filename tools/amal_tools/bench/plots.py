"""Figures of ``benchmarks/RESULTS.md``, drawn from run records (matplotlib, Agg backend).

:func:`write_plots` draws, into one directory:

- ``curve_<task>.png`` for every task with records: per method, the mean over seeds and the 95 %
  Student-t band (:func:`~amal_tools.bench.stats.mean_ci`, drawn where a step has >= 2 seeds) of
  the normalised score (0 = random, 1 = optimal) against primary environment steps — or of the raw
  mean return for a task without a known optimum (a ``"best-observed"`` task: its axis says so);
- ``isolation.png``: the world-model parameter distance (L2) and mean KL between each run's world
  model and the one retrained on its primary data alone, per task and seed, ``amal`` against
  ``unsafe-mix``; log scale, a value of exactly 0 drawn on the dashed "0 (exact)" line below the
  smallest positive value;
- ``reality_gap.png``: the world models' next-observation MSE on held-out real transitions, the
  run's model ("with aux") against the primary-only retrain, ``amal`` and ``unsafe-mix`` (mean over
  seeds, 95 % t-interval bars), with the naive predictors' errors on the same transitions drawn across
  each task where given (:mod:`amal_tools.bench.naive_predictors`).

A figure with no data to show is not written.  The output is deterministic: fixed sizes, fixed dpi,
fixed colours per method, no timestamp or software version in the PNG metadata, so re-drawing the
same records gives byte-identical files.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final, Literal

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from amal_tools.bench.naive_predictors import NaiveErrors, seed_means
from amal_tools.bench.records import RunRecord
from amal_tools.bench.stats import Level, ResolvedLevels, mean_ci, normalised, resolve_levels
from amal_verified.common.runtime_checks import checked

__all__ = [
    "METHOD_ORDER",
    "curve_file",
    "isolation_figure",
    "learning_curve_figure",
    "method_order",
    "reality_gap_figure",
    "write_plots",
]

METHOD_ORDER: Final[tuple[str, ...]] = (
    "amal",
    "amal-no-info",
    "amal-aux-policy",
    "unsafe-mix",
    "sb3-ppo",
    "sb3-sac",
    "sb3-td3",
    "cem-rl",
    "pbt",
)
_COLOURS: Final[Mapping[str, str]] = {
    "amal": "#1b9e77",
    "amal-no-info": "#66a61e",
    "amal-aux-policy": "#17becf",
    "unsafe-mix": "#d95f02",
    "sb3-ppo": "#7570b3",
    "sb3-sac": "#e7298a",
    "sb3-td3": "#e6ab02",
    "cem-rl": "#a6761d",
    "pbt": "#666666",
}
_OTHER_COLOURS: Final = ("#1f77b4", "#bcbd22", "#8c564b", "#9467bd", "#e377c2")
_DPI: Final = 110
_ISOLATION_METHODS: Final = ("amal", "unsafe-mix")
_VARIANT_LABEL: Final = {"with_aux": "run WM (with aux)", "primary_only": "primary-only retrain"}


@checked
def method_order(methods: Sequence[str]) -> list[str]:
    """``methods`` (deduplicated) in the report's order: :data:`METHOD_ORDER`, then others by name."""
    known = [m for m in METHOD_ORDER if m in methods]
    return known + sorted(set(methods) - set(METHOD_ORDER))


def _colour(method: str, others: Sequence[str]) -> str:
    if method in _COLOURS:
        return _COLOURS[method]
    return _OTHER_COLOURS[sorted(others).index(method) % len(_OTHER_COLOURS)]


def _save(fig: Figure, path: Path) -> Path:
    try:
        fig.tight_layout()
        fig.savefig(path, dpi=_DPI, format="png", metadata={"Software": None})
    finally:
        plt.close(fig)
    return path


@checked
def curve_file(task: str) -> str:
    """The file name of ``task``'s learning-curve figure."""
    return "curve_" + re.sub(r"[^A-Za-z0-9._-]+", "_", task) + ".png"


@checked
def learning_curve_figure(
    task: str, records: Sequence[RunRecord], levels: ResolvedLevels, *, raw: bool, path: Path
) -> Path:
    """Draw the learning curves of ``task`` (records of other tasks are ignored) into ``path``.

    ``raw``: plot the mean return (a task without a known optimum) instead of the normalised score;
    without ``raw``, runs whose (task, seed) has no usable level are left out.
    """
    mine = [r for r in records if r.task == task]
    if not mine:
        raise ValueError(f"no record of task {task!r} to draw")
    methods = method_order([r.method for r in mine])
    others = [m for m in methods if m not in _COLOURS]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    sources: set[str] = set()
    for method in methods:
        by_step: dict[int, list[float]] = {}
        for r in (r for r in mine if r.method == method):
            level = levels.get(r.task, r.seed)
            if not raw and level is None:
                continue
            if level is not None:
                sources.add(level.source)
            for p in r.curve:
                value = p.mean_return if raw or level is None else normalised(p.mean_return, level, task=task)
                by_step.setdefault(p.step, []).append(value)
        if not by_step:
            continue
        steps = sorted(by_step)
        cis = [mean_ci(by_step[s]) for s in steps]
        seeds = max(len(v) for v in by_step.values())
        colour = _colour(method, others)
        ax.plot(steps, [c.mean for c in cis], "o-", ms=3, lw=1.4, color=colour, label=f"{method} (n={seeds})")
        band = [(s, c.low, c.high) for s, c in zip(steps, cis, strict=True)]
        banded = [(s, lo, hi) for s, lo, hi in band if lo is not None and hi is not None]
        if banded:
            ax.fill_between(
                [s for s, _, _ in banded],
                [lo for _, lo, _ in banded],
                [hi for _, _, hi in banded],
                color=colour,
                alpha=0.18,
                lw=0,
            )
    if raw:
        ax.set_ylabel("mean evaluation return (raw; no known optimum)")
        randoms = [lv.random for lv in levels.given.get(task, {}).values()]
        if randoms:
            ax.axhline(
                math.fsum(randoms) / len(randoms), color="k", ls=":", lw=1, label="random policy (mean)"
            )
        title = f"{task}: mean return (best-observed task: raw returns)"
    else:
        ax.axhline(0.0, color="k", ls=":", lw=1)
        ax.axhline(1.0, color="k", ls="--", lw=1)
        ax.axhline(0.9, color="grey", ls="-.", lw=0.8, label="90 % of optimal")
        ax.set_ylabel("normalised score (0 = random, 1 = optimal)")
        title = f"{task}: normalised score (optimal: {', '.join(sorted(sources)) or 'n/a'})"
    ax.set_xlabel("primary environment steps")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _isolation_values(records: Sequence[RunRecord], key: str) -> dict[tuple[str, str], list[float]]:
    out: dict[tuple[str, str], list[float]] = {}
    for r in records:
        iso = r.extras.get("isolation")
        if r.method in _ISOLATION_METHODS and isinstance(iso, Mapping) and iso.get(key) is not None:
            out.setdefault((r.task, r.method), []).append(float(iso[key]))
    return out


def _zero_line_panel(
    ax: Axes, tasks: list[str], values: dict[tuple[str, str], list[float]], label: str
) -> None:
    positives = [v for vs in values.values() for v in vs if v > 0]
    # zeros sit on a line 1.5 decades below the smallest positive value, labelled "0 (exact)";
    # the decades between are left unlabelled so that no real value seems to be drawn there
    low_decade = math.floor(math.log10(min(positives))) if positives else -12
    top_decade = math.ceil(math.log10(max(positives))) if positives else low_decade
    floor = 10.0 ** (low_decade - 1.5)
    ax.axhline(floor, color="grey", ls="--", lw=0.8)
    for k, method in enumerate(_ISOLATION_METHODS):
        offset = -0.15 if k == 0 else 0.15
        xs_pos: list[float] = []
        ys_pos: list[float] = []
        xs_zero: list[float] = []
        for i, task in enumerate(tasks):
            for j, v in enumerate(values.get((task, method), [])):
                x = i + offset + 0.03 * (j - 1)
                if v > 0:
                    xs_pos.append(x)
                    ys_pos.append(v)
                else:
                    xs_zero.append(x)
        colour = _COLOURS[method]
        if xs_pos:
            ax.scatter(xs_pos, ys_pos, color=colour, marker="o", s=18, label=f"{method}")
        if xs_zero:
            ax.scatter(
                xs_zero, [floor] * len(xs_zero), color=colour, marker="s", s=22, label=f"{method}: 0 (exact)"
            )
    ax.set_yscale("log")
    ax.set_ylim(floor / 3.0, 10.0 ** (top_decade + 0.3))
    decades = [10.0**d for d in range(low_decade, top_decade + 1)] if positives else []
    ax.yaxis.set_major_locator(matplotlib.ticker.FixedLocator([floor, *decades]))
    ax.yaxis.set_major_formatter(
        matplotlib.ticker.FixedFormatter(
            ["0 (exact)"] + [f"$10^{{{d}}}$" for d in range(low_decade, top_decade + 1)]
        )
    )
    ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right", fontsize=7)
    ax.set_xlim(-0.6, len(tasks) - 0.4)
    ax.set_ylabel(label)
    ax.grid(alpha=0.3, axis="y")


@checked
def isolation_figure(records: Sequence[RunRecord], path: Path) -> Path | None:
    """Draw the isolation figure into ``path``; ``None`` (nothing written) without isolation data."""
    l2 = _isolation_values(records, "param_l2")
    kl = _isolation_values(records, "kl_mean")
    if not l2 and not kl:
        return None
    tasks = sorted({t for t, _ in l2} | {t for t, _ in kl})
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(7.0, 1.1 * len(tasks) + 5.0), 3.8))
    _zero_line_panel(left, tasks, l2, "‖θ_run − θ_primary-only‖₂")
    _zero_line_panel(right, tasks, kl, "mean KL(run WM ‖ primary-only WM)")
    left.legend(fontsize=7, loc="upper left")
    fig.suptitle(
        "World-model isolation: each run's world model against one retrained on its primary data alone",
        fontsize=9,
    )
    return _save(fig, path)


_NAIVE_BARS: Final[Mapping[str, tuple[Literal[":", "--"], str]]] = {
    "no_change_next_obs_mse": (":", "predict s' = s (no change)"),
    "best_constant_next_obs_mse": ("--", "best constant (hindsight)"),
}


def _gap_values(records: Sequence[RunRecord]) -> dict[tuple[str, str, str], list[float]]:
    out: dict[tuple[str, str, str], list[float]] = {}
    for r in records:
        gap = r.extras.get("wm_real_error")
        if r.method not in _ISOLATION_METHODS or not isinstance(gap, Mapping):
            continue
        for variant in ("with_aux", "primary_only"):
            errors = gap.get(variant)
            if isinstance(errors, Mapping) and errors.get("next_obs_mse") is not None:
                out.setdefault((r.task, r.method, variant), []).append(float(errors["next_obs_mse"]))
    return out


def _naive_levels(
    records: Sequence[RunRecord], tasks: Sequence[str], naive_errors: Mapping[str, Mapping[int, NaiveErrors]]
) -> dict[str, dict[str, float]]:
    """Per task: the naive predictors' next-obs MSE, mean over the seeds of its records that have one."""
    out: dict[str, dict[str, float]] = {}
    for task in tasks:
        seeds, means = seed_means(records, task, naive_errors)
        if seeds:
            out[task] = {bar: means[bar] for bar in _NAIVE_BARS}
    return out


@checked
def reality_gap_figure(
    records: Sequence[RunRecord],
    path: Path,
    naive_errors: Mapping[str, Mapping[int, NaiveErrors]] | None = None,
) -> Path | None:
    """Draw the reality-gap figure into ``path``, with the naive predictors' errors
    (:mod:`amal_tools.bench.naive_predictors`) as lines across each task where given; ``None``
    (nothing written) without reality-gap data."""
    values = _gap_values(records)
    if not values:
        return None
    tasks = sorted({t for t, _, _ in values})
    naive = _naive_levels(records, tasks, naive_errors or {})
    series = [(m, v) for m in _ISOLATION_METHODS for v in ("with_aux", "primary_only")]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6.4, 1.2 * len(tasks) + 4.0), 3.8))
    all_positive = all(v > 0 for vs in values.values() for v in vs) and all(
        v > 0 for bars in naive.values() for v in bars.values()
    )
    for k, (method, variant) in enumerate(series):
        xs, means, errs = [], [], []
        for i, task in enumerate(tasks):
            vs = values.get((task, method, variant))
            if not vs:
                continue
            ci = mean_ci(vs)
            xs.append(i + (k - (len(series) - 1) / 2) * width)
            means.append(ci.mean)
            errs.append(0.0 if ci.half_width is None else ci.half_width)
        if xs:
            ax.bar(
                xs,
                means,
                width=width,
                yerr=errs,
                color=_COLOURS[method],
                hatch="//" if variant == "primary_only" else None,
                edgecolor="k",
                linewidth=0.5,
                capsize=2,
                label=f"{method}: {_VARIANT_LABEL[variant]}",
            )
    at = [i for i, task in enumerate(tasks) if task in naive]
    for bar, (style, label) in _NAIVE_BARS.items():
        if at:
            ys = [naive[tasks[i]][bar] for i in at]
            xmin, xmax = [i - 0.45 for i in at], [i + 0.45 for i in at]
            ax.hlines(ys, xmin, xmax, colors="0.1", linestyles=style, linewidth=1.4, label=label, zorder=3)
    if all_positive:
        ax.set_yscale("log")
    ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right", fontsize=7)
    ax.set_xlim(-0.6, len(tasks) - 0.4)
    ax.set_ylabel("next-observation MSE on held-out real transitions")
    ax.set_title("Reality gap of the world models (mean over seeds, 95 % t-interval)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def _raw_tasks(records: Sequence[RunRecord], levels: Mapping[str, Mapping[int, Level]]) -> set[str]:
    """Tasks plotted in raw returns: no level at all, or a level without a known optimum."""
    tasks = {r.task for r in records}
    return {t for t in tasks if not levels.get(t) or any(lv.optimal is None for lv in levels[t].values())}


@checked
def write_plots(
    records: Sequence[RunRecord],
    levels: Mapping[str, Mapping[int, Level]],
    out_dir: Path,
    naive_errors: Mapping[str, Mapping[int, NaiveErrors]] | None = None,
) -> list[Path]:
    """Draw every figure of the report into ``out_dir`` (created); returns the written paths.
    ``naive_errors`` (task → seed) are drawn across the reality-gap figure's tasks."""
    out_dir.mkdir(parents=True, exist_ok=True)
    resolved = resolve_levels(records, levels)
    raw = _raw_tasks(records, levels)
    paths = [
        learning_curve_figure(task, records, resolved, raw=task in raw, path=out_dir / curve_file(task))
        for task in sorted({r.task for r in records})
    ]
    for written in (
        isolation_figure(records, out_dir / "isolation.png"),
        reality_gap_figure(records, out_dir / "reality_gap.png", naive_errors),
    ):
        if written is not None:
            paths.append(written)
    return paths
