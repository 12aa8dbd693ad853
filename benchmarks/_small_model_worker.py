"""Worker process of ``benchmarks/small_model_overhead.py``, run by file path.

The harness also loads this file by path, for :class:`WorkerResult` only.

``python -P _small_model_worker.py --side plain|gated --workload wm|sac --batch B --steps S
--warmup W --pool P --out-dir D [--profile-file F] [--aux-present] [--no-follow-primary]``
runs ``W`` untimed and then ``S`` timed training steps of one workload and writes its result as
JSON into ``D``; the last stdout line is ``{"result_file": ...}``.

The workloads are written the way a CleanRL user writes them (``sac_continuous_action.py``):

- ``wm``: a world-model update only. An MLP (obs 17 + action 6 → 256 → 256 → obs 17 +
  reward 1, ReLU), Adam lr 3e-4: ``pred = wm(torch.cat([obs, act], 1))``, MSE against
  ``torch.cat([next_obs, rew.unsqueeze(1)], 1)``, ``zero_grad``, ``backward``, ``step``;
- ``sac``: a whole SAC step on the same batch: two soft Q-networks with target copies, a
  tanh-squashed Gaussian actor, automatic entropy tuning (``log_alpha``), the critic, actor
  and temperature updates every step, the Polyak target update every step, then the world-model
  update above. All of them read the same five batch tensors.

A step starts with "sampling" the batch: the step's entry of a fixed pool of batches
(pre-generated from a seeded ``torch.Generator``) is cloned into fresh tensors, as a replay
buffer's ``sample()`` returns fresh tensors. On the ``gated`` side the user's added lines follow:
each of the five tensors is tagged in place (``obs = av.primary(obs, source="real-env")`` ...,
so every network reading the batch reads tagged data; with ``--no-follow-primary``,
``av.primary(obs, source="real-env", follow=False)``, which labels the memory only) and only
the world model's optimizer is an ``av.GatedOptimizer``; the SAC optimizers stay plain
``torch.optim.Adam``. Sampling and tagging are inside the timed step.

Per timed step the worker records wall time (``time.perf_counter``) and the CPU time of its
thread (``time.thread_time``; with ``torch.set_num_threads(1)`` all of torch's work runs on
it). At the end it hashes every parameter (sha256 over name, shape and raw bytes; for ``sac``
the actor, both Q-networks, both targets, the world model and ``log_alpha``) and saves them
as ``.npz`` for an element-wise comparison.

Module-level imports are the standard library and torch. Only the gated side imports
``amal_verified``, inside :func:`run_worker`. The plain side checks ``sys.modules`` at start-up,
after importing torch and after the timed steps, and exits with status 3 if the package is there.
Run this file with ``python -P``, so that its directory is not put on ``sys.path``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SEED = 0
DATA_SEED = 12345
OBS_DIM = 17
ACT_DIM = 6
HIDDEN = 256
WM_LR = 3e-4
# CleanRL sac_continuous_action.py defaults, except policy_frequency = 1 (policy update every step).
GAMMA = 0.99
TAU = 0.005
POLICY_LR = 3e-4
Q_LR = 1e-3
LOG_STD_MAX = 2
LOG_STD_MIN = -5
PLAIN_IMPORT_EXIT = 3


@dataclasses.dataclass(frozen=True)
class WorkerResult:
    """What one worker process reports (JSON next to its parameter file)."""

    side: str
    workload: str
    batch: int
    warmup: int
    step_wall_s: list[float]
    step_cpu_s: list[float]
    wall_median_ms: float
    cpu_median_ms: float
    peak_rss_kb: int
    param_sha256: str
    params_file: str
    final_loss: float
    amal_imported: bool
    amal_file: str | None
    torch_version: str
    num_threads: int


class PlainAmalImported(RuntimeError):
    """The plain side found ``amal_verified`` in ``sys.modules``: its timing would be meaningless."""


def _assert_plain(side: str, when: str) -> None:
    if side == "plain" and "amal_verified" in sys.modules:
        raise PlainAmalImported(f"plain worker: amal_verified is in sys.modules {when}")


class WorldModel(nn.Module):
    """obs ⧺ action → 256 → 256 → next obs ⧺ reward, ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(OBS_DIM + ACT_DIM, HIDDEN)
        self.fc2 = nn.Linear(HIDDEN, HIDDEN)
        self.fc3 = nn.Linear(HIDDEN, OBS_DIM + 1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        out: Tensor = self.fc3(x)
        return out


class SoftQNetwork(nn.Module):
    """CleanRL's soft Q-network: (obs, action) → 256 → 256 → 1."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(OBS_DIM + ACT_DIM, HIDDEN)
        self.fc2 = nn.Linear(HIDDEN, HIDDEN)
        self.fc3 = nn.Linear(HIDDEN, 1)

    def forward(self, x: Tensor, a: Tensor) -> Tensor:
        x = torch.cat([x, a], 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        q: Tensor = self.fc3(x)
        return q


class Actor(nn.Module):
    """CleanRL's SAC actor: a tanh-squashed Gaussian policy."""

    action_scale: Tensor
    action_bias: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(OBS_DIM, HIDDEN)
        self.fc2 = nn.Linear(HIDDEN, HIDDEN)
        self.fc_mean = nn.Linear(HIDDEN, ACT_DIM)
        self.fc_logstd = nn.Linear(HIDDEN, ACT_DIM)
        # HalfCheetah's action space is [-1, 1]^6
        self.register_buffer("action_scale", torch.ones(ACT_DIM))
        self.register_buffer("action_bias", torch.zeros(ACT_DIM))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        mean = self.fc_mean(x)
        log_std = torch.tanh(self.fc_logstd(x))
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (log_std + 1)
        return mean, log_std

    def get_action(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mean, log_std = self(x)
        std = log_std.exp()
        normal = torch.distributions.Normal(mean, std)
        x_t = normal.rsample()  # reparameterization trick (mean + std * N(0,1))
        y_t = torch.tanh(x_t)
        action = y_t * self.action_scale + self.action_bias
        log_prob = normal.log_prob(x_t)
        # Enforcing action bound
        log_prob -= torch.log(self.action_scale * (1 - y_t.pow(2)) + 1e-6)
        log_prob = log_prob.sum(1, keepdim=True)
        mean = torch.tanh(mean) * self.action_scale + self.action_bias
        return action, log_prob, mean


def make_pool(size: int, batch: int) -> list[tuple[Tensor, ...]]:
    """``size`` batches (obs, actions, rewards, next_obs, dones) from a seeded ``torch.Generator``.

    Synthetic smooth dynamics: ``next_obs = obs + 0.1 tanh(obs A + act B)``, reward linear in both.
    """
    g = torch.Generator().manual_seed(DATA_SEED)
    a_mat = torch.randn(OBS_DIM, OBS_DIM, generator=g) / OBS_DIM**0.5
    b_mat = torch.randn(ACT_DIM, OBS_DIM, generator=g) / ACT_DIM**0.5
    w_obs = torch.randn(OBS_DIM, generator=g) / OBS_DIM**0.5
    w_act = torch.randn(ACT_DIM, generator=g) / ACT_DIM**0.5
    pool: list[tuple[Tensor, ...]] = []
    for _ in range(size):
        obs = torch.randn(batch, OBS_DIM, generator=g)
        act = torch.rand(batch, ACT_DIM, generator=g) * 2 - 1
        next_obs = obs + 0.1 * torch.tanh(obs @ a_mat + act @ b_mat)
        rew = obs @ w_obs + act @ w_act + 0.01 * torch.randn(batch, generator=g)
        dones = (torch.rand(batch, generator=g) < 0.01).float()
        pool.append((obs, act, rew, next_obs, dones))
    return pool


def _digest(named: Sequence[tuple[str, Tensor]], out_file: Path) -> str:
    """sha256 over every tensor's name, shape and raw bytes, in order; also saved as ``.npz``."""
    import numpy as np

    digest = hashlib.sha256()
    arrays: dict[str, Any] = {}
    for name, p in named:
        arr = np.ascontiguousarray(p.detach().cpu().numpy()).copy()
        digest.update(name.encode())
        digest.update(str(arr.shape).encode())
        digest.update(arr.tobytes())
        arrays[name] = arr
    np.savez(out_file, **arrays)
    return digest.hexdigest()


def _setup(
    av: Any,
    workload: str,
    batch: int,
    pool_size: int,
    aux_present: bool = False,
    follow_primary: bool = True,
) -> tuple[Callable[[int], Tensor], Callable[[], list[tuple[str, Tensor]]]]:
    """Models, optimizers and the step function of ``workload``; ``av`` is the library or ``None``.

    ``aux_present`` (gated side): auxiliary data exist in the process, as wherever auxiliary agents
    run beside the learner: one tensor is tagged ``av.aux`` first.  Nothing of the workload reads it,
    but the gate's check then reads every label of the step instead of returning at once.

    ``follow_primary=False`` (gated side): the batch is tagged ``av.primary(t, ...,
    follow=False)``, which labels its memory and leaves the tensors plain.
    """
    if av is not None and aux_present:
        av.aux(torch.zeros(batch, OBS_DIM), source="aux-0")
    # Passed only when asked, so that copies of the library from before the option (--amal-path) and
    # tracker_floor.py's stand-ins run the default.
    tag_options: dict[str, Any] = {} if follow_primary else {"follow": False}
    torch.manual_seed(SEED)
    wm = WorldModel()
    wm_optimizer = torch.optim.Adam(wm.parameters(), lr=WM_LR)
    if av is not None:
        wm_optimizer = av.GatedOptimizer(wm_optimizer)
    pool = make_pool(pool_size, batch)

    def sample(i: int) -> tuple[Any, ...]:
        # A replay buffer's sample() returns fresh tensors.
        return tuple(t.clone() for t in pool[i % len(pool)])

    def wm_update(obs: Tensor, actions: Tensor, rewards: Tensor, next_obs: Tensor) -> Tensor:
        pred = wm(torch.cat([obs, actions], 1))
        wm_loss = F.mse_loss(pred, torch.cat([next_obs, rewards.unsqueeze(1)], 1))
        wm_optimizer.zero_grad()
        wm_loss.backward()
        wm_optimizer.step()
        return wm_loss

    if workload == "wm":

        def wm_step(i: int) -> Tensor:
            obs, actions, rewards, next_obs, dones = sample(i)
            if av is not None:
                obs = av.primary(obs, source="real-env", **tag_options)
                actions = av.primary(actions, source="real-env", **tag_options)
                rewards = av.primary(rewards, source="real-env", **tag_options)
                next_obs = av.primary(next_obs, source="real-env", **tag_options)
                dones = av.primary(dones, source="real-env", **tag_options)
            return wm_update(obs, actions, rewards, next_obs)

        return wm_step, lambda: [(f"wm.{n}", p) for n, p in wm.named_parameters()]

    actor = Actor()
    qf1 = SoftQNetwork()
    qf2 = SoftQNetwork()
    qf1_target = SoftQNetwork()
    qf2_target = SoftQNetwork()
    qf1_target.load_state_dict(qf1.state_dict())
    qf2_target.load_state_dict(qf2.state_dict())
    q_optimizer = torch.optim.Adam(list(qf1.parameters()) + list(qf2.parameters()), lr=Q_LR)
    actor_optimizer = torch.optim.Adam(list(actor.parameters()), lr=POLICY_LR)
    target_entropy = -float(ACT_DIM)
    log_alpha = torch.zeros(1, requires_grad=True)
    a_optimizer = torch.optim.Adam([log_alpha], lr=Q_LR)
    alpha = log_alpha.exp().item()

    def sac_step(i: int) -> Tensor:
        nonlocal alpha
        obs, actions, rewards, next_obs, dones = sample(i)
        if av is not None:
            obs = av.primary(obs, source="real-env", **tag_options)
            actions = av.primary(actions, source="real-env", **tag_options)
            rewards = av.primary(rewards, source="real-env", **tag_options)
            next_obs = av.primary(next_obs, source="real-env", **tag_options)
            dones = av.primary(dones, source="real-env", **tag_options)
        with torch.no_grad():
            next_state_actions, next_state_log_pi, _ = actor.get_action(next_obs)
            qf1_next_target = qf1_target(next_obs, next_state_actions)
            qf2_next_target = qf2_target(next_obs, next_state_actions)
            min_qf_next_target = torch.min(qf1_next_target, qf2_next_target) - alpha * next_state_log_pi
            next_q_value = rewards.flatten() + (1 - dones.flatten()) * GAMMA * (min_qf_next_target).view(-1)

        qf1_a_values = qf1(obs, actions).view(-1)
        qf2_a_values = qf2(obs, actions).view(-1)
        qf1_loss = F.mse_loss(qf1_a_values, next_q_value)
        qf2_loss = F.mse_loss(qf2_a_values, next_q_value)
        qf_loss = qf1_loss + qf2_loss
        q_optimizer.zero_grad()
        qf_loss.backward()
        q_optimizer.step()

        pi, log_pi, _ = actor.get_action(obs)
        qf1_pi = qf1(obs, pi)
        qf2_pi = qf2(obs, pi)
        min_qf_pi = torch.min(qf1_pi, qf2_pi)
        actor_loss = ((alpha * log_pi) - min_qf_pi).mean()
        actor_optimizer.zero_grad()
        actor_loss.backward()
        actor_optimizer.step()

        with torch.no_grad():
            _, log_pi, _ = actor.get_action(obs)
        alpha_loss = (-log_alpha.exp() * (log_pi + target_entropy)).mean()
        a_optimizer.zero_grad()
        alpha_loss.backward()
        a_optimizer.step()
        alpha = log_alpha.exp().item()

        for param, target_param in zip(qf1.parameters(), qf1_target.parameters(), strict=True):
            target_param.data.copy_(TAU * param.data + (1 - TAU) * target_param.data)
        for param, target_param in zip(qf2.parameters(), qf2_target.parameters(), strict=True):
            target_param.data.copy_(TAU * param.data + (1 - TAU) * target_param.data)

        return wm_update(obs, actions, rewards, next_obs)

    def sac_named() -> list[tuple[str, Any]]:
        named: list[tuple[str, Any]] = []
        for prefix, net in (
            ("actor", actor),
            ("qf1", qf1),
            ("qf2", qf2),
            ("qf1_target", qf1_target),
            ("qf2_target", qf2_target),
            ("wm", wm),
        ):
            named += [(f"{prefix}.{n}", p) for n, p in net.named_parameters()]
        named.append(("log_alpha", log_alpha))
        return named

    return sac_step, sac_named


def run_worker(
    side: str,
    workload: str,
    batch: int,
    steps: int,
    warmup: int,
    pool_size: int,
    out_dir: Path,
    profile_file: Path | None,
    aux_present: bool = False,
    follow_primary: bool = True,
) -> Path:
    """Time ``warmup + steps`` steps of ``workload`` on ``side``; return the result file."""
    _assert_plain(side, "after importing torch")
    torch.set_num_threads(1)
    av: Any = None
    if side == "gated":
        import amal_verified as av

    step, named_tensors = _setup(av, workload, batch, pool_size, aux_present, follow_primary)
    for i in range(warmup):
        step(i)

    profiler = None
    if profile_file is not None:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    wall: list[float] = []
    cpu: list[float] = []
    loss: Any = None
    for i in range(warmup, warmup + steps):
        cpu_start = time.thread_time()
        start = time.perf_counter()
        loss = step(i)
        wall.append(time.perf_counter() - start)
        cpu.append(time.thread_time() - cpu_start)
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(str(profile_file))
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _assert_plain(side, "after the timed steps")

    stem = f"{workload}-b{batch}-{side}-{os.getpid()}"
    params_file = out_dir / f"params-{stem}.npz"
    with torch.no_grad():
        sha = _digest(named_tensors(), params_file)
    result = WorkerResult(
        side=side,
        workload=workload,
        batch=batch,
        warmup=warmup,
        step_wall_s=wall,
        step_cpu_s=cpu,
        wall_median_ms=statistics.median(wall) * 1e3,
        cpu_median_ms=statistics.median(cpu) * 1e3,
        peak_rss_kb=peak_rss,
        param_sha256=sha,
        params_file=str(params_file),
        final_loss=float(loss.detach()) if loss is not None else float("nan"),
        amal_imported="amal_verified" in sys.modules,
        amal_file=None if av is None else str(av.__file__),
        torch_version=torch.__version__,
        num_threads=torch.get_num_threads(),
    )
    out = out_dir / f"result-{stem}.json"
    out.write_text(json.dumps(dataclasses.asdict(result)))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Worker entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description="small-model overhead worker (internal)")
    parser.add_argument("--side", choices=["plain", "gated"], required=True)
    parser.add_argument("--workload", choices=["wm", "sac"], required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--pool", type=int, required=True)
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--profile-file", type=Path)
    parser.add_argument("--aux-present", action="store_true")
    parser.add_argument("--follow-primary", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args(argv)
    try:
        _assert_plain(args.side, "at start-up")
        out = run_worker(
            args.side,
            args.workload,
            args.batch,
            args.steps,
            args.warmup,
            args.pool,
            args.out_dir,
            args.profile_file,
            args.aux_present,
            args.follow_primary,
        )
    except PlainAmalImported as exc:
        print(f"FATAL: {exc}", file=sys.stderr)
        return PLAIN_IMPORT_EXIT
    print(json.dumps({"result_file": str(out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
