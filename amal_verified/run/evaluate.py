"""``amal evaluate RUN_DIR``: the run's policy and world model, measured on the *real* environment.

Loads the run's checkpoint, then runs ``episodes`` episodes of the deterministic primary policy in a
fresh primary environment (reset seeds drawn from ``numpy.random.default_rng(seed)``, independent of
every training stream) and reports:

- the undiscounted return per episode, its mean, standard deviation and the task's "solved" return;
- the world model's one-step prediction error on those real transitions: the mean squared error of
  the ensemble-mean next observation and reward, and the mean Gaussian NLL per transition (the
  reality gap the paper's §1 worries about; an ``--unsafe-mix`` run shows its price here);
- its fit against the naive predictors "no change" and "the best constant"
  (:func:`~amal_verified.world_model.fit.world_model_fit`) on the same transitions, which no buffer
  ever held: the evaluation episodes are the held-out set (that module says why).  The naive
  predictors' statistics come from the recorded primary transitions the world model's last update
  could sample (the rows its last round saw, the last ``buffer_size`` of them:
  :func:`~amal_verified.run.config.last_round_rows`), or from every recorded transition when no update
  has run yet;
- with a held-out split (``wm_holdout > 0``), also the fit on the run's own held-out primary
  transitions among those rows (``fit_run_held_out``; naive predictors from the rest), which the world
  model never trained on either.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch

from amal_verified.agents.env_runner import run_episodes
from amal_verified.common.rng_streams import RunStreams
from amal_verified.common.runtime_checks import checked
from amal_verified.envs import make_env, task_info
from amal_verified.record.primary_log import load_primary_stream
from amal_verified.run.config import CONFIG_FILENAME, TrainConfig, last_round_rows, read_json
from amal_verified.run.trained_policy import policy_from_state, read_run_checkpoint
from amal_verified.world_model.fit import world_model_fit
from amal_verified.world_model.learner import WorldModelLearner, WorldModelSpec

__all__ = ["evaluate_run"]


@checked
def evaluate_run(run_dir: str | Path, *, episodes: int = 10, seed: int = 12345) -> dict[str, Any]:
    """Evaluate the latest checkpoint of the run in ``run_dir`` (see the module docstring).

    Returns the report as a JSON-ready dict: ``returns``, ``mean_return``, ``std_return``,
    ``solved_return``, ``step``, ``unsafe_mix`` and ``world_model`` (``transitions``, ``next_obs_mse``,
    ``reward_mse``, ``nll_per_member_mean``, ``finite`` and ``fit``:
    :meth:`~amal_verified.world_model.fit.FitReport.to_json`).  ``ValueError`` (one line) for a bad
    ``episodes`` or a missing or unreadable run directory or primary data.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be positive, got {episodes}")
    path = Path(run_dir)
    config, state = read_run_checkpoint(path, restore=True)
    try:
        spec = WorldModelSpec.from_json(read_json(path / CONFIG_FILENAME, "run configuration")["world_model"])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path / CONFIG_FILENAME} holds no world-model specification ({exc})") from None
    policy = policy_from_state(path, config, state, seed=0)  # acts deterministically: its stream is unused
    torch.set_num_threads(config.threads)
    task = task_info(config.env_id)
    env = make_env(config.env_id)
    learner = WorldModelLearner(spec, RunStreams(config.seed), unsafe_mix=config.unsafe_mix)
    learner.load_state_dict(state["learner"])

    def act(obs: torch.Tensor, *, deterministic: bool) -> torch.Tensor:
        return torch.as_tensor(policy.act(obs, deterministic=deterministic))

    run = run_episodes(act, env, np.random.default_rng(seed), episodes, record=True)
    assert run.transitions is not None
    returns = run.returns
    held_out = {
        name: torch.as_tensor(run.transitions[name]) for name in ("obs", "action", "reward", "next_obs")
    }
    rows, window = _last_round_rows(path, config, int(state["step"]))
    training, held = _split(rows, window, learner, config.buffer_size)
    fit = world_model_fit(learner, training, held_out)
    run_split: dict[str, Any] = {}
    if spec.holdout and learner.updates and len(held["reward"]):
        run_split["fit_run_held_out"] = world_model_fit(learner, training, held).to_json()
    return {
        "run_dir": str(path),
        "env_id": config.env_id,
        "step": int(state["step"]),
        "unsafe_mix": config.unsafe_mix,
        "episodes": episodes,
        "returns": returns,
        "mean_return": statistics.fmean(returns),
        "std_return": statistics.pstdev(returns),
        "solved_return": task.solved_return,
        "world_model": {
            "transitions": fit.transitions,
            "next_obs_mse": fit.model.next_obs_mse,
            "reward_mse": fit.model.reward_mse,
            "nll_per_member_mean": fit.model_nll,
            "finite": math.isfinite(fit.model_nll),
            "fit": fit.to_json(),
            **run_split,
        },
    }


def _last_round_rows(path: Path, config: TrainConfig, step: int) -> tuple[dict[str, torch.Tensor], slice]:
    """The recorded primary transitions the last world-model update could sample (module docstring),
    and their positions in the recorded stream."""
    stream = load_primary_stream(path)
    window = last_round_rows(config, step)
    if stream.problems or stream.count < window.stop:
        problem = stream.problems[0].message if stream.problems else f"{stream.count} rows recorded"
        raise ValueError(
            f"{path}: the recorded primary data do not hold the {window.stop} transitions the world model "
            f"trained on ({problem}); amal certify {path} names the damage"
        )
    names = ("obs", "action", "reward", "next_obs")
    return {name: stream.tensors[name][window] for name in names}, window


def _split(
    rows: dict[str, torch.Tensor], window: slice, learner: WorldModelLearner, capacity: int
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``rows`` (the stream positions ``window``) split into the learner's training and held-out rows
    (all training rows without a held-out split): position ``t`` was stored in the primary buffer's row
    ``t mod capacity`` (a ring)."""
    slots = torch.arange(window.start, window.stop) % capacity
    mask = learner.held_out_mask(min(window.stop, capacity))[slots]
    return {k: v[~mask] for k, v in rows.items()}, {k: v[mask] for k, v in rows.items()}
