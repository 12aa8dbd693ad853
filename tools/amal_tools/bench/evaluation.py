"""Evaluating a trained policy the same way for every method: same episodes, same success rule.

Every method's policy is reduced to ``act(obs) -> env action`` (a deterministic, greedy / mean
action for one 1-D float32 observation from :func:`amal_verified.envs.make_env`), and evaluated here:

- **Episodes**: ``episodes`` fresh episodes of the task's environment, reset with the seeds
  :func:`evaluation_seeds` ``(run_seed, episodes)``.  They depend on the run seed only, so every
  method with the same seed is scored on the same episodes at every evaluation point (common random
  numbers: curves and methods differ by the policy, not by the episodes drawn) and never on the
  training stream's episodes.
- **Shift**: with a :class:`~amal_tools.bench.tasks.Shift`, the environment is built with the
  shift's ``make_kwargs`` and, if it names physics factors or observation noise, wrapped in
  :class:`~amal_verified.agents.aux_env.PerturbedEnv` (its noise stream is seeded by each episode's reset
  seed).  Same episode seeds.
- **Success** (``TaskSpec.success``): ``"info"`` reads ``info["is_success"]`` at the episode's last
  step; ``"positive_return"`` counts an episode with return > 0 (MiniGrid pays a positive reward only
  for reaching the goal); ``None``: the task has no success notion and ``success`` is ``None``.

Nothing here reads or advances a global RNG.  A policy that returns an action outside the action
space gets gymnasium's own error, prefixed with the task and the offending action.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, final

import gymnasium as gym
import numpy as np
import numpy.typing as npt

from amal_tools.bench.records import EvalPoint
from amal_tools.bench.tasks import Shift, TaskSpec
from amal_verified.common.runtime_checks import checked

__all__ = [
    "Evaluation",
    "Policy",
    "TrainedPolicy",
    "check_training_arguments",
    "evaluate_policy",
    "evaluation_seeds",
    "make_task_env",
]

Policy = Callable[[npt.NDArray[np.float32]], Any]
"""``act(obs) -> action``: a deterministic policy on one observation of :func:`make_task_env`."""

_EVAL_STREAM: Final = 0xE7A1  # domain separator: evaluation seeds never equal training seeds


@final
@dataclass(frozen=True)
class Evaluation:
    """Episode returns (in episode order) and the success rate (``None``: no success notion)."""

    returns: tuple[float, ...]
    success: float | None


@checked
def evaluation_seeds(run_seed: int, episodes: int) -> tuple[int, ...]:
    """The reset seeds of the evaluation episodes of a run with ``run_seed``."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    rng = np.random.default_rng([_EVAL_STREAM, run_seed])
    return tuple(int(s) for s in rng.integers(0, 2**31, size=episodes))


@checked
def make_task_env(task: TaskSpec, shift: Shift | None = None) -> gym.Env[Any, Any]:
    """The task's real environment, or its shifted variant (see the module docstring)."""
    from amal_verified.envs import make_env

    env = make_env(task.env_id, **(dict(shift.make_kwargs) if shift is not None else {}))
    if shift is not None and (shift.physics or shift.obs_noise):
        from amal_verified.agents.aux_env import PerturbedEnv

        try:
            return PerturbedEnv(env, seed=0, physics=shift.physics, obs_noise=shift.obs_noise)
        except BaseException:
            env.close()
            raise
    return env


@checked
def evaluate_policy(
    task: TaskSpec, act: Policy, *, run_seed: int, episodes: int, shift: Shift | None = None
) -> Evaluation:
    """Run ``act`` for ``episodes`` evaluation episodes of ``task`` (see the module docstring)."""
    env = make_task_env(task, shift)
    returns: list[float] = []
    successes = 0
    try:
        for episode_seed in evaluation_seeds(run_seed, episodes):
            obs, info = env.reset(seed=episode_seed)
            total, done = 0.0, False
            while not done:
                action = act(np.asarray(obs, dtype=np.float32))
                try:
                    obs, reward, terminated, truncated, info = env.step(action)
                except (ValueError, TypeError, AssertionError, IndexError) as exc:
                    raise ValueError(
                        f"{task.name}: the policy's action {action!r} was refused by the environment: {exc}"
                    ) from exc
                total += float(reward)
                done = bool(terminated or truncated)
            returns.append(total)
            if task.success == "info":
                successes += bool(info.get("is_success", False))
            elif task.success == "positive_return":
                successes += total > 0.0
    finally:
        env.close()
    success = None if task.success is None else successes / episodes
    return Evaluation(tuple(returns), success)


@final
@dataclass(frozen=True)
class TrainedPolicy:
    """What a method's training function returns.

    ``curve``: the evaluations made at the requested primary-step counts (time spent evaluating is
    excluded from ``train_seconds``); ``act``: the final policy, for the robustness evaluation;
    ``extras``: JSON values recorded in the run's :class:`~amal_tools.bench.records.RunRecord`.
    """

    curve: tuple[EvalPoint, ...]
    act: Policy
    train_seconds: float
    extras: dict[str, Any]


@checked
def check_training_arguments(
    seed: int, budget: int, eval_steps: Sequence[int], eval_episodes: int, threads: int
) -> tuple[int, ...]:
    """Validate the arguments every training function takes (see :class:`TrainedPolicy`); return
    ``eval_steps`` as a tuple.  ``ValueError`` naming the first bad argument."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if budget < 1:
        raise ValueError(f"budget must be >= 1 environment step, got {budget}")
    steps = tuple(int(s) for s in eval_steps)
    if not steps:
        raise ValueError("eval_steps must hold at least one count (the last one equal to budget)")
    if steps[0] < 1:
        raise ValueError(f"eval_steps must be >= 1, got {steps[0]} first")
    for a, b in itertools.pairwise(steps):
        if b <= a:
            raise ValueError(f"eval_steps must be strictly increasing, got {a} then {b}")
    if steps[-1] != budget:
        raise ValueError(f"eval_steps must end at budget {budget}, got {steps[-1]} last")
    if eval_episodes < 1:
        raise ValueError(f"eval_episodes must be >= 1, got {eval_episodes}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    return steps
