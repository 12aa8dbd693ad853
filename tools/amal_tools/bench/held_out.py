"""Held-out transitions of a task's real environment under uniformly random actions.

``count`` consecutive transitions of the *real* environment (:func:`amal_verified.envs.make_env`,
never an auxiliary environment), under actions drawn uniformly from the action space (discrete:
``integers(n)``; box: ``uniform(low, high)`` per dimension, float32) by
``RunStreams(seed).numpy_generator(ACTION_STREAM)``; each episode (the first, and the next whenever one
terminates or is truncated) is reset with ``seed=integers(2**31)`` drawn from
``RunStreams(seed).numpy_generator(EPISODE_STREAM)``.  The reality-gap errors
(:mod:`amal_tools.bench.isolation`) and the naive predictors (:mod:`amal_tools.bench.naive_predictors`)
are measured on them.
"""

from __future__ import annotations

from typing import Any, Final

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from amal_verified.common.rng_streams import RunStreams
from amal_verified.common.runtime_checks import checked
from amal_verified.envs import make_env

__all__ = ["ACTION_STREAM", "EPISODE_STREAM", "real_transitions"]

ACTION_STREAM: Final = "bench/isolation/actions"
EPISODE_STREAM: Final = "bench/isolation/episodes"
_SEED_BOUND: Final = 2**31
_FIELDS: Final = ("obs", "action", "reward", "next_obs")


@checked
def real_transitions(env_id: str, *, seed: int, count: int) -> dict[str, Tensor]:
    """``count`` held-out transitions of the real environment of ``env_id`` (see the module docstring).

    Returns ``obs`` ``(count, obs_dim)`` float32, ``action`` ``(count,)`` int64 (discrete) or
    ``(count, action_dim)`` float32, ``reward`` ``(count,)`` float32 and ``next_obs`` float32.
    """
    if count < 1:
        raise ValueError(f"count must be positive, got {count}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    streams = RunStreams(seed)
    actions = streams.numpy_generator(ACTION_STREAM)
    episodes = streams.numpy_generator(EPISODE_STREAM)
    env = make_env(env_id)
    try:
        space = env.action_space
        rows: dict[str, list[Any]] = {name: [] for name in _FIELDS}
        obs, _ = env.reset(seed=int(episodes.integers(_SEED_BOUND)))
        while len(rows["obs"]) < count:
            action: Any
            if isinstance(space, gym.spaces.Discrete):
                action = int(actions.integers(int(space.n)))
            else:
                assert isinstance(space, gym.spaces.Box)  # make_env refuses other action spaces
                action = actions.uniform(space.low, space.high).astype(np.float32)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            rows["obs"].append(np.asarray(obs, dtype=np.float32))
            rows["action"].append(np.asarray(action))
            rows["reward"].append(np.float32(reward))
            rows["next_obs"].append(np.asarray(next_obs, dtype=np.float32))
            if terminated or truncated:
                obs, _ = env.reset(seed=int(episodes.integers(_SEED_BOUND)))
            else:
                obs = next_obs
    finally:
        env.close()
    out = {name: torch.from_numpy(np.stack(rows[name])) for name in _FIELDS}
    if not all(bool(torch.isfinite(out[name]).all()) for name in ("obs", "reward", "next_obs")):
        raise ValueError(f"{env_id}: the real environment produced non-finite observations or rewards")
    return out
