"""Auxiliary environments: the primary gymnasium env behind a perturbation wrapper.

Auxiliary agents (paper §4.4) generate *synthetic* experience.  The default
auxiliary environment here is the primary environment (as built by
:func:`amal_verified.envs.make_env`, so observations are 1-D float32) with

- **changed physics**: named numeric attributes of ``env.unwrapped`` scaled by
  given factors (e.g. CartPole ``gravity``/``length``/``masspole``, Pendulum
  ``g``/``m``/``l``, MountainCarContinuous ``power``), applied once at
  construction.  For MuJoCo environments a name ``"model.<field>"`` (e.g.
  ``"model.opt.gravity"``, ``"model.body_mass"``, ``"model.dof_damping"``,
  ``"model.geom_friction"``) scales that float array of the instance's own
  ``mujoco.MjModel`` element-wise, in place (each gymnasium MuJoCo env instance
  compiles its own ``MjModel``, so other instances are never affected), then
  ``mujoco.mj_setConst`` recomputes the model's derived constants;
- **observation noise**: i.i.d. Gaussian noise with a configured standard
  deviation added to every observation returned by ``reset`` and ``step``,
  drawn from the wrapper's *own* ``numpy.random.Generator``.

so data collected in it is visibly not the primary stream.  Use
:func:`make_aux_env`; give every auxiliary agent its own instance and seed.

Default perturbations (:data:`DEFAULT_PHYSICS`, plus σ = :data:`DEFAULT_OBS_NOISE`
observation noise for every environment): CartPole gravity ×1.5, pole length
×1.5, pole mass ×2; Pendulum g ×1.3, m ×1.25, l ×0.8; MountainCarContinuous
power ×1.5; MuJoCo HalfCheetah, Ant, Walker2d and Humanoid gravity ×1.5, joint
damping ×2, friction ×0.6.  MiniGrid KeyCorridor and the library's own ``amal/...``
tasks have no physics: their auxiliary environments differ by the observation noise
and by :data:`DEFAULT_AUX_MAKE_KWARGS` (the market's auxiliary traders, the news
stream's injected false articles).

Randomness contract: the wrapper never touches the global NumPy, ``random`` or
torch RNGs.  A seed ``s`` is passed unchanged to the wrapped environment's
``reset(seed=s)`` (so an aux env and the primary env reset with the same seed
start in the same state and differ only by the perturbation), and is split
with ``numpy.random.SeedSequence(s)`` into independent streams for the noise
generator and the action/observation spaces' samplers.  The same seed and the
same actions give the same trajectory, bit for bit.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final, SupportsFloat, final

import gymnasium as gym
import numpy as np
import numpy.typing as npt

from amal_verified.common.runtime_checks import checked
from amal_verified.envs.registration import AMAL_ENV_IDS

__all__ = ["DEFAULT_AUX_MAKE_KWARGS", "DEFAULT_OBS_NOISE", "DEFAULT_PHYSICS", "PerturbedEnv", "make_aux_env"]

DEFAULT_PHYSICS: Final[Mapping[str, Mapping[str, float]]] = MappingProxyType(
    {
        "CartPole-v0": MappingProxyType({"gravity": 1.5, "length": 1.5, "masspole": 2.0}),
        "CartPole-v1": MappingProxyType({"gravity": 1.5, "length": 1.5, "masspole": 2.0}),
        "Pendulum-v1": MappingProxyType({"g": 1.3, "m": 1.25, "l": 0.8}),
        "MountainCar-v0": MappingProxyType({"force": 1.3, "gravity": 0.8}),
        "MountainCarContinuous-v0": MappingProxyType({"power": 1.5}),
        "Acrobot-v1": MappingProxyType({"LINK_MASS_1": 1.3, "LINK_LENGTH_1": 0.8}),
        **{
            env_id: MappingProxyType(
                {"model.opt.gravity": 1.5, "model.dof_damping": 2.0, "model.geom_friction": 0.6}
            )
            for env_id in ("HalfCheetah-v5", "Ant-v5", "Walker2d-v5", "Humanoid-v5")
        },
        # Grid worlds and the library's own tasks have no physics to scale: the observation noise
        # (and, for the market and the news stream, DEFAULT_AUX_MAKE_KWARGS) is the perturbation.
        **{
            env_id: MappingProxyType({})
            for env_id in (
                "MiniGrid-KeyCorridorS3R1-v0",
                "MiniGrid-KeyCorridorS3R2-v0",
                "MiniGrid-KeyCorridorS3R3-v0",
                "MiniGrid-KeyCorridorS4R3-v0",
                "MiniGrid-KeyCorridorS5R3-v0",
                "MiniGrid-KeyCorridorS6R3-v0",
                *AMAL_ENV_IDS,
            )
        },
    }
)
"""Per-environment default physics scale factors (attribute of ``env.unwrapped``, or
``"model.<field>"`` of a MuJoCo env's ``MjModel``, → multiplier)."""

DEFAULT_AUX_MAKE_KWARGS: Final[Mapping[str, Mapping[str, Any]]] = MappingProxyType(
    {
        # The market's auxiliary traders (trend following, mean reversion, market making) move the
        # price only here, in the auxiliary environment; the primary market has no such traders.
        "amal/Trading-v0": MappingProxyType(
            {"participants": ("trend_following", "mean_reversion", "market_making")}
        ),
        # Injected propaganda: a fifth of the auxiliary stream is false articles on interesting topics.
        "amal/NewsFilter-v0": MappingProxyType({"synthetic_fraction": 0.2}),
    }
)
"""Per-environment ``gym.make`` keyword arguments that build the auxiliary variant of a task
(merged under the caller's own ``make_kwargs``)."""

DEFAULT_OBS_NOISE: Final = 0.01
"""Default standard deviation of the Gaussian observation noise."""


def _recompute_cartpole(env: Any) -> None:
    # CartPole caches these in __init__ and uses only the cached values in step().
    env.total_mass = env.masspole + env.masscart
    env.polemass_length = env.masspole * env.length


# Attributes some environments derive in __init__ from others; scaling the base
# attributes requires recomputing them, and scaling them directly would be undone.
_DERIVED: Final[Mapping[str, tuple[frozenset[str], Callable[[Any], None]]]] = MappingProxyType(
    {"CartPoleEnv": (frozenset({"total_mass", "polemass_length"}), _recompute_cartpole)}
)


# Environments whose physics a PerturbedEnv has modified (never perturb one twice).
_PERTURBED: Final[weakref.WeakSet[Any]] = weakref.WeakSet()


_MODEL_PREFIX: Final = "model."


def _model_array(base: Any, name: str) -> npt.NDArray[np.floating[Any]]:
    """The float array ``name`` (``"model.<field>[.<field>]"``) of a MuJoCo env's ``MjModel``."""
    cls_name = type(base).__name__
    model = getattr(base, "model", None)
    if model is None or type(model).__name__ != "MjModel":
        raise ValueError(f"{cls_name} has no MuJoCo model; {name!r} applies to MuJoCo environments only")
    parts = name[len(_MODEL_PREFIX) :].split(".")
    if not all(part.isidentifier() and not part.startswith("_") for part in parts):
        raise ValueError(f"{name!r} is not a 'model.<field>' path of public MjModel fields")
    obj: Any = model
    for part in parts:
        if not hasattr(obj, part):
            raise ValueError(f"{cls_name}'s MjModel has no field {name[len(_MODEL_PREFIX) :]!r}")
        obj = getattr(obj, part)
    if not (isinstance(obj, np.ndarray) and np.issubdtype(obj.dtype, np.floating) and obj.size > 0):
        raise ValueError(f"{cls_name} {name} is {type(obj).__name__}, not a float array of the MjModel")
    return obj


def _numeric_attributes(env: Any) -> list[str]:
    return sorted(
        name
        for name, value in vars(env).items()
        if not name.startswith("_")
        and isinstance(value, int | float | np.floating)
        and not isinstance(value, bool)
    )


@final
class PerturbedEnv(gym.Wrapper[Any, Any, Any, Any]):
    """A gymnasium wrapper with scaled physics and Gaussian observation noise (see the module docstring).

    ``physics`` maps attribute names of ``env.unwrapped`` to positive finite
    scale factors; each attribute must exist and be a real number (int or
    float, not bool).  Derived attributes are recomputed (CartPole's
    ``total_mass`` and ``polemass_length``) and may not be scaled directly.
    For a MuJoCo environment, a name ``"model.<field>"`` scales that float array
    of ``env.unwrapped.model`` (the instance's own ``MjModel``) element-wise.
    The scaled values are set once, at construction; :attr:`physics_values`
    reports them.

    ``obs_noise`` is the standard deviation σ ≥ 0 of the noise added to each
    observation (σ = 0 disables it; σ > 0 requires a ``Box`` observation space).
    Noisy observations keep the observation dtype and may leave the nominal
    observation bounds.

    The wrapper **modifies** ``env.unwrapped`` in place: never wrap the primary
    agent's environment instance (use :func:`make_aux_env`, which builds a
    fresh one).  Wrapping an already-perturbed instance again is refused.

    ``seed`` (required): the first ``reset()`` without an explicit seed uses it;
    ``reset(seed=s)`` reseeds everything (environment, noise generator) from
    ``s``.  Raises ``ValueError`` for unknown or non-numeric attributes,
    non-positive or non-finite scales, and negative or non-finite noise.
    """

    @checked
    def __init__(
        self,
        env: gym.Env[Any, Any],
        *,
        seed: int,
        physics: Mapping[str, float | int],
        obs_noise: float | int,
    ) -> None:
        if not (math.isfinite(obs_noise) and obs_noise >= 0.0):
            raise ValueError(f"obs_noise must be a finite standard deviation >= 0, got {obs_noise}")
        if seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        base: Any = env.unwrapped
        cls_name = type(base).__name__
        if base in _PERTURBED:
            raise ValueError(
                f"this {cls_name} instance is already perturbed; scales would compound. "
                "Build a fresh environment (make_aux_env does) for every auxiliary agent"
            )
        derived, recompute = _DERIVED.get(cls_name, (frozenset(), None))
        known = _numeric_attributes(base)
        new_values: dict[str, float] = {}
        model_values: dict[str, tuple[npt.NDArray[np.floating[Any]], npt.NDArray[np.float64]]] = {}
        for name, scale in physics.items():
            if isinstance(scale, bool) or not isinstance(scale, int | float):
                raise TypeError(f"scale for {cls_name}.{name} must be a real number, got {scale!r}")
            if not (math.isfinite(scale) and scale > 0.0):
                raise ValueError(f"scale for {cls_name}.{name} must be finite and > 0, got {scale}")
            if name.startswith(_MODEL_PREFIX):
                target = _model_array(base, name)
                model_values[name] = (target, np.asarray(target, dtype=np.float64) * float(scale))
                continue
            if name in derived:
                raise ValueError(
                    f"{cls_name}.{name} is derived from other attributes and recomputed; "
                    f"scale its inputs instead"
                )
            if not hasattr(base, name):
                raise ValueError(f"{cls_name} has no attribute {name!r}; numeric attributes: {known}")
            value = getattr(base, name)
            if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
                raise ValueError(
                    f"{cls_name}.{name} is {type(value).__name__}, not a real number; "
                    f"numeric attributes: {known}"
                )
            new_values[name] = float(value) * float(scale)
        if obs_noise > 0.0 and not isinstance(env.observation_space, gym.spaces.Box):
            raise ValueError(
                f"observation noise needs a Box observation space, got {type(env.observation_space).__name__}"
            )
        super().__init__(env)
        _PERTURBED.add(base)
        for name, value in new_values.items():
            setattr(base, name, value)
        if recompute is not None:
            recompute(base)
        reported: dict[str, float | npt.NDArray[np.float64]] = dict(new_values)
        for name, (target, scaled) in model_values.items():
            target[...] = scaled  # in place: the array is a view of this instance's MjModel
            value = np.array(target, dtype=np.float64)
            value.flags.writeable = False
            reported[name] = value
        if model_values:
            import mujoco  # type: ignore[import-untyped,unused-ignore]

            mujoco.mj_setConst(base.model, base.data)  # derived constants (e.g. subtree masses)
        self._physics: Mapping[str, float] = MappingProxyType(dict(physics))
        self._physics_values: Mapping[str, float | npt.NDArray[np.float64]] = MappingProxyType(reported)
        self._obs_noise = float(obs_noise)
        self._seed = seed
        self._seeded = False
        self._noise_rng = np.random.default_rng(0)  # replaced by _reseed just below
        self._reseed(seed)

    # The env is seeded lazily on reset; spaces and the noise stream are seeded here.
    def _reseed(self, seed: int) -> int:
        noise_ss, act_ss, obs_ss = np.random.SeedSequence(seed).spawn(3)
        self._noise_rng = np.random.default_rng(noise_ss)
        self.action_space.seed(int(act_ss.generate_state(1)[0]))
        self.observation_space.seed(int(obs_ss.generate_state(1)[0]))
        return seed

    @property
    def obs_noise(self) -> float:
        """Standard deviation of the Gaussian observation noise."""
        return self._obs_noise

    @property
    def physics(self) -> Mapping[str, float]:
        """The scale factors applied (read-only)."""
        return self._physics

    @property
    def physics_values(self) -> Mapping[str, float | npt.NDArray[np.float64]]:
        """The perturbed values set (read-only): floats for attributes of ``env.unwrapped``,
        read-only float64 copies of the scaled arrays for ``"model.<field>"`` entries."""
        return self._physics_values

    @property
    def seed(self) -> int:
        """The construction seed."""
        return self._seed

    def _noisy(self, obs: Any) -> Any:
        if self._obs_noise == 0.0:
            return obs
        arr: npt.NDArray[Any] = np.asarray(obs)
        noise = self._noise_rng.normal(0.0, self._obs_noise, size=arr.shape)
        with np.errstate(over="ignore"):  # overflow gives ±inf, which AuxPopulation drops and counts
            return (arr + noise).astype(arr.dtype, copy=False)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset; ``seed`` (or, on the first call, the construction seed) reseeds env and noise."""
        env_seed: int | None = None
        if seed is not None:
            env_seed = self._reseed(seed)
        elif not self._seeded:
            env_seed = self._reseed(self._seed)
        self._seeded = True
        obs, info = self.env.reset(seed=env_seed, options=options)
        return self._noisy(obs), info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step the perturbed environment; the observation carries the configured noise."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._noisy(obs), reward, terminated, truncated, info


@checked
def make_aux_env(
    env_id: str,
    *,
    seed: int,
    physics: Mapping[str, float | int] | None = None,
    obs_noise: float | int = DEFAULT_OBS_NOISE,
    **make_kwargs: Any,
) -> PerturbedEnv:
    """Build the default auxiliary environment: ``make_env(env_id)`` behind a :class:`PerturbedEnv`.

    ``physics=None`` uses :data:`DEFAULT_PHYSICS` for ``env_id`` (``ValueError``
    if there is no default: pass a mapping, or ``{}`` for noise only).
    ``obs_noise`` is the observation-noise standard deviation (≥ 0).  Each call
    creates a fresh environment instance (observations 1-D float32, see
    :func:`amal_verified.envs.make_env`); give each auxiliary agent its own
    ``seed``.  ``make_kwargs`` go to ``gym.make``, over the task's
    :data:`DEFAULT_AUX_MAKE_KWARGS`.
    """
    if not (math.isfinite(obs_noise) and obs_noise >= 0.0):
        raise ValueError(f"obs_noise must be a finite standard deviation >= 0, got {obs_noise}")
    if physics is None:
        if env_id not in DEFAULT_PHYSICS:
            raise ValueError(
                f"no default physics perturbation for {env_id!r} (defaults exist for "
                f"{sorted(DEFAULT_PHYSICS)}); pass physics={{attribute: scale, ...}}, or {{}} for noise only"
            )
        physics = DEFAULT_PHYSICS[env_id]
    from amal_verified.envs import make_env

    env = make_env(env_id, **{**DEFAULT_AUX_MAKE_KWARGS.get(env_id, {}), **make_kwargs})
    try:
        return PerturbedEnv(env, seed=seed, physics=physics, obs_noise=obs_noise)
    except BaseException:
        env.close()
        raise
