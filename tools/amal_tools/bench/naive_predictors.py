"""Errors of predictors that learn nothing, for the reality-gap table: is a world model's error large?

A next-observation MSE of 24.9 means nothing on its own.  For each (task, seed) the report sets the
world models' errors beside the errors of two predictors that learn nothing, computed on the *same*
held-out real transitions (:func:`~amal_tools.bench.held_out.real_transitions`, a function of
``(env_id, seed, count)``, the set every run of that seed was scored on):

- ``no_change_next_obs_mse``: predict ``s' = s``.  The world model predicts the change ``s' − s``
  (:mod:`amal_verified.world_model.ensemble`), so this is a world model whose change head outputs 0.
- ``best_constant_next_obs_mse``: predict the held-out set's own mean next observation, per
  dimension — the variance of ``s'`` averaged over dimensions (``ddof = 0``).  This is the best any
  constant can do, chosen *in hindsight* on the test set, so it is a bar, not a fair competitor.
- ``best_constant_reward_mse``: the same for the reward — its variance.

All three are means over transitions and dimensions, as in
:func:`~amal_tools.bench.isolation.prediction_error`, computed in float64.  A world model above
the best constant predicts these transitions' next observations worse than their mean does.

The values are measured once per (task, seed, environment, transition count) and kept in
``<results>/naive_predictors.json`` (``{task: {seed: NaiveErrors.to_json()}}``);
:func:`update_naive_errors` measures the missing ones, so records written before this module
existed are covered too (the transitions do not depend on the run).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, final

import torch
from torch import Tensor

from amal_tools.bench.held_out import real_transitions
from amal_tools.bench.records import RunRecord
from amal_tools.bench.tasks import task_by_name
from amal_verified.common.runtime_checks import checked
from amal_verified.record.files import write_json_atomic

__all__ = [
    "NAIVE_ERRORS_FILE",
    "NaiveErrors",
    "load_naive_errors",
    "measure_naive_errors",
    "seed_means",
    "update_naive_errors",
]

NAIVE_ERRORS_FILE: Final = "naive_predictors.json"
_FIELDS: Final = ("no_change_next_obs_mse", "best_constant_next_obs_mse", "best_constant_reward_mse")


@final
@dataclass(frozen=True)
class NaiveErrors:
    """The naive predictors' errors on one set of transitions: a (task, seed)'s held-out real
    transitions, or a sample of a run's own primary stream (``measure_run``'s ``wm_primary_fit``)."""

    env_id: str
    transitions: int
    no_change_next_obs_mse: float
    best_constant_next_obs_mse: float
    best_constant_reward_mse: float

    def __post_init__(self) -> None:
        if self.transitions < 1:
            raise ValueError(f"transitions must be positive, got {self.transitions}")
        for name in _FIELDS:
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} must be a finite non-negative number, got {value!r}")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return {
            "env_id": self.env_id,
            "transitions": self.transitions,
            **{name: getattr(self, name) for name in _FIELDS},
        }

    @classmethod
    def from_json(cls, data: Any) -> NaiveErrors:
        """The inverse of :meth:`to_json`; ``ValueError`` for a missing or ill-typed field."""
        if not isinstance(data, Mapping):
            raise ValueError(f"naive-predictor errors must be an object, got {type(data).__name__}")
        missing = [k for k in ("env_id", "transitions", *_FIELDS) if k not in data]
        if missing:
            raise ValueError(f"naive-predictor errors lack {', '.join(missing)}")
        if not isinstance(data["env_id"], str) or type(data["transitions"]) is not int:
            raise ValueError("naive-predictor errors: env_id must be a string and transitions an integer")
        if any(type(data[k]) not in (int, float) for k in _FIELDS):
            raise ValueError(f"naive-predictor errors: {', '.join(_FIELDS)} must be numbers")
        return cls(data["env_id"], data["transitions"], *(float(data[k]) for k in _FIELDS))


@checked
def measure_naive_errors(env_id: str, transitions: Mapping[str, Tensor]) -> NaiveErrors:
    """The three naive-predictor errors (module docstring) of ``transitions`` (``obs``, ``next_obs``
    ``(n, obs_dim)`` and ``reward`` ``(n,)``, as :func:`~amal_tools.bench.held_out.real_transitions`
    returns them); ``ValueError`` for missing fields, mismatched shapes or non-finite values."""
    missing = [k for k in ("obs", "next_obs", "reward") if k not in transitions]
    if missing:
        raise ValueError(f"transitions lack {', '.join(missing)}")
    obs, next_obs = transitions["obs"].double(), transitions["next_obs"].double()
    reward = transitions["reward"].double()
    if obs.ndim != 2 or obs.shape != next_obs.shape or obs.shape[0] < 1:
        raise ValueError(
            f"obs and next_obs must both be (n, obs_dim) with n >= 1, got {tuple(obs.shape)} and "
            f"{tuple(next_obs.shape)}"
        )
    if reward.shape != (obs.shape[0],):
        raise ValueError(f"reward must be ({obs.shape[0]},), got {tuple(reward.shape)}")
    if not all(bool(torch.isfinite(t).all()) for t in (obs, next_obs, reward)):
        raise ValueError("transitions hold non-finite values")
    return NaiveErrors(
        env_id=env_id,
        transitions=int(obs.shape[0]),
        no_change_next_obs_mse=float((next_obs - obs).square().mean()),
        best_constant_next_obs_mse=float((next_obs - next_obs.mean(dim=0)).square().mean()),
        best_constant_reward_mse=float((reward - reward.mean()).square().mean()),
    )


@checked
def load_naive_errors(path: Path) -> dict[str, dict[int, NaiveErrors]]:
    """``naive_predictors.json`` as ``{task: {seed: NaiveErrors}}``; ``{}`` when the file does not
    exist; ``ValueError`` naming the file (and task and seed) when it is malformed."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not readable as JSON ({exc}); delete it to measure again") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{path}: must be a JSON object {{task: {{seed: naive-predictor errors}}}}")
    out: dict[str, dict[int, NaiveErrors]] = {}
    for task, seeds in data.items():
        for seed, entry in seeds.items():
            try:
                out.setdefault(task, {})[int(seed)] = NaiveErrors.from_json(entry)
            except ValueError as exc:
                raise ValueError(f"{path}: task {task!r} seed {seed!r}: {exc}") from None
    return out


@checked
def seed_means(
    records: Iterable[RunRecord], task: str, naive_errors: Mapping[str, Mapping[int, NaiveErrors]]
) -> tuple[int, dict[str, float]]:
    """Each naive error on ``task``, the mean over the seeds of ``task``'s records that have one, and how
    many seeds that is: ``(0, {})`` when none has.  The report's table and the figure both use it."""
    by_seed = naive_errors.get(task, {})
    entries = [by_seed[s] for s in sorted({r.seed for r in records if r.task == task}) if s in by_seed]
    if not entries:
        return 0, {}
    return len(entries), {f: math.fsum(getattr(e, f) for e in entries) / len(entries) for f in _FIELDS}


def _wanted(records: Iterable[RunRecord]) -> dict[tuple[str, int], tuple[str, int]]:
    """(task, seed) → (env id, held-out transition count) of every record scored on real transitions.

    The env id is the one the record says it was scored on (``extras["env_id"]``), else the
    catalogue's; a task neither names is left out (its transitions cannot be regenerated).
    """
    wanted: dict[tuple[str, int], tuple[str, int]] = {}
    for r in records:
        count = r.extras.get("real_transitions")
        if not isinstance(r.extras.get("wm_real_error"), Mapping) or type(count) is not int:
            continue
        env_id = r.extras.get("env_id")
        if not isinstance(env_id, str):
            try:
                env_id = task_by_name(r.task).env_id
            except ValueError:
                continue
        previous = wanted.setdefault((r.task, r.seed), (env_id, count))
        if previous != (env_id, count):
            raise ValueError(
                f"records of {r.task} seed {r.seed} were scored on different held-out transitions "
                f"({previous[0]} × {previous[1]} and {env_id} × {count}): their world-model errors "
                "are not comparable"
            )
    return wanted


@checked
def update_naive_errors(
    path: Path, records: Iterable[RunRecord], *, log: Callable[[str], None] = print
) -> dict[str, dict[int, NaiveErrors]]:
    """Measure the naive-predictor errors the ``records`` need and ``path`` lacks, save, return them all.

    A (task, seed) is needed when one of its records holds a real-environment error
    (``extras["wm_real_error"]``); an entry measured on another environment or transition count is
    measured again.  Each measurement regenerates the held-out transitions (seconds per task); the file is
    rewritten atomically after each, so an interruption loses nothing already measured.
    """
    known = load_naive_errors(path)
    todo = sorted(
        (task, seed, env_id, count)
        for (task, seed), (env_id, count) in _wanted(records).items()
        if (entry := known.get(task, {}).get(seed)) is None
        or (entry.env_id, entry.transitions) != (env_id, count)
    )
    if todo:
        log(f"measuring the naive predictors' errors for {len(todo)} (task, seed) pairs")
    for task, seed, env_id, count in todo:
        known.setdefault(task, {})[seed] = measure_naive_errors(
            env_id, real_transitions(env_id, seed=seed, count=count)
        )
        write_json_atomic(
            path,
            {
                t: {str(s): e.to_json() for s, e in sorted(seeds.items())}
                for t, seeds in sorted(known.items())
            },
        )
    return known
