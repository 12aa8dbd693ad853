"""Shared pieces of the leak gallery: example inputs, a tiny world model, and the ``Amal`` switch.

Every gallery script writes its trainer once, as ``run(primary, aux, amal)``, and runs it two ways:

- ``Amal(enabled=True)``: data tagged with ``av.primary``/``av.aux`` and the world-model optimizer
  wrapped in ``av.GatedOptimizer``, as a user of amal_verified writes it (the dynamic layer);
- ``Amal(enabled=False)``: every amal_verified call is the identity, i.e. the same code in a codebase
  without tags (what the differential audit runs; it needs no tags).

The inputs follow the audit's contract (``examples/audit_target_example.py``): ``primary`` is a dict of
transitions, ``aux`` a list with one such dict per auxiliary agent.  They are tiny, so one training run
takes a few milliseconds.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import amal_verified as av

__all__ = [
    "ACTIONS",
    "BATCH",
    "HIDDEN",
    "LR",
    "OBS_DIM",
    "STEPS",
    "Amal",
    "AuxInput",
    "AuxTransitions",
    "Leak",
    "PrimaryInput",
    "Streams",
    "Transitions",
    "ValueHead",
    "WorldModel",
    "amal_example_inputs",
    "batch_indices",
    "entry_points",
    "model_step",
    "pooled_step",
    "prediction_errors",
    "tag_aux",
    "tag_primary",
    "value_step",
    "wm_loss",
    "wm_step",
]

OBS_DIM = 4
ACTIONS = 2
HIDDEN = 8
ROWS = 24
AUX_AGENTS = 2
STEPS = 4
BATCH = 8
LR = 1e-2

PrimaryInput = Mapping[str, torch.Tensor]
AuxInput = Sequence[Mapping[str, torch.Tensor]]
Layer = Literal["static", "dynamic", "differential"]


@dataclass(frozen=True)
class Leak:
    """A gallery entry: its title and the cheapest layer that catches it (``None`` for the control)."""

    title: str
    layer: Layer | None


@dataclass(frozen=True)
class Amal:
    """amal_verified on (``enabled=True``) or every call an identity (``enabled=False``)."""

    enabled: bool = True

    def primary(self, x: torch.Tensor, source: str = "real-env") -> av.PrimaryData:
        """``av.primary(x, source=...)``, or ``x`` itself when disabled."""
        return av.primary(x, source=source) if self.enabled else cast(av.PrimaryData, x)

    def aux(self, x: torch.Tensor, source: str) -> av.AuxData:
        """``av.aux(x, source=...)``, or ``x`` itself when disabled."""
        return av.aux(x, source=source) if self.enabled else cast(av.AuxData, x)

    def gate(self, optimizer: torch.optim.Optimizer, model: nn.Module) -> torch.optim.Optimizer:
        """``av.GatedOptimizer(optimizer)`` (parameters named after ``model``), or ``optimizer`` itself."""
        return av.GatedOptimizer(optimizer, names=model) if self.enabled else optimizer


class Transitions(NamedTuple):
    """Primary transitions: the only data a world-model update takes (a boundary ``mypy --strict`` checks)."""

    obs: av.PrimaryData
    action: av.PrimaryData
    reward: av.PrimaryData
    next_obs: av.PrimaryData


class AuxTransitions(NamedTuple):
    """One auxiliary agent's transitions."""

    obs: av.AuxData
    action: av.AuxData
    reward: av.AuxData
    next_obs: av.AuxData


def _transitions(rng: np.random.Generator, rows: int, gravity: float) -> dict[str, torch.Tensor]:
    obs = rng.normal(0.0, 0.5, (rows, OBS_DIM)).astype(np.float32)
    action = rng.integers(0, ACTIONS, rows)
    push = np.where(action == 1, 1.0, -1.0).astype(np.float32)
    next_obs = obs + 0.02 * np.stack([obs[:, 1], push, obs[:, 3], gravity * obs[:, 2] - push], axis=1)
    reward = 1.0 - np.abs(next_obs[:, 2])
    return {
        "obs": torch.from_numpy(obs),
        "action": torch.from_numpy(action.astype(np.int64)),
        "reward": torch.from_numpy(reward.astype(np.float32)),
        "next_obs": torch.from_numpy(next_obs.astype(np.float32)),
    }


def amal_example_inputs() -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    """``(primary, aux)``: 24 CartPole-like primary transitions and 24 from each of two auxiliary agents
    with perturbed gravity.  Fields: ``obs (N, 4)``, ``action (N,)`` int64, ``reward (N,)``, ``next_obs``.
    """
    rng = np.random.default_rng(0)
    primary = _transitions(rng, ROWS, gravity=9.8)
    return primary, [_transitions(rng, ROWS, gravity=9.8 * (1.5 + i)) for i in range(AUX_AGENTS)]


def tag_primary(amal: Amal, primary: PrimaryInput) -> Transitions:
    """The primary transitions, tagged ``primary:real-env``."""
    return Transitions(*(amal.primary(primary[field]) for field in Transitions._fields))


def tag_aux(amal: Amal, aux: AuxInput) -> list[AuxTransitions]:
    """Each auxiliary agent's transitions, tagged ``aux:aux-<i>``."""
    return [
        AuxTransitions(*(amal.aux(agent[field], source=f"aux-{i}") for field in AuxTransitions._fields))
        for i, agent in enumerate(aux)
    ]


class Streams:
    """One seeded ``torch.Generator`` per consumer: model initialisation, world-model batches, the policy."""

    def __init__(self) -> None:
        self.init, self.batches, self.policy = (torch.Generator().manual_seed(s) for s in (1, 2, 3))


def _initialise(module: nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.3)


class WorldModel(nn.Module):
    """Predicts ``(next_obs − obs, reward)`` from ``(obs, action)``: ``head(encoder(obs, one_hot(action)))``.

    ``batch_norm=True`` puts a ``BatchNorm1d`` in the encoder.
    """

    def __init__(self, generator: torch.Generator, *, batch_norm: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(OBS_DIM + ACTIONS, HIDDEN)]
        if batch_norm:
            layers.append(nn.BatchNorm1d(HIDDEN))
        self.encoder = nn.Sequential(*layers, nn.Tanh())
        self.head = nn.Linear(HIDDEN, OBS_DIM + 1)
        _initialise(self, generator)

    def inputs(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The encoder's input: ``obs`` and the one-hot action."""
        return torch.cat([obs, F.one_hot(action, ACTIONS).to(obs.dtype)], dim=-1)

    def features(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.encoder(self.inputs(obs, action))
        return out

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.features(obs, action))
        return out


class ValueHead(nn.Module):
    """A policy's critic: ``reward ≈ v(obs)``.  It may learn from every data source."""

    def __init__(self, generator: torch.Generator) -> None:
        super().__init__()
        self.linear = nn.Linear(OBS_DIM, 1)
        _initialise(self, generator)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(obs).squeeze(-1)
        return out


def batch_indices(generator: torch.Generator, rows: int) -> torch.Tensor:
    """``BATCH`` row indices in ``[0, rows)``, drawn from ``generator``."""
    return torch.randint(0, rows, (BATCH,), generator=generator)


def prediction_errors(
    model: nn.Module, rows: Transitions | AuxTransitions, idx: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-row squared error of the ``(next_obs − obs, reward)`` prediction on ``rows`` (or rows ``idx``)."""
    obs, action, reward, next_obs = (field if idx is None else field[idx] for field in rows)
    target = torch.cat([next_obs - obs, reward.unsqueeze(-1)], dim=-1)
    errors: torch.Tensor = (model(obs, action) - target).pow(2).mean(dim=-1)
    return errors


def wm_loss(model: nn.Module, data: Transitions, idx: torch.Tensor) -> torch.Tensor:
    """Mean squared prediction error on the primary rows ``idx``."""
    return prediction_errors(model, data, idx).mean()


def wm_step(model: nn.Module, optimizer: torch.optim.Optimizer, data: Transitions, idx: torch.Tensor) -> None:
    """One world-model update on the primary rows ``idx``."""
    optimizer.zero_grad()
    wm_loss(model, data, idx).backward()
    optimizer.step()


def model_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    rows: Transitions | AuxTransitions,
    idx: torch.Tensor,
) -> None:
    """One update of a model that is *not* the world model (it may learn from any source) on rows ``idx``."""
    optimizer.zero_grad()
    prediction_errors(model, rows, idx).mean().backward()
    optimizer.step()


def pooled_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    sources: Sequence[Transitions | AuxTransitions],
    generator: torch.Generator,
) -> None:
    """One update of a *pooled* model, one that learns from every source: a batch of each, in turn."""
    for rows in sources:
        model_step(model, optimizer, rows, batch_indices(generator, len(rows.obs)))


def value_step(
    value: ValueHead,
    optimizer: torch.optim.Optimizer,
    obs: torch.Tensor,
    reward: torch.Tensor,
    idx: torch.Tensor,
) -> None:
    """One critic update on the rows ``idx`` of ``(obs, reward)``."""
    optimizer.zero_grad()
    F.mse_loss(value(obs[idx]), reward[idx]).backward()
    optimizer.step()


def entry_points(
    run: Callable[[PrimaryInput, AuxInput, Amal], nn.Module], module: str
) -> tuple[
    Callable[[PrimaryInput, AuxInput], nn.Module],
    Callable[[PrimaryInput, AuxInput], nn.Module],
    Callable[..., int],
]:
    """A script's three entry points, from its ``run``:

    - ``train(primary, aux)``: instrumented (tagged data, gated world-model optimizer), as a user of
      amal_verified writes it;
    - ``train_untagged(primary, aux)``: the same code without amal_verified, what the differential audit runs;
    - ``main(argv=None)``: run the designated layer (``--layer`` picks another) and print what it reports;
      0 when the outcome is the expected one (see ``_layers.demonstrate``).
    """

    def train(primary: PrimaryInput, aux: AuxInput) -> nn.Module:
        return run(primary, aux, Amal(enabled=True))

    def train_untagged(primary: PrimaryInput, aux: AuxInput) -> nn.Module:
        return run(primary, aux, Amal(enabled=False))

    def main(argv: Sequence[str] | None = None) -> int:
        from _layers import demonstrate

        return demonstrate(sys.modules[module], argv)

    return train, train_untagged, main
