"""What the baseline training functions share: the not-applicable signal, the evaluation clock, and
the guards that keep a baseline's thread count and global RNG reseeding from leaking to the caller.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Iterator

import numpy as np
import torch

from amal_tools.bench.evaluation import Policy, evaluate_policy
from amal_tools.bench.records import EvalPoint
from amal_tools.bench.tasks import TaskSpec

__all__ = ["EvalClock", "NotApplicable", "preserve_global_rngs", "steps_per_second", "torch_threads"]


class NotApplicable(Exception):
    """The method cannot run this task (e.g. SAC on a ``Discrete`` action space); the message says why."""


class EvalClock:
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
def torch_threads(threads: int) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` for the duration of the block."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def preserve_global_rngs() -> Iterator[None]:
    """Save and restore the global ``random``, NumPy and torch RNG states (SB3 reseeds all three)."""
    py_state = random.getstate()
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def steps_per_second(steps: int, seconds: float) -> float | None:
    """Env steps per second of training (``None`` if the clock did not advance)."""
    return steps / seconds if seconds > 0.0 and math.isfinite(seconds) else None
