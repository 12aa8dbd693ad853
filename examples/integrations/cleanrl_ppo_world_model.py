"""CleanRL-style PPO on CartPole-v1 with a world model and an auxiliary explorer, gated in seven lines.

Single file with the structure and argument names of CleanRL's ``ppo.py`` (discrete actions,
gymnasium ``SyncVectorEnv``; it prints its statistics instead of writing TensorBoard files). Besides
the agent it trains:

- a **world model**: an ensemble of MLPs predicting ``next_obs − obs`` from ``(obs, action)`` on the
  agent's real transitions; the members' disagreement is an intrinsic reward for the agent;
- an **auxiliary actor**: the same policy acting in a synthetic copy of the task whose gravity is
  scaled by ``--aux-gravity-scale``; its discounted returns are an extra value target for the critic,
  so auxiliary data legitimately reaches the agent.

The world model must learn from the real stream only. The lines ending in the marker ``# amal``
tag the two streams, gate the world model's optimizer and declassify where the agent's values
leave tensors (acting, logging); delete them and what is left is the ungated original, which runs
the same. The agent learns from auxiliary data, so everything it computes carries their label:
the actions it executes in the real environment are recorded as primary data inside
``declassify``. ``--leak`` adds the auxiliary transitions to the world model's batches: the
ungated original then trains on the synthetic physics without a word; the gated script stops
with ``IsolationViolation`` before the world model changes.

    python examples/integrations/cleanrl_ppo_world_model.py --total-timesteps 50000
    python examples/integrations/cleanrl_ppo_world_model.py --total-timesteps 1024 --leak  # refused

Theorem 1 makes the world model a function of the *recorded primary stream* (the policy, which
learns from auxiliary data, changes which real transitions are collected; it must not change what
the world model learns from them). :func:`run` returns every iteration's learning inputs, and
:func:`train_world_model` replays them through :func:`update`, the code the training loop runs::

    amal audit examples/integrations/cleanrl_ppo_world_model.py:train_world_model
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn, optim
from torch.distributions.categorical import Categorical

import amal_verified as av  # amal

Batch = dict[str, torch.Tensor]


def str2bool(value: str) -> bool:
    """CleanRL's boolean flags: ``--anneal-lr`` alone, or ``--anneal-lr true|false``."""
    lowered = value.lower()
    if lowered in {"1", "true", "yes", "y", "on"}:
        return True
    if lowered in {"0", "false", "no", "n", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """CleanRL's PPO arguments plus the world model's and the auxiliary actor's; exits with a usage
    error (status 2) for values the run cannot use."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    flag: dict[str, Any] = {"type": str2bool, "nargs": "?", "const": True}
    parser.add_argument("--seed", type=int, default=1, help="seed of the experiment")
    parser.add_argument("--env-id", type=str, default="CartPole-v1", help="the id of the environment")
    parser.add_argument("--total-timesteps", type=int, default=500000, help="total timesteps")
    parser.add_argument("--learning-rate", type=float, default=2.5e-4, help="the agent's learning rate")
    parser.add_argument("--num-envs", type=int, default=4, help="the number of parallel real environments")
    parser.add_argument("--num-steps", type=int, default=128, help="steps per environment per rollout")
    parser.add_argument("--anneal-lr", default=True, help="anneal the agent's learning rate", **flag)
    parser.add_argument("--gamma", type=float, default=0.99, help="the discount factor gamma")
    parser.add_argument("--gae-lambda", type=float, default=0.95, help="the lambda of GAE")
    parser.add_argument("--num-minibatches", type=int, default=4, help="the number of mini-batches")
    parser.add_argument("--update-epochs", type=int, default=4, help="the K epochs to update the policy")
    parser.add_argument("--norm-adv", default=True, help="normalize the advantages", **flag)
    parser.add_argument("--clip-coef", type=float, default=0.2, help="the surrogate clipping coefficient")
    parser.add_argument("--clip-vloss", default=True, help="clip the value loss", **flag)
    parser.add_argument("--ent-coef", type=float, default=0.01, help="coefficient of the entropy")
    parser.add_argument("--vf-coef", type=float, default=0.5, help="coefficient of the value function")
    parser.add_argument("--max-grad-norm", type=float, default=0.5, help="maximum norm for gradient clipping")
    parser.add_argument("--target-kl", type=float, default=None, help="the target KL divergence threshold")
    parser.add_argument(
        "--wm-learning-rate", type=float, default=1e-3, help="the world model's learning rate"
    )
    parser.add_argument("--wm-ensemble-size", type=int, default=5, help="members of the world-model ensemble")
    parser.add_argument("--wm-hidden-size", type=int, default=64, help="hidden units per member layer")
    parser.add_argument("--wm-epochs", type=int, default=4, help="world-model epochs per rollout")
    parser.add_argument("--wm-batch-size", type=int, default=64, help="world-model mini-batch size")
    parser.add_argument("--intrinsic-coef", type=float, default=1.0, help="weight of the disagreement bonus")
    parser.add_argument("--aux-num-envs", type=int, default=2, help="auxiliary environments (0: none)")
    parser.add_argument("--aux-gravity-scale", type=float, default=1.5, help="gravity factor of the aux task")
    parser.add_argument("--aux-vf-coef", type=float, default=0.25, help="weight of the auxiliary value loss")
    parser.add_argument("--leak", action="store_true", help="also train the world model on auxiliary data")
    args = parser.parse_args(argv)

    positive = ("total_timesteps", "num_envs", "num_steps", "num_minibatches", "update_epochs")
    positive += ("wm_ensemble_size", "wm_hidden_size", "wm_epochs", "wm_batch_size")
    for name in positive:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in ("seed", "aux_num_envs"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(args, name)}")
    for name in ("learning_rate", "wm_learning_rate", "aux_gravity_scale"):
        if not getattr(args, name) > 0 or not math.isfinite(getattr(args, name)):
            parser.error(f"--{name.replace('_', '-')} must be a positive number, got {getattr(args, name)}")
    if not 0 <= args.gamma <= 1 or not 0 <= args.gae_lambda <= 1:
        parser.error("--gamma and --gae-lambda must lie in [0, 1]")
    args.batch_size = args.num_envs * args.num_steps
    if args.batch_size % args.num_minibatches:
        parser.error(
            f"--num-envs x --num-steps ({args.batch_size}) must be divisible by --num-minibatches "
            f"({args.num_minibatches})"
        )
    args.minibatch_size = args.batch_size // args.num_minibatches
    args.num_iterations = args.total_timesteps // args.batch_size
    if args.num_iterations < 1:
        parser.error(
            f"--total-timesteps ({args.total_timesteps}) is less than one rollout "
            f"(--num-envs x --num-steps = {args.batch_size})"
        )
    try:
        probe = gym.make(args.env_id)
    except gym.error.Error as exc:
        parser.error(f"--env-id {args.env_id!r}: {exc}")
    if not isinstance(probe.action_space, gym.spaces.Discrete) or not hasattr(probe.unwrapped, "gravity"):
        parser.error(
            f"--env-id {args.env_id!r}: needs discrete actions and a `gravity` attribute to perturb "
            "(CartPole-v1, MountainCar-v0)"
        )
    probe.close()
    return args


def make_env(env_id: str, gravity_scale: float) -> Callable[[], gym.Env[Any, Any]]:
    """A thunk for ``SyncVectorEnv``: the task, its gravity scaled by ``gravity_scale``."""

    def thunk() -> gym.Env[Any, Any]:
        env = gym.make(env_id)
        env = gym.wrappers.RecordEpisodeStatistics(env)
        env.unwrapped.gravity *= gravity_scale  # type: ignore[attr-defined]
        return env

    return thunk


def layer_init(layer: nn.Linear, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    """CleanRL's separate actor and critic MLPs (initialised from the global torch generator)."""

    def __init__(self, obs_dim: int, n_actions: int) -> None:
        super().__init__()
        self.critic = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 1), std=1.0),
        )
        self.actor = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, n_actions), std=0.01),
        )

    def get_value(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.critic(x)
        return out

    def get_action_and_value(
        self, x: torch.Tensor, action: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self.actor(x)
        probs = Categorical(logits=logits)
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(x)


class WorldModel(nn.Module):
    """An ensemble of ``k`` MLPs ``(obs, one_hot(action)) ↦ next_obs − obs``, batched over members.

    Initialised from ``generator`` alone. ``forward`` takes ``obs (n, d)`` (shared by all members) or
    ``(k, n, d)`` (one batch per member) with matching actions and returns ``(k, n, d)``.
    """

    def __init__(self, obs_dim: int, n_actions: int, k: int, hidden: int, generator: torch.Generator) -> None:
        super().__init__()
        self.n_actions = n_actions
        sizes = [obs_dim + n_actions, hidden, hidden, obs_dim]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(k, fan_in, fan_out, generator=generator) / math.sqrt(fan_in))
            for fan_in, fan_out in itertools.pairwise(sizes)
        )
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(k, 1, fan_out)) for fan_out in sizes[1:])

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, F.one_hot(action, self.n_actions).to(obs.dtype)], dim=-1)
        if x.dim() == 2:
            x = x.expand(len(self.weights[0]), *x.shape)
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.baddbmm(b, x, w)
            if i < len(self.weights) - 1:
                x = torch.tanh(x)
        return x

    def disagreement(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Per transition: the members' predictive variance, averaged over dimensions (intrinsic reward)."""
        return self(obs, action).var(dim=0).mean(dim=-1)


def stream_seed(seed: int, name: str) -> int:
    """A 64-bit seed for the random stream ``name`` of run ``seed``, from those two alone."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:8], "little")


def make_learners(
    args: argparse.Namespace, obs_dim: int, n_actions: int
) -> tuple[Agent, optim.Optimizer, WorldModel, optim.Optimizer, dict[str, torch.Generator]]:
    """The agent and its optimizer, the world model and its optimizer, and the update's generators,
    each seeded from ``args.seed`` and its name only (the agent from the global generator, as in CleanRL)."""
    torch.manual_seed(args.seed)
    agent = Agent(obs_dim, n_actions)
    optimizer = optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)
    names = ("world-model/init", "world-model/batches", "ppo/minibatches", "aux/minibatches")
    rngs = {name: torch.Generator().manual_seed(stream_seed(args.seed, name)) for name in names}
    world_model = WorldModel(
        obs_dim, n_actions, args.wm_ensemble_size, args.wm_hidden_size, rngs["world-model/init"]
    )
    wm_optimizer = optim.Adam(world_model.parameters(), lr=args.wm_learning_rate)
    wm_optimizer = av.GatedOptimizer(wm_optimizer, names=world_model)  # amal
    return agent, optimizer, world_model, wm_optimizer, rngs


@av.declassify(reason="the agent acts in its environment; what it executed there is recorded")  # amal
def rollout(
    agent: Agent,
    envs: gym.vector.VectorEnv[Any, Any, Any],
    next_obs: torch.Tensor,
    next_done: torch.Tensor,
    num_steps: int,
) -> tuple[Batch, torch.Tensor, torch.Tensor, list[float]]:
    """``num_steps`` steps of ``agent`` in ``envs`` (same-step autoreset).

    Returns CleanRL's storage (``obs``, ``actions``, ``logprobs``, ``rewards``, ``dones``, ``values``,
    each ``(num_steps, num_envs, ...)``) plus ``successors``: the true next observation of every step
    (the final observation where an episode ended, not the reset one); then the new ``next_obs`` and
    ``next_done``, and the returns of the episodes that ended.
    """
    shape = (num_steps, envs.num_envs)
    storage: Batch = {
        "obs": torch.zeros(shape + envs.single_observation_space.shape),
        "actions": torch.zeros(shape, dtype=torch.long),
        "logprobs": torch.zeros(shape),
        "rewards": torch.zeros(shape),
        "dones": torch.zeros(shape),
        "values": torch.zeros(shape),
        "successors": torch.zeros(shape + envs.single_observation_space.shape),
    }
    episodic_returns: list[float] = []
    for step in range(num_steps):
        storage["obs"][step] = next_obs
        storage["dones"][step] = next_done
        with torch.no_grad():
            action, logprob, _, value = agent.get_action_and_value(next_obs)
        storage["values"][step] = value.flatten()
        storage["actions"][step] = action
        storage["logprobs"][step] = logprob
        obs_np, reward, terminations, truncations, infos = envs.step(action.numpy())
        storage["rewards"][step] = torch.as_tensor(reward, dtype=torch.float32)
        next_obs = torch.as_tensor(obs_np, dtype=torch.float32)
        next_done = torch.as_tensor(np.logical_or(terminations, truncations), dtype=torch.float32)
        storage["successors"][step] = next_obs
        for i in np.flatnonzero(infos.get("_final_obs", ())):
            storage["successors"][step, i] = torch.as_tensor(infos["final_obs"][i])
            episodic_returns.append(float(infos["final_info"]["episode"]["r"][i]))
    return storage, next_obs, next_done, episodic_returns


def compute_gae(
    agent: Agent,
    storage: Batch,
    rewards: torch.Tensor,
    next_obs: torch.Tensor,
    next_done: torch.Tensor,
    args: argparse.Namespace,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CleanRL's generalized advantage estimation: ``(advantages, returns)``, both ``(steps, envs)``."""
    values, dones = storage["values"], storage["dones"]
    with torch.no_grad():
        next_value = agent.get_value(next_obs).reshape(1, -1)
        advantages = torch.zeros_like(rewards)
        lastgaelam = torch.zeros(rewards.shape[1])
        for t in reversed(range(rewards.shape[0])):
            if t == rewards.shape[0] - 1:
                nextnonterminal = 1.0 - next_done
                nextvalues = next_value
            else:
                nextnonterminal = 1.0 - dones[t + 1]
                nextvalues = values[t + 1]
            delta = rewards[t] + args.gamma * nextvalues * nextnonterminal - values[t]
            advantages[t] = lastgaelam = delta + args.gamma * args.gae_lambda * nextnonterminal * lastgaelam
    return advantages, advantages + values


@av.declassify(reason="the agent, which learns from auxiliary data, is checked and logged")  # amal
def update(
    agent: Agent,
    optimizer: optim.Optimizer,
    world_model: WorldModel,
    wm_optimizer: optim.Optimizer,
    batch: Batch,
    aux_batch: Batch | None,
    args: argparse.Namespace,
    rngs: dict[str, torch.Generator],
) -> dict[str, float]:
    """One learning phase: PPO epochs on ``batch`` (the critic also fits ``aux_batch``'s returns), then
    world-model epochs on ``batch``'s transitions (and, with ``--leak``, ``aux_batch``'s).

    ``batch``: one real rollout, flattened: ``obs``, ``next_obs`` ``(B, d)`` (the true successors),
    ``actions`` ``(B,)`` int64, ``logprobs``, ``advantages``, ``returns``, ``values`` ``(B,)``.
    ``aux_batch``: ``None`` or one auxiliary rollout: ``obs``, ``next_obs`` ``(A, d)``, ``actions``
    ``(A,)`` int64, ``returns`` ``(A,)``; rows with non-finite values are ignored and the rest are
    clipped to the task's range (observations to ±10, returns to ±1/(1−γ)), so a broken simulator
    cannot wreck the critic. Returns the logged statistics of the last mini-batches.
    """
    real = ("obs", "actions", "next_obs")  # amal
    batch = {k: av.primary(v, source="real-env") if k in real else v for k, v in batch.items()}  # amal
    obs, actions, next_obs = batch["obs"], batch["actions"], batch["next_obs"]
    logprobs, advantages, returns, values = (
        batch[k] for k in ("logprobs", "advantages", "returns", "values")
    )
    if aux_batch is not None:
        aux_batch = {k: av.aux(v, source="aux-gravity") for k, v in aux_batch.items()}  # amal
        aux_obs, aux_actions = aux_batch["obs"], aux_batch["actions"]
        aux_next_obs, aux_returns = aux_batch["next_obs"], aux_batch["returns"]
        usable = torch.isfinite(aux_obs).all(dim=1) & torch.isfinite(aux_returns)
        bound = 1.0 / max(1.0 - args.gamma, 1e-3)
        critic_obs = torch.where(usable[:, None], aux_obs, 0.0).clamp(-10.0, 10.0)
        critic_returns = torch.where(usable, aux_returns, 0.0).clamp(-bound, bound)

    clipfracs = []
    for _ in range(args.update_epochs):
        b_inds = torch.randperm(args.batch_size, generator=rngs["ppo/minibatches"])
        for start in range(0, args.batch_size, args.minibatch_size):
            mb_inds = b_inds[start : start + args.minibatch_size]
            _, newlogprob, entropy, newvalue = agent.get_action_and_value(obs[mb_inds], actions[mb_inds])
            logratio = newlogprob - logprobs[mb_inds]
            ratio = logratio.exp()
            with torch.no_grad():
                old_approx_kl = (-logratio).mean()
                approx_kl = ((ratio - 1) - logratio).mean()
                clipfracs += [((ratio - 1.0).abs() > args.clip_coef).float().mean().item()]

            mb_advantages = advantages[mb_inds]
            if args.norm_adv:
                mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)
            pg_loss1 = -mb_advantages * ratio
            pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
            pg_loss = torch.max(pg_loss1, pg_loss2).mean()

            newvalue = newvalue.view(-1)
            if args.clip_vloss:
                v_loss_unclipped = (newvalue - returns[mb_inds]) ** 2
                v_clipped = values[mb_inds] + torch.clamp(
                    newvalue - values[mb_inds], -args.clip_coef, args.clip_coef
                )
                v_loss_clipped = (v_clipped - returns[mb_inds]) ** 2
                v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()
            else:
                v_loss = 0.5 * ((newvalue - returns[mb_inds]) ** 2).mean()

            entropy_loss = entropy.mean()
            loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef
            if aux_batch is not None:
                rows = torch.randint(
                    0, len(critic_obs), (args.minibatch_size,), generator=rngs["aux/minibatches"]
                )
                aux_error = (agent.get_value(critic_obs[rows]).view(-1) - critic_returns[rows]) ** 2
                aux_v_loss = 0.5 * (aux_error * usable[rows]).sum() / usable[rows].sum().clamp_min(1)
                loss = loss + args.aux_vf_coef * aux_v_loss

            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
            optimizer.step()

        if args.target_kl is not None and approx_kl.item() > args.target_kl:
            break

    wm_obs, wm_actions, wm_next_obs = obs, actions, next_obs
    if args.leak and aux_batch is not None:
        wm_obs, wm_actions = torch.cat([obs, aux_obs]), torch.cat([actions, aux_actions])
        wm_next_obs = torch.cat([next_obs, aux_next_obs])
    for _ in range(args.wm_epochs):
        for _ in range(max(1, len(wm_obs) // args.wm_batch_size)):
            shape = (args.wm_ensemble_size, args.wm_batch_size)
            rows = torch.randint(0, len(wm_obs), shape, generator=rngs["world-model/batches"])
            predicted = world_model(wm_obs[rows], wm_actions[rows])
            wm_loss = F.mse_loss(predicted, wm_next_obs[rows] - wm_obs[rows])
            wm_optimizer.zero_grad()
            wm_loss.backward()
            wm_optimizer.step()

    y_pred, y_true = values.numpy(), returns.numpy()
    var_y = np.var(y_true)
    return {
        "value_loss": v_loss.item(),
        "policy_loss": pg_loss.item(),
        "entropy": entropy_loss.item(),
        "old_approx_kl": old_approx_kl.item(),
        "approx_kl": approx_kl.item(),
        "clipfrac": float(np.mean(clipfracs)),
        "explained_variance": float("nan") if var_y == 0 else float(1 - np.var(y_true - y_pred) / var_y),
        "world_model_loss": wm_loss.item(),
    }


def run(args: argparse.Namespace, *, log: bool = True) -> tuple[WorldModel, list[tuple[Batch, Batch | None]]]:
    """Train as ``args`` say; return the world model and every iteration's ``(batch, aux_batch)`` as
    passed to :func:`update` (the recorded primary stream and the auxiliary data; about 60 bytes per
    environment step)."""
    random.seed(args.seed)
    np.random.seed(args.seed)
    autoreset = gym.vector.AutoresetMode.SAME_STEP
    envs = gym.vector.SyncVectorEnv(
        [make_env(args.env_id, 1.0) for _ in range(args.num_envs)], autoreset_mode=autoreset
    )
    aux_envs = None
    if args.aux_num_envs:
        aux_envs = gym.vector.SyncVectorEnv(
            [make_env(args.env_id, args.aux_gravity_scale) for _ in range(args.aux_num_envs)],
            autoreset_mode=autoreset,
        )
    obs_dim = int(np.prod(envs.single_observation_space.shape))
    n_actions = int(envs.single_action_space.n)  # type: ignore[attr-defined]
    agent, optimizer, world_model, wm_optimizer, rngs = make_learners(args, obs_dim, n_actions)

    global_step = 0
    start_time = time.time()
    next_obs = torch.as_tensor(envs.reset(seed=args.seed)[0], dtype=torch.float32)
    next_done = torch.zeros(args.num_envs)
    if aux_envs is not None:
        aux_next_obs = torch.as_tensor(aux_envs.reset(seed=args.seed + 10_000)[0], dtype=torch.float32)
        aux_next_done = torch.zeros(args.aux_num_envs)
    episodic_returns: list[float] = []
    recorded: list[tuple[Batch, Batch | None]] = []

    for iteration in range(1, args.num_iterations + 1):
        if args.anneal_lr:
            frac = 1.0 - (iteration - 1.0) / args.num_iterations
            optimizer.param_groups[0]["lr"] = frac * args.learning_rate

        storage, next_obs, next_done, finished = rollout(agent, envs, next_obs, next_done, args.num_steps)
        global_step += args.batch_size
        episodic_returns = (episodic_returns + finished)[-20:]
        flat = {k: v.reshape((args.batch_size, *v.shape[2:])) for k, v in storage.items()}
        with torch.no_grad():
            intrinsic = world_model.disagreement(flat["obs"], flat["actions"]).reshape(
                storage["rewards"].shape
            )
        rewards = storage["rewards"] + args.intrinsic_coef * intrinsic
        advantages, returns = compute_gae(agent, storage, rewards, next_obs, next_done, args)
        batch = {
            "obs": flat["obs"],
            "actions": flat["actions"],
            "next_obs": flat["successors"],
            "logprobs": flat["logprobs"],
            "advantages": advantages.reshape(-1),
            "returns": returns.reshape(-1),
            "values": flat["values"],
        }

        aux_batch = None
        if aux_envs is not None:
            aux_storage, aux_next_obs, aux_next_done, _ = rollout(
                agent, aux_envs, aux_next_obs, aux_next_done, args.num_steps
            )
            _, aux_returns = compute_gae(
                agent, aux_storage, aux_storage["rewards"], aux_next_obs, aux_next_done, args
            )
            aux_batch = {
                "obs": aux_storage["obs"].flatten(0, 1),
                "actions": aux_storage["actions"].flatten(0, 1),
                "next_obs": aux_storage["successors"].flatten(0, 1),
                "returns": aux_returns.reshape(-1),
            }

        stats = update(agent, optimizer, world_model, wm_optimizer, batch, aux_batch, args, rngs)
        recorded.append((batch, aux_batch))
        if log:
            mean_return = float(np.mean(episodic_returns)) if episodic_returns else float("nan")
            print(
                f"global_step={global_step} episodic_return={mean_return:.1f} "
                f"value_loss={stats['value_loss']:.3f} world_model_loss={stats['world_model_loss']:.5f} "
                f"intrinsic={float(intrinsic.mean()):.2e} SPS={int(global_step / (time.time() - start_time))}"
            )

    envs.close()
    if aux_envs is not None:
        aux_envs.close()
    return world_model, recorded


EXAMPLE_ARGV = (
    "--total-timesteps", "256", "--num-envs", "2", "--num-steps", "64", "--aux-num-envs", "1",
    "--update-epochs", "2", "--wm-epochs", "2",
)  # fmt: skip


def audit_inputs(
    argv: Sequence[str], recorded: list[tuple[Batch, Batch | None]]
) -> tuple[dict[str, Any], list[Batch]]:
    """``(primary, aux)`` for :func:`train_world_model` from a run of ``argv`` that :func:`run` recorded.

    ``primary``: ``{"argv": [...], "obs_dim": d, "n_actions": n, "batches": [batch, ...]}`` (the
    run's settings and its real batches); ``aux``: the auxiliary batch of each iteration.
    """
    args = parse_args(argv)
    n_actions = int(gym.make(args.env_id).action_space.n)  # type: ignore[attr-defined]
    batches = [batch for batch, _ in recorded]
    primary = {"argv": list(argv), "obs_dim": batches[0]["obs"].shape[1], "n_actions": n_actions}
    primary["batches"] = batches
    return primary, [aux_batch for _, aux_batch in recorded if aux_batch is not None]


def amal_example_inputs() -> tuple[dict[str, Any], list[Batch]]:
    """``(primary, aux)`` recorded from a two-iteration run with :data:`EXAMPLE_ARGV`."""
    return audit_inputs(EXAMPLE_ARGV, run(parse_args(EXAMPLE_ARGV), log=False)[1])


def train_world_model(primary: dict[str, Any], aux: list[Batch]) -> WorldModel:
    """The audit target: rebuild the learners from ``primary["argv"]``'s seed and replay every recorded
    batch through :func:`update`, iteration ``i`` with ``aux[i]`` (``None`` past the end of ``aux``).

    Returns the world model, which Theorem 1 requires to be the same for every ``aux``. The agent's
    learning-rate annealing is not replayed: it changes only the agent.
    """
    args = parse_args(primary["argv"])
    agent, optimizer, world_model, wm_optimizer, rngs = make_learners(
        args, primary["obs_dim"], primary["n_actions"]
    )
    for i, batch in enumerate(primary["batches"]):
        aux_batch = aux[i] if i < len(aux) else None
        update(agent, optimizer, world_model, wm_optimizer, batch, aux_batch, args, rngs)
    return world_model


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: parse ``argv`` (``sys.argv`` by default) and train."""
    run(parse_args(argv))


if __name__ == "__main__":
    main()
