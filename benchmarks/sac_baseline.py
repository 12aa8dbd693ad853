"""Plain model-free SAC on CartPole-v1 and Pendulum-v1: the baseline that fixes SACAgent's defaults.

Usage::

    .venv/bin/python benchmarks/sac_baseline.py --env CartPole-v1 [--steps 20000] [--seed 0]
    .venv/bin/python benchmarks/sac_baseline.py --env Pendulum-v1

Loop: ``--warmup`` uniformly random actions, then one :meth:`SACAgent.update` (batch 256) per environment
step, acting stochastically with the agent's policy. The replay buffer is a plain numpy ring buffer in this
script; it stores ``terminated`` only, so time-limit truncation bootstraps. Every ``--eval-every`` steps and
at the end the deterministic policy is evaluated on 10 episodes of a separate environment. Seeds are
explicit: environment resets (``seed``, ``seed + 1000`` for evaluation), action-space sampling, the buffer's
sampling generator, the agent's generator and the acting generator. One thread (``torch.set_num_threads(1)``).

Target: within 20,000 environment steps, CartPole-v1 mean evaluation return ≥ 475 and Pendulum-v1 ≥ −200.

Measured results
----------------
One run each (20,000 steps, warm-up 1,000, batch 256, evaluation every 2,500 steps), 2-core machine shared
with another engineer's job (load ≈ 2), torch 2.13 CPU, one thread. ``ms/update`` is the mean wall time of
one :meth:`SACAgent.update` (batch 256, 256-256 networks) inside the loop; steps/s and wall time include
the updates, acting and the 8 evaluations (80 episodes).

Each entry: the command's options, the seed, the evaluation returns at 2.5k, 5k, ..., 20k steps (final in
bold), steps/s, wall time, ms per update.

- ``--env Pendulum-v1`` (all defaults), seed 0: −1300 −187 −173 −170 −171 −170 −168 **−168**;
  84 steps/s, 238 s, 11.9 ms/update.
- ``--env CartPole-v1`` (all defaults, τ = 0.005), seed 0: 257 204 296 295 211 184 170 **171**;
  82 steps/s, 244 s, 12.2 ms/update.
- ``--env CartPole-v1 --lr 1e-3``, seed 0: 339 144 160 171 184, stopped at 12.5k steps.
- ``--env CartPole-v1 --tau 0.02``, seed 0: 299 318 284 255 317 500 500 **500**;
  87 steps/s, 230 s, 11.4 ms/update.
- ``--env CartPole-v1 --tau 0.02 --seed 1``: 254 271 242 219 226 500 500 **500**;
  85 steps/s, 237 s, 11.7 ms/update.
- ``--env CartPole-v1 --tau 0.02 --entropy-scale 0.98``, seed 0: 201 227 300 362 411 373 403 **398**;
  94 steps/s, 214 s, 10.6 ms/update.
- ``--env Pendulum-v1 --tau 0.02``, seed 0: −905 −182 −172 −169 −172 −172 −172 **−172**;
  67 steps/s, 300 s, 14.8 ms/update (machine more loaded during this run).
- ``--env CartPole-v1 --tau 0.02 --seed 2``: 189 223 249 296 500 500 500 **307**;
  80 steps/s, 251 s, 12.4 ms/update (at 20k: entropy 0.09, mean Q 117-131, above the ≤ 114 a soft
  return can reach, i.e. overestimation, and the policy fell from 500).

Findings:

- **Pendulum-v1** passes with the defaults (−168 after 20k steps; below −200 from 5k steps on).
- **CartPole-v1 fails with τ = 0.005** (171): the limit is how fast the critic's value propagates, not
  the temperature. With Polyak τ the target lags ≈ 1/τ updates, so 19k updates make ≈ 19,000·τ ≈ 95
  effective Bellman backups; the mean Q was still rising (54 at 20k steps against ≈ 100 for a policy
  that survives), and states more than ≈ 100 steps from the cart drifting off the track all look alike.
  A larger learning rate does not help (``--lr 1e-3``: 184 at 12.5k steps, stopped). **τ = 0.02** (4× more
  backups) converges Q by 7.5k steps and reaches 500 by 12.5-15k steps with all three seeds tried, but
  is not stable: seeds 0 and 1 end at 500, seed 2 falls back to 307 at 20k steps. So the target
  (≥ 475 at 20k) is met by 2 of 3 seeds. Not tried for lack of time: a lower critic/actor lr late in
  training, a larger batch, τ = 0.01, evaluation of the best checkpoint.
- The agent's ``tau`` default stays 0.005 (the specified signature): **pass ``tau=0.02`` for discrete
  tasks like CartPole.** Pendulum-v1 also passes with ``tau=0.02`` (−172), so 0.02 would be a default
  that passes both targets (measured with one or two seeds only).
- **Discrete target entropy** ``0.3 · log n`` (default) against the customary ``0.98 · log n``: with
  0.98 the policy's entropy never reaches the target (0.55 against 0.68 nats), so α doubles every 2.5k
  steps (1.7 → 259), the entropy bonus inflates Q (mean Q 5,046 against a true return ≤ 100) and the
  critic loss explodes (3,878); evaluation 398. With 0.3 the entropy sits at the target (0.18-0.23
  nats), α stays between 0.19 and 0.77 and the mean Q stays at the scale of the return (80-107). The
  scale 0.3 was chosen a priori (≈ 95 % on the preferred of two actions) and not swept against other
  values for lack of time; only 0.3 and 0.98 were measured.
- The hypothesis about value propagation above is supported by the τ runs only (no further ablation).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from amal_verified.agents.sac import DEFAULT_DISCRETE_ENTROPY_SCALE, SACAgent


class ReplayBuffer:
    """A fixed-capacity ring buffer of transitions, sampled uniformly with its own numpy generator."""

    def __init__(self, capacity: int, obs_dim: int, action_shape: tuple[int, ...], discrete: bool, seed: int):
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.action = np.zeros((capacity, *action_shape), np.int64 if discrete else np.float32)
        self.reward = np.zeros(capacity, np.float32)
        self.terminated = np.zeros(capacity, np.bool_)
        self.capacity, self.size, self.pos = capacity, 0, 0
        self.rng = np.random.default_rng(seed)

    def add(self, obs: Any, action: Any, reward: float, next_obs: Any, terminated: bool) -> None:
        i = self.pos
        self.obs[i], self.action[i], self.reward[i] = obs, action, reward
        self.next_obs[i], self.terminated[i] = next_obs, terminated
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch: int) -> tuple[torch.Tensor, ...]:
        idx = self.rng.integers(0, self.size, batch)
        return tuple(
            torch.from_numpy(a[idx])
            for a in (self.obs, self.action, self.reward, self.next_obs, self.terminated)
        )


def evaluate(agent: SACAgent, env_id: str, episodes: int, seed: int) -> float:
    env = gym.make(env_id)
    returns = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        total, done = 0.0, False
        while not done:
            a = agent.act(torch.as_tensor(obs, dtype=torch.float32)[None], deterministic=True)[0]
            obs, r, terminated, truncated, _ = env.step(a.item() if agent.discrete else a.numpy())
            total += float(r)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return float(np.mean(returns))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="CartPole-v1")
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup", type=int, default=1_000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--eval-every", type=int, default=2_500)
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--alpha-lr", type=float, default=None)
    p.add_argument("--tau", type=float, default=None, help="default: SACAgent's")
    p.add_argument("--gamma", type=float, default=None, help="default: SACAgent's")
    p.add_argument("--init-alpha", type=float, default=1.0)
    p.add_argument(
        "--entropy-scale",
        type=float,
        default=None,
        help=f"discrete target entropy = scale·log n (default {DEFAULT_DISCRETE_ENTROPY_SCALE})",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    env = gym.make(args.env)
    space = env.action_space
    assert isinstance(space, gym.spaces.Discrete | gym.spaces.Box)
    assert env.observation_space.shape is not None
    obs_dim = int(env.observation_space.shape[0])
    discrete = isinstance(space, gym.spaces.Discrete)
    target_entropy = None
    if isinstance(space, gym.spaces.Discrete) and args.entropy_scale is not None:
        target_entropy = args.entropy_scale * math.log(int(space.n))
    agent = SACAgent(
        obs_dim,
        space,
        generator=torch.Generator().manual_seed(args.seed),
        lr=args.lr,
        alpha_lr=args.alpha_lr,
        init_alpha=args.init_alpha,
        target_entropy=target_entropy,
        **{k: v for k, v in (("tau", args.tau), ("gamma", args.gamma)) if v is not None},
    )
    act_gen = torch.Generator().manual_seed(args.seed + 1)
    space.seed(args.seed + 2)
    action_shape = () if discrete else (int(space.shape[0]),)  # type: ignore[index]
    buffer = ReplayBuffer(args.steps, obs_dim, action_shape, discrete, args.seed + 3)

    obs, _ = env.reset(seed=args.seed)
    ep_return, ep_returns, evals = 0.0, [], []
    metrics: dict[str, float] = {}
    t0 = time.perf_counter()
    update_time = 0.0
    for step in range(1, args.steps + 1):
        if step <= args.warmup:
            action = space.sample()
        else:
            a = agent.act(torch.as_tensor(obs, dtype=torch.float32)[None], generator=act_gen)[0]
            action = a.item() if discrete else a.numpy()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.add(obs, action, float(reward), next_obs, bool(terminated))
        ep_return += float(reward)
        obs = next_obs
        if terminated or truncated:
            ep_returns.append(ep_return)
            ep_return = 0.0
            obs, _ = env.reset()
        if step > args.warmup:
            u0 = time.perf_counter()
            m = agent.update(*buffer.sample(args.batch))
            update_time += time.perf_counter() - u0
            metrics = {k: round(v.item(), 4) for k, v in m.items()}
        if step % args.eval_every == 0 or step == args.steps:
            score = evaluate(agent, args.env, args.eval_episodes, args.seed + 1000)
            evals.append((step, score))
            elapsed = time.perf_counter() - t0
            print(
                json.dumps(
                    {
                        "step": step,
                        "eval": round(score, 1),
                        "train_last10": round(float(np.mean(ep_returns[-10:])), 1) if ep_returns else None,
                        "elapsed_s": round(elapsed, 1),
                        **metrics,
                    }
                ),
                flush=True,
            )
    wall = time.perf_counter() - t0
    updates = max(args.steps - args.warmup, 1)
    print(
        json.dumps(
            {
                "env": args.env,
                "final_eval": round(evals[-1][1], 1),
                "best_eval": round(max(s for _, s in evals), 1),
                "wall_s": round(wall, 1),
                "steps_per_s": round(args.steps / wall, 1),
                "ms_per_update": round(1e3 * update_time / updates, 2),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
