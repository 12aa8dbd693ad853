"""The benchmark's methods: the AMAL trainer, its three variants, and the baselines, behind one call.

:data:`METHODS` lists them; :func:`train_method` trains one (method, task, seed) cell and returns a
:class:`~amal_tools.bench.evaluation.TrainedPolicy`.

- ``"amal"``: :class:`~amal_verified.run.trainer.Trainer` with :func:`amal_config` — the paper's algorithm
  (gated world-model ensemble, information-gain bonus λ = 0.3, CEM-evolved auxiliary agents) at
  workstation scale;
- ``"amal-no-info"``: the same with λ = 0 — the information-gain objective ablated, everything else
  equal (the control for the paper's "40 % better exploration" claim);
- ``"amal-aux-policy"``: the same with 10 % of every policy batch drawn from the auxiliary agents'
  transitions (``aux_ratio=0.1``; ``amal`` uses none) — tests the paper's claim that the auxiliary
  agents' experience helps the primary agent; the world model stays gated;
- ``"unsafe-mix"``: the same with ``unsafe_mix=True`` — the paper's "standard MARL": the world model
  trains on D_P ∪ D_A, ungated;
- ``"sb3-ppo"``, ``"sb3-sac"``, ``"sb3-td3"``, ``"cem-rl"``, ``"pbt"``: :mod:`amal_tools.bench.baselines`.

Workstation scale (:func:`amal_config`): the paper's Table 1 sizes are kept where they do not decide
the cost (γ, learning rates, λ, CEM elite fraction) and reduced where they do: 5 ensemble members of
the paper's architecture at a quarter of its widths, 4 auxiliary agents from a CEM population of 20,
M = 20 information-gain samples, 64-unit policy layers in quick mode (the paper's 256 in full mode),
buffers the size of the budget.  The reduced values are recorded in every run's ``extras["config"]``.

The AMAL runs are evaluated from inside the training loop (``Trainer.run(after_step=...)``) with the
same :func:`~amal_tools.bench.evaluation.evaluate_policy` as every baseline, and after training
:func:`amal_tools.bench.isolation.measure_run` compares the run's world model with the one replayed
from its primary data alone (``extras["isolation"]``, ``extras["wm_real_error"]``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch

from amal_tools.bench.evaluation import Policy, TrainedPolicy, check_training_arguments, evaluate_policy
from amal_tools.bench.records import EvalPoint
from amal_tools.bench.tasks import Mode, TaskSpec
from amal_verified.common.runtime_checks import checked
from amal_verified.run.config import TrainConfig

__all__ = ["AMAL_METHODS", "METHODS", "amal_config", "not_applicable_reason", "train_method"]

AMAL_METHODS: Final[tuple[str, ...]] = ("amal", "amal-no-info", "amal-aux-policy", "unsafe-mix")
METHODS: Final[tuple[str, ...]] = (*AMAL_METHODS, "sb3-ppo", "sb3-sac", "sb3-td3", "cem-rl", "pbt")

# Methods whose algorithm needs a continuous (Box) action space, with the name their reasons use.
_CONTINUOUS_ONLY: Final[dict[str, str]] = {"sb3-sac": "SAC", "sb3-td3": "TD3", "cem-rl": "CEM-RL"}

# Held-out real transitions for the isolation and reality-gap metrics (per run seed).
_REAL_TRANSITIONS: Final[dict[Mode, int]] = {"quick": 512, "full": 4096}
_BUFFER_FLOATS: Final = 20_000_000  # auxiliary buffers' budget in stored floats (obs + next_obs)


@checked
def amal_config(
    env_id: str, *, method: str, seed: int, budget: int, mode: Mode, threads: int = 1
) -> TrainConfig:
    """The :class:`~amal_verified.run.config.TrainConfig` of an AMAL-family run on ``env_id`` (module
    docstring); the performance ratios time the same configuration."""
    from amal_verified.envs import task_info

    if method not in AMAL_METHODS:
        raise ValueError(f"{method!r} is not an AMAL method ({', '.join(AMAL_METHODS)})")
    info = task_info(env_id)
    num_aux = 4
    warmup = max(1, min(1_000, budget // 5))
    aux_rows = max(1_000, min(budget, _BUFFER_FLOATS // (2 * info.obs_dim * num_aux)))
    return TrainConfig(
        env_id=env_id,
        total_steps=budget,
        seed=seed,
        batch_size=128,
        buffer_size=budget,
        info_weight=0.0 if method == "amal-no-info" else 0.3,
        aux_ratio=0.1 if method == "amal-aux-policy" else 0.0,
        num_aux_agents=num_aux,
        cem_population=20,
        mi_outer_samples=20,
        ensemble_size=5,
        wm_hidden_scale=0.25,
        learning_starts=warmup,
        random_steps=warmup,
        wm_train_every=250,
        wm_updates_per_round=10,
        policy_hidden=64 if mode == "quick" else 256,
        aux_buffer_size=aux_rows,
        cem_every=500,
        probe_states=128,
        unsafe_mix=method == "unsafe-mix",
        eval_every=budget,
        eval_episodes=1,
        log_every=max(1, budget // 10),
        checkpoint_every=budget,
        threads=threads,
    )


def _amal_act(policy: Any, discrete: bool) -> Policy:
    def act(obs: npt.NDArray[np.float32]) -> Any:
        action = policy.act(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0), deterministic=True)[0]
        return int(action) if discrete else action.numpy().astype(np.float32)

    return act


def _train_amal(
    task: TaskSpec,
    *,
    method: str,
    seed: int,
    budget: int,
    eval_steps: Sequence[int],
    eval_episodes: int,
    run_dir: Path,
    mode: Mode,
    threads: int,
) -> TrainedPolicy:
    from amal_tools.bench.isolation import measure_run, real_transitions
    from amal_verified.run.trainer import Trainer

    config = amal_config(task.env_id, method=method, seed=seed, budget=budget, mode=mode, threads=threads)
    trainer = Trainer.create(config, run_dir)
    act = _amal_act(trainer.policy, trainer.task.discrete)
    pending = list(eval_steps)
    curve: list[EvalPoint] = []
    evaluating = 0.0

    def after_step(t: Trainer) -> None:
        nonlocal evaluating
        if pending and t.step == pending[0]:
            pending.pop(0)
            start = time.perf_counter()
            result = evaluate_policy(task, act, run_seed=seed, episodes=eval_episodes)
            curve.append(EvalPoint(t.step, result.returns, result.success))
            evaluating += time.perf_counter() - start

    start = time.perf_counter()
    trainer.run(after_step=after_step)
    train_seconds = time.perf_counter() - start - evaluating
    transitions = real_transitions(task.env_id, seed=seed, count=_REAL_TRANSITIONS[mode])
    # The run directory is a working file (deleted after the cell unless kept): not a result.
    measured = {k: v for k, v in measure_run(run_dir, transitions=transitions).items() if k != "run_dir"}
    return TrainedPolicy(
        curve=tuple(curve),
        act=act,
        train_seconds=train_seconds,
        extras={
            "config": config.to_json(),
            "env_steps_per_second": budget / train_seconds if train_seconds > 0 else None,
            "real_transitions": _REAL_TRANSITIONS[mode],
            **measured,
        },
    )


@checked
def not_applicable_reason(method: str, task: TaskSpec) -> str | None:
    """Why ``method`` cannot run ``task`` (SAC, TD3 and CEM-RL need continuous actions), or ``None``.

    Decided from the catalogue (``TaskSpec.continuous``) without building the environment, so the
    grid runner skips such cells without starting a worker.
    """
    name = _CONTINUOUS_ONLY.get(method)
    if name is None or task.continuous:
        return None
    return f"{name} needs a continuous (Box) action space; {task.name}'s actions are discrete"


@checked
def train_method(
    method: str,
    task: TaskSpec,
    *,
    seed: int,
    budget: int,
    eval_steps: Sequence[int],
    eval_episodes: int,
    work_dir: Path,
    mode: Mode,
    threads: int = 1,
) -> TrainedPolicy:
    """Train ``method`` on ``task`` for ``budget`` primary steps, evaluating at ``eval_steps``.

    ``work_dir`` receives the method's files (the AMAL run directory).  Raises
    :class:`~amal_tools.bench.baselines.NotApplicable` when the method cannot run the task (e.g.
    SAC on discrete actions) and ``ValueError`` for an unknown method or a bad schedule.
    """
    from amal_tools.bench import baselines

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    check_training_arguments(seed, budget, eval_steps, eval_episodes, threads)
    reason = not_applicable_reason(method, task)
    if reason is not None:
        raise baselines.NotApplicable(reason)
    if method in AMAL_METHODS:
        return _train_amal(
            task,
            method=method,
            seed=seed,
            budget=budget,
            eval_steps=eval_steps,
            eval_episodes=eval_episodes,
            run_dir=work_dir / "run",
            mode=mode,
            threads=threads,
        )
    common: dict[str, Any] = {
        "seed": seed,
        "budget": budget,
        "eval_steps": tuple(eval_steps),
        "eval_episodes": eval_episodes,
        "threads": threads,
    }
    if method.startswith("sb3-"):
        return baselines.train_sb3(method.removeprefix("sb3-"), task, **common)  # type: ignore[arg-type]
    if method == "cem-rl":
        return baselines.train_cem_rl(task, **common)
    return baselines.train_pbt(task, **common)
