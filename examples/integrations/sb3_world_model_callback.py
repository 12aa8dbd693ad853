"""Stable-Baselines3 SAC beside a gated world model that learns from real transitions only.

SAC learns Pendulum-v1 from its replay buffer. :class:`amal_verified.integrations.sb3.GatedWorldModelCallback`
adds to that buffer the transitions of auxiliary environments (Pendulum with gravity scaled by
``--aux-gravity-scale``, driven by the agent's own policy), so the *policy* learns from synthetic
physics, while the *world model* learns from the real environment's transitions only, through an
:class:`amal_verified.GatedOptimizer`.

The gate refuses tagged auxiliary data; SB3's replay buffer holds untagged NumPy arrays, so a world
model trained from it is a leak the gate cannot see. The differential audit sees it:
:func:`replay_world_model` replays a recorded run through the callback's own update path and passes;
:func:`replay_leaky_world_model` does the same for :class:`LeakyWorldModelCallback`, which samples the
world model's batches from SAC's mixed buffer, and fails::

    python examples/integrations/sb3_world_model_callback.py --total-timesteps 3000
    python examples/integrations/sb3_world_model_callback.py --total-timesteps 3000 --n-envs 2
    python examples/integrations/sb3_world_model_callback.py --total-timesteps 400 --audit-examples 10
    python examples/integrations/sb3_world_model_callback.py --total-timesteps 400 --audit-examples 10 --leak
    amal audit examples/integrations/sb3_world_model_callback.py:replay_world_model
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import SAC
from stable_baselines3.common.env_util import make_vec_env
from torch import nn

from amal_verified.integrations import sb3 as av_sb3
from amal_verified.integrations.sb3 import GatedWorldModelCallback

ENV_ID = "Pendulum-v1"
GRAVITY = 10.0


def make_aux_env(gravity_scale: float) -> gym.Env[Any, Any]:
    """The auxiliary source: Pendulum-v1 with gravity ``10 × gravity_scale`` (a synthetic simulator)."""
    return gym.make(ENV_ID, g=GRAVITY * gravity_scale)


class LeakyWorldModelCallback(GatedWorldModelCallback):
    """Deliberately wrong: the world model's batches come from the agent's replay buffer, where SB3
    mixes the real transitions with the auxiliary ones (drawn with NumPy's global generator, as SB3
    does). The buffer holds untagged arrays, so the gate lets it through; the audit fails it."""

    def world_model_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        data = self.agent_buffer.sample(self.config["batch_size"])
        actions = torch.as_tensor(self.action_low) + (data.actions + 1) / 2 * torch.as_tensor(
            self.action_high - self.action_low
        )
        return data.observations, actions.float(), data.next_observations


def replay_world_model(primary: dict[str, Any], aux: Sequence[dict[str, Any]]) -> nn.Module:
    """Audit target: :func:`amal_verified.integrations.sb3.replay_world_model` with
    :class:`GatedWorldModelCallback`; the world model must not depend on ``aux``."""
    return av_sb3.replay_world_model(primary, aux)


def replay_leaky_world_model(primary: dict[str, Any], aux: Sequence[dict[str, Any]]) -> nn.Module:
    """:func:`replay_world_model` for :class:`LeakyWorldModelCallback`: fails the audit."""
    return av_sb3.replay_world_model(primary, aux, callback_class=LeakyWorldModelCallback)


def train(args: argparse.Namespace, *, record: bool = False) -> tuple[SAC, GatedWorldModelCallback]:
    """Train SAC with the callback (``LeakyWorldModelCallback`` with ``--leak``) as ``args`` say; the
    callback records its streams if ``record`` or ``--audit-examples``."""
    torch.manual_seed(args.seed)
    aux_envs = [make_aux_env(args.aux_gravity_scale) for _ in range(args.aux_envs)]
    cls = LeakyWorldModelCallback if args.leak else GatedWorldModelCallback
    callback = cls(
        aux_envs,
        train_freq=args.wm_train_freq,
        gradient_steps=args.wm_gradient_steps,
        batch_size=args.wm_batch_size,
        seed=args.seed,
        record=record or args.audit_examples > 0,
        verbose=args.verbose,
    )
    env = make_vec_env(ENV_ID, n_envs=args.n_envs, seed=args.seed)
    model = SAC(
        "MlpPolicy",
        env,
        buffer_size=args.buffer_size,
        learning_starts=args.learning_starts,
        seed=args.seed,
    )
    model.learn(total_timesteps=args.total_timesteps, callback=callback)
    return model, callback


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; exits with a usage error (status 2) for values the run cannot use."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--total-timesteps", type=int, default=5000, help="real environment steps")
    parser.add_argument("--learning-starts", type=int, default=100, help="SAC's random-action warm-up steps")
    parser.add_argument("--buffer-size", type=int, default=100_000, help="SAC's replay buffer size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-envs", type=int, default=1, help="real environments (vectorised)")
    parser.add_argument("--aux-envs", type=int, default=1, help="auxiliary environments feeding SAC's buffer")
    parser.add_argument("--aux-gravity-scale", type=float, default=1.5, help="gravity factor of the aux task")
    parser.add_argument(
        "--wm-train-freq", type=int, default=100, help="real steps between world-model rounds"
    )
    parser.add_argument("--wm-gradient-steps", type=int, default=20, help="world-model updates per round")
    parser.add_argument("--wm-batch-size", type=int, default=64, help="world-model batch size")
    parser.add_argument("--leak", action="store_true", help="train the world model from SAC's mixed buffer")
    parser.add_argument(
        "--audit-examples", type=int, default=0, help="after training, audit the replay of this run (0: no)"
    )
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1))
    args = parser.parse_args(argv)
    for name in (
        "total_timesteps",
        "n_envs",
        "buffer_size",
        "wm_train_freq",
        "wm_gradient_steps",
        "wm_batch_size",
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in ("seed", "learning_starts", "aux_envs", "audit_examples"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(args, name)}")
    if not args.aux_gravity_scale > 0 or not math.isfinite(args.aux_gravity_scale):
        parser.error(f"--aux-gravity-scale must be a positive number, got {args.aux_gravity_scale}")
    if args.wm_batch_size > args.buffer_size:
        parser.error("--wm-batch-size must not exceed --buffer-size")
    return args


EXAMPLE_ARGV = ("--total-timesteps", "300", "--learning-starts", "100", "--wm-train-freq", "50",
                "--wm-gradient-steps", "5", "--buffer-size", "1000", "--verbose", "0")  # fmt: skip


def amal_example_inputs() -> tuple[dict[str, Any], list[dict[str, np.ndarray]]]:
    """``(primary, aux)`` recorded from a 300-step run with :data:`EXAMPLE_ARGV` (one auxiliary env)."""
    _, callback = train(parse_args(EXAMPLE_ARGV), record=True)
    return callback.recording()


def main(argv: Sequence[str] | None = None) -> int:
    """Train; with ``--audit-examples N`` audit this run's replay. Returns 0, or 1 if the audit failed."""
    args = parse_args(argv)
    model, callback = train(args)
    returns = [info["r"] for info in model.ep_info_buffer]
    if returns:
        print(f"SAC: mean return of the last {len(returns)} episodes {np.mean(returns):.1f}")
    print(f"world model: loss {callback.world_model_loss:.5f} after {callback.real_steps} real steps")
    if not args.audit_examples:
        return 0
    from amal_verified.audit import check_noninterference

    primary, aux = callback.recording()
    target = replay_leaky_world_model if args.leak else replay_world_model
    result = check_noninterference(target, primary, aux, max_examples=args.audit_examples)
    print(result)
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
