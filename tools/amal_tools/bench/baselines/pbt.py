"""Population-based training (Jaderberg et al. 2017), small: four Stable-Baselines3 learners.

The contract is the package's (:mod:`amal_tools.bench.baselines`).  Members: SB3 PPO on a
``Discrete`` action space, SAC on a ``Box`` one, each with its own training environment (seeded
from the run seed) and SB3's default hyperparameters except as stated below.  Every real
environment step — training and ranking — counts against the one ``budget`` shared by the
population.

Schedule (``M = 4`` members, ``R = min(10, max(2, budget // (500·M)))`` rounds; per member per
round a share of ``budget // (R·M)`` steps):

1. **Train**: members 0, 1, …, M−1 in turn, each continuing its own SB3 run for ``turn`` steps
   (``learn(turn, reset_num_timesteps=False)``: episodes, replay buffer, optimiser and step counter
   carry over between turns).  SAC: ``turn = share − max(1, share // 10)``.  PPO: ``turn`` is that
   rounded down to a multiple of 64 (if ≥ 64) and ``n_steps`` is the largest multiple of 64 that
   divides ``turn`` and is ≤ 2048 (``batch_size = 64``; below 64, ``n_steps = batch_size = turn``),
   so a turn is whole rollouts and no collected step is thrown away.
2. **Rank**: each member runs its deterministic policy for one episode of a *training-side* ranking
   environment, capped at the rest of its share, ``share − turn`` steps (about a tenth; for PPO plus
   the < 64 steps rounded off ``turn``), with the same reset seed for all members of a round, drawn
   from the run's own ranking stream (not the evaluation seeds' stream); its score is that (capped)
   return.  Ties go to the lower index.
3. **Exploit and explore** (every round but the last): the bottom ``M // 4`` members copy the
   parameters (``get_parameters`` / ``set_parameters``: networks and optimiser states; SAC's entropy
   coefficient too) and the learning rate of the top ``M // 4`` (the i-th worst copies the i-th best),
   then multiply their learning rate by 0.8 or 1.25 (a fair coin from the run's PBT stream).
   Replay buffers and environments stay the member's own.

Initial learning rates: SB3's default (PPO, SAC: 3e-4) × ``2 ** linspace(−1, 1, M)`` (×0.5, ×0.79,
×1.26, ×2).  SAC ``learning_starts = min(100, per-member steps // 10)``, ``buffer_size`` = the
member's training steps; PPO as just said; everything else SB3's defaults.

Evaluation: the reported policy is the current best member: the first of the latest ranking (member 0
before the first ranking).  A requested count reached during a round is evaluated at once with that
member's current parameters; a count reached by a round's last ranking step is evaluated after the
new ranking.  Ranking episodes that end before their cap leave steps unused: the counts beyond the
steps actually consumed are evaluated at the end with the final best member (``extras["env_steps"]``).

Reproducibility: member ``k`` is built with an SB3 ``seed`` derived from ``(seed, k)``; the members'
SB3 runs share the global ``random``/NumPy/torch streams (SB3 samples from them), in a fixed order,
so the same seed and ``threads`` give bit-identical curves on CPU (with ``threads > 1`` only as far
as torch's CPU kernels reduce in a fixed order).  The caller's global RNG states are restored.

``extras``: ``"members"``, ``"rounds"``, ``"algo"``, ``"turn_steps"``, ``"rank_steps"``,
``"hyperparameters"`` (member 0's at the start), ``"initial_learning_rates"``, ``"history"`` (per
round: the global step after ranking, the scores, the ranking, the best member and the
exploit/explore events ``{"member", "copied_from", "learning_rate"}``), ``"final_learning_rates"``,
``"env_steps"``, ``"env_steps_per_second"``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any, Final

import gymnasium as gym
import numpy as np
import torch

from amal_tools.bench.baselines._common import (
    EvalClock,
    preserve_global_rngs,
    steps_per_second,
    torch_threads,
)
from amal_tools.bench.baselines.sb3 import _hyperparameters, _import_sb3, _policy, silent_logger
from amal_tools.bench.evaluation import Policy, TrainedPolicy, check_training_arguments, make_task_env
from amal_tools.bench.tasks import TaskSpec
from amal_verified.common.runtime_checks import checked

__all__ = ["train_pbt"]

MEMBERS: Final = 4
MAX_ROUNDS: Final = 10
STEPS_PER_ROUND_PER_MEMBER: Final = 500  # R = clamp(budget // (500·M), 2, 10)
RANK_FRACTION: Final = 10  # ranking episodes get about 1/10 of a member's share
PERTURB: Final = (0.8, 1.25)
PPO_BATCH: Final = 64
PPO_MAX_STEPS: Final = 2048
MAX_LEARNING_STARTS: Final = 100
DEFAULT_LEARNING_RATE: Final = 3e-4  # SB3's PPO and SAC default

_STREAM: Final = 0x9B7  # domain separator of this method's seeds
_RANKING, _EXPLORE = MEMBERS, MEMBERS + 1  # sub-streams after the members' model seeds


def _sub_seed(seed: int, stream: int) -> int:
    return int(np.random.SeedSequence([_STREAM, seed, stream]).generate_state(1, np.uint32)[0])


def _schedule(budget: int, discrete: bool) -> tuple[int, int, int]:
    """``(rounds, turn, share)``: rounds, training steps per member per round, and its whole share."""
    rounds = min(MAX_ROUNDS, max(2, budget // (STEPS_PER_ROUND_PER_MEMBER * MEMBERS)))
    share = budget // (rounds * MEMBERS)
    if share < 3:
        raise ValueError(
            f"PBT needs a budget of at least {3 * rounds * MEMBERS} steps "
            f"({MEMBERS} members × {rounds} rounds × 3), got {budget}"
        )
    turn = share - max(1, share // RANK_FRACTION)
    if discrete and turn >= PPO_BATCH:
        turn -= turn % PPO_BATCH
    return rounds, turn, share


def _ppo_rollout(turn: int) -> tuple[int, int]:
    """``(n_steps, batch_size)`` for PPO turns of ``turn`` steps (see the module docstring)."""
    if turn < PPO_BATCH:
        return turn, turn
    blocks = turn // PPO_BATCH
    per_rollout = max(d for d in range(1, PPO_MAX_STEPS // PPO_BATCH + 1) if blocks % d == 0)
    return per_rollout * PPO_BATCH, PPO_BATCH


def _set_learning_rate(model: Any, learning_rate: float) -> None:
    """Change an SB3 model's (constant) learning rate; SB3 applies it to the optimisers in ``train``."""
    model.learning_rate = learning_rate
    model._setup_lr_schedule()


def _copy_member(target: Any, source: Any) -> None:
    """Exploit: ``target`` takes ``source``'s networks, optimiser states (and SAC's entropy coefficient)."""
    target.set_parameters(copy.deepcopy(source.get_parameters()), exact_match=True)
    if getattr(source, "log_ent_coef", None) is not None:
        with torch.no_grad():
            target.log_ent_coef.copy_(source.log_ent_coef)


@checked
def train_pbt(
    task: TaskSpec,
    *,
    seed: int,
    budget: int,
    eval_steps: Sequence[int],
    eval_episodes: int,
    threads: int = 1,
) -> TrainedPolicy:
    """Train a PBT population on ``task`` within ``budget`` environment steps (see the module docstring)."""
    steps_requested = check_training_arguments(seed, budget, eval_steps, eval_episodes, threads)
    sb3 = _import_sb3()
    clock = EvalClock(task, seed=seed, eval_steps=steps_requested, eval_episodes=eval_episodes)
    envs: list[gym.Env[Any, Any]] = []
    try:
        rank_env = make_task_env(task)
        envs.append(rank_env)
        discrete = isinstance(rank_env.action_space, gym.spaces.Discrete)
        if not discrete and not isinstance(rank_env.action_space, gym.spaces.Box):
            raise ValueError(f"{task.name}: unsupported action space {rank_env.action_space}")
        rounds, turn, share = _schedule(budget, discrete)
        rank_steps = share - turn
        with preserve_global_rngs(), torch_threads(threads):
            start = time.perf_counter()
            learning_rates = [
                DEFAULT_LEARNING_RATE * float(f) for f in 2.0 ** np.linspace(-1.0, 1.0, MEMBERS)
            ]
            overrides: dict[str, Any]
            if discrete:
                n_steps, batch_size = _ppo_rollout(turn)
                cls, algo = sb3.PPO, "ppo"
                overrides = {"n_steps": n_steps, "batch_size": batch_size}
            else:
                cls, algo = sb3.SAC, "sac"
                per_member = rounds * turn
                overrides = {
                    "learning_starts": min(MAX_LEARNING_STARTS, per_member // 10),
                    "buffer_size": max(1, per_member),
                }
            models: list[Any] = []
            for k in range(MEMBERS):
                env = make_task_env(task)
                envs.append(env)
                member_overrides = overrides | {"learning_rate": learning_rates[k]}
                member = cls(
                    "MlpPolicy", env, seed=_sub_seed(seed, k), device="cpu", verbose=0, **member_overrides
                )
                member.set_logger(silent_logger())
                models.append(member)
            initial_learning_rates = list(learning_rates)
            hyperparameters = _hyperparameters(models[0], overrides | {"learning_rate": learning_rates[0]})
            acts = [_policy(m, discrete) for m in models]
            rank_seeds = np.random.default_rng(_sub_seed(seed, _RANKING))
            explore = np.random.default_rng(_sub_seed(seed, _EXPLORE))
            best = 0
            consumed = 0
            history: list[dict[str, Any]] = []

            def best_act(obs: Any) -> Any:
                return acts[best](obs)

            callback_type = _counting_callback_type()
            for r in range(rounds):
                # 1. Train every member for one turn.
                for model in models:
                    before = model.num_timesteps
                    model.learn(
                        total_timesteps=turn,
                        reset_num_timesteps=False,
                        callback=callback_type(clock, best_act, consumed - before, before + turn),
                    )
                    consumed += model.num_timesteps - before
                # 2. Rank on one capped training-side episode each (same reset seed for all members).
                episode_seed = int(rank_seeds.integers(0, 2**31))
                scores: list[float] = []
                for k in range(MEMBERS):
                    obs, _ = rank_env.reset(seed=episode_seed)
                    total = 0.0
                    for t in range(rank_steps):
                        obs, reward, terminated, truncated, _ = rank_env.step(
                            acts[k](np.asarray(obs, np.float32))
                        )
                        total += float(reward)
                        consumed += 1
                        done = bool(terminated or truncated) or t == rank_steps - 1
                        if not (done and k == MEMBERS - 1):
                            clock.record(consumed, best_act)
                        if done:
                            break
                    scores.append(total)
                ranking = sorted(range(MEMBERS), key=lambda i: (-scores[i], i))
                best = ranking[0]
                # 3. Exploit (bottom quarter copies top quarter) and explore (perturb the learning rate).
                events: list[dict[str, Any]] = []
                if r < rounds - 1:
                    quarter = MEMBERS // 4
                    for loser, winner in zip(ranking[::-1][:quarter], ranking[:quarter], strict=True):
                        _copy_member(models[loser], models[winner])
                        learning_rates[loser] = learning_rates[winner] * float(explore.choice(PERTURB))
                        _set_learning_rate(models[loser], learning_rates[loser])
                        events.append(
                            {"member": loser, "copied_from": winner, "learning_rate": learning_rates[loser]}
                        )
                history.append(
                    {
                        "round": r,
                        "step": consumed,
                        "scores": scores,
                        "ranking": ranking,
                        "best": best,
                        "exploit": events,
                    }
                )
                clock.record(consumed, best_act)
            final_act: Policy = acts[best]
            clock.record(budget, final_act)  # counts beyond the steps consumed
            elapsed = time.perf_counter() - start
    finally:
        for env in envs:
            env.close()
    train_seconds = max(0.0, elapsed - clock.seconds)
    return TrainedPolicy(
        curve=tuple(clock.points),
        act=final_act,
        train_seconds=train_seconds,
        extras={
            "algo": algo,
            "members": MEMBERS,
            "rounds": rounds,
            "turn_steps": turn,
            "rank_steps": rank_steps,
            "hyperparameters": hyperparameters,
            "initial_learning_rates": initial_learning_rates,
            "final_learning_rates": learning_rates,
            "history": history,
            "env_steps": consumed,
            "env_steps_per_second": steps_per_second(consumed, train_seconds),
        },
    )


def _counting_callback_type() -> Any:
    """An SB3 callback class that advances the population's step count and evaluates the best member."""
    from stable_baselines3.common.callbacks import BaseCallback

    class _CountingCallback(BaseCallback):
        def __init__(self, clock: EvalClock, act: Policy, offset: int, stop_at: int) -> None:
            super().__init__()
            self._clock = clock
            self._act = act
            self._offset = offset  # population steps = offset + this model's num_timesteps
            self._stop_at = stop_at

        def _on_step(self) -> bool:
            self._clock.record(self._offset + self.num_timesteps, self._act)
            return self.num_timesteps < self._stop_at

    return _CountingCallback
