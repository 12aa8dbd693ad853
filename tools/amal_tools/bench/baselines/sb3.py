"""PPO, SAC and TD3 baselines (paper §6.1.2), trained with Stable-Baselines3 (the ``integrations`` extra).

:func:`train_sb3` trains one SB3 model on the task's real environment
(:func:`~amal_tools.bench.evaluation.make_task_env`, one environment, ``"MlpPolicy"``, CPU) for
exactly ``budget`` environment steps and evaluates its deterministic policy (``model.predict(obs,
deterministic=True)``: the Gaussian mean / argmax for PPO, the squashed mean for SAC, the actor for
TD3) at each requested count.  The contract is the package's (:mod:`amal_tools.bench.baselines`).

How the counts are honoured: a ``BaseCallback`` runs after every environment step (SB3 calls it
after ``env.step`` and before any gradient update that step triggers); when the step counter equals
a requested count it evaluates the current model, and at ``budget`` it stops training (returning
``False``), so the model is never trained past ``budget`` steps, and the final policy is exactly the
one evaluated at ``budget``.  PPO's last rollout may therefore be cut short; its steps count but are
not learned from.

Hyperparameters: SB3's defaults, except where they cannot work at the benchmark's small budgets
(rl-zoo style); every deviation:

- PPO ``n_steps = min(2048, max(64, budget // 8))`` rounded down to a multiple of 64 (so the default
  ``batch_size = 64`` divides it): at least eight updates in the budget (SB3's 2048 would give none
  below 2048 steps).  A budget below 64 steps never completes a rollout and makes no update.
- SAC/TD3 ``learning_starts = min(100, budget // 10)`` (SB3's default is 100): at most a tenth of the
  budget is spent on uniformly random warm-up actions.
- SAC/TD3 ``buffer_size = min(10**6, budget)``: the same replay behaviour as SB3's 10**6 (the
  buffer never fills within the budget) without reserving memory for it.
- TD3 ``action_noise = NormalActionNoise(0, 0.1)`` on the ``[-1, 1]``-scaled actions (as the TD3
  paper and rl-zoo; SB3's default is no exploration noise at all).

``extras``: ``"algo"``, ``"hyperparameters"`` (every JSON-valued constructor argument actually used,
SB3 defaults included, and the policy's ``net_arch``), ``"env_steps"``, ``"env_steps_per_second"``
(training only).

Reproducibility: the model gets ``seed=seed`` (SB3 seeds ``random``, NumPy, torch, the action
space and the training environment from it), ``torch.set_num_threads(threads)``, CPU.  The same
seed and ``threads`` give bit-identical curves and policies on the same machine and library
versions; with ``threads > 1`` this still holds in practice but relies on torch's CPU kernels
reducing in a fixed order for a fixed thread count, which torch does not guarantee.  The caller's
global RNG states are restored afterwards.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, Literal

import gymnasium as gym
import numpy as np
import numpy.typing as npt

from amal_tools.bench.baselines._common import (
    EvalClock,
    NotApplicable,
    preserve_global_rngs,
    steps_per_second,
    torch_threads,
)
from amal_tools.bench.evaluation import Policy, TrainedPolicy, check_training_arguments, make_task_env
from amal_tools.bench.tasks import TaskSpec
from amal_verified.common.runtime_checks import checked

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm

__all__ = ["Algo", "silent_logger", "train_ppo", "train_sac", "train_sb3", "train_td3"]

Algo = Literal["ppo", "sac", "td3"]

_PPO_MAX_STEPS: Final = 2048  # SB3's default n_steps
_PPO_BATCH: Final = 64  # SB3's default batch_size
_MAX_LEARNING_STARTS: Final = 100  # SB3's default learning_starts (SAC, TD3)
_MAX_BUFFER: Final = 1_000_000  # SB3's default buffer_size
_TD3_NOISE_SIGMA: Final = 0.1
# Constructor arguments that are not hyperparameters (or not JSON), left out of extras.
_NOT_HYPERPARAMETERS: Final = frozenset(
    {"self", "policy", "env", "seed", "verbose", "device", "tensorboard_log", "_init_setup_model"}
)


def silent_logger() -> Any:
    """A Stable-Baselines3 logger that writes nothing and nowhere: SB3's default (``verbose=0``
    included) creates a folder ``<tempdir>/SB3-<time>`` for every model it trains."""
    from stable_baselines3.common.logger import Logger

    return Logger(folder=None, output_formats=[])


def _import_sb3() -> Any:
    try:
        import stable_baselines3
    except ImportError as exc:  # pragma: no cover - the integrations extra is installed in CI
        raise ImportError(
            "the PPO/SAC/TD3/PBT baselines need Stable-Baselines3: pip install 'amal_verified[sb3]'"
        ) from exc
    return stable_baselines3


def _ppo_n_steps(budget: int) -> int:
    """PPO's rollout length for ``budget`` steps: ``min(2048, max(64, budget // 8))``, a multiple of 64."""
    n_steps = min(_PPO_MAX_STEPS, max(_PPO_BATCH, budget // 8))
    return n_steps - n_steps % _PPO_BATCH


def _is_json_scalar(value: object) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def _hyperparameters(model: BaseAlgorithm, overrides: dict[str, Any]) -> dict[str, Any]:
    """The JSON-valued constructor arguments ``model`` was built with: SB3's defaults, then ``overrides``.

    ``overrides`` values that are not JSON scalars (e.g. an action-noise object) are recorded by the
    caller's description, not here.
    """
    used: dict[str, Any] = {}
    for name, param in inspect.signature(type(model).__init__).parameters.items():
        if name in _NOT_HYPERPARAMETERS or param.default is inspect.Parameter.empty:
            continue
        value = overrides.get(name, param.default)
        if _is_json_scalar(value):
            used[name] = value
        elif isinstance(value, tuple | list) and all(_is_json_scalar(v) for v in value):
            used[name] = list(value)
    net_arch = getattr(model.policy, "net_arch", None)
    if isinstance(net_arch, dict):
        used["net_arch"] = {str(k): list(v) for k, v in net_arch.items()}
    elif isinstance(net_arch, list):
        used["net_arch"] = list(net_arch)
    return used


def _policy(model: BaseAlgorithm, discrete: bool) -> Policy:
    """``act(obs)``: the model's deterministic action for one observation (an ``int`` if discrete).

    ``model.predict`` draws no randomness with ``deterministic=True``.
    """

    def act(obs: npt.NDArray[np.float32]) -> Any:
        action, _ = model.predict(obs, deterministic=True)
        return int(action) if discrete else np.asarray(action)

    return act


def _make_model(algo: Algo, env: gym.Env[Any, Any], *, seed: int, budget: int) -> tuple[Any, dict[str, Any]]:
    """An SB3 ``algo`` model on ``env`` with this module's hyperparameters for ``budget`` steps.

    Returns the model and the JSON record of its hyperparameters (see the module docstring).
    Raises :class:`NotApplicable` for SAC/TD3 on a non-``Box`` action space.
    """
    sb3 = _import_sb3()
    continuous = isinstance(env.action_space, gym.spaces.Box)
    if algo in ("sac", "td3") and not continuous:
        raise NotApplicable(
            f"{algo.upper()} needs a continuous (Box) action space, the task has {env.action_space}"
        )
    overrides: dict[str, Any]
    noted: dict[str, Any] = {}
    if algo == "ppo":
        overrides = {"n_steps": _ppo_n_steps(budget), "batch_size": _PPO_BATCH}
        cls = sb3.PPO
    else:
        overrides = {
            "learning_starts": min(_MAX_LEARNING_STARTS, budget // 10),
            "buffer_size": min(_MAX_BUFFER, budget),
        }
        cls = sb3.SAC if algo == "sac" else sb3.TD3
        if algo == "td3":
            from stable_baselines3.common.noise import NormalActionNoise

            action_dim = int(np.prod(env.action_space.shape or (1,)))
            overrides["action_noise"] = NormalActionNoise(
                mean=np.zeros(action_dim), sigma=np.full(action_dim, _TD3_NOISE_SIGMA)
            )
            noted["action_noise"] = f"NormalActionNoise(mean=0, sigma={_TD3_NOISE_SIGMA}) on scaled actions"
    model = cls("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **overrides)
    model.set_logger(silent_logger())
    return model, _hyperparameters(model, overrides) | noted


def _eval_callback(clock: EvalClock, act: Policy, budget: int) -> Any:
    from stable_baselines3.common.callbacks import BaseCallback

    class _EvalAtCounts(BaseCallback):
        """Evaluates at the requested counts; stops training at ``budget``."""

        def _on_step(self) -> bool:
            clock.record(self.num_timesteps, act)
            return self.num_timesteps < budget

    return _EvalAtCounts()


@checked
def train_sb3(
    algo: Algo,
    task: TaskSpec,
    *,
    seed: int,
    budget: int,
    eval_steps: Sequence[int],
    eval_episodes: int,
    threads: int = 1,
) -> TrainedPolicy:
    """Train SB3 ``algo`` on ``task`` for ``budget`` environment steps (see the module docstring)."""
    steps = check_training_arguments(seed, budget, eval_steps, eval_episodes, threads)
    clock = EvalClock(task, seed=seed, eval_steps=steps, eval_episodes=eval_episodes)
    env = make_task_env(task)
    try:
        with preserve_global_rngs(), torch_threads(threads):
            start = time.perf_counter()
            model, hyperparameters = _make_model(algo, env, seed=seed, budget=budget)
            act = _policy(model, discrete=isinstance(env.action_space, gym.spaces.Discrete))
            model.learn(total_timesteps=budget, callback=_eval_callback(clock, act, budget))
            consumed = int(model.num_timesteps)
            clock.record(budget, act)  # a no-op: the callback has recorded every count up to budget
            elapsed = time.perf_counter() - start
    finally:
        env.close()
    train_seconds = max(0.0, elapsed - clock.seconds)
    return TrainedPolicy(
        curve=tuple(clock.points),
        act=act,
        train_seconds=train_seconds,
        extras={
            "algo": algo,
            "hyperparameters": hyperparameters,
            "env_steps": consumed,
            "env_steps_per_second": steps_per_second(consumed, train_seconds),
        },
    )


@checked
def train_ppo(
    task: TaskSpec, *, seed: int, budget: int, eval_steps: Sequence[int], eval_episodes: int, threads: int = 1
) -> TrainedPolicy:
    """:func:`train_sb3` with PPO (discrete or continuous actions)."""
    return train_sb3(
        "ppo",
        task,
        seed=seed,
        budget=budget,
        eval_steps=eval_steps,
        eval_episodes=eval_episodes,
        threads=threads,
    )


@checked
def train_sac(
    task: TaskSpec, *, seed: int, budget: int, eval_steps: Sequence[int], eval_episodes: int, threads: int = 1
) -> TrainedPolicy:
    """:func:`train_sb3` with SAC (continuous actions only, else :class:`NotApplicable`)."""
    return train_sb3(
        "sac",
        task,
        seed=seed,
        budget=budget,
        eval_steps=eval_steps,
        eval_episodes=eval_episodes,
        threads=threads,
    )


@checked
def train_td3(
    task: TaskSpec, *, seed: int, budget: int, eval_steps: Sequence[int], eval_episodes: int, threads: int = 1
) -> TrainedPolicy:
    """:func:`train_sb3` with TD3 (continuous actions only, else :class:`NotApplicable`)."""
    return train_sb3(
        "td3",
        task,
        seed=seed,
        budget=budget,
        eval_steps=eval_steps,
        eval_episodes=eval_episodes,
        threads=threads,
    )
