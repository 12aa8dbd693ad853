"""CartPole with a fixed extra cost per step (a busy wait), registered as ``BusyCartPole-<µs>us-v0``.

The stand-in for a costlier simulator in ``benchmarks/ray_population.py``: the same dynamics, and
``cost_us`` microseconds of CPU per step.  Ray's actors import this module by its name (the driver
script's folder is on their path), which registers the ids there too.
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

COSTS_US = (0, 20, 50, 200, 1000)


class BusyCartPole(CartPoleEnv):
    """CartPole whose ``step`` first spins for ``cost_us`` microseconds."""

    def __init__(self, cost_us: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cost_s = cost_us * 1e-6

    def step(self, action: Any) -> Any:
        end = time.perf_counter() + self.cost_s
        while time.perf_counter() < end:
            pass
        return super().step(action)


for _cost in COSTS_US:
    if f"BusyCartPole-{_cost}us-v0" not in gym.registry:
        gym.register(
            f"BusyCartPole-{_cost}us-v0",
            entry_point=BusyCartPole,
            kwargs={"cost_us": _cost},
            max_episode_steps=500,
        )
