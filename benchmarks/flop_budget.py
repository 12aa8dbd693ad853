"""Arithmetic per primary step: the trainer at Table 1's sizes against SB3 SAC, and what it bounds.

    .venv/bin/python benchmarks/flop_budget.py                    # about a minute
    .venv/bin/python benchmarks/flop_budget.py --env HalfCheetah-v5

What is counted
---------------
Floating-point operations (``torch.utils.flop_counter.FlopCounterMode``: matrix products, the terms that
dominate both sides) of one of each unit of work, on plain tensors, one thread:

- one world-model update at the trainer's configuration (``TrainConfig`` defaults: Table 1's 20 full
  members, batch 256; the model and loss of ``WorldModelLearner``, forward, backward and Adam);
- one SAC update of the trainer's ``SACAgent`` (policy 256-256, batch 256);
- one SB3 SAC gradient step (``SAC("MlpPolicy")`` defaults: 256-256, batch 256).

Per primary step the trainer runs ``policy_updates_per_step`` SAC updates and
``wm_updates_per_round / wm_train_every`` world-model updates (the auxiliary agents' acting, the
information gain and CEM are left out: measured at under 3 ms per step together, they only lower the
bound); SB3 SAC runs one gradient step.  The bound: if both sides turned FLOPs into time at the same rate,
the trainer's steps/s could be at most ``SB3 FLOPs per step / trainer FLOPs per step`` of SB3's on one core,
and with the world-model learner alone on a second core at most ``SB3 per step / max(trainer without
the world model, world model)`` (the two processes run in parallel; the slower one sets the pace).
Each unit's achieved GFLOP/s (FLOPs over the thread's CPU time, median of ``--repeats``) shows whether
the equal-rate assumption holds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium
import torch
from amal_tools.bench.runner import code_commit
from torch.utils.flop_counter import FlopCounterMode

from amal_verified.agents.sac import SACAgent
from amal_verified.run.config import TrainConfig
from amal_verified.world_model.ensemble import (
    DEFAULT_DECODER,
    DEFAULT_ENCODER,
    DEFAULT_GRU_HIDDEN,
    EnsembleWorldModel,
    bootstrap_indices,
    member_generators,
)
from amal_verified.world_model.learner import BOUND_PENALTY


def _measure(step: Callable[[], object], repeats: int) -> tuple[int, float]:
    """(FLOPs of one call, median thread CPU seconds per call)."""
    step()  # warm-up
    with FlopCounterMode(display=False) as counter:
        step()
    flops = int(counter.get_total_flops())
    times = []
    for _ in range(repeats):
        started = time.thread_time()
        step()
        times.append(time.thread_time() - started)
    return flops, statistics.median(times)


def world_model_update(obs_dim: int, action_dim: int, config: TrainConfig) -> Callable[[], object]:
    """One update of the trainer's world model: the learner's model, loss and Adam, on plain tensors."""
    generator = torch.Generator().manual_seed(0)
    model = EnsembleWorldModel(
        obs_dim,
        action_dim,
        members=config.ensemble_size,
        encoder_sizes=DEFAULT_ENCODER,
        gru_hidden=DEFAULT_GRU_HIDDEN,
        decoder_sizes=DEFAULT_DECODER,
        generator=generator,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=config.wm_lr)
    members = member_generators(1, config.ensemble_size)
    b = config.batch_size
    obs, action = torch.randn(b, 1, obs_dim), torch.randn(b, 1, action_dim)
    next_obs, reward = torch.randn(b, 1, obs_dim), torch.randn(b, 1)

    def step() -> object:
        idx = bootstrap_indices(b, members)
        out = model(obs[idx], action[idx])
        loss = model.nll(out, next_obs[idx], reward[idx]).sum()
        loss = loss + BOUND_PENALTY * model.log_std_bound_penalty().sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return None

    return step


def trainer_sac_update(env: gymnasium.Env[Any, Any], config: TrainConfig) -> Callable[[], object]:
    obs_dim = int(env.observation_space.shape[0])  # type: ignore[index]
    agent = SACAgent(
        obs_dim,
        env.action_space,  # type: ignore[arg-type]
        generator=torch.Generator().manual_seed(0),
        hidden=(config.policy_hidden, config.policy_hidden),
    )
    b = config.batch_size
    action_dim = int(env.action_space.shape[0])  # type: ignore[index]
    batch = (
        torch.randn(b, obs_dim),
        torch.rand(b, action_dim) * 2 - 1,
        torch.randn(b),
        torch.randn(b, obs_dim),
        torch.zeros(b, dtype=torch.bool),
    )
    return lambda: agent.update(*batch)


def sb3_sac_step(env_id: str) -> Callable[[], object]:
    from stable_baselines3 import SAC

    model = SAC("MlpPolicy", env_id, learning_starts=0, seed=0, verbose=0, device="cpu")
    model.learn(300)  # fills the buffer past one batch
    return lambda: model.train(gradient_steps=1, batch_size=model.batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = TrainConfig(env_id=args.env)
    env = gymnasium.make(args.env)
    obs_dim = int(env.observation_space.shape[0])  # type: ignore[index]
    action_dim = int(env.action_space.shape[0])  # type: ignore[index]

    units = {
        "world-model update": _measure(world_model_update(obs_dim, action_dim, config), args.repeats),
        "trainer SAC update": _measure(trainer_sac_update(env, config), args.repeats),
        "SB3 SAC gradient step": _measure(sb3_sac_step(args.env), args.repeats),
    }
    wm_per_step = config.wm_updates_per_round / config.wm_train_every
    wm_flops = units["world-model update"][0] * wm_per_step
    sac_flops = units["trainer SAC update"][0] * config.policy_updates_per_step
    sb3_flops = units["SB3 SAC gradient step"][0]
    one_core = sb3_flops / (wm_flops + sac_flops)
    two_cores = sb3_flops / max(wm_flops, sac_flops)
    print(
        f"commit {code_commit()}, {args.env}, Table 1 sizes ({config.ensemble_size} members, batch "
        f"{config.batch_size}, policy {config.policy_hidden}-{config.policy_hidden}), one thread"
    )
    print(f"{'unit':24s} {'GFLOP':>9s} {'CPU ms':>8s} {'GFLOP/s':>8s}")
    for name, (flops, seconds) in units.items():
        print(f"{name:24s} {flops / 1e9:9.3f} {seconds * 1e3:8.1f} {flops / 1e9 / seconds:8.1f}")
    print(
        f"per primary step: world model {wm_flops / 1e9:.3f} GFLOP ({wm_per_step:g} updates), SAC "
        f"{sac_flops / 1e9:.3f}, SB3 SAC {sb3_flops / 1e9:.3f}"
    )
    print(
        f"bound at equal FLOP rates: one core {one_core:.2f}x SB3 SAC's steps/s; world model on a "
        f"second core {two_cores:.2f}x"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "commit": code_commit(),
                    "env": args.env,
                    "units": {k: {"flops": f, "cpu_s": s} for k, (f, s) in units.items()},
                    "bound_one_core": one_core,
                    "bound_two_cores": two_cores,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
