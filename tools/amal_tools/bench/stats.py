"""Statistics of the benchmark report: intervals, normalised scores, samples-to-90 %, the 40 % test.

Everything here is a pure function of :class:`~amal_tools.bench.records.RunRecord` values and
:class:`Level` values; nothing reads or advances a global RNG (the bootstrap owns its generator).

Definitions (the report quotes them):

- **Level** of a (task, seed): ``random`` is the mean return of a uniformly random policy and
  ``optimal`` that of the task's reference solution (``source`` says which solver/oracle), both on
  the seed's evaluation episodes.  ``optimal is None`` for a ``"best-observed"`` task:
  :func:`resolve_levels` replaces it by the best final mean return of any method on that task over
  all records given (all seeds), with ``source = "best observed"``.
- **Normalised score** of a return ``R``: ``(R - random) / (optimal - random)``; 0 = random,
  1 = optimal (or best observed).  ``optimal <= random`` is a ``ValueError`` naming the task for a
  given level; for a best-observed level it makes the (task, seed) *unusable* (no method beat the
  random policy there), reported as such by :func:`resolve_levels`.
- **Samples to a fraction** (:func:`samples_to_fraction`): the first evaluation ``step`` (primary
  environment steps) whose mean return has a normalised score ``>= fraction``; ``None`` when no
  evaluation reaches it — the run is *censored* at its budget, never silently "= budget".
- **Normalised AUC** (:func:`normalised_auc`): the trapezoidal integral of the normalised score over
  the evaluated steps divided by the span from the first to the last evaluation (a one-point curve:
  that point's score).  1 = optimal from the first evaluation on.
- **Mean and interval** (:func:`mean_ci`): the sample mean and the two-sided Student-t interval
  ``mean ± t_{(1+c)/2, n-1} · s / sqrt(n)`` (``s`` the sample standard deviation, ``ddof = 1``); for
  ``n = 1`` there is no interval (``low``/``high`` are ``None``).
- **Exploration efficiency** (:func:`exploration_efficiency`), the paper's "improves exploration
  efficiency by 40 %": for each (task, seed) with a record of both methods and a usable level *with a
  known optimum* (a ``"best observed"`` level is excluded: 90 % of the best return some method
  happened to reach in the same records is not "90 % of optimal"; those cells are listed in
  ``no_optimum``), ``improvement = 1 - samples(method) / samples(baseline)`` with samples to 90 %.
  A pair where exactly one run is censored stays, that run counted at its budget, and is flagged; a
  pair where *both* runs are censored carries no information about the ratio and is *excluded*
  (``improvement is None``) from the estimate and the bootstrap, and counted.  The estimate is the
  mean improvement over the informative pairs (pooled over tasks and seeds); its 95 % interval is
  the percentile interval of a *paired bootstrap* (informative pairs resampled with replacement,
  :data:`BOOTSTRAP_RESAMPLES` resamples, numpy ``Generator`` seeded with :data:`BOOTSTRAP_SEED`);
  fewer than 2 informative pairs: no interval.  Verdict: ``"refuted"`` if the interval's upper bound
  is < 0.40, ``"supported"`` if its lower bound is >= 0.40, ``"inconclusive"`` otherwise (or without
  an interval, in particular with fewer than 2 informative pairs), ``"not measured"`` with no pair.
  Censoring direction: counting a censored *method* run at the budget understates its samples, so
  those pairs bias the estimate *upward* (in the method's favour); a censored *baseline* biases it
  *downward*.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, final

import numpy as np
import scipy.stats  # type: ignore[import-untyped]  # no stubs installed

from amal_tools.bench.records import RunRecord
from amal_verified.common.runtime_checks import checked

__all__ = [
    "BEST_OBSERVED",
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "CLAIMED_IMPROVEMENT",
    "EfficiencyPair",
    "EfficiencyResult",
    "Level",
    "MeanCI",
    "ResolvedLevels",
    "Verdict",
    "efficiency_verdict",
    "exploration_efficiency",
    "load_levels",
    "mean_ci",
    "normalised",
    "normalised_auc",
    "resolve_levels",
    "samples_to_fraction",
]

BEST_OBSERVED: Final = "best observed"
"""``Level.source`` of a level whose optimum is the best final mean return observed."""
BOOTSTRAP_RESAMPLES: Final = 10_000
BOOTSTRAP_SEED: Final = 0x40_0B5E
CLAIMED_IMPROVEMENT: Final = 0.40
"""The abstract's claim: the information-gain objective "improves exploration efficiency by 40 %"."""

Verdict = Literal["supported", "refuted", "inconclusive", "not measured"]


@final
@dataclass(frozen=True)
class Level:
    """Random and optimal mean return of a (task, seed) (see the module docstring).

    ``episodes`` (optional) is how many evaluation episodes the levels were measured on.
    """

    random: float
    optimal: float | None
    source: str
    episodes: int | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.random):
            raise ValueError(f"Level.random must be finite, got {self.random}")
        if self.optimal is not None and not math.isfinite(self.optimal):
            raise ValueError(f"Level.optimal must be finite or None, got {self.optimal}")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (see :meth:`from_json`)."""
        out: dict[str, Any] = {"random": self.random, "optimal": self.optimal, "source": self.source}
        if self.episodes is not None:
            out["episodes"] = self.episodes
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Level:
        """Inverse of :meth:`to_json`; ``ValueError`` for a malformed dict."""
        try:
            optimal, episodes = data["optimal"], data.get("episodes")
            return cls(
                random=float(data["random"]),
                optimal=None if optimal is None else float(optimal),
                source=str(data["source"]),
                episodes=None if episodes is None else int(episodes),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed level: {type(exc).__name__}: {exc}") from None


@checked
def load_levels(path: str | os.PathLike[str]) -> dict[str, dict[int, Level]]:
    """``levels.json`` (``{task: {seed: Level.to_json()}}``) as ``{task: {seed: Level}}``.

    ``ValueError`` naming the file, task and seed for a malformed entry.
    """
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: levels must be a JSON object {{task: {{seed: level}}}}")
    out: dict[str, dict[int, Level]] = {}
    for task, seeds in data.items():
        if not isinstance(seeds, dict):
            raise ValueError(f"{path}: levels of task {task!r} must be an object {{seed: level}}")
        for seed, level in seeds.items():
            try:
                out.setdefault(str(task), {})[int(seed)] = Level.from_json(level)
            except (ValueError, TypeError, AttributeError) as exc:
                raise ValueError(f"{path}: task {task!r} seed {seed!r}: {exc}") from None
    return out


@final
@dataclass(frozen=True)
class MeanCI:
    """A sample mean with its Student-t interval (``low``/``high`` ``None`` when ``n == 1``)."""

    mean: float
    low: float | None
    high: float | None
    n: int
    confidence: float

    @property
    def half_width(self) -> float | None:
        """``high - mean`` (the interval is symmetric), ``None`` without an interval."""
        return None if self.high is None else self.high - self.mean


@checked
def mean_ci(values: Sequence[float], confidence: float = 0.95) -> MeanCI:
    """Mean and two-sided Student-t ``confidence`` interval of ``values`` (``n = 1``: no interval).

    ``ValueError`` for no values, a non-finite value or a confidence outside (0, 1).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("mean_ci needs at least one value")
    if not all(math.isfinite(x) for x in xs):
        raise ValueError(f"mean_ci needs finite values, got {xs}")
    n, mean = len(xs), math.fsum(xs) / len(xs)
    if n == 1:
        return MeanCI(mean, None, None, 1, confidence)
    half = float(scipy.stats.t.ppf((1.0 + confidence) / 2.0, n - 1)) * statistics.stdev(xs) / math.sqrt(n)
    return MeanCI(mean, mean - half, mean + half, n, confidence)


@checked
def normalised(value: float, level: Level, *, task: str = "?") -> float:
    """``(value - random) / (optimal - random)``; ``ValueError`` naming ``task`` when ``optimal`` is
    ``None`` (resolve best-observed levels first) or ``optimal <= random``."""
    if level.optimal is None:
        raise ValueError(
            f"task {task!r}: level has no optimum (best-observed task); use resolve_levels() first"
        )
    span = level.optimal - level.random
    if not span > 0.0:
        raise ValueError(
            f"task {task!r}: optimal level {level.optimal} ({level.source}) does not exceed the "
            f"random level {level.random}; the normalised score is undefined"
        )
    return (value - level.random) / span


@final
@dataclass(frozen=True)
class ResolvedLevels:
    """Levels with every optimum known: ``levels[task][seed]`` (all with ``optimal`` set).

    ``unusable`` lists (task, seed, reason) of best-observed levels where no method's final mean
    return exceeded the random policy's, and (task, seed) pairs of records without any level; the
    normalised metrics of those runs are not measured.
    """

    levels: Mapping[str, Mapping[int, Level]]
    unusable: tuple[tuple[str, int, str], ...]
    given: Mapping[str, Mapping[int, Level]] = field(default_factory=dict)
    """The levels as given (before resolution): their ``random`` is known even where unusable."""

    def get(self, task: str, seed: int) -> Level | None:
        """The usable level of (task, seed), or ``None``."""
        return self.levels.get(task, {}).get(seed)


@checked
def resolve_levels(records: Sequence[RunRecord], levels: Mapping[str, Mapping[int, Level]]) -> ResolvedLevels:
    """Fill the optimum of best-observed levels from ``records`` (see the module docstring).

    ``ValueError`` naming the task and seed for a given (solver) level with ``optimal <= random``.
    """
    best: dict[str, float] = {}
    for r in records:
        best[r.task] = max(best.get(r.task, -math.inf), r.final.mean_return)
    resolved: dict[str, dict[int, Level]] = {}
    unusable: list[tuple[str, int, str]] = []
    for task, seeds in sorted(levels.items()):
        for seed, level in sorted(seeds.items()):
            if level.optimal is not None:
                if not level.optimal > level.random:
                    raise ValueError(
                        f"task {task!r} seed {seed}: optimal level {level.optimal} ({level.source}) "
                        f"does not exceed the random level {level.random}"
                    )
                resolved.setdefault(task, {})[seed] = level
            elif task not in best:
                continue  # no record of this task: nothing to normalise
            elif best[task] > level.random:
                resolved.setdefault(task, {})[seed] = Level(
                    level.random, best[task], BEST_OBSERVED, level.episodes
                )
            else:
                unusable.append(
                    (
                        task,
                        seed,
                        f"no method's final mean return (best observed {best[task]:.6g}) exceeds the "
                        f"random policy's {level.random:.6g}",
                    )
                )
    for task, seed in sorted({(r.task, r.seed) for r in records}):
        if seed not in levels.get(task, {}):
            unusable.append((task, seed, "no random/optimal level was measured"))
    return ResolvedLevels(resolved, tuple(unusable), {t: dict(seeds) for t, seeds in levels.items()})


@checked
def samples_to_fraction(record: RunRecord, level: Level, fraction: float = 0.9) -> int | None:
    """The first evaluation step whose mean return's normalised score is ``>= fraction``; ``None``
    when the run never reaches it (censored at ``record.budget``)."""
    for point in record.curve:
        if normalised(point.mean_return, level, task=record.task) >= fraction:
            return point.step
    return None


@checked
def normalised_auc(record: RunRecord, level: Level) -> float:
    """Trapezoidal area under the normalised-score curve over the evaluated steps, divided by the
    span of those steps (a one-point curve: its score)."""
    xs = [float(p.step) for p in record.curve]
    ys = [normalised(p.mean_return, level, task=record.task) for p in record.curve]
    if len(xs) == 1:
        return ys[0]
    area = math.fsum(
        (x1 - x0) * (y0 + y1) / 2.0 for x0, x1, y0, y1 in zip(xs, xs[1:], ys, ys[1:], strict=False)
    )
    return area / (xs[-1] - xs[0])


@final
@dataclass(frozen=True)
class EfficiencyPair:
    """One (task, seed) of an efficiency comparison.  ``*_samples`` are ``None`` when censored;
    ``improvement`` counts a censored run at its budget, and is ``None`` when both are censored (the
    pair is excluded: it carries no information about the ratio)."""

    task: str
    seed: int
    method_samples: int | None
    baseline_samples: int | None
    method_budget: int
    baseline_budget: int
    improvement: float | None

    @property
    def method_censored(self) -> bool:
        return self.method_samples is None

    @property
    def excluded(self) -> bool:
        """Both runs censored: excluded from the estimate and the bootstrap."""
        return self.improvement is None

    @property
    def baseline_censored(self) -> bool:
        return self.baseline_samples is None


@final
@dataclass(frozen=True)
class EfficiencyResult:
    """The exploration-efficiency comparison of ``method`` against ``baseline`` (module docstring)."""

    method: str
    baseline: str
    fraction: float
    pairs: tuple[EfficiencyPair, ...]
    estimate: float | None
    low: float | None
    high: float | None
    confidence: float
    resamples: int
    seed: int
    verdict: Verdict
    unpaired: tuple[str, ...]
    """``task/seed`` cells with a record of only one of the two methods, or without a usable level."""
    no_optimum: tuple[str, ...] = ()
    """``task/seed`` cells with both records but a best-observed level (no known optimum): excluded."""

    @property
    def informative_pairs(self) -> tuple[EfficiencyPair, ...]:
        """The pairs of the estimate: all but the excluded (both censored) ones."""
        return tuple(p for p in self.pairs if not p.excluded)

    @property
    def excluded_by_task(self) -> dict[str, int]:
        """How many pairs were excluded (both censored), per task (sorted by task)."""
        out: dict[str, int] = {}
        for p in self.pairs:
            if p.excluded:
                out[p.task] = out.get(p.task, 0) + 1
        return dict(sorted(out.items()))

    @property
    def no_optimum_tasks(self) -> tuple[str, ...]:
        """The tasks of :attr:`no_optimum`, sorted."""
        return tuple(sorted({cell.rpartition("/")[0] for cell in self.no_optimum}))

    @property
    def n_method_censored_only(self) -> int:
        return sum(p.method_censored and not p.baseline_censored for p in self.pairs)

    @property
    def n_baseline_censored_only(self) -> int:
        return sum(p.baseline_censored and not p.method_censored for p in self.pairs)

    @property
    def n_both_censored(self) -> int:
        return sum(p.method_censored and p.baseline_censored for p in self.pairs)

    @property
    def censoring_note(self) -> str:
        """Which way censoring biases the estimate, and whether the verdict survives it."""
        a, b, both = self.n_method_censored_only, self.n_baseline_censored_only, self.n_both_censored
        if not self.pairs:
            return "no pair: nothing to censor."
        if a == b == both == 0:
            return "no run was censored: every run reached the threshold within its budget."
        parts = []
        if a:
            parts.append(
                f"{a} pair(s) where only {self.method} did not reach {100 * self.fraction:g} % "
                "(counted at its budget, which understates its samples: biases the estimate upward, "
                "in its favour)"
            )
        if b:
            parts.append(
                f"{b} pair(s) where only {self.baseline} did not reach it (biases the estimate downward, "
                f"against {self.method})"
            )
        if both:
            parts.append(
                f"{both} pair(s) where neither reached it (excluded from the estimate and the interval: "
                "they carry no information about the ratio)"
            )
        if a == 0 and b == 0:
            direction = "no pair used in the estimate was censored"
        elif a == 0:
            direction = "the estimate is a lower bound: a 'supported' verdict stands, 'refuted' may not"
        elif b == 0:
            direction = "the estimate is an upper bound: a 'refuted' verdict stands, 'supported' may not"
        else:
            direction = "the direction of the total bias is unknown"
        return "; ".join(parts) + f" — {direction}."


@checked
def efficiency_verdict(low: float | None, high: float | None, claim: float = CLAIMED_IMPROVEMENT) -> Verdict:
    """``"refuted"`` if ``high < claim``, ``"supported"`` if ``low >= claim``, else ``"inconclusive"``
    (also without an interval)."""
    if low is None or high is None:
        return "inconclusive"
    if high < claim:
        return "refuted"
    if low >= claim:
        return "supported"
    return "inconclusive"


def _bootstrap(values: Sequence[float], confidence: float, resamples: int, seed: int) -> tuple[float, float]:
    data = np.asarray(values, dtype=np.float64)
    rng = np.random.Generator(np.random.PCG64(seed))
    means = data[rng.integers(0, len(data), size=(resamples, len(data)))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


@checked
def exploration_efficiency(
    records: Sequence[RunRecord],
    levels: ResolvedLevels,
    *,
    method: str = "amal",
    baseline: str,
    fraction: float = 0.9,
    confidence: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    claim: float = CLAIMED_IMPROVEMENT,
) -> EfficiencyResult:
    """``method`` against ``baseline`` on samples to ``fraction`` (see the module docstring).

    ``ValueError`` for two records of the same (method, task, seed) or ``resamples < 1000``.
    """
    if resamples < 1000:
        raise ValueError(f"resamples must be >= 1000 for a stable percentile interval, got {resamples}")
    cells: dict[tuple[str, int], dict[str, RunRecord]] = {}
    for r in records:
        if r.method in (method, baseline):
            slot = cells.setdefault((r.task, r.seed), {})
            if r.method in slot:
                raise ValueError(f"two records of {r.key}")
            slot[r.method] = r
    pairs: list[EfficiencyPair] = []
    unpaired: list[str] = []
    no_optimum: list[str] = []
    for (task, s), slot in sorted(cells.items()):
        level = levels.get(task, s)
        if len(slot) < 2 or level is None:
            unpaired.append(f"{task}/{s}")
            continue
        if level.source == BEST_OBSERVED:
            no_optimum.append(f"{task}/{s}")
            continue
        m, b = slot[method], slot[baseline]
        sm, sb = samples_to_fraction(m, level, fraction), samples_to_fraction(b, level, fraction)
        improvement: float | None = None
        if sm is not None or sb is not None:
            cm = m.budget if sm is None else sm
            cb = b.budget if sb is None else sb
            improvement = 1.0 - cm / cb if cb > 0 else (0.0 if cm == 0 else -math.inf)
        pairs.append(EfficiencyPair(task, s, sm, sb, m.budget, b.budget, improvement))
    used = [p.improvement for p in pairs if p.improvement is not None]
    finite = [x for x in used if math.isfinite(x)]
    estimate = low = high = None
    if used and len(finite) == len(used):
        estimate = math.fsum(finite) / len(finite)
        if len(finite) >= 2:
            low, high = _bootstrap(finite, confidence, resamples, seed)
    elif used:
        estimate = -math.inf  # a baseline solved at step 0 and the method did not: unbounded worse
    verdict: Verdict = "not measured" if not pairs else efficiency_verdict(low, high, claim)
    return EfficiencyResult(
        method=method,
        baseline=baseline,
        fraction=fraction,
        pairs=tuple(pairs),
        estimate=estimate,
        low=low,
        high=high,
        confidence=confidence,
        resamples=resamples,
        seed=seed,
        verdict=verdict,
        unpaired=tuple(unpaired),
        no_optimum=tuple(no_optimum),
    )
