"""One gymnasium environment stepped by the trainer, restorable mid-episode from a checkpoint.

Every episode starts with ``env.reset(seed=s)`` where ``s`` is drawn from the runner's own
``numpy.random.Generator`` (its owner's stream).  The runner records the actions of the current
episode, so its whole state is ``(episode seed, actions so far, the seed stream's state)``: a
checkpoint stores that, and :meth:`EnvRunner.load_state_dict` rebuilds the environment's exact state
by resetting a fresh environment with the episode seed and replaying the actions.  This relies on the
environment being deterministic given its reset seed and actions (tested for every supported task in
``tests/test_envs.py``); the restored observation is compared with the recorded one, and a mismatch
is refused rather than silently continued.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, final

import gymnasium as gym
import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

__all__ = ["EnvRunner", "Episodes", "StepResult", "run_episodes"]

_SEED_BOUND: Final = 2**31


@final
@dataclass(frozen=True, slots=True)
class StepResult:
    """One transition, and the finished episode's return and length if it ended here."""

    obs: npt.NDArray[Any]
    action: Any
    reward: float
    next_obs: npt.NDArray[Any]
    terminated: bool
    episode_return: float | None
    episode_length: int | None


@final
class EnvRunner:
    """Steps ``env``; starts a new episode (with a fresh seed from ``seeds``) whenever one ends."""

    def __init__(self, env: gym.Env[Any, Any], seeds: np.random.Generator) -> None:
        self.env: Final = env
        self._seeds: Final = seeds
        self._episode_seed = 0
        self._actions: list[Any] = []
        self._return = 0.0
        self.obs: npt.NDArray[Any] = self._reset()

    def _reset(self) -> npt.NDArray[Any]:
        self._episode_seed = int(self._seeds.integers(_SEED_BOUND))
        self._actions = []
        self._return = 0.0
        obs, _ = self.env.reset(seed=self._episode_seed)
        return np.asarray(obs)

    def step(self, action: Any) -> StepResult:
        """Apply ``action``; on the end of an episode (terminated or truncated) reset for the next."""
        obs = self.obs
        next_obs, reward, terminated, truncated, _ = self.env.step(action)
        next_obs = np.asarray(next_obs)
        self._actions.append(np.array(action, copy=True))
        self._return += float(reward)
        ep_return: float | None = None
        ep_length: int | None = None
        if terminated or truncated:
            ep_return, ep_length = self._return, len(self._actions)
            self.obs = self._reset()
        else:
            self.obs = next_obs
        return StepResult(obs, action, float(reward), next_obs, bool(terminated), ep_return, ep_length)

    def restart(self) -> None:
        """Abandon the current episode (its return is never reported) and start the next one."""
        self.obs = self._reset()

    @property
    def episode_return(self) -> float:
        """Undiscounted return of the current (unfinished) episode."""
        return self._return

    def state_dict(self) -> dict[str, Any]:
        """Episode seed, actions so far, the observation they lead to and the seed stream's state."""
        actions = np.stack(self._actions) if self._actions else np.zeros((0,))
        return {
            "episode_seed": self._episode_seed,
            "actions": actions,
            "obs": np.array(self.obs, copy=True),
            "episode_return": self._return,
            "seeds": self._seeds.bit_generator.state,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Reset to the recorded episode seed and replay its actions; ``ValueError`` if the environment
        does not arrive at the recorded observation (it is not deterministic, or the state is corrupt)."""
        obs, _ = self.env.reset(seed=int(state["episode_seed"]))
        actions = list(np.asarray(state["actions"]))
        for i, action in enumerate(actions):
            obs, _, terminated, truncated, _ = self.env.step(action.item() if action.ndim == 0 else action)
            if (terminated or truncated) and i + 1 < len(actions):
                raise ValueError(
                    f"restoring the environment: the replayed episode ended early at step {i + 1}"
                )
        recorded = np.asarray(state["obs"])
        if not np.array_equal(np.asarray(obs), recorded):
            raise ValueError(
                "restoring the environment: replaying the recorded actions from the episode seed did not "
                "reproduce the recorded observation (the environment is not deterministic, or the "
                "checkpoint is corrupt)"
            )
        self._episode_seed = int(state["episode_seed"])
        self._actions = actions
        self._return = float(state["episode_return"])
        self.obs = np.asarray(obs)
        self._seeds.bit_generator.state = dict(state["seeds"])


@final
@dataclass(frozen=True, slots=True)
class Episodes:
    """Returns of whole episodes and, if recorded, their transitions (as stacked arrays)."""

    returns: list[float]
    transitions: dict[str, npt.NDArray[Any]] | None


def run_episodes(
    act: Callable[..., Tensor],
    env: gym.Env[Any, Any],
    seeds: np.random.Generator,
    episodes: int,
    *,
    record: bool = False,
) -> Episodes:
    """Run ``episodes`` episodes of ``act(obs, deterministic=True)``, each reset with a seed drawn
    from ``seeds``; with ``record``, also return the transitions (obs, action, reward, next_obs)."""
    returns: list[float] = []
    rows: dict[str, list[Any]] = {"obs": [], "action": [], "reward": [], "next_obs": []}
    for _ in range(episodes):
        obs, _ = env.reset(seed=int(seeds.integers(_SEED_BOUND)))
        done, total = False, 0.0
        while not done:
            action = act(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0), deterministic=True)[0]
            env_action: Any = int(action) if action.dim() == 0 else action.numpy().astype(np.float32)
            next_obs, reward, terminated, truncated, _ = env.step(env_action)
            if record:
                rows["obs"].append(np.asarray(obs, dtype=np.float32))
                rows["action"].append(np.asarray(env_action))
                rows["reward"].append(np.float32(reward))
                rows["next_obs"].append(np.asarray(next_obs, dtype=np.float32))
            total += float(reward)
            obs, done = next_obs, bool(terminated or truncated)
        returns.append(total)
    transitions = {k: np.stack(v) for k, v in rows.items()} if record else None
    return Episodes(returns, transitions)
