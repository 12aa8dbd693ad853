"""The environments the trainer supports, behind one small API.

:data:`SUPPORTED_ENVS` lists the environments the library is built and tested for:

- ``CartPole-v1``, ``Pendulum-v1``, ``MountainCarContinuous-v0`` (gymnasium classic control);
- ``HalfCheetah-v5``, ``Ant-v5``, ``Walker2d-v5``, ``Humanoid-v5`` (gymnasium's MuJoCo environments,
  ``mujoco`` from PyPI);
- ``MiniGrid-KeyCorridorS3R1-v0`` (``minigrid``, imported here so that its ids register) and
  ``amal/KeyCorridorS8R4-v0``;
- the library's own tasks (:mod:`amal_verified.envs.registration`): ``amal/TSP-200-v0``,
  ``amal/CVRP-100-v0``, ``amal/JSS-50-v0``, ``amal/KP-1000-v0``, ``amal/Trading-v0``,
  ``amal/NewsFilter-v0``.

Any other registered gymnasium id whose observation space is a ``Box`` (flattened to 1-D) or
a MiniGrid ``Dict`` with ``image`` and ``direction``, and whose action space is ``Discrete``
(starting at 0) or a 1-D ``Box`` with finite bounds, works on a **best-effort** basis: :func:`make_env` and
:func:`task_info` accept it, but it has no termination rule (so no imagined rollouts), no
default auxiliary perturbation, and no reproducibility test here.

Contracts
---------
:func:`make_env` returns a ``gymnasium.Env`` whose observations (from ``reset`` and ``step``)
are 1-D ``float32`` numpy arrays of length :attr:`TaskInfo.obs_dim`, with a matching ``Box``
observation space.  Box observations are cast to ``float32`` and flattened (HalfCheetah's
``float64`` observations are cast).  MiniGrid observations are
``concat(image.ravel() / per_channel_max, one_hot(direction, 4))``: the agent's 7×7×3
egocentric view with object, colour and state indices each scaled into [0, 1] by the largest
index minigrid defines for that channel, then the facing direction one-hot (length 147 + 4 =
151).  The mission string is dropped (in KeyCorridor there is exactly one ball, so its colour
carries no information).  The full minigrid action set (7 actions) is kept.  Gymnasium's
``TimeLimit`` truncation is kept as registered (minigrid truncates itself, at
``max_steps``).

Reproducibility: an environment from :func:`make_env` draws randomness only from the
generators that ``reset(seed=s)`` seeds.  A fresh environment given ``reset(seed=s)`` and
the same action sequence produces bit-identical observations, rewards and
terminated/truncated flags.  The trainer restores an environment mid-episode by building a
new one, calling ``reset(seed=episode_seed)`` and replaying the episode's recorded actions;
this needs every episode to start with an explicit seed.  Tested for every supported id,
primary and auxiliary (``tests/test_envs.py``).

:func:`task_info` describes a task: dimensions, action bounds, episode limit, the score that
counts as solved, and the environment's true termination rule as a batched function
``(obs, action, next_obs) -> bool tensor`` for terminating imagined model rollouts (as MBPO's
static termination functions).  The rule reads the thresholds from the environment instance
(CartPole: ``|x| > x_threshold`` or ``|θ| > theta_threshold_radians``; MountainCarContinuous:
``position >= goal_position`` and ``velocity >= goal_velocity``; Pendulum, HalfCheetah, the
trading market and the news stream never terminate, they only truncate).  It is evaluated on
``float32`` observations while the environments decide in ``float64``, so the two can disagree
for a state within float32 rounding of a threshold.  KeyCorridor, the combinatorial tasks and the
other MuJoCo tasks have no rule (``termination=None``, ``model_rollouts=False``).

Custom environments
-------------------
``env_id`` may be gymnasium's ``MODULE:ID`` (e.g. ``my_pkg.envs:MyEnv-v0``): :func:`make_env` and
:func:`task_info` import ``MODULE``, which registers ``ID`` (``gymnasium.register``), then make
``ID``.  A run's configuration keeps the whole string, so resuming, ``amal evaluate`` and the
auxiliary environments import the module again.  An id registered by a package already imported
is used as it is.  A custom environment is a best-effort id: its :class:`TaskInfo` comes from its
spaces and registration — ``obs_dim`` is the size of its (flattened) ``Box`` observations;
``Discrete(n)`` actions (starting at 0) give ``discrete=True``, ``action_dim=n``; a 1-D ``Box`` with
finite bounds gives ``action_dim`` and the bounds; ``max_episode_steps`` is the registration's (else
the environment's ``max_steps`` attribute), ``solved_return`` the registration's
``reward_threshold``; there is no termination rule.

Errors: an unknown id (with the nearest registered id, found by :mod:`difflib`), a ``MODULE`` that
cannot be imported or does not register ``ID``, and unsupported spaces raise a one-line
``ValueError`` naming the supported ids.

MuJoCo warnings: recent MuJoCo releases warn, when compiling gymnasium's HalfCheetah XML,
that its ``settotalmass`` compiler attribute is deprecated, and MuJoCo's default handler
appends every warning to ``MUJOCO_LOG.TXT`` in the working directory.  While
:func:`make_env` builds a gymnasium MuJoCo environment it installs its own MuJoCo warning
handler (restoring the previous one afterwards): that known deprecation is dropped, any
other compile warning becomes a Python ``RuntimeWarning``.  Warnings during simulation are
left to MuJoCo's handler.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import gymnasium as gym
import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from amal_verified.common.runtime_checks import checked

__all__ = [
    "SUPPORTED_ENVS",
    "CartPoleTermination",
    "FlatFloat32Obs",
    "MiniGridFlatObs",
    "MountainCarTermination",
    "NeverTerminates",
    "TaskInfo",
    "make_env",
    "task_info",
]

SUPPORTED_ENVS: Final[tuple[str, ...]] = (
    "CartPole-v1",
    "Pendulum-v1",
    "MountainCarContinuous-v0",
    "HalfCheetah-v5",
    "Ant-v5",
    "Walker2d-v5",
    "Humanoid-v5",
    "MiniGrid-KeyCorridorS3R1-v0",
    "amal/KeyCorridorS8R4-v0",
    "amal/TSP-200-v0",
    "amal/CVRP-100-v0",
    "amal/JSS-50-v0",
    "amal/KP-1000-v0",
    "amal/Trading-v0",
    "amal/NewsFilter-v0",
)
"""The environment ids built and tested for (others are best effort, see the module docstring)."""

# Scores that count as solved where the gymnasium spec has none or a different convention.
_SOLVED_RETURN: Final[dict[str, float]] = {"CartPole-v1": 475.0, "Pendulum-v1": -200.0}

_MINIGRID_DIRECTIONS: Final = 4


@dataclass(frozen=True)
class CartPoleTermination:
    """CartPole's rule: the cart leaves ``±x_threshold`` or the pole leaves ``±theta_threshold``."""

    x_threshold: float
    theta_threshold: float

    def __call__(self, obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        """Bool tensor of shape ``next_obs.shape[:-1]``: True where the episode terminates."""
        x = next_obs[..., 0]
        theta = next_obs[..., 2]
        return (x.abs() > self.x_threshold) | (theta.abs() > self.theta_threshold)


@dataclass(frozen=True)
class MountainCarTermination:
    """MountainCar's rule: position ≥ ``goal_position`` and velocity ≥ ``goal_velocity``."""

    goal_position: float
    goal_velocity: float

    def __call__(self, obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        """Bool tensor of shape ``next_obs.shape[:-1]``: True where the episode terminates."""
        return (next_obs[..., 0] >= self.goal_position) & (next_obs[..., 1] >= self.goal_velocity)


@dataclass(frozen=True)
class NeverTerminates:
    """The rule of environments that only truncate (Pendulum, HalfCheetah): always False."""

    def __call__(self, obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        """All-False bool tensor of shape ``next_obs.shape[:-1]``."""
        return torch.zeros_like(next_obs[..., 0], dtype=torch.bool)


@checked
@dataclass(frozen=True)
class TaskInfo:
    """Facts about a task that the trainer needs (see :func:`task_info`).

    ``action_dim`` is the number of actions for a discrete task and the action dimension for a
    continuous one; ``action_low``/``action_high`` are the Box bounds (empty tuples when discrete).
    ``termination`` is the environment's true termination rule ``(obs, action, next_obs) ->
    bool (B,)``, or ``None`` when no rule is known; ``model_rollouts`` is True exactly when
    there is one (imagined rollouts need it).  ``solved_return`` is the episode return that
    counts as solving the task, if one is defined.
    """

    env_id: str
    obs_dim: int
    discrete: bool
    action_dim: int
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    max_episode_steps: int | None
    termination: Callable[[Tensor, Tensor, Tensor], Tensor] | None
    model_rollouts: bool
    solved_return: float | None

    def __post_init__(self) -> None:
        if self.obs_dim < 1 or self.action_dim < 1:
            raise ValueError(f"obs_dim and action_dim must be >= 1, got {self.obs_dim}, {self.action_dim}")
        bounds = 0 if self.discrete else self.action_dim
        if not len(self.action_low) == len(self.action_high) == bounds:
            raise ValueError(
                "action_low/action_high must have action_dim entries for a continuous task, "
                "none for a discrete one"
            )
        if not self.discrete:
            if not all(math.isfinite(v) for v in self.action_low + self.action_high):
                raise ValueError("action_low/action_high must be finite")
            if any(lo > hi for lo, hi in zip(self.action_low, self.action_high, strict=True)):
                raise ValueError("action_low must be <= action_high")
        if self.model_rollouts and self.termination is None:
            raise ValueError("model_rollouts needs a termination rule")
        if self.max_episode_steps is not None and self.max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {self.max_episode_steps}")


class FlatFloat32Obs(gym.ObservationWrapper[npt.NDArray[np.float32], Any, Any]):
    """Casts ``Box`` observations to ``float32`` and flattens them to 1-D."""

    @checked
    def __init__(self, env: gym.Env[Any, Any]) -> None:
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Box):
            raise TypeError(f"FlatFloat32Obs needs a Box observation space, got {space}")
        info = np.finfo(np.float32)
        low = np.asarray(space.low, dtype=np.float64).ravel()
        high = np.asarray(space.high, dtype=np.float64).ravel()
        # Finite bounds beyond the float32 range become infinite rather than overflowing.
        low = np.where(low < info.min, -np.inf, low)
        high = np.where(high > info.max, np.inf, high)
        self.observation_space = gym.spaces.Box(
            low=low.astype(np.float32), high=high.astype(np.float32), dtype=np.float32
        )

    def observation(self, observation: Any) -> npt.NDArray[np.float32]:
        """The observation as a fresh 1-D float32 array."""
        return np.array(observation, dtype=np.float32).reshape(-1)


class MiniGridFlatObs(gym.ObservationWrapper[npt.NDArray[np.float32], Any, Any]):
    """MiniGrid's ``{image, direction, mission}`` as one float32 vector (see the module docstring).

    ``image`` (H×W×3 object/colour/state indices) is flattened and each channel divided by the
    largest index minigrid defines for it, so values lie in [0, 1]; the facing direction is
    appended one-hot (4 entries).  The mission string is dropped.
    """

    @checked
    def __init__(self, env: gym.Env[Any, Any]) -> None:
        super().__init__(env)
        from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX, STATE_TO_IDX

        space = env.observation_space
        if not (
            isinstance(space, gym.spaces.Dict)
            and isinstance(space.spaces.get("image"), gym.spaces.Box)
            and isinstance(space.spaces.get("direction"), gym.spaces.Discrete)
        ):
            raise TypeError(f"MiniGridFlatObs needs a minigrid Dict(image, direction) space, got {space}")
        image_shape = space.spaces["image"].shape
        assert image_shape is not None
        if len(image_shape) != 3 or image_shape[2] != 3:
            raise TypeError(f"minigrid image must be H×W×3, got {image_shape}")
        self._scale = np.array(
            [
                1.0 / max(OBJECT_TO_IDX.values()),
                1.0 / max(COLOR_TO_IDX.values()),
                1.0 / max(STATE_TO_IDX.values()),
            ],
            dtype=np.float32,
        )
        self._image_size = int(np.prod(image_shape))
        size = self._image_size + _MINIGRID_DIRECTIONS
        self.observation_space = gym.spaces.Box(low=0.0, high=1.0, shape=(size,), dtype=np.float32)

    def observation(self, observation: Any) -> npt.NDArray[np.float32]:
        """``concat(image.ravel() * scale, one_hot(direction))`` as float32."""
        image = np.asarray(observation["image"]).astype(np.float32) * self._scale
        out = np.zeros(self._image_size + _MINIGRID_DIRECTIONS, dtype=np.float32)
        out[: self._image_size] = image.reshape(-1)
        out[self._image_size + int(observation["direction"])] = 1.0
        return out


_KNOWN_MUJOCO_WARNINGS: Final = ("compiler attribute 'settotalmass' is deprecated",)


def _mujoco_warning(message: str) -> None:
    if not message.startswith(_KNOWN_MUJOCO_WARNINGS):
        warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)


@contextlib.contextmanager
def _mujoco_warnings_as_python(env_id: str) -> Iterator[None]:
    """Route MuJoCo's warnings while making a gymnasium MuJoCo env (see the module docstring)."""
    entry_point = gym.spec(env_id).entry_point
    if not (isinstance(entry_point, str) and entry_point.startswith("gymnasium.envs.mujoco")):
        yield
        return
    try:
        import mujoco  # type: ignore[import-untyped,unused-ignore]
    except ImportError:  # gym.make reports the missing dependency
        yield
        return
    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(_mujoco_warning)
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


def _register_extras() -> None:
    # minigrid registers its ids on import; gymnasium's MuJoCo ids are registered already and
    # import mujoco only when made.  Deferred so that importing this module stays cheap.
    import minigrid  # noqa: F401


def _unsupported(env_id: str, why: str) -> ValueError:
    return ValueError(
        f"{why}. Supported environment ids: {', '.join(SUPPORTED_ENVS)} (other gymnasium ids with "
        f"Box observations and Discrete or 1-D Box actions work on a best-effort basis; an id that a "
        f"package registers on import is written MODULE:ID, e.g. my_pkg.envs:MyEnv-v0)"
    )


def _nearest_id(name: str) -> str | None:
    by_lower = {registered.lower(): registered for registered in gym.registry}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1)
    return by_lower[close[0]] if close else None


def _registered_id(env_id: str) -> str:
    """The registered gymnasium id that ``env_id`` names (importing ``MODULE`` for ``MODULE:ID``)."""
    _register_extras()
    module, colon, name = env_id.partition(":")
    if not colon:
        module, name = "", env_id
    elif not module or not name or ":" in name:
        raise ValueError(f"environment id {env_id!r}: expected ID or MODULE:ID, e.g. my_pkg.envs:MyEnv-v0")
    else:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ValueError(
                f"environment id {env_id!r}: cannot import {module!r} ({exc}); install its package or put "
                "it on PYTHONPATH"
            ) from None
        except Exception as exc:  # the module's own code failed while registering
            raise ValueError(
                f"environment id {env_id!r}: importing {module!r} raised {type(exc).__name__}: {exc}"
            ) from None
    if name in gym.registry:
        return name
    nearest = _nearest_id(name)
    hint = f" (did you mean {nearest!r}?)" if nearest is not None else ""
    if module:
        raise _unsupported(env_id, f"unknown environment id {name!r}: {module!r} does not register it{hint}")
    raise _unsupported(env_id, f"unknown environment id {env_id!r}{hint}")


def _is_minigrid_space(space: gym.Space[Any]) -> bool:
    return isinstance(space, gym.spaces.Dict) and {"image", "direction"} <= set(space.spaces)


@checked
def make_env(env_id: str, **make_kwargs: Any) -> gym.Env[Any, Any]:
    """A fresh environment for ``env_id`` whose observations are 1-D float32 arrays.

    ``make_kwargs`` go to ``gymnasium.make`` (e.g. ``render_mode``; changing the dynamics
    makes :func:`task_info` wrong).  Raises ``ValueError`` naming the supported ids for an
    unknown id or unsupported spaces.  See the module docstring for the observation layout
    and the reproducibility contract.
    """
    registered = _registered_id(env_id)
    try:
        with _mujoco_warnings_as_python(registered):
            env: gym.Env[Any, Any] = gym.make(registered, **make_kwargs)
    except Exception as exc:  # gymnasium raises many kinds (missing dependency, bad kwargs, ...)
        raise _unsupported(env_id, f"cannot make {env_id!r}: {type(exc).__name__}: {exc}") from None
    try:
        action_space = env.action_space
        if isinstance(action_space, gym.spaces.Discrete):
            if int(action_space.start) != 0:
                raise _unsupported(env_id, f"{env_id!r} has a Discrete action space not starting at 0")
        elif isinstance(action_space, gym.spaces.Box):
            if len(action_space.shape) != 1:
                raise _unsupported(
                    env_id, f"{env_id!r} has a {action_space.shape}-shaped Box action space, not 1-D"
                )
            if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
                raise _unsupported(env_id, f"{env_id!r} has unbounded actions {action_space}")
        else:
            raise _unsupported(env_id, f"{env_id!r} has an unsupported action space {action_space}")
        space = env.observation_space
        if _is_minigrid_space(space):
            return MiniGridFlatObs(env)
        if isinstance(space, gym.spaces.Box):
            return FlatFloat32Obs(env)
        raise _unsupported(env_id, f"{env_id!r} has an unsupported observation space {space}")
    except BaseException:
        env.close()
        raise


def _termination(env_id: str, base: Any) -> Callable[[Tensor, Tensor, Tensor], Tensor] | None:
    if env_id == "CartPole-v1":
        return CartPoleTermination(float(base.x_threshold), float(base.theta_threshold_radians))
    if env_id == "MountainCarContinuous-v0":
        return MountainCarTermination(float(base.goal_position), float(base.goal_velocity))
    if env_id in ("Pendulum-v1", "HalfCheetah-v5", "amal/Trading-v0", "amal/NewsFilter-v0"):
        return NeverTerminates()
    return None


@functools.cache
def _task_info(env_id: str) -> TaskInfo:
    env = make_env(env_id)
    try:
        obs_space = env.observation_space
        assert isinstance(obs_space, gym.spaces.Box)
        obs_dim = int(obs_space.shape[0])
        action_space = env.action_space
        low: tuple[float, ...] = ()
        high: tuple[float, ...] = ()
        if isinstance(action_space, gym.spaces.Discrete):
            discrete, action_dim = True, int(action_space.n)
        else:
            assert isinstance(action_space, gym.spaces.Box)
            discrete, action_dim = False, int(action_space.shape[0])
            low = tuple(float(v) for v in action_space.low)
            high = tuple(float(v) for v in action_space.high)
        base: Any = env.unwrapped
        spec = env.spec
        max_steps = spec.max_episode_steps if spec is not None else None
        if max_steps is None and isinstance(getattr(base, "max_steps", None), int):
            max_steps = int(base.max_steps)  # minigrid and the library's own tasks end themselves
        registered = _registered_id(env_id)
        solved = _SOLVED_RETURN.get(registered)
        if solved is None and spec is not None and spec.reward_threshold is not None:
            solved = float(spec.reward_threshold)
        if solved is not None and not math.isfinite(solved):
            solved = None
        termination = _termination(registered, base)
        return TaskInfo(
            env_id=env_id,
            obs_dim=obs_dim,
            discrete=discrete,
            action_dim=action_dim,
            action_low=low,
            action_high=high,
            max_episode_steps=max_steps,
            termination=termination,
            model_rollouts=termination is not None,
            solved_return=solved,
        )
    finally:
        env.close()


@checked
def task_info(env_id: str) -> TaskInfo:
    """Facts about ``env_id``'s task (see :class:`TaskInfo` and the module docstring).

    Raises ``ValueError`` naming the supported ids for an unknown id or unsupported spaces.
    """
    return _task_info(env_id)
