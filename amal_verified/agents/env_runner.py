"""One gymnasium environment stepped by the trainer, restorable mid-episode from a checkpoint.

Every episode starts with ``env.reset(seed=s)`` where ``s`` is drawn from the runner's own
``numpy.random.Generator`` (its owner's stream).  The runner records the actions of the current
episode, so its whole state is ``(episode seed, actions so far, the seed stream's state)``: a
checkpoint stores that, and :meth:`EnvRunner.load_state_dict` rebuilds the environment's exact state
by resetting a fresh environment with the episode seed and replaying the actions.  This relies on the
environment being deterministic given its reset seed and actions (tested for every supported task in
``tests/test_envs.py``); the restored observation is compared with the recorded one, and a mismatch
is refused rather than silently continued.

Every value read from ``env.reset`` and ``env.step`` is checked against gymnasium's API before it is
used: ``reset`` must return ``(obs, info)`` and ``step`` ``(obs, reward, terminated, truncated,
info)``, with ``obs`` a numeric (or bool) array, ``reward`` a real number (a Python or NumPy int or
float, not a bool), ``terminated`` and ``truncated`` bools (or the ints 0 and 1) and ``info`` a dict.
Anything else (``reward=None``, the old gym API's 4-tuple, an array ``terminated`` of a vectorised
environment) raises a one-line ``ValueError`` naming the environment, the value and the fix, before
the runner's state changes.  Non-finite values are of the right type and pass: the primary buffer
refuses them, the auxiliary population drops them.
"""

from __future__ import annotations

import numbers
import os
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
_STEP_API: Final = "(obs, reward, terminated, truncated, info)"


def _env_name(env: gym.Env[Any, Any]) -> str:
    """The registered id of ``env``, or its class name if it has none."""
    spec = getattr(env, "spec", None)
    env_id = getattr(spec, "id", None)
    if isinstance(env_id, str) and env_id:
        return repr(env_id)
    return type(getattr(env, "unwrapped", env)).__name__


def _shown(value: object) -> str:
    """``value``'s repr (shortened to one short line) and its type."""
    text = " ".join(repr(value).split())
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__module__}.{type(value).__qualname__})".replace("(builtins.", "(")


def _bad_value(env: gym.Env[Any, Any], call: str, what: str, value: object, need: str) -> ValueError:
    return ValueError(
        f"environment {_env_name(env)}: {call} returned {what} = {_shown(value)}; {what} must be {need}: "
        f"fix the environment's {call}"
    )


def _checked_obs(env: gym.Env[Any, Any], call: str, obs: object) -> npt.NDArray[Any]:
    try:
        array = np.asarray(obs)
    except (TypeError, ValueError):  # e.g. a ragged sequence
        array = np.asarray(None)
    if array.dtype.kind not in "biuf":
        raise _bad_value(
            env,
            call,
            "the observation",
            obs,
            "a numeric array (wrap dict or text observations to flatten them)",
        )
    return array


def _checked_info(env: gym.Env[Any, Any], call: str, info: object) -> None:
    if not isinstance(info, dict):
        raise _bad_value(env, call, "info", info, "a dict (return {} when there is nothing to report)")


def _checked_reward(env: gym.Env[Any, Any], reward: object) -> float:
    value = reward.item() if isinstance(reward, np.ndarray) and reward.ndim == 0 else reward
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise _bad_value(env, "step()", "reward", reward, "a real number (a Python or NumPy int or float)")
    return float(value)


def _checked_flag(env: gym.Env[Any, Any], what: str, flag: object) -> bool:
    value = flag.item() if isinstance(flag, np.ndarray) and flag.ndim == 0 else flag
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral) and int(value) in (0, 1):
        return bool(value)
    raise _bad_value(env, "step()", what, flag, "a bool (one episode-end flag, not an array)")


def _checked_reset(env: gym.Env[Any, Any], seed: int) -> npt.NDArray[Any]:
    """``env.reset(seed=seed)``'s observation, after checking the result is gymnasium's ``(obs, info)``
    with a numeric observation and a dict info; ``ValueError`` (one line naming the environment,
    the value and the fix) otherwise."""
    result: object = env.reset(seed=seed)
    if not isinstance(result, tuple) or len(result) != 2:
        raise ValueError(
            f"environment {_env_name(env)}: reset() returned {_shown(result)}, not the pair (obs, info) "
            "of gymnasium's API; return (obs, info) from reset() (old gym environments return only obs: "
            "port them to gymnasium, e.g. with shimmy's GymV21CompatibilityV0)"
        )
    obs, info = result
    array = _checked_obs(env, "reset()", obs)
    _checked_info(env, "reset()", info)
    return array


def _old_step_api(env: gym.Env[Any, Any]) -> ValueError:
    return ValueError(
        f"environment {_env_name(env)}: step() returned 4 values (obs, reward, done, info), the old "
        f"gym API; return {_STEP_API} as gymnasium does (port old gym environments to gymnasium, "
        "e.g. with shimmy's GymV21CompatibilityV0)"
    )


def _wrapper_met_old_step_api(error: ValueError) -> bool:
    """Whether a gymnasium wrapper (``TimeLimit``, ``OrderEnforcing`` ...) failed to unpack the 4-tuple
    of an old gym environment's ``step()`` into gymnasium's five values."""
    if str(error) != "not enough values to unpack (expected 5, got 4)":
        return False
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and f"{os.sep}gymnasium{os.sep}" in tb.tb_frame.f_code.co_filename


def _checked_step(env: gym.Env[Any, Any], action: Any) -> tuple[npt.NDArray[Any], float, bool, bool]:
    """``(obs, reward, terminated, truncated)`` of ``env.step(action)``, after checking the result is
    gymnasium's ``(obs, reward, terminated, truncated, info)`` with the types the module docstring
    lists; ``ValueError`` (one line naming the environment, the value and the fix) otherwise."""
    try:
        result: object = env.step(action)
    except ValueError as error:
        if _wrapper_met_old_step_api(error):
            raise _old_step_api(env) from error
        raise
    if not isinstance(result, tuple) or len(result) != 5:
        if isinstance(result, tuple) and len(result) == 4:
            raise _old_step_api(env)
        raise ValueError(
            f"environment {_env_name(env)}: step() returned {_shown(result)}, not the 5-tuple {_STEP_API} "
            f"of gymnasium's API; return {_STEP_API} from step()"
        )
    obs, reward, terminated, truncated, info = result
    array = _checked_obs(env, "step()", obs)
    value = _checked_reward(env, reward)
    done = _checked_flag(env, "terminated", terminated), _checked_flag(env, "truncated", truncated)
    _checked_info(env, "step()", info)
    return array, value, *done


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
        return _checked_reset(self.env, self._episode_seed)

    def step(self, action: Any) -> StepResult:
        """Apply ``action``; on the end of an episode (terminated or truncated) reset for the next.
        ``ValueError`` naming the environment, the value and the fix if ``env.step`` (or the reset)
        does not follow gymnasium's API (see the module docstring)."""
        obs = self.obs
        next_obs, reward, terminated, truncated = _checked_step(self.env, action)
        self._actions.append(np.array(action, copy=True))
        self._return += reward
        ep_return: float | None = None
        ep_length: int | None = None
        if terminated or truncated:
            ep_return, ep_length = self._return, len(self._actions)
            self.obs = self._reset()
        else:
            self.obs = next_obs
        return StepResult(obs, action, reward, next_obs, terminated, ep_return, ep_length)

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
        obs = _checked_reset(self.env, int(state["episode_seed"]))
        actions = list(np.asarray(state["actions"]))
        for i, action in enumerate(actions):
            obs, _, terminated, truncated = _checked_step(
                self.env, action.item() if action.ndim == 0 else action
            )
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
    from ``seeds``; with ``record``, also return the transitions (obs, action, reward, next_obs).
    ``env``'s results are checked as :class:`EnvRunner` checks them (``ValueError`` naming the
    environment, the value and the fix)."""
    returns: list[float] = []
    rows: dict[str, list[Any]] = {"obs": [], "action": [], "reward": [], "next_obs": []}
    for _ in range(episodes):
        obs = _checked_reset(env, int(seeds.integers(_SEED_BOUND)))
        done, total = False, 0.0
        while not done:
            action = act(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0), deterministic=True)[0]
            env_action: Any = int(action) if action.dim() == 0 else action.numpy().astype(np.float32)
            next_obs, reward, terminated, truncated = _checked_step(env, env_action)
            if record:
                rows["obs"].append(np.asarray(obs, dtype=np.float32))
                rows["action"].append(np.asarray(env_action))
                rows["reward"].append(np.float32(reward))
                rows["next_obs"].append(np.asarray(next_obs, dtype=np.float32))
            total += reward
            obs, done = next_obs, terminated or truncated
        returns.append(total)
    transitions = {k: np.stack(v) for k, v in rows.items()} if record else None
    return Episodes(returns, transitions)
