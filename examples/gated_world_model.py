"""A world model trained beside auxiliary exploration, gated in four lines (marked `# amal`).

CleanRL-style single file. A primary agent and one auxiliary agent act in CartPole; the auxiliary
agent's environment has changed physics, so its data is synthetic. A value head learns from both
streams; the world model must learn from the primary stream only. Remove the four `# amal` lines and
this is ordinary PyTorch; with them, any path by which auxiliary data reaches the world model's
parameters raises `IsolationViolation` before the parameters change.

    python examples/gated_world_model.py --steps 2000
    python examples/gated_world_model.py --steps 2000 --leak   # mixes aux data in: refused
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

import amal_verified as av  # amal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--leak", action="store_true", help="train the world model on aux data too")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    real, synthetic = gym.make("CartPole-v1"), gym.make("CartPole-v1")
    synthetic.unwrapped.gravity *= 1.5
    obs_real, _ = real.reset(seed=args.seed)
    obs_syn, _ = synthetic.reset(seed=args.seed + 1)

    world_model = torch.nn.Sequential(torch.nn.Linear(5, 64), torch.nn.Tanh(), torch.nn.Linear(64, 4))
    value = torch.nn.Sequential(torch.nn.Linear(4, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))
    wm_opt = torch.optim.Adam(world_model.parameters(), lr=1e-3)
    wm_opt = av.GatedOptimizer(wm_opt, names=world_model)  # amal
    value_opt = torch.optim.Adam(value.parameters(), lr=1e-3)

    primary_rows: list[np.ndarray] = []
    aux_rows: list[np.ndarray] = []
    for step in range(1, args.steps + 1):
        for env, obs, rows in ((real, obs_real, primary_rows), (synthetic, obs_syn, aux_rows)):
            action = int(rng.integers(2))
            next_obs, reward, terminated, truncated, _ = env.step(action)
            rows.append(np.concatenate([obs, [action], next_obs, [reward, terminated]]).astype(np.float32))
            next_obs = env.reset()[0] if terminated or truncated else next_obs
            if env is real:
                obs_real = next_obs
            else:
                obs_syn = next_obs

        if step % 50 or len(primary_rows) < 64:
            continue
        p = torch.from_numpy(np.stack(primary_rows[-64:]))
        a = torch.from_numpy(np.stack(aux_rows[-64:]))
        p = av.primary(p, source="real-env")  # amal
        a = av.aux(a, source="aux-0")  # amal

        batch = torch.cat([p, a]) if args.leak else p
        wm_loss = F.mse_loss(world_model(batch[:, :5]), batch[:, 5:9])
        both = torch.cat([p, a])  # the value head may learn from every stream
        value_loss = F.mse_loss(value(both[:, :4]).squeeze(-1), both[:, 9])
        wm_opt.zero_grad()
        value_opt.zero_grad()
        (wm_loss + value_loss).backward()
        wm_opt.step()
        value_opt.step()
        if step % 500 == 0:
            with av.declassify(reason="log the losses"):  # the value loss depends on aux data
                print(
                    f"step {step}: world-model loss {wm_loss.item():.4f}, value loss {value_loss.item():.4f}"
                )


if __name__ == "__main__":
    main()
