"""The levels a task's returns are normalised by: a uniformly random policy and a reference optimum.

:func:`task_level` measures both on the run seed's evaluation episodes
(:func:`~amal_tools.bench.evaluation.evaluation_seeds`), so they are comparable with every
method's evaluation returns episode by episode:

- **random**: the mean return of uniformly random actions (drawn from a generator seeded by the run
  seed and a domain separator, never a global RNG);
- **optimal** (tasks with ``TaskSpec.reference == "solver"``), per episode:

  =============  ===============================================================================
  TSP, CVRP      −(length) of OR-Tools' guided-local-search solution of the episode's instance
                 (stopped after a fixed number of solutions: deterministic, not proved optimal)
  JSS            −(makespan) of OR-Tools CP-SAT's schedule (optimal when CP-SAT proves it)
  KP             the value of the exact dynamic-programming solution
  Trading        the return of the oracle that sees the hidden fundamental value (an upper bound)
  NewsFilter     the return of the Bayes-optimal filter that knows the analyst's interests and the
                 sources' reliabilities but not the article's accuracy (``informed_return``): the
                 oracle that sees the accuracy too is out of reach, the informed filter scoring
                 about 86 % of its random-normalised return
  =============  ===============================================================================

  The combinatorial references use the environment's own instance of that episode
  (``env.unwrapped.instance`` after ``reset(seed=s)``).  Both partially observable references use
  hidden state, so no observation-based policy can reach them on average; they are reported as such.
- tasks with ``"known"`` use ``TaskSpec.known_optimum`` for every episode (CartPole: 500);
- tasks with ``"best-observed"`` have ``optimal = None``; the report substitutes the best final mean
  return any method reached and labels it so.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any, Final, final

import gymnasium as gym
import numpy as np
import numpy.typing as npt

from amal_tools.bench.evaluation import evaluate_policy, evaluation_seeds, make_task_env
from amal_tools.bench.tasks import TaskSpec
from amal_verified.common.runtime_checks import checked

__all__ = ["LevelMeasurement", "task_level"]

_RANDOM_STREAM: Final = 0x5A4D
# env-id prefix → (module, sign of the objective in the episode return).  The solvers run with their
# modules' default limits, which are deterministic (solution counts, CP-SAT's deterministic time);
# the wall-clock cap behind them is a safety net, and a solution it stopped says so in its method.
_SOLVERS: Final[dict[str, tuple[str, float]]] = {
    "amal/TSP-": ("amal_verified.envs.tsp", -1.0),
    "amal/CVRP-": ("amal_verified.envs.cvrp", -1.0),
    "amal/JSS-": ("amal_verified.envs.jss", -1.0),
    "amal/KP-": ("amal_verified.envs.knapsack", 1.0),
}
# env id → (module, episode-return function of a seed, how the level's source is described)
_ORACLES: Final[dict[str, tuple[str, str, str]]] = {
    "amal/Trading-v0": (
        "amal_verified.envs.trading",
        "oracle_return",
        "oracle with access to the hidden state",
    ),
    "amal/NewsFilter-v0": (
        "amal_verified.envs.news_filter",
        "informed_return",
        "Bayes-optimal filter knowing the interests and source reliabilities (hidden state)",
    ),
}


@final
@dataclass(frozen=True)
class LevelMeasurement:
    """Random and reference returns of one (task, run seed) on its evaluation episodes."""

    random_returns: tuple[float, ...]
    optimal_returns: tuple[float, ...] | None
    source: str

    def to_json(self) -> dict[str, Any]:
        """``{random, optimal, source, episodes, random_returns, optimal_returns}`` (means first)."""
        optimal = self.optimal_returns
        return {
            "random": math.fsum(self.random_returns) / len(self.random_returns),
            "optimal": None if optimal is None else math.fsum(optimal) / len(optimal),
            "source": self.source,
            "episodes": len(self.random_returns),
            "random_returns": list(self.random_returns),
            "optimal_returns": None if optimal is None else list(optimal),
        }


def _random_policy(task: TaskSpec, seed: int) -> Any:
    env = make_task_env(task)
    space = env.action_space
    env.close()
    rng = np.random.default_rng([_RANDOM_STREAM, seed])
    if isinstance(space, gym.spaces.Discrete):
        n = int(space.n)
        return lambda obs: int(rng.integers(n))
    if not isinstance(space, gym.spaces.Box):
        raise ValueError(f"{task.name}: no random policy for the action space {space}")
    low = np.asarray(space.low, dtype=np.float32)
    high = np.asarray(space.high, dtype=np.float32)

    def act(obs: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return rng.uniform(low, high).astype(np.float32)

    return act


def _solver_returns(task: TaskSpec, seeds: tuple[int, ...]) -> tuple[tuple[float, ...], str]:
    for prefix, (module_name, sign) in _SOLVERS.items():
        if task.env_id.startswith(prefix):
            module = importlib.import_module(module_name)
            env = make_task_env(task)
            returns, methods = [], set()
            try:
                for s in seeds:
                    env.reset(seed=s)
                    instance = getattr(env.unwrapped, "instance")  # noqa: B009 (untyped gym.Env)
                    solution = module.reference_solution(instance)
                    returns.append(sign * float(solution.objective))
                    methods.add(f"{solution.method}{' (proved optimal)' if solution.optimal else ''}")
            finally:
                env.close()
            return tuple(returns), ", ".join(sorted(methods))
    oracle = _ORACLES.get(task.env_id)
    if oracle is None:
        raise ValueError(f"{task.name}: no reference solver or oracle is known for {task.env_id!r}")
    module_name, function, source = oracle
    episode_return = getattr(importlib.import_module(module_name), function)
    return tuple(float(episode_return(s)) for s in seeds), source


@checked
def task_level(task: TaskSpec, *, seed: int, episodes: int) -> LevelMeasurement:
    """Random and reference returns of ``task`` on run seed ``seed``'s evaluation episodes."""
    random = evaluate_policy(task, _random_policy(task, seed), run_seed=seed, episodes=episodes)
    if task.reference == "best-observed":
        return LevelMeasurement(random.returns, None, "best final mean return observed (no known optimum)")
    if task.reference == "known":
        assert task.known_optimum is not None
        return LevelMeasurement(random.returns, (task.known_optimum,) * episodes, "the task's maximum return")
    optimal, source = _solver_returns(task, evaluation_seeds(seed, episodes))
    return LevelMeasurement(random.returns, optimal, source)
