"""CEM-RL (Pourchot & Sigaud, ICLR 2019), small: CEM over actor parameters plus a shared TD3 critic.

The contract is the package's (:mod:`amal_tools.bench.baselines`); continuous (``Box``) actions
only, else :class:`~amal_tools.bench.baselines.NotApplicable`.

Pieces:

- **Actor**: :class:`~amal_verified.agents.cem.FlatMLPPolicy` ``obs → 64 → 64 → action_dim`` (tanh hidden,
  ``tanh`` output in ``[-1, 1]``, mapped affinely onto the action ``Box``), its parameters one flat
  vector θ.  Deterministic: no action noise anywhere (exploration is CEM's parameter noise, as in
  CEM-RL).
- **Search distribution**: :class:`~amal_verified.agents.cem.CEM` over θ, population ``P = 8``, elite
  fraction 0.5, ``μ₀`` = the actor's initialisation (weights ~ N(0, 1/fan_in), biases 0),
  ``σ₀ = 0.03`` (≈ √1e-3, CEM-RL's initial variance 1e-3), σ floored at 0.01.  (CEM-RL adds a
  variance decaying from 1e-3 to 1e-5 and weights its elites; the library's CEM uses a fixed floor
  and the unweighted elite mean/std.)
- **Critic**: TD3's twin Q networks ``(obs, action) → 256 → 256 → 1`` (ReLU) with target copies,
  Adam 1e-3, γ = 0.99, τ = 0.005, target policy smoothing noise N(0, 0.2) clipped to ±0.5 (on the
  ``[-1, 1]`` actions), policy delay 2, batch 100 (CEM-RL's values), one replay buffer of every
  transition (capacity = budget, so nothing is ever evicted).  Episode ends by the task's time
  limit or by the cap below are not terminal (the critic bootstraps through them).

One generation (this is the whole algorithm):

1. ``candidates = cem.ask()`` (P actors).
2. If the buffer holds ≥ 100 transitions: with ``S`` = the environment steps of the previous
   generation, each of the first ``P/2`` actors θ_i, in order, gets ``n = S // (P/2)`` TD3 iterations
   with its own target actor (a copy of θ_i) and a fresh Adam (1e-3): every iteration one critic
   step on a sampled batch (targets from θ_i's target actor); every second iteration one actor step
   (maximise Q₁(s, π_θi(s))) and the soft target updates of the critic and of θ_i's target.  The
   critic is shared and keeps learning across actors and generations; over a generation it makes
   one gradient step per environment step collected, the actors half as many (TD3's ratio).
   (CEM-RL gives every one of these actors ``S`` steps; at workstation scale this module keeps
   TD3's 1 : ½ ratio per environment step.)  The improved θ_i replace their candidates.
3. Every actor, in order, runs one episode in the training environment (reset seeds from the run's
   own stream), capped at ``episode_cap`` steps; its return is its fitness; every transition goes
   into the replay buffer and counts against the budget.
4. ``cem.tell`` with the actors actually run (the gradient-improved ones included, as in CEM-RL,
   handed to the CEM with ``cem.replace_pending``).

Budget and episode cap: ``episode_cap = min(time limit, max(50, budget // (20·P)))`` so that a budget
yields about 20 generations (HalfCheetah's 1000-step episodes would give 6 at 50 000 steps) but no
episode is shorter than 50 steps.  A generation with ``R`` steps of budget left caps its episodes at
``min(episode_cap, R // P)``, so every member runs and the total never exceeds the budget; when
``R < P`` training stops and those last ``R`` steps stay unused (``extras["env_steps"]``).

Evaluation: the policy is the CEM mean actor μ.  μ only changes at ``tell``, so a requested count
reached during a generation is evaluated (at once) with the μ of the previous generation, and a
count reached by a generation's last step is evaluated after its ``tell``.

Reproducibility: every random draw comes from generators seeded from ``seed`` (CEM sampling, actor
initialisation, critic initialisation under :func:`torch.random.fork_rng`, smoothing noise, replay
sampling, episode reset seeds); the global RNGs are neither read nor advanced.  Same seed and
``threads`` → bit-identical curves on CPU (with ``threads > 1`` only as far as torch's CPU kernels
reduce in a fixed order, which it does in practice but does not guarantee).

``extras``: ``"hyperparameters"``, ``"population"``, ``"elite_fraction"``, ``"gradient_actors"``,
``"episode_cap"``, ``"generations"``, ``"generation_fitness"`` (per generation: ``[mean, best]``
episode return), ``"critic_steps"``, ``"actor_steps"``, ``"env_steps"``, ``"env_steps_per_second"``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any, Final

import gymnasium as gym
import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from amal_tools.bench.baselines._common import (
    EvalClock,
    NotApplicable,
    steps_per_second,
    torch_threads,
)
from amal_tools.bench.evaluation import Policy, TrainedPolicy, check_training_arguments, make_task_env
from amal_tools.bench.tasks import TaskSpec
from amal_verified.agents.cem import CEM, FlatMLPPolicy
from amal_verified.common.runtime_checks import checked

__all__ = ["train_cem_rl"]

POPULATION: Final = 8
ELITE_FRACTION: Final = 0.5
ACTOR_HIDDEN: Final = (64, 64)
INIT_STD: Final = 0.03
STD_FLOOR: Final = 0.01
CRITIC_HIDDEN: Final = 256
BATCH_SIZE: Final = 100
GAMMA: Final = 0.99
TAU: Final = 0.005
ACTOR_LR: Final = 1e-3
CRITIC_LR: Final = 1e-3
POLICY_DELAY: Final = 2
TARGET_NOISE: Final = 0.2
TARGET_NOISE_CLIP: Final = 0.5
TARGET_GENERATIONS: Final = 20
MIN_EPISODE_CAP: Final = 50

_STREAM: Final = 0xCE3A1  # domain separator of this method's seeds
# Sub-streams of the run seed.
_CEM, _ACTOR_INIT, _CRITIC_INIT, _NOISE, _REPLAY, _EPISODES = range(6)


def _sub_seed(seed: int, stream: int) -> int:
    return int(np.random.SeedSequence([_STREAM, seed, stream]).generate_state(1, np.uint64)[0] >> 1)


class _TwinQ(nn.Module):
    """TD3's two Q networks ``(obs, action) → 256 → 256 → 1``."""

    def __init__(self, obs_dim: int, action_dim: int) -> None:
        super().__init__()

        def q() -> nn.Sequential:
            return nn.Sequential(
                nn.Linear(obs_dim + action_dim, CRITIC_HIDDEN),
                nn.ReLU(),
                nn.Linear(CRITIC_HIDDEN, CRITIC_HIDDEN),
                nn.ReLU(),
                nn.Linear(CRITIC_HIDDEN, 1),
            )

        self.q1 = q()
        self.q2 = q()

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([obs, action], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


class _Replay:
    """Every transition of the run (capacity = budget, never overwritten); uniform sampling."""

    def __init__(self, capacity: int, obs_dim: int, action_dim: int, rng: np.random.Generator) -> None:
        self.obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.action = np.zeros((capacity, action_dim), dtype=np.float32)
        self.reward = np.zeros(capacity, dtype=np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.terminal = np.zeros(capacity, dtype=np.float32)
        self.size = 0
        self._rng = rng

    def add(
        self,
        obs: npt.NDArray[np.float32],
        action: npt.NDArray[np.float32],
        reward: float,
        next_obs: npt.NDArray[np.float32],
        terminal: bool,
    ) -> None:
        i = self.size
        self.obs[i], self.action[i], self.reward[i] = obs, action, reward
        self.next_obs[i], self.terminal[i] = next_obs, float(terminal)
        self.size += 1

    def sample(self, batch: int) -> tuple[torch.Tensor, ...]:
        idx = self._rng.integers(0, self.size, size=batch)
        return tuple(
            torch.from_numpy(a[idx])
            for a in (self.obs, self.action, self.reward, self.next_obs, self.terminal)
        )


class _TD3:
    """The shared critic and the TD3 iterations of one gradient actor (step 2 of the module docstring)."""

    def __init__(self, actor: FlatMLPPolicy, critic: _TwinQ, replay: _Replay, noise: torch.Generator) -> None:
        self.actor = actor
        self.critic = critic
        self.critic_target = copy.deepcopy(critic).requires_grad_(False)
        self.critic_opt = torch.optim.Adam(critic.parameters(), lr=CRITIC_LR)
        self.replay = replay
        self.noise = noise
        self.critic_steps = 0
        self.actor_steps = 0

    def _pi(self, theta: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        return self.actor.act(theta.unsqueeze(0), obs)[0]

    def improve(self, theta0: torch.Tensor, iterations: int) -> torch.Tensor:
        """``iterations`` TD3 iterations for the actor ``theta0``; returns the improved parameters."""
        theta = theta0.detach().clone().requires_grad_(True)
        theta_target = theta0.detach().clone()
        actor_opt = torch.optim.Adam([theta], lr=ACTOR_LR)
        for it in range(iterations):
            obs, action, reward, next_obs, terminal = self.replay.sample(BATCH_SIZE)
            # Critic: clipped double-Q target with target policy smoothing.
            with torch.no_grad():
                eps = torch.randn(action.shape, generator=self.noise) * TARGET_NOISE
                next_action = self._pi(theta_target, next_obs) + eps.clamp(
                    -TARGET_NOISE_CLIP, TARGET_NOISE_CLIP
                )
                q1_t, q2_t = self.critic_target(next_obs, next_action.clamp(-1.0, 1.0))
                y = reward + GAMMA * (1.0 - terminal) * torch.minimum(q1_t, q2_t)
            q1, q2 = self.critic(obs, action)
            critic_loss = nn.functional.mse_loss(q1, y) + nn.functional.mse_loss(q2, y)
            self.critic_opt.zero_grad(set_to_none=True)
            critic_loss.backward()
            self.critic_opt.step()
            self.critic_steps += 1
            if (it + 1) % POLICY_DELAY:
                continue
            # Actor (delayed): ascend Q1(s, π_θ(s)); then the soft target updates.
            self.critic.requires_grad_(False)  # the actor's gradient only, none for the critic
            q1_pi, _ = self.critic(obs, self._pi(theta, obs))
            actor_loss = -q1_pi.mean()
            actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
            actor_opt.step()
            self.critic.requires_grad_(True)
            self.actor_steps += 1
            with torch.no_grad():
                theta_target.lerp_(theta, TAU)
                for p_t, p in zip(self.critic_target.parameters(), self.critic.parameters(), strict=True):
                    p_t.lerp_(p, TAU)
        return theta.detach()


@checked
def train_cem_rl(
    task: TaskSpec,
    *,
    seed: int,
    budget: int,
    eval_steps: Sequence[int],
    eval_episodes: int,
    threads: int = 1,
) -> TrainedPolicy:
    """Train CEM-RL on ``task`` for at most ``budget`` environment steps (see the module docstring)."""
    steps_requested = check_training_arguments(seed, budget, eval_steps, eval_episodes, threads)
    env = make_task_env(task)
    try:
        space = env.action_space
        if not isinstance(space, gym.spaces.Box):
            raise NotApplicable(f"CEM-RL needs a continuous (Box) action space, {task.name} has {space}")
        clock = EvalClock(task, seed=seed, eval_steps=steps_requested, eval_episodes=eval_episodes)
        with torch_threads(threads):
            return _train(env, space, clock, seed=seed, budget=budget)
    finally:
        env.close()


def _train(
    env: gym.Env[Any, Any],
    space: gym.spaces.Box,
    clock: EvalClock,
    *,
    seed: int,
    budget: int,
) -> TrainedPolicy:
    start = time.perf_counter()
    obs_dim = int(np.prod(env.observation_space.shape or (1,)))
    action_dim = int(np.prod(space.shape))
    low = np.asarray(space.low, dtype=np.float32).ravel()
    high = np.asarray(space.high, dtype=np.float32).ravel()
    half_range = (high - low) / 2.0

    actor = FlatMLPPolicy(obs_dim, action_dim, ACTOR_HIDDEN, discrete=False)
    init = actor.init_params(1, generator=torch.Generator().manual_seed(_sub_seed(seed, _ACTOR_INIT)))[0]
    cem = CEM(
        actor.num_params,
        population=POPULATION,
        elite_fraction=ELITE_FRACTION,
        init_mean=init,
        init_std=INIT_STD,
        std_floor=STD_FLOOR,
        generator=torch.Generator().manual_seed(_sub_seed(seed, _CEM)),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_sub_seed(seed, _CRITIC_INIT))
        critic = _TwinQ(obs_dim, action_dim)
    replay = _Replay(budget, obs_dim, action_dim, np.random.default_rng(_sub_seed(seed, _REPLAY)))
    td3 = _TD3(actor, critic, replay, torch.Generator().manual_seed(_sub_seed(seed, _NOISE)))
    episode_seeds = np.random.default_rng(_sub_seed(seed, _EPISODES))

    def actor_action(theta: torch.Tensor, obs: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The actor θ's action in ``[-1, 1]`` for one observation (deterministic, no randomness)."""
        with torch.no_grad():
            a = actor.act(theta.unsqueeze(0), torch.from_numpy(np.asarray(obs, np.float32)).unsqueeze(0))
        return a[0, 0].numpy()

    def to_env(a: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """``[-1, 1]`` → the action ``Box`` (affine; clipped against float rounding at the bounds)."""
        return np.clip(low + (a + 1.0) * half_range, low, high).astype(np.float32)

    def policy_of(theta: torch.Tensor) -> Policy:
        """``act(obs)``: the env action of the actor θ."""
        return lambda obs: to_env(actor_action(theta, obs))

    time_limit = env.spec.max_episode_steps if env.spec is not None else None
    episode_cap = max(MIN_EPISODE_CAP, budget // (TARGET_GENERATIONS * POPULATION))
    if time_limit is not None:
        episode_cap = min(episode_cap, time_limit)
    gradient_actors = POPULATION // 2
    steps = 0
    previous_generation_steps = 0
    generation_fitness: list[list[float]] = []
    while budget - steps >= POPULATION:
        cap = min(episode_cap, (budget - steps) // POPULATION)
        mean_act = policy_of(cem.mean)
        candidates = cem.ask()
        # 2. TD3 steps for the first half of the population, from the shared critic.
        if replay.size >= BATCH_SIZE:
            iterations = previous_generation_steps // gradient_actors
            for i in range(gradient_actors):
                candidates[i] = td3.improve(candidates[i], iterations)
        # 3. One (capped) episode per actor; every step is a sample.
        returns: list[float] = []
        generation_steps = 0
        for m in range(POPULATION):
            obs, _ = env.reset(seed=int(episode_seeds.integers(0, 2**31)))
            obs = np.asarray(obs, dtype=np.float32)
            total = 0.0
            for t in range(cap):
                a = actor_action(candidates[m], obs)
                next_obs, reward, terminated, truncated, _ = env.step(to_env(a))
                next_obs = np.asarray(next_obs, dtype=np.float32)
                replay.add(obs, a, float(reward), next_obs, bool(terminated))
                total += float(reward)
                steps += 1
                generation_steps += 1
                obs = next_obs
                done = bool(terminated or truncated) or t == cap - 1
                if not (done and m == POPULATION - 1):
                    clock.record(steps, mean_act)  # μ is still the previous generation's
                if done:
                    break
            returns.append(total)
        # 4. CEM update on the actors actually run.
        cem.replace_pending(candidates)
        cem.tell(candidates, torch.tensor(returns, dtype=torch.float64))
        generation_fitness.append([float(np.mean(returns)), float(np.max(returns))])
        previous_generation_steps = generation_steps
        clock.record(steps, policy_of(cem.mean))
    final_act = policy_of(cem.mean)
    clock.record(budget, final_act)  # counts beyond the steps used (the unused remainder < P)
    train_seconds = max(0.0, time.perf_counter() - start - clock.seconds)
    return TrainedPolicy(
        curve=tuple(clock.points),
        act=final_act,
        train_seconds=train_seconds,
        extras={
            "hyperparameters": {
                "actor_hidden": list(ACTOR_HIDDEN),
                "init_std": INIT_STD,
                "std_floor": STD_FLOOR,
                "critic_hidden": [CRITIC_HIDDEN, CRITIC_HIDDEN],
                "batch_size": BATCH_SIZE,
                "gamma": GAMMA,
                "tau": TAU,
                "actor_lr": ACTOR_LR,
                "critic_lr": CRITIC_LR,
                "policy_delay": POLICY_DELAY,
                "target_policy_noise": TARGET_NOISE,
                "target_noise_clip": TARGET_NOISE_CLIP,
            },
            "population": POPULATION,
            "elite_fraction": ELITE_FRACTION,
            "gradient_actors": gradient_actors,
            "episode_cap": episode_cap,
            "generations": cem.generation,
            "generation_fitness": generation_fitness,
            "critic_steps": td3.critic_steps,
            "actor_steps": td3.actor_steps,
            "env_steps": steps,
            "env_steps_per_second": steps_per_second(steps, train_seconds),
        },
    )
