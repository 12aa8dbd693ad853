"""The benchmark's baselines (paper §6.1.2): PPO, SAC, TD3, CEM-RL and PBT, behind one contract.

Every method is a training function ::

    train_xxx(task, *, seed, budget, eval_steps, eval_episodes, threads=1) -> TrainedPolicy

with the same meaning everywhere:

- ``budget``: the real environment steps the method may consume, all population members together
  (CEM-RL, PBT): every interaction with the task's environment during training is a sample.
- ``eval_steps``: strictly increasing counts ≥ 1 ending at ``budget``.  When the training has
  consumed that many steps, the method's current deterministic policy is scored with
  :func:`~amal_tools.bench.evaluation.evaluate_policy` ``(task, act, run_seed=seed,
  episodes=eval_episodes)`` and recorded as an :class:`~amal_tools.bench.records.EvalPoint` at
  exactly that count.  Evaluation runs in its own environment and draws no training randomness;
  its wall time is excluded from ``train_seconds``.  A method that stops short of ``budget`` (CEM-RL
  and PBT may leave a small remainder unused, see their modules) records its remaining counts with
  its final policy and reports the steps actually consumed in ``extras["env_steps"]``.
- ``seed``: a non-negative integer.
- ``threads``: ``torch.set_num_threads`` during training (restored afterwards).
- Seeding: everything random is derived from ``seed``; the caller's global ``random``, NumPy and
  torch RNG states are saved and restored around Stable-Baselines3 runs (SB3 reseeds them).
- A method that cannot run the task raises :class:`NotApplicable` (SAC, TD3 and CEM-RL need a
  continuous ``Box`` action space); malformed arguments raise ``ValueError``.

The methods: :func:`train_sb3` / :func:`train_ppo` / :func:`train_sac` / :func:`train_td3`
(:mod:`.sb3`), :func:`train_cem_rl` (:mod:`.cem_rl`) and :func:`train_pbt` (:mod:`.pbt`).
:data:`METHODS` maps method names to training functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from amal_tools.bench.baselines._common import NotApplicable
from amal_tools.bench.baselines.cem_rl import train_cem_rl
from amal_tools.bench.baselines.pbt import train_pbt
from amal_tools.bench.baselines.sb3 import train_ppo, train_sac, train_sb3, train_td3
from amal_tools.bench.evaluation import TrainedPolicy

METHODS: Final[dict[str, Callable[..., TrainedPolicy]]] = {
    "ppo": train_ppo,
    "sac": train_sac,
    "td3": train_td3,
    "cem-rl": train_cem_rl,
    "pbt": train_pbt,
}
"""Method name → training function (all with the signature of the module docstring)."""

__all__ = [
    "METHODS",
    "NotApplicable",
    "train_cem_rl",
    "train_pbt",
    "train_ppo",
    "train_sac",
    "train_sb3",
    "train_td3",
]
