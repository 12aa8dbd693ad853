"""A Stable-Baselines3 callback that trains a gated world model beside SAC, which learns from auxiliary data.

SAC learns Pendulum-v1 from its replay buffer. :class:`GatedWorldModelCallback` adds to that buffer
the transitions of auxiliary environments (Pendulum with gravity scaled by ``aux_gravity_scale``,
driven by the agent's own policy), so the *policy* learns from synthetic physics, while the *world
model* (an MLP ``(obs, action) ↦ next_obs − obs``) learns from the real environment's transitions
only: the callback copies them from ``self.locals`` into an :class:`amal_verified.PrimaryBuffer`
(its own generator; batches come back tagged ``PrimaryData``) and steps the world model through an
:class:`amal_verified.GatedOptimizer`.

The gate refuses tagged auxiliary data; SB3's replay buffer holds untagged NumPy arrays, so a world
model trained from it is a leak the gate cannot see. The differential audit sees it:
:func:`replay_world_model` replays a recorded run through the callback's own update path
(:meth:`GatedWorldModelCallback.step`) and passes; :func:`replay_leaky_world_model` does the same for
:class:`LeakyWorldModelCallback`, which samples the world model's batches from SAC's mixed buffer,
and fails::

    python examples/integrations/sb3_world_model_callback.py --total-timesteps 3000
    python examples/integrations/sb3_world_model_callback.py --total-timesteps 400 --audit-examples 10
    python examples/integrations/sb3_world_model_callback.py --total-timesteps 400 --audit-examples 10 --leak
    amal audit examples/integrations/sb3_world_model_callback.py:replay_world_model
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from stable_baselines3 import SAC
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from torch import nn

import amal_verified as av

ENV_ID = "Pendulum-v1"
GRAVITY = 10.0


@dataclass(frozen=True)
class Transitions:
    """``n`` transitions as NumPy arrays: ``obs``, ``next_obs`` ``(n, d)``, ``actions`` ``(n, a)`` in the
    environment's units, ``rewards`` ``(n,)``, ``terminated`` and ``truncated`` ``(n,)`` bool."""

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray

    def rows(self, start: int, stop: int) -> Transitions:
        return Transitions(*(np.asarray(getattr(self, f))[start:stop] for f in _FIELDS))


_FIELDS = ("obs", "actions", "rewards", "next_obs", "terminated", "truncated")


class WorldModel(nn.Module):
    """``next_obs − obs ≈ f(obs, action)``: a two-layer tanh MLP initialised from ``generator`` alone."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: int, generator: torch.Generator) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_dim + action_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh()
        )
        self.net.append(nn.Linear(hidden, obs_dim))
        with torch.no_grad():
            for layer in self.net:
                if isinstance(layer, nn.Linear):
                    bound = 1 / math.sqrt(layer.in_features)
                    layer.weight.uniform_(-bound, bound, generator=generator)
                    layer.bias.uniform_(-bound, bound, generator=generator)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(torch.cat([obs, action], dim=-1))
        return out


def make_aux_env(gravity_scale: float) -> gym.Env[Any, Any]:
    """The auxiliary source: Pendulum-v1 with gravity ``10 × gravity_scale`` (a synthetic simulator)."""
    return gym.make(ENV_ID, g=GRAVITY * gravity_scale)


class GatedWorldModelCallback(BaseCallback):
    """Trains a world model on the real transitions of an off-policy SB3 agent (``n_envs`` real
    environments, Box observations and actions) and feeds auxiliary transitions to the agent.

    Every environment step, :meth:`_on_step` reads the real transitions from ``self.locals``
    (``actions``, ``new_obs``, ``rewards``, ``dones``, ``infos``; the observation they were taken in is
    the agent's ``_last_obs``, and where an episode ended the successor is
    ``infos[i]["terminal_observation"]``), steps each of ``aux_envs`` once with the agent's stochastic
    policy, and passes both to :meth:`step`. The world model is updated ``gradient_steps`` times every
    ``train_freq`` real steps, once ``batch_size`` real transitions are stored. Its initial
    parameters and its batches come from generators seeded with ``seed`` alone.

    ``record=True`` keeps every real and auxiliary transition; :meth:`recording` returns them in the
    form the replay functions (the audit targets) take.
    """

    def __init__(
        self,
        aux_envs: Sequence[gym.Env[Any, Any]] = (),
        *,
        train_freq: int = 100,
        gradient_steps: int = 20,
        batch_size: int = 64,
        learning_rate: float = 1e-3,
        hidden: int = 64,
        buffer_size: int = 100_000,
        seed: int = 0,
        record: bool = False,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        for name, value in (("train_freq", train_freq), ("gradient_steps", gradient_steps)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if seed < 0:
            raise ValueError(f"seed must be 0 or more, got {seed}")
        if batch_size < 1 or buffer_size < batch_size:
            raise ValueError(f"need 1 <= batch_size <= buffer_size, got {batch_size} and {buffer_size}")
        self.aux_envs = list(aux_envs)
        self.config = {
            "train_freq": train_freq,
            "gradient_steps": gradient_steps,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "hidden": hidden,
            "buffer_size": buffer_size,
            "seed": seed,
        }
        self.record = record
        self.recorded_primary: list[Transitions] = []
        self.recorded_aux: list[list[Transitions]] = [[] for _ in self.aux_envs]
        self.world_model_loss = float("nan")
        self.real_steps = 0
        self.aux_added = 0

    def build(
        self, observation_space: gym.Space[Any], action_space: gym.Space[Any], agent_buffer: ReplayBuffer
    ) -> None:
        """Create the world model, its gated optimizer and the primary buffer; ``agent_buffer`` is the
        agent's replay buffer, which receives the auxiliary transitions."""
        if not isinstance(observation_space, gym.spaces.Box) or not isinstance(action_space, gym.spaces.Box):
            raise TypeError("GatedWorldModelCallback needs Box observation and action spaces")
        cfg = self.config
        obs_dim, action_dim = int(np.prod(observation_space.shape)), int(np.prod(action_space.shape))
        self.action_low, self.action_high = action_space.low, action_space.high
        self.world_model = WorldModel(
            obs_dim, action_dim, cfg["hidden"], torch.Generator().manual_seed(cfg["seed"])
        )
        adam = torch.optim.Adam(self.world_model.parameters(), lr=cfg["learning_rate"])
        self.wm_optimizer = av.GatedOptimizer(adam, names=self.world_model)
        self.primary_buffer = av.PrimaryBuffer(
            cfg["buffer_size"], obs_shape=(obs_dim,), action_shape=(action_dim,), seed=cfg["seed"] + 1
        )
        self.agent_buffer = agent_buffer

    def _init_callback(self) -> None:
        replay_buffer = getattr(self.model, "replay_buffer", None)
        if not isinstance(replay_buffer, ReplayBuffer):
            raise TypeError(
                f"{type(self).__name__} needs an off-policy agent with a ReplayBuffer (SAC, TD3, DDPG)"
            )
        if hasattr(self, "world_model"):  # a further learn() call continues training the same model
            self.agent_buffer = replay_buffer
        else:
            self.build(self.model.observation_space, self.model.action_space, replay_buffer)

    def _on_training_start(self) -> None:
        self._aux_obs = [
            env.reset(seed=self.config["seed"] + 10_000 + i)[0] for i, env in enumerate(self.aux_envs)
        ]

    def _on_step(self) -> bool:
        dones, infos = self.locals["dones"], self.locals["infos"]
        next_obs = np.array(self.locals["new_obs"], copy=True)
        for i in np.flatnonzero(dones):
            if infos[i].get("terminal_observation") is not None:
                next_obs[i] = infos[i]["terminal_observation"]
        truncated = np.array([bool(info.get("TimeLimit.truncated", False)) for info in infos])
        primary = Transitions(
            obs=np.array(self.model._last_obs, copy=True),  # the observation the actions were taken in
            actions=np.array(self.locals["actions"], copy=True),
            rewards=np.array(self.locals["rewards"], copy=True),
            next_obs=next_obs,
            terminated=np.asarray(dones, dtype=bool) & ~truncated,
            truncated=truncated,
        )
        aux = [self._aux_step(i) for i in range(len(self.aux_envs))]
        self.step(primary, aux)
        if not math.isnan(self.world_model_loss):
            self.logger.record("world_model/loss", self.world_model_loss)
        return True

    def _aux_step(self, i: int) -> Transitions:
        obs = self._aux_obs[i]
        action, _ = self.model.predict(obs, deterministic=False)
        next_obs, reward, terminated, truncated, _ = self.aux_envs[i].step(action)
        self._aux_obs[i] = self.aux_envs[i].reset()[0] if terminated or truncated else next_obs
        return Transitions(
            obs=np.asarray(obs, dtype=np.float32)[None],
            actions=np.asarray(action, dtype=np.float32)[None],
            rewards=np.asarray([reward], dtype=np.float32),
            next_obs=np.asarray(next_obs, dtype=np.float32)[None],
            terminated=np.asarray([terminated]),
            truncated=np.asarray([truncated]),
        )

    def step(self, primary: Transitions, aux: Sequence[Transitions]) -> None:
        """The update path: the auxiliary transitions go to the agent's buffer (its actions scaled to
        ``[-1, 1]`` as SB3 stores them), the real ones to the primary buffer; every ``train_freq`` real
        steps the world model trains on primary batches. SB3 adds the real transitions to the agent's
        buffer itself, after this callback."""
        if self.record:
            self.recorded_primary.append(primary)
            for i, a in enumerate(aux):
                self.recorded_aux[i].append(a)
        for a in aux:
            for j in range(len(a.obs)):
                timeout = {"TimeLimit.truncated": bool(a.truncated[j] and not a.terminated[j])}
                self.agent_buffer.add(
                    a.obs[j : j + 1],
                    a.next_obs[j : j + 1],
                    self.scale_action(a.actions[j : j + 1]),
                    a.rewards[j : j + 1],
                    np.asarray([a.terminated[j] or a.truncated[j]]),
                    [timeout],
                )
                self.aux_added += 1
        self.primary_buffer.add(
            primary.obs, primary.actions, primary.rewards, primary.next_obs, primary.terminated
        )
        self.real_steps += 1
        if (
            self.real_steps % self.config["train_freq"] == 0
            and len(self.primary_buffer) >= self.config["batch_size"]
        ):
            self.train_world_model()

    def scale_action(self, action: np.ndarray) -> np.ndarray:
        """Actions in the environment's units → ``[-1, 1]`` (what SB3 stores for Box action spaces)."""
        with np.errstate(over="ignore", invalid="ignore"):  # a broken simulator's actions pass through
            scaled = 2.0 * (action - self.action_low) / (self.action_high - self.action_low) - 1.0
        return np.asarray(scaled, dtype=np.float32)

    def world_model_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(obs, action, next_obs)`` for one world-model update: real transitions only, drawn with the
        primary buffer's own generator (``PrimaryData``)."""
        batch = self.primary_buffer.sample(self.config["batch_size"])
        return batch.obs, batch.action, batch.next_obs

    def train_world_model(self) -> None:
        """``gradient_steps`` gated Adam updates of the world model's mean squared error."""
        for _ in range(self.config["gradient_steps"]):
            obs, action, next_obs = self.world_model_batch()
            loss = F.mse_loss(self.world_model(obs, action), next_obs - obs)
            self.wm_optimizer.zero_grad()
            loss.backward()
            self.wm_optimizer.step()
        self.world_model_loss = loss.item()
        if self.verbose:
            print(
                f"real step {self.real_steps}: world-model loss {self.world_model_loss:.5f} "
                f"({len(self.primary_buffer)} real transitions; {self.aux_added} auxiliary ones to the agent)"
            )

    def recording(self) -> tuple[dict[str, Any], list[dict[str, np.ndarray]]]:
        """``(primary, aux)`` for :func:`replay_world_model`: the recorded real transitions (one row per
        environment step) with this callback's settings, and one dict of transitions per auxiliary env."""
        if not self.record:
            raise RuntimeError("construct the callback with record=True to record its streams")
        primary: dict[str, Any] = {
            f: np.concatenate([getattr(t, f) for t in self.recorded_primary]) for f in _FIELDS
        }
        primary["config"] = dict(self.config)
        primary["agent_buffer_size"] = self.agent_buffer.buffer_size
        aux = [
            {f: np.concatenate([getattr(t, f) for t in stream]) for f in _FIELDS}
            for stream in self.recorded_aux
        ]
        return primary, aux


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


def _replay(
    cls: type[GatedWorldModelCallback], primary: dict[str, Any], aux: Sequence[dict[str, Any]]
) -> nn.Module:
    env = gym.make(ENV_ID)
    callback = cls(**primary["config"])
    agent_buffer = ReplayBuffer(
        primary["agent_buffer_size"], env.observation_space, env.action_space, device="cpu", n_envs=1
    )
    callback.build(env.observation_space, env.action_space, agent_buffer)
    real = Transitions(*(np.asarray(primary[f]) for f in _FIELDS))
    streams = [Transitions(*(np.asarray(a[f]) for f in _FIELDS)) for a in aux]
    for t in range(len(real.obs)):
        step = real.rows(t, t + 1)
        callback.step(step, [s.rows(t, t + 1) for s in streams if t < len(s.obs)])
        agent_buffer.add(
            step.obs, step.next_obs, callback.scale_action(step.actions), step.rewards,
            step.terminated | step.truncated, [{"TimeLimit.truncated": bool(step.truncated[0])}],
        )  # fmt: skip
    return callback.world_model


def replay_world_model(primary: dict[str, Any], aux: Sequence[dict[str, Any]]) -> nn.Module:
    """Audit target: a fresh :class:`GatedWorldModelCallback` with the recorded settings receives the
    recorded real transitions one environment step at a time through :meth:`~GatedWorldModelCallback.step`,
    together with row ``t`` of every auxiliary stream that has one; an SB3 ``ReplayBuffer`` stands in
    for SAC's and receives each real transition after the callback, as SAC's ``_store_transition`` does.

    ``primary``: :meth:`~GatedWorldModelCallback.recording`'s first element; ``aux``: a list of dicts of
    arrays (``obs``, ``actions``, ``rewards``, ``next_obs``, ``terminated``, ``truncated``), one per
    auxiliary environment. Returns the world model, which must not depend on ``aux``.
    """
    return _replay(GatedWorldModelCallback, primary, aux)


def replay_leaky_world_model(primary: dict[str, Any], aux: Sequence[dict[str, Any]]) -> nn.Module:
    """:func:`replay_world_model` for :class:`LeakyWorldModelCallback`: fails the audit."""
    return _replay(LeakyWorldModelCallback, primary, aux)


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
    model = SAC(
        "MlpPolicy",
        ENV_ID,
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
    for name in ("total_timesteps", "buffer_size", "wm_train_freq", "wm_gradient_steps", "wm_batch_size"):
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
