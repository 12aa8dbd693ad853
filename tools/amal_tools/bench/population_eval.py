"""Mean episode return of every candidate of a CEM population, sequentially or with gymnasium vector envs.

:func:`evaluate_population` runs each candidate's deterministic policy
(:meth:`FlatMLPPolicy.act <amal_verified.agents.cem.FlatMLPPolicy.act>`) for ``episodes`` real episodes
and returns the mean return per candidate.  Three execution modes, one result:

- ``"sequential"``: one candidate after another, each in its own environment;
- ``"sync"``: all ``P`` candidates stepped together in a ``gymnasium.vector.SyncVectorEnv``
  (one sub-environment per candidate, in this process);
- ``"async"``: the same in a ``gymnasium.vector.AsyncVectorEnv`` (one worker process per
  candidate, default multiprocessing context).

Contract
--------
- **Seeding**: candidate ``i``'s episode ``j`` starts with ``reset(seed=seed + j)`` — the same
  start states for every candidate (common random numbers, the usual choice for comparing CEM
  candidates), so a candidate's result does not depend on its index or on ``P``.
- **Environments**: candidate ``i`` runs its episodes ``0 … episodes-1`` in order, in one
  environment of its own built by :func:`amal_verified.envs.make_env`; an episode ends at
  ``terminated or truncated`` (the registered ``TimeLimit`` is kept, so episodes are finite for
  every supported id).
- **Actions**: ``policy.act(params[i:i+1], obs)`` for one observation at a time, for every
  candidate separately in every mode.  ``torch.baddbmm`` is not bitwise invariant to the batch
  size (measured: the same candidate's action differs in the last bits between batches of 1, 3
  and 20 for 151×64 float32 layers), so a batched forward over the population would break
  bit-identity; the vector modes therefore batch and parallelise the environments only.
  Continuous actions are cast to the action space's dtype and clipped to its bounds; discrete
  actions are the argmax index.
- **Returns**: each episode's return is the float64 sum of its rewards in step order; the result
  is ``float64`` of shape ``(P,)``, the mean over the ``episodes`` returns (``numpy.mean`` over a
  ``(P, episodes)`` array).  All three modes give **bit-identical** results for the same inputs.
- **Randomness**: nothing reads or advances the global ``random``, ``numpy`` or ``torch``
  generators; the environments draw only from the generators ``reset(seed=...)`` seeds.
- **Vector autoreset**: the vector envs use ``autoreset_mode=DISABLED``; a sub-environment whose
  episode ended is reset explicitly (``options={"reset_mask": ...}``) with its next episode's
  seed.  A candidate that has finished all its episodes keeps being stepped with a fixed idle
  action (zeros clipped into the bounds, or action 0) until every candidate has finished; those
  steps are discarded.

Errors: ``ValueError`` for ``params`` not of shape ``(P, policy.num_params)`` with ``P ≥ 1``,
non-floating or non-finite ``params``, ``episodes < 1``, a negative ``seed``, or a policy whose
observation/action dimensions or action type do not match ``env_id``'s task; ``make_env``'s
``ValueError`` for an unsupported id; ``TypeError`` (beartype) for wrongly typed arguments.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import numpy.typing as npt
import torch
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

from amal_verified.agents.cem import FlatMLPPolicy
from amal_verified.common.runtime_checks import checked
from amal_verified.envs import make_env, task_info

__all__ = ["VECTOR_MODES", "evaluate_population"]

VECTOR_MODES: tuple[str, ...] = ("sequential", "sync", "async")
"""The accepted values of ``vector``."""


class _ActionMap:
    """Policy output for one candidate and one observation → the action the environment takes."""

    def __init__(self, space: gym.Space[Any]) -> None:
        if isinstance(space, gym.spaces.Discrete):
            self.discrete = True
            self.low = self.high = None
            self.dtype: np.dtype[Any] = np.dtype(np.int64)
        elif isinstance(space, gym.spaces.Box):
            self.discrete = False
            self.low, self.high = space.low, space.high
            self.dtype = space.dtype
        else:  # make_env accepts only these two
            raise ValueError(f"unsupported action space {space}")

    def __call__(self, policy: FlatMLPPolicy, params_i: torch.Tensor, obs: npt.NDArray[Any]) -> Any:
        out = policy.act(params_i, torch.from_numpy(obs).reshape(1, 1, -1))
        if self.discrete:
            return int(out[0, 0])
        action = out[0, 0].numpy().astype(self.dtype)
        return np.clip(action, self.low, self.high)

    def idle(self) -> Any:
        if self.discrete:
            return 0
        return np.clip(np.zeros_like(self.low), self.low, self.high)


def _validate(policy: FlatMLPPolicy, params: torch.Tensor, env_id: str, episodes: int, seed: int) -> None:
    if params.dim() != 2 or params.shape[0] < 1 or params.shape[1] != policy.num_params:
        raise ValueError(
            f"params must have shape (P, {policy.num_params}) with P >= 1 for this policy, "
            f"got {tuple(params.shape)}"
        )
    if not params.is_floating_point():
        raise ValueError(f"params must be floating point, got {params.dtype}")
    if not bool(torch.isfinite(params).all()):
        bad = sorted({int(i) for i in (~torch.isfinite(params)).any(dim=1).nonzero().flatten()})
        raise ValueError(f"params must be finite; candidates {bad[:10]} have NaN or infinite entries")
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    info = task_info(env_id)
    if info.obs_dim != policy.obs_dim:
        raise ValueError(f"{env_id} has obs_dim {info.obs_dim}, the policy expects {policy.obs_dim}")
    if info.discrete != policy.discrete or info.action_dim != policy.action_dim:
        kind = "discrete" if info.discrete else "continuous"
        mine = "discrete" if policy.discrete else "continuous"
        raise ValueError(
            f"{env_id} has {info.action_dim} {kind} action(s), "
            f"the policy produces {policy.action_dim} {mine} action(s)"
        )


@checked
def evaluate_population(
    policy: FlatMLPPolicy,
    params: torch.Tensor,
    env_id: str,
    *,
    episodes: int,
    seed: int,
    vector: Literal["sequential", "sync", "async"],
) -> torch.Tensor:
    """Mean return over ``episodes`` episodes of each candidate's deterministic policy: ``float64 (P,)``.

    ``params``: ``(P, policy.num_params)``, one candidate per row.  Candidate ``i``'s episode
    ``j`` is seeded ``seed + j``.  ``vector`` selects the execution mode; all modes return
    bit-identical results (see the module docstring for the full contract and the errors).
    """
    _validate(policy, params, env_id, episodes, seed)
    with torch.no_grad():
        flat = params.detach().to("cpu").clone()
        if vector == "sequential":
            returns = _sequential(policy, flat, env_id, episodes, seed)
        else:
            returns = _vectorised(policy, flat, env_id, episodes, seed, asynchronous=vector == "async")
    return torch.from_numpy(returns.mean(axis=1))


def _sequential(
    policy: FlatMLPPolicy, params: torch.Tensor, env_id: str, episodes: int, seed: int
) -> npt.NDArray[np.float64]:
    returns = np.zeros((params.shape[0], episodes), dtype=np.float64)
    for i in range(params.shape[0]):
        env = make_env(env_id)
        try:
            to_action = _ActionMap(env.action_space)
            params_i = params[i : i + 1]
            for j in range(episodes):
                obs, _ = env.reset(seed=seed + j)
                total = np.float64(0.0)
                done = False
                while not done:
                    obs, reward, terminated, truncated, _ = env.step(to_action(policy, params_i, obs))
                    total += np.float64(reward)
                    done = bool(terminated) or bool(truncated)
                returns[i, j] = total
        finally:
            env.close()
    return returns


def _vectorised(
    policy: FlatMLPPolicy, params: torch.Tensor, env_id: str, episodes: int, seed: int, *, asynchronous: bool
) -> npt.NDArray[np.float64]:
    population = params.shape[0]
    env_fns = [functools.partial(make_env, env_id) for _ in range(population)]
    venv: SyncVectorEnv | AsyncVectorEnv
    if asynchronous:
        venv = AsyncVectorEnv(env_fns, autoreset_mode=AutoresetMode.DISABLED)
    else:
        venv = SyncVectorEnv(env_fns, autoreset_mode=AutoresetMode.DISABLED)
    try:
        to_action = _ActionMap(venv.single_action_space)
        idle = to_action.idle()
        returns = np.zeros((population, episodes), dtype=np.float64)
        totals = np.zeros(population, dtype=np.float64)
        episode = np.zeros(population, dtype=np.int64)
        active = np.ones(population, dtype=np.bool_)
        obs, _ = venv.reset(seed=[seed] * population)
        while active.any():
            actions = [
                to_action(policy, params[i : i + 1], obs[i]) if active[i] else idle for i in range(population)
            ]
            batch = np.asarray(actions, dtype=to_action.dtype)
            obs, rewards, terminated, truncated, _ = venv.step(batch)
            totals[active] += rewards[active]
            done = np.logical_or(terminated, truncated)
            for i in np.flatnonzero(done & active):
                returns[i, episode[i]] = totals[i]
                totals[i] = 0.0
                episode[i] += 1
                active[i] = episode[i] < episodes
            if done.any():
                # Finished candidates are reset too (DISABLED mode refuses to step a done env);
                # their later steps are discarded, so the seed they get does not matter.
                seeds: list[int | None] = [seed + min(int(e), episodes - 1) for e in episode]
                obs, _ = venv.reset(seed=seeds, options={"reset_mask": done})
        return returns
    finally:
        venv.close()
