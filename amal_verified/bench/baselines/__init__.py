"""The benchmark's baselines (paper §6.1.2): PPO, SAC, TD3, CEM-RL and PBT, behind one contract.

Every method is a training function ::

    train_xxx(task, *, seed, budget, eval_steps, eval_episodes, threads=1) -> TrainedPolicy

with the same meaning everywhere:

- ``budget``: the real environment steps the method may consume, all population members together
  (CEM-RL, PBT): every interaction with the task's environment during training is a sample.
- ``eval_steps``: strictly increasing counts ≥ 1 ending at ``budget``.  When the training has
  consumed that many steps, the method's current deterministic policy is scored with
  :func:`~amal_verified.bench.evaluation.evaluate_policy` ``(task, act, run_seed=seed,
  episodes=eval_episodes)`` and recorded as an :class:`~amal_verified.bench.records.EvalPoint` at
  exactly that count.  Evaluation runs in its own environment and draws no training randomness;
  its wall time is excluded from ``train_seconds``.  A method that stops short of ``budget`` (CEM-RL
  and PBT may leave a small remainder unused, see their modules) records its remaining counts with
  its final policy and reports the steps actually consumed in ``extras["env_steps"]``.
- ``seed``: a non-negative integer.
- ``threads``: ``torch.set_num_threads`` during training (restored afterwards).
- Seeding: everything random is derived from ``seed``; the caller's global ``random``, NumPy and
  torch RNG states are saved and restored around Stable-Baselines3 runs (SB3 reseeds them).
- A method that cannot run the task raises :class:`NotApplicable` (SAC, TD3 and CEM-RL need a
  continuous ``Box`` action space); malformed arguments raise ``ValueError``.

The methods: :func:`train_sb3` / :func:`train_ppo` / :func:`train_sac` / :func:`train_td3`
(:mod:`.sb3`), :func:`train_cem_rl` (:mod:`.cem_rl`) and :func:`train_pbt` (:mod:`.pbt`).
:data:`METHODS` maps method names to training functions.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterator
from typing import Final

import numpy as np
import torch

from amal_verified.bench.evaluation import Policy, TrainedPolicy, evaluate_policy
from amal_verified.bench.records import EvalPoint
from amal_verified.bench.tasks import TaskSpec


class NotApplicable(Exception):
    """The method cannot run this task (e.g. SAC on a ``Discrete`` action space); the message says why."""


class _EvalClock:
    """Records the evaluation curve as the training's step counter passes the requested counts.

    :meth:`due` says whether a count is reached at ``steps``; :meth:`record` evaluates ``act`` for every
    requested count ≤ ``steps`` not yet recorded (each gets its own :class:`EvalPoint`; the episodes
    are the same, so the returns are the same) and accumulates the evaluation wall time.
    """

    def __init__(self, task: TaskSpec, *, seed: int, eval_steps: tuple[int, ...], eval_episodes: int) -> None:
        self._task = task
        self._seed = seed
        self._steps = eval_steps
        self._episodes = eval_episodes
        self._next = 0
        self.points: list[EvalPoint] = []
        self.seconds = 0.0

    @property
    def finished(self) -> bool:
        """Whether every requested count has been recorded."""
        return self._next == len(self._steps)

    def due(self, steps: int) -> bool:
        """Whether the next requested count is ≤ ``steps``."""
        return not self.finished and self._steps[self._next] <= steps

    def record(self, steps: int, act: Policy) -> None:
        """Evaluate ``act`` at every requested count ≤ ``steps`` not yet recorded."""
        if not self.due(steps):
            return
        start = time.perf_counter()
        result = evaluate_policy(self._task, act, run_seed=self._seed, episodes=self._episodes)
        while self.due(steps):
            self.points.append(EvalPoint(self._steps[self._next], result.returns, result.success))
            self._next += 1
        self.seconds += time.perf_counter() - start


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` for the duration of the block."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _preserve_global_rngs() -> Iterator[None]:
    """Save and restore the global ``random``, NumPy and torch RNG states (SB3 reseeds all three)."""
    py_state = random.getstate()
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def _steps_per_second(steps: int, seconds: float) -> float | None:
    """Env steps per second of training (``None`` if the clock did not advance)."""
    return steps / seconds if seconds > 0.0 and math.isfinite(seconds) else None


# The training functions live in submodules that import the helpers above.
from amal_verified.bench.baselines.cem_rl import train_cem_rl  # noqa: E402
from amal_verified.bench.baselines.pbt import train_pbt  # noqa: E402
from amal_verified.bench.baselines.sb3 import train_ppo, train_sac, train_sb3, train_td3  # noqa: E402

METHODS: Final[dict[str, Callable[..., TrainedPolicy]]] = {
    "ppo": train_ppo,
    "sac": train_sac,
    "td3": train_td3,
    "cem-rl": train_cem_rl,
    "pbt": train_pbt,
}
"""Method name → training function (all with the signature of the module docstring)."""

__all__ = [
    "METHODS",
    "NotApplicable",
    "train_cem_rl",
    "train_pbt",
    "train_ppo",
    "train_sac",
    "train_sb3",
    "train_td3",
]
