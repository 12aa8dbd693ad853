"""Imagined transitions for the policy (MBPO-style), with the information-gain bonus of Eq. 6.

After every world-model round the trainer draws start states from the real buffers, lets the primary
policy act, and asks the world model what happens.  Each imagined transition gets

    reward = r̂ + λ · IG(s, a)

where ``r̂`` is the reward sampled from one uniformly chosen ensemble member (with its next state),
and ``IG(s, a)`` is the expected information the outcome ``(s', r)`` of ``(s, a)`` carries about the
world-model parameters, estimated over the ensemble with :func:`~amal_verified.world_model.information_gain.
gaussian_ensemble_eig` — M outer samples in all (``M / K`` per member, stratified), the K members as
the inner samples (the fixed-ensemble regime: its bias and variance floor are discussed in
:mod:`amal_verified.world_model.information_gain`).  The bonus is attached where the world model is evaluated
anyway, as in Plan2Explore (Sekar et al. 2020).  Rollouts continue from non-terminal imagined states
for ``length`` steps; termination uses the task's known rule (MBPO's static termination functions).

Real primary transitions carry the same bonus: IG(s, a) of each one is computed once, at the first
world-model round after it was collected (with the world model of that round), by
:func:`information_gain`; auxiliary transitions, collected under other dynamics, carry only their
environment reward.

The policy never trains the world model: these transitions live in an :class:`ImaginedBuffer` that
only the policy reads.  Querying the world model (no gradient) on auxiliary start states is allowed;
its labels say so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, final

import torch
from torch import Tensor

from amal_verified.world_model.ensemble import WorldModelOutput
from amal_verified.world_model.information_gain import gaussian_ensemble_eig
from amal_verified.world_model.learner import WorldModelLearner

__all__ = ["ImaginedBatch", "ImaginedBuffer", "imagine"]

_FIELDS: Final = ("obs", "action", "reward", "next_obs", "terminated")
_EIG_CHUNK: Final = 256


@final
@dataclass(frozen=True, slots=True)
class ImaginedBatch:
    """Imagined transitions; ``info_gain`` is the bonus before weighting (nats, per transition)."""

    obs: Tensor
    action: Tensor
    reward: Tensor
    next_obs: Tensor
    terminated: Tensor
    info_gain: Tensor


@final
class ImaginedBuffer:
    """A ring buffer of imagined transitions for the policy (labels follow the written data)."""

    def __init__(self, capacity: int, obs_dim: int, action_shape: tuple[int, ...], action_dtype: torch.dtype):
        if capacity < 1:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity: Final = capacity
        self._data: Final = {
            "obs": torch.zeros((capacity, obs_dim)),
            "action": torch.zeros((capacity, *action_shape), dtype=action_dtype),
            "reward": torch.zeros((capacity,)),
            "next_obs": torch.zeros((capacity, obs_dim)),
            "terminated": torch.zeros((capacity,), dtype=torch.bool),
        }
        self._pos = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, batch: ImaginedBatch) -> None:
        """Append a batch (overwriting the oldest rows when full)."""
        n = batch.obs.shape[0]
        if n == 0:
            return
        if n > self.capacity:
            raise ValueError(f"batch of {n} rows exceeds the imagined buffer's capacity {self.capacity}")
        rows = (torch.arange(n) + self._pos) % self.capacity
        for name in _FIELDS:
            self._data[name].index_copy_(0, rows, getattr(batch, name).to(self._data[name].dtype))
        self._pos = (self._pos + n) % self.capacity
        self._size = min(self._size + n, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, Tensor]:
        """``batch_size`` rows uniformly with replacement, drawn with ``generator``."""
        if self._size == 0:
            raise ValueError("the imagined buffer is empty")
        idx = torch.randint(0, self._size, (batch_size,), generator=generator)
        return {name: t.index_select(0, idx) for name, t in self._data.items()}

    def state_dict(self) -> dict[str, Any]:
        """Stored rows, position and size (copies)."""
        return {"pos": self._pos, "size": self._size, **{k: v.clone() for k, v in self._data.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        for name in _FIELDS:
            if state[name].shape != self._data[name].shape:
                raise ValueError(f"imagined buffer state: field {name!r} has the wrong shape")
        for name in _FIELDS:
            self._data[name].copy_(state[name])
        self._pos, self._size = int(state["pos"]), int(state["size"])


@torch.no_grad()
def information_gain(
    learner: WorldModelLearner,
    obs: Tensor,
    action: Tensor,
    *,
    outer_samples: int,
    estimator: Literal["pce", "nmc"],
    generator: torch.Generator,
) -> tuple[WorldModelOutput, Tensor]:
    """The ensemble's predictions for ``(obs, action)`` and IG(s, a) per row, in nats, shape ``(B,)``.

    IG is the information the outcome ``(s', r)`` carries about the world model, estimated over the
    K members with ``outer_samples`` (M) draws in all, ``M / K`` per member; random draws use
    ``generator`` only.
    """
    per_member = max(1, outer_samples // learner.spec.members)
    pred = learner.predict(obs, action)
    means = torch.cat([pred.next_obs_mean, pred.reward_mean.unsqueeze(-1)], dim=-1).squeeze(2)
    stds = torch.cat([pred.next_obs_log_std, pred.reward_log_std.unsqueeze(-1)], dim=-1).squeeze(2).exp()
    gains = [
        gaussian_ensemble_eig(
            means[:, i : i + _EIG_CHUNK],
            stds[:, i : i + _EIG_CHUNK],
            num_samples=per_member,
            generator=generator,
            estimator=estimator,
        )
        for i in range(0, means.shape[1], _EIG_CHUNK)
    ]
    return pred, torch.cat(gains)


@torch.no_grad()
def imagine(
    learner: WorldModelLearner,
    act: Callable[[Tensor], Tensor],
    starts: Tensor,
    *,
    length: int,
    info_weight: float,
    outer_samples: int,
    estimator: Literal["pce", "nmc"],
    termination: Callable[[Tensor, Tensor, Tensor], Tensor],
    generator: torch.Generator,
) -> ImaginedBatch:
    """Roll the policy ``act`` out in the world model from ``starts (B, obs_dim)`` for ``length`` steps.

    Every random draw (member choice, Gaussian noise, the bonus's Monte Carlo samples) uses
    ``generator``; ``act`` must use its own.  Returns all imagined transitions, rewards including
    ``info_weight · IG``.
    """
    out_parts: list[ImaginedBatch] = []
    obs = starts
    for _ in range(length):
        if obs.shape[0] == 0:
            break
        action = act(obs)
        pred, gain = information_gain(
            learner, obs, action, outer_samples=outer_samples, estimator=estimator, generator=generator
        )
        sample = learner.model.sample(pred, generator)
        next_obs, reward = sample.next_obs.squeeze(1), sample.reward.squeeze(1)
        terminated = termination(obs, action, next_obs).to(torch.bool)
        out_parts.append(ImaginedBatch(obs, action, reward + info_weight * gain, next_obs, terminated, gain))
        obs = next_obs[~terminated]
    if not out_parts:
        raise ValueError("imagine needs at least one start state and length >= 1")
    return ImaginedBatch(*(torch.cat([getattr(p, f) for p in out_parts]) for f in (*_FIELDS, "info_gain")))
