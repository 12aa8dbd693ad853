"""A training function in the shape the isolation audit checks: ``train(primary, aux) -> world model``.

Audit it (or your own function, same contract) with :mod:`amal_verified.audit`::

    amal audit examples/audit_target_example.py:train             # exit 0: passed
    amal audit examples/audit_target_example.py:train_leaking_rng # exit 1: interference, with the diff
    pytest properties/ --amal-target=my_package.training:train     # the Theorem 1 property on yours

The contract: ``train(primary, aux)`` trains from scratch and returns the world model (an
``nn.Module``; its parameters and buffers are compared) or a mapping of tensors.  The module
defines ``amal_example_inputs()`` returning one ``(primary, aux)`` pair; the audit generates
auxiliary variants of ``aux`` (extreme and non-finite values, other row counts, other numbers of
auxiliary agents) and requires the world model to come out bit for bit the same, with the global
random generators reset identically before every call.

Here ``primary`` is a dict of CartPole-like transitions (``obs (N, 4)``, ``action (N,)`` int64,
``next_obs (N, 4)``) and ``aux`` a list with one such dict (plus ``reward``) per auxiliary agent.
The world model (an MLP predicting ``next_obs − obs``, with a buffer holding the primary data's
observation scale) learns from primary data through a :class:`~amal_verified.GatedOptimizer`; a
value head learns from primary *and* auxiliary rows, as a policy may.  Every random draw comes from
a ``torch.Generator`` owned by the part that uses it.

Two deliberately leaky versions fail the audit (``properties/test_theorem1_user_target.py``):
:func:`train_leaking_batch` mixes raw auxiliary rows into the world model's batches (with the gate
and the tags removed, as a user who "just wants it to train" might), and :func:`train_leaking_rng` draws the
value head's shuffles and the world model's batches from the *global* torch generator, so the number
of auxiliary rows shifts which primary rows the world model sees — no data flows from aux to the
world model, and the gate cannot see it; the audit can.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import amal_verified as av

__all__ = ["amal_example_inputs", "train", "train_leaking_batch", "train_leaking_rng"]

OBS_DIM = 4
ACTIONS = 2
STEPS = 6
BATCH = 16


class WorldModel(nn.Module):
    """``next_obs − obs ≈ f((obs / obs_scale, one_hot(action)))``; ``obs_scale`` is a buffer."""

    def __init__(self, generator: torch.Generator) -> None:
        super().__init__()
        self.hidden = nn.Linear(OBS_DIM + ACTIONS, 16)
        self.out = nn.Linear(16, OBS_DIM)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
        self.obs_scale: torch.Tensor
        self.register_buffer("obs_scale", torch.ones(OBS_DIM))

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs / self.obs_scale, F.one_hot(action, ACTIONS).to(obs.dtype)], dim=-1)
        out: torch.Tensor = self.out(torch.tanh(self.hidden(x)))
        return out


def _transitions(rng: np.random.Generator, rows: int, gravity: float) -> dict[str, torch.Tensor]:
    obs = rng.normal(0.0, 0.5, (rows, OBS_DIM)).astype(np.float32)
    action = rng.integers(0, ACTIONS, rows)
    push = np.where(action == 1, 1.0, -1.0).astype(np.float32)
    next_obs = obs + 0.02 * np.stack([obs[:, 1], push, obs[:, 3], gravity * obs[:, 2] - push], axis=1)
    return {
        "obs": torch.from_numpy(obs),
        "action": torch.from_numpy(action.astype(np.int64)),
        "reward": torch.ones(rows),
        "next_obs": torch.from_numpy(next_obs.astype(np.float32)),
    }


def amal_example_inputs() -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    """``(primary, aux)``: 64 primary transitions and 32 from each of two perturbed auxiliary agents."""
    rng = np.random.default_rng(0)
    primary = _transitions(rng, 64, gravity=9.8)
    primary.pop("reward")
    return primary, [_transitions(rng, 32, gravity=9.8 * (1.5 + i)) for i in range(2)]


def _train(primary: dict[str, torch.Tensor], aux: list[dict[str, Any]], *, leak: str | None) -> nn.Module:
    init, batches, value_draws = (torch.Generator().manual_seed(s) for s in (1, 2, 3))
    p_obs = av.primary(primary["obs"], source="real-env")
    p_action = av.primary(primary["action"], source="real-env")
    p_target = av.primary(primary["next_obs"], source="real-env") - p_obs
    model = WorldModel(init)
    with torch.no_grad():
        model.obs_scale.copy_(p_obs.std(dim=0).clamp_min(1e-3))
    adam = torch.optim.Adam(model.parameters(), lr=1e-2)
    wm_opt: torch.optim.Optimizer = adam if leak == "batch" else av.GatedOptimizer(adam, names=model)

    # The value head (a policy's critic) may learn from every stream.
    a_obs = [av.aux(a["obs"], source=f"aux-{i}") for i, a in enumerate(aux)]
    a_reward = [av.aux(a["reward"], source=f"aux-{i}") for i, a in enumerate(aux)]
    value = nn.Linear(OBS_DIM, 1)
    value_opt = torch.optim.SGD(value.parameters(), lr=1e-3)
    v_obs = torch.cat([p_obs, *a_obs])
    v_target = torch.cat([torch.zeros(len(p_obs)), *a_reward])

    rows = len(p_obs)
    for _ in range(STEPS):
        if leak == "rng":  # the covert channel: global generator, draws depending on the aux count
            shuffle = torch.randperm(len(v_obs))
            idx = torch.randint(0, rows, (BATCH,))
        else:
            shuffle = torch.randperm(len(v_obs), generator=value_draws)
            idx = torch.randint(0, rows, (BATCH,), generator=batches)
        obs, action, target = p_obs[idx], p_action[idx], p_target[idx]
        if leak == "batch" and aux:  # the raw (untagged) rows: the amal lines were removed here too
            obs = torch.cat([obs, aux[0]["obs"][:4]])
            action = torch.cat([action, aux[0]["action"][:4]])
            target = torch.cat([target, aux[0]["next_obs"][:4] - aux[0]["obs"][:4]])
        wm_loss = F.mse_loss(model(obs, action), target)
        wm_opt.zero_grad()
        wm_loss.backward()
        wm_opt.step()

        pick = shuffle[:BATCH]
        value_loss = F.mse_loss(value(v_obs[pick]).squeeze(-1), v_target[pick])
        value_opt.zero_grad()
        value_loss.backward()
        value_opt.step()
    return model


def train(primary: dict[str, torch.Tensor], aux: list[dict[str, Any]]) -> nn.Module:
    """The gated trainer: the world model learns from ``primary`` alone (passes the audit)."""
    return _train(primary, aux, leak=None)


def train_leaking_batch(primary: dict[str, torch.Tensor], aux: list[dict[str, Any]]) -> nn.Module:
    """Leaky: four rows of the first auxiliary agent join every world-model batch; no gate."""
    return _train(primary, aux, leak="batch")


def train_leaking_rng(primary: dict[str, torch.Tensor], aux: list[dict[str, Any]]) -> nn.Module:
    """Leaky: shuffles and batches from the global torch generator (a covert channel)."""
    return _train(primary, aux, leak="rng")
