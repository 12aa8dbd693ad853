"""A linear-Gaussian world model: the strongly convex configuration of the world-model learner.

``LinearGaussianWorldModel`` predicts the next observation and the reward (Eq. 1's ``p(s', r | s, a)``)
as one affine map of ``x = [s, a, 1]``::

    [s', r] ~ N(W x, I)            W: (obs_dim + 1, obs_dim + action_dim + 1), the only parameter

with a fixed unit variance, so its negative log-likelihood is a least-squares loss.  Over a batch of
``n`` transitions with design matrix ``X`` (rows ``x_i``) and targets ``Y`` (rows ``[s'_i, r_i]``)::

    nll(W) = (1 / 2n) ‖Y − X Wᵀ‖²_F + ((obs_dim + 1) / 2) · log 2π

Its Hessian with respect to ``vec(W)`` (row by row) is ``I_{obs_dim+1} ⊗ (XᵀX / n)``: with the learner's
L2 term ``(weight_decay / 2) ‖W‖²_F`` the objective is μ-strongly convex and L-smooth with
``μ = λ_min(XᵀX / n) + weight_decay`` and ``L = λ_max(XᵀX / n) + weight_decay`` (the bias column is
decayed too, so ``weight_decay > 0`` alone makes it strongly convex).  This is the setting in which the
paper's Theorem 2 (as corrected) can apply to the trainer's world-model update.

Contracts:

- **Precision.**  The parameter and every computation are float64 (inputs of any floating dtype are
  converted; float32 buffer data convert exactly).  The model has at most a few dozen parameters, so
  this costs nothing, and it keeps rounding (≈ 1e-16 relative per step) far below the convergence
  bounds that are checked against it.
- **Absolute prediction.**  ``next_obs_mean`` is ``W x`` itself (no residual ``s + Δ``), so the L2 term
  shrinks the map towards zero.
- **Ensemble-shaped outputs.**  ``forward`` returns a
  :class:`~amal_verified.world_model.ensemble.WorldModelOutput`
  with one member and one time step (``(1, B, 1, obs_dim)`` …, log-stds 0, an empty hidden state), so
  code that reads predictions works unchanged.  A single model has no member disagreement: the
  ensemble information gain of its predictions is 0.  :meth:`sample` refuses (imagined rollouts are
  driven by the ensemble's members).
- **No global RNG.**  Initialisation draws from the explicit ``generator`` only (uniform in
  ``±1/sqrt(obs_dim + action_dim + 1)``, like ``nn.Linear``).
"""

from __future__ import annotations

import math
from typing import Final

import torch
from torch import Tensor, nn

from amal_verified.common.runtime_checks import checked
from amal_verified.isolation.escapes import declassify
from amal_verified.world_model.ensemble import WorldModelOutput, WorldModelSample

__all__ = ["LinearGaussianWorldModel"]

DTYPE: Final = torch.float64
_HALF_LOG_2PI: Final = 0.5 * math.log(2.0 * math.pi)


def _as_float64(name: str, x: Tensor, shape: tuple[int, ...]) -> Tensor:
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor (encode discrete actions one-hot), got {x.dtype}")
    if tuple(x.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(x.shape)}")
    return x.to(DTYPE)


def _check_finite(x: Tensor, name: str) -> None:
    # Refusing NaN/Inf input reads the values: a recorded escape (only the unsafe-mix ablation
    # feeds auxiliary rows here).
    with declassify(reason="input validation: NaN or infinite rows are refused before a fit"):
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} contains NaN or infinite values")


@checked
class LinearGaussianWorldModel(nn.Module):
    """``[s', r] ~ N(W [s, a, 1], I)`` in float64; see the module docstring for the loss and its curvature.

    Call ``model(obs, action)`` with ``obs (B, obs_dim)`` and ``action (B, action_dim)`` (floating;
    discrete actions one-hot).  ``weight`` has shape ``(obs_dim + 1, obs_dim + action_dim + 1)``: rows
    ``0..obs_dim-1`` predict the next observation, the last row the reward; the last column is the bias.
    """

    members: Final = 1

    def __init__(self, obs_dim: int, action_dim: int, *, generator: torch.Generator) -> None:
        super().__init__()
        if obs_dim < 1 or action_dim < 1:
            raise ValueError(f"obs_dim and action_dim must be positive, got {obs_dim} and {action_dim}")
        self.obs_dim = obs_dim
        self.action_dim = action_dim
        inputs = obs_dim + action_dim + 1
        bound = 1.0 / math.sqrt(inputs)
        init = torch.empty((obs_dim + 1, inputs), dtype=DTYPE).uniform_(-bound, bound, generator=generator)
        self.weight = nn.Parameter(init)

    def design(self, obs: Tensor, action: Tensor) -> Tensor:
        """The design matrix ``X = [obs, action, 1]``, shape ``(B, obs_dim + action_dim + 1)``, float64."""
        if obs.dim() != 2 or obs.shape[0] < 1:
            raise ValueError(f"obs must have shape (B, {self.obs_dim}) with B >= 1, got {tuple(obs.shape)}")
        b = obs.shape[0]
        x_obs = _as_float64("obs", obs, (b, self.obs_dim))
        x_act = _as_float64("action", action, (b, self.action_dim))
        _check_finite(x_obs, "obs")
        _check_finite(x_act, "action")
        return torch.cat([x_obs, x_act, torch.ones((b, 1), dtype=DTYPE)], dim=1)

    def forward(self, obs: Tensor, action: Tensor) -> WorldModelOutput:
        """Predictions for ``(obs, action)`` as a one-member, one-step ``WorldModelOutput`` (float64)."""
        x = self.design(obs, action)
        mean = (x @ self.weight.T).reshape(1, x.shape[0], 1, self.obs_dim + 1)
        next_obs, reward = mean.split([self.obs_dim, 1], dim=-1)
        return WorldModelOutput(
            next_obs_mean=next_obs,
            next_obs_log_std=torch.zeros_like(next_obs),
            reward_mean=reward.squeeze(-1),
            reward_log_std=torch.zeros_like(reward.squeeze(-1)),
            final_hidden=torch.zeros((1, x.shape[0], 0), dtype=DTYPE),
        )

    def nll(self, output: WorldModelOutput, next_obs: Tensor, reward: Tensor) -> Tensor:
        """Mean Gaussian NLL (unit variance) of ``next_obs (B, obs_dim)`` and ``reward (B,)``: shape ``(1,)``.

        ``= (1 / 2B) Σ_i ‖[s'_i, r_i] − W x_i‖² + ((obs_dim + 1) / 2) log 2π``.
        """
        b = output.next_obs_mean.shape[1]
        target = torch.cat(
            [
                _as_float64("next_obs", next_obs, (b, self.obs_dim)),
                _as_float64("reward", reward, (b,)).unsqueeze(-1),
            ],
            dim=1,
        )
        _check_finite(target, "next_obs and reward")
        mean = torch.cat([output.next_obs_mean, output.reward_mean.unsqueeze(-1)], dim=-1).reshape(b, -1)
        per_row = 0.5 * (target - mean).square().sum(dim=1)
        return (per_row.mean() + (self.obs_dim + 1) * _HALF_LOG_2PI).reshape(1)

    def sample(self, output: WorldModelOutput, generator: torch.Generator) -> WorldModelSample:
        """Refused: imagined rollouts (and their information-gain bonus) need an ensemble world model."""
        raise ValueError(
            "the linear-gaussian world model is a single model with no member disagreement: imagined "
            "rollouts and their information-gain bonus need model='ensemble'"
        )
