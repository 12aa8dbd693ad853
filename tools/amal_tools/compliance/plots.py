"""Plots of the report, drawn from the evidence properties record (matplotlib, Agg backend).

Each plot reads one evidence record (see ``properties/conftest.py``) in a fixed format:

``convergence`` / ``trainer_world_model_convergence`` (Theorem 2)
    ``{"mu", "L", "curves": [{"eta", "name", "t": [...], "measured": [‖θ_t−θ*‖²], "bounds": {name: [...]}}]}``
``mi_estimators`` (Proposition 1)
    ``{"true_mi", "bias": {"K", "nmc", "pce", "predicted", "nmc_slope", "pce_slope"},
    "variance": {"M", "fresh", "fixed", "fresh_slope", "fixed_K"}}``
``wm_trajectory_difference`` (Theorem 1)
    ``{"updates": [...], "amal": [...], "unsafe_mix": [...]}`` — distance between the world-model
    parameters of two runs that differ only in their auxiliary agents, after each update.
``proposition3_costs`` (Proposition 3)
    ``{"series": [{"name", "x_label", "x", "seconds", "exponent", "expected", "tolerance"}]}``

A record that does not have its format raises :class:`PlotError` naming the record and the key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

__all__ = ["PLOTTERS", "PlotError", "draw"]


class PlotError(ValueError):
    """An evidence record does not have the format its plot reads."""


def _get(record: Mapping[str, Any], key: str, evidence: str) -> Any:
    if not isinstance(record, Mapping) or key not in record:
        raise PlotError(f"evidence {evidence!r} has no key {key!r}")
    return record[key]


def _floats(values: Any, evidence: str, key: str) -> list[float]:
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise PlotError(f"evidence {evidence!r}: {key} must be a list of numbers")
    out = []
    for v in values:
        try:
            out.append(float(v))  # "nan"/"inf" strings (non-finite values are stored as text) parse too
        except (TypeError, ValueError) as exc:
            raise PlotError(f"evidence {evidence!r}: {key} holds {v!r}, not a number") from exc
    return out


def _convergence(record: Mapping[str, Any], name: str) -> tuple[Figure, str]:
    curves = _get(record, "curves", name)
    if not curves:
        raise PlotError(f"evidence {name!r} has no curves")
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.6), squeeze=False)
    for ax, curve in zip(axes[0], curves, strict=True):
        t = _floats(_get(curve, "t", name), name, "t")
        ax.semilogy(t, _floats(_get(curve, "measured", name), name, "measured"), "k.-", label="measured")
        for label, values in sorted(_get(curve, "bounds", name).items()):
            ax.semilogy(t, _floats(values, name, label), "--", label=label)
        ax.set_title(f"{_get(curve, 'name', name)} (η = {float(_get(curve, 'eta', name)):.4g})", fontsize=9)
        ax.set_xlabel("step t")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("‖θ_t − θ*‖²")
    mu, big_l = float(_get(record, "mu", name)), float(_get(record, "L", name))
    title = f"Gradient descent through GatedOptimizer against each bound (μ = {mu:g}, L = {big_l:g})"
    if name == "trainer_world_model_convergence":
        title = f"Trainer's world-model update on a strongly convex model (μ = {mu:.3g}, L = {big_l:.3g})"
    fig.suptitle(title, fontsize=10)
    return fig, title


def _integer_ticks(ax: Any, values: list[float]) -> None:
    """Ticks at the measured grid, labelled plainly (log axes print overlapping minor labels otherwise)."""
    ax.set_xticks(values, [f"{v:g}" for v in values])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _mi(record: Mapping[str, Any], name: str) -> tuple[Figure, str]:
    bias, var = _get(record, "bias", name), _get(record, "variance", name)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    ks = _floats(_get(bias, "K", name), name, "bias.K")
    for key, style in (("nmc", "o-"), ("pce", "s-"), ("predicted", "k--")):
        values = [abs(v) for v in _floats(_get(bias, key, name), name, f"bias.{key}")]
        label = {"predicted": "s²x²/(2σ²K)"}.get(key, f"|{key.upper()} bias|")
        if key != "predicted":
            label += f" (slope {float(_get(bias, key + '_slope', name)):.2f})"
        left.loglog(ks, values, style, label=label)
    _integer_ticks(left, ks)
    left.set_xlabel("K (inner samples)")
    left.set_ylabel("|bias| (nats)")
    left.legend(fontsize=7)
    ms = _floats(_get(var, "M", name), name, "variance.M")
    right.loglog(
        ms,
        _floats(_get(var, "fresh", name), name, "variance.fresh"),
        "o-",
        label=f"fresh inner samples (slope {float(_get(var, 'fresh_slope', name)):.2f})",
    )
    right.loglog(
        ms,
        _floats(_get(var, "fixed", name), name, "variance.fixed"),
        "s-",
        label=f"one fixed ensemble, K = {_get(var, 'fixed_K', name)}",
    )
    _integer_ticks(right, ms)
    right.set_xlabel("M (outer observations)")
    right.set_ylabel("variance")
    right.legend(fontsize=7)
    true_mi = float(_get(record, "true_mi", name))
    title = f"Proposition 1: estimator bias and variance (true I = {true_mi:.4g} nats)"
    fig.suptitle(title, fontsize=10)
    return fig, title


def _trajectory(record: Mapping[str, Any], name: str) -> tuple[Figure, str]:
    updates = _floats(_get(record, "updates", name), name, "updates")
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(
        updates, _floats(_get(record, "unsafe_mix", name), name, "unsafe_mix"), "r.-", label="--unsafe-mix"
    )
    ax.plot(updates, _floats(_get(record, "amal", name), name, "amal"), "g.-", label="AMAL (gated)")
    ax.set_yscale("symlog", linthresh=1e-6)
    ax.set_xlabel("world-model update")
    ax.set_ylabel("‖θ(aux config A) − θ(aux config B)‖")
    ax.legend(fontsize=8)
    title = "Theorem 1: world-model difference between two auxiliary configurations"
    fig.suptitle(title, fontsize=10)
    return fig, title


def _costs(record: Mapping[str, Any], name: str) -> tuple[Figure, str]:
    series = _get(record, "series", name)
    if not series:
        raise PlotError(f"evidence {name!r} has no series")
    cols = min(5, len(series))
    rows = -(-len(series) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(series) :]:
        ax.set_visible(False)
    for ax, s in zip(axes.flat, series, strict=False):
        x = _floats(_get(s, "x", name), name, "x")
        y = _floats(_get(s, "seconds", name), name, "seconds")
        ax.loglog(x, y, "o-")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        if float(_get(s, "expected", name)) == 0.0 and min(y) > 0:
            ax.set_ylim(min(y) / 3, max(y) * 3)  # a flat series looks flat, not like noise magnified
        ax.set_title(
            f"{_get(s, 'name', name)}\nexponent {float(_get(s, 'exponent', name)):.2f} "
            f"(expected {float(_get(s, 'expected', name)):g})",
            fontsize=8,
        )
        ax.set_xlabel(str(_get(s, "x_label", name)))
    for row in axes:
        row[0].set_ylabel("seconds")
    title = "Proposition 3: measured cost exponents"
    fig.suptitle(title, fontsize=10)
    return fig, title


PLOTTERS: dict[str, Callable[[Mapping[str, Any], str], tuple[Figure, str]]] = {
    "convergence": _convergence,
    "trainer_world_model_convergence": _convergence,
    "mi_estimators": _mi,
    "wm_trajectory_difference": _trajectory,
    "proposition3_costs": _costs,
}


def draw(name: str, record: Mapping[str, Any], out: Path) -> str:
    """Draw the plot of evidence ``name`` into ``out`` (PNG); returns its title."""
    fig, title = PLOTTERS[name](record, name)
    try:
        fig.tight_layout()
        fig.savefig(out, dpi=110, metadata={"Software": None})
    finally:
        plt.close(fig)
    return title
