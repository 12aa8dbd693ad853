"""The paper's recurrent world model, in plain PyTorch (no amal_verified import).

This module is deliberately independent of ``amal_verified``: it imports only
``torch``.  The overhead benchmark (:mod:`amal_tools.bench.gate_overhead`)
times the plain side in a process where the library was never imported; its
worker (``_gate_worker.py``) is run by file path and imports this file as the
top-level module ``_plain_world_model``, so the package ``__init__`` never runs.

Architecture (the paper's, with the choices the paper leaves open stated here):

- **encoder**: MLP ``obs (17) → 256 → 256 → 128`` with ELU activations;
- **recurrence**: ``nn.GRU(input=128 + 6, hidden=256, batch_first=True)``; the
  action is concatenated to the *encoded observation* to form the GRU input
  (the encoder sees the observation only);
- **projection**: ``Linear(256 → 128)`` + ELU maps the GRU state to the
  128-dimensional latent the decoder expects;
- **decoder**: MLP ``128 → 256 → 256 → obs (17)`` predicting the next
  observation (a point prediction, not a Gaussian);
- **reward head**: ``Linear(128 → 1)`` on the same latent.

Loss: ``mse(next_obs_pred, next_obs) + mse(reward_pred, reward)``.

A training step (``train_step``) is: forward over the whole sequence, loss,
``backward()``, ``optimizer.step()``, ``optimizer.zero_grad()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

__all__ = [
    "ACTION_DIM",
    "BATCH",
    "GRU_HIDDEN",
    "LATENT",
    "LR",
    "OBS_DIM",
    "SEQ_LEN",
    "Batch",
    "PaperWorldModel",
    "StepOptimizer",
    "make_batches",
    "train_step",
    "world_model_loss",
]

OBS_DIM = 17
ACTION_DIM = 6
HIDDEN = 256
LATENT = 128
GRU_HIDDEN = 256
BATCH = 256
SEQ_LEN = 16
LR = 3e-4


class PaperWorldModel(nn.Module):
    """Encoder MLP → GRU(256) → projection → decoder MLP, plus a reward head."""

    def __init__(self, obs_dim: int = OBS_DIM, action_dim: int = ACTION_DIM) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(obs_dim, HIDDEN),
            nn.ELU(),
            nn.Linear(HIDDEN, HIDDEN),
            nn.ELU(),
            nn.Linear(HIDDEN, LATENT),
            nn.ELU(),
        )
        self.gru = nn.GRU(LATENT + action_dim, GRU_HIDDEN, batch_first=True)
        self.project = nn.Sequential(nn.Linear(GRU_HIDDEN, LATENT), nn.ELU())
        self.decoder = nn.Sequential(
            nn.Linear(LATENT, HIDDEN),
            nn.ELU(),
            nn.Linear(HIDDEN, HIDDEN),
            nn.ELU(),
            nn.Linear(HIDDEN, obs_dim),
        )
        self.reward_head = nn.Linear(LATENT, 1)

    def forward(self, obs: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        """Predict next observations and rewards.

        ``obs``: ``(batch, seq, obs_dim)``; ``action``: ``(batch, seq, action_dim)``.
        Returns ``(next_obs_pred (batch, seq, obs_dim), reward_pred (batch, seq, 1))``.
        """
        z = self.encoder(obs)
        h, _ = self.gru(torch.cat([z, action], dim=-1))
        latent = self.project(h)
        return self.decoder(latent), self.reward_head(latent)


@dataclass(frozen=True)
class Batch:
    """One training batch of sequences: ``(batch, seq, ·)`` tensors."""

    obs: Tensor
    action: Tensor
    next_obs: Tensor
    reward: Tensor

    def map(self, fn: _TensorFn) -> Batch:
        """Apply ``fn`` to every tensor (e.g. to tag it as primary data)."""
        return Batch(fn(self.obs), fn(self.action), fn(self.next_obs), fn(self.reward))


class _TensorFn(Protocol):
    def __call__(self, x: Tensor, /) -> Tensor: ...


class StepOptimizer(Protocol):
    """What a training step needs from an optimizer (``torch.optim.Adam`` or a wrapper)."""

    def step(self) -> object: ...

    def zero_grad(self) -> None: ...


def make_batches(
    n: int,
    *,
    seed: int,
    batch: int = BATCH,
    seq_len: int = SEQ_LEN,
    obs_dim: int = OBS_DIM,
    action_dim: int = ACTION_DIM,
) -> list[Batch]:
    """``n`` synthetic batches drawn from a seeded ``torch.Generator`` (never the global RNG).

    The data follow a fixed random smooth dynamics so the loss has something to
    learn; only their shapes and determinism matter for the benchmark.
    """
    gen = torch.Generator().manual_seed(seed)
    a_obs = torch.randn(obs_dim, obs_dim, generator=gen) / obs_dim**0.5
    a_act = torch.randn(action_dim, obs_dim, generator=gen) / action_dim**0.5
    w_rew = torch.randn(obs_dim, 1, generator=gen) / obs_dim**0.5
    out: list[Batch] = []
    for _ in range(n):
        obs = torch.randn(batch, seq_len, obs_dim, generator=gen)
        action = torch.rand(batch, seq_len, action_dim, generator=gen) * 2 - 1
        next_obs = obs + 0.1 * torch.tanh(obs @ a_obs + action @ a_act)
        reward = torch.tanh(next_obs @ w_rew)
        out.append(Batch(obs, action, next_obs, reward))
    return out


def world_model_loss(model: PaperWorldModel, batch: Batch) -> Tensor:
    """Mean-squared error on next observation plus mean-squared error on reward."""
    pred_obs, pred_rew = model(batch.obs, batch.action)
    return nn.functional.mse_loss(pred_obs, batch.next_obs) + nn.functional.mse_loss(pred_rew, batch.reward)


def train_step(model: PaperWorldModel, optimizer: StepOptimizer, batch: Batch) -> Tensor:
    """One world-model step: forward, loss, ``backward()``, ``step()``, ``zero_grad()``.

    Returns the (detached) loss tensor; it is not converted to a Python number
    so that nothing leaves the tracked world during the timed region.
    """
    loss = world_model_loss(model, batch)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss.detach()
