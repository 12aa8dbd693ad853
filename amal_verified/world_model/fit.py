"""How well a world model fits: its one-step errors on held-out real transitions against two naive predictors.

:func:`world_model_fit` takes a :class:`~amal_verified.world_model.learner.WorldModelLearner`, the primary
transitions it trained on and held-out transitions of the real environment, and reports, per dimension
group (next observation, reward):

- **the world model**: the mean squared error of the ensemble's mean prediction (the members' means
  averaged, as absolute next observations), and its Gaussian NLL (each member's mean NLL per held-out
  transition, averaged over the members, as :meth:`WorldModelLearner.prediction_nll` computes it);
- **"no change"**: ``s' = s``, reward = the training rows' mean reward;
- **"the best constant"**: ``s'`` = the training rows' mean next observation (per dimension), reward =
  their mean reward (the best constant in training, not chosen on the held-out set).

MSEs are means over transitions and dimensions (and per observation dimension), computed in float64.
Both naive predictors take the same reward, so their reward errors are equal.  The naive predictors
have no variance, so there is no NLL to set beside the model's; whether the model *beats* them is
decided on the MSEs (:attr:`FitReport.beats_naive`).

Held-out transitions must be transitions the world model never trained on.
:func:`~amal_verified.run.evaluate.evaluate_run` (``amal evaluate``) uses the transitions of its own fresh
evaluation episodes: the trained policy acting deterministically in a new real environment with reset seeds
independent of every training stream.  They are real transitions of the state distribution the policy
visits, and are never stored in any buffer, so no held-out split of the primary stream is needed and the
training run (its world-model updates, ledger and certificate) is unchanged by measuring it.  They measure
the model where the trained policy goes, which may be states the primary data barely cover (a policy
that has learnt to stand still, say): an error there is a failure to generalise, not necessarily to fit,
and the same function applied to the training rows themselves (``held_out`` = the training transitions)
says which.  The transitions
collected after the last world-model update would also be unseen, but there are at most
``wm_train_every`` of them, under the stochastic training policy, and none at all when a run ends on a
world-model round.

The naive predictors' statistics come from the *training* rows (what a model of those rows could know),
never from the held-out set: a world model that cannot beat them has learnt nothing about the dynamics
that the primary data's first moments do not already say.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, final

import torch
from torch import Tensor

from amal_verified.common.runtime_checks import checked
from amal_verified.isolation.buffers import PrimaryBuffer
from amal_verified.isolation.escapes import declassify
from amal_verified.world_model.learner import WorldModelLearner

__all__ = ["FitReport", "PredictorError", "world_model_fit"]

_CHUNK: Final = 1024
_HELD_OUT: Final = ("obs", "next_obs", "action", "reward")
_TRAINING: Final = ("next_obs", "reward")


@final
@dataclass(frozen=True)
class PredictorError:
    """One predictor's mean squared errors on the held-out transitions (float64, means over rows)."""

    next_obs_mse: float
    """Over rows and observation dimensions."""
    next_obs_mse_per_dim: tuple[float, ...]
    reward_mse: float

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "next_obs_mse": self.next_obs_mse,
            "next_obs_mse_per_dim": list(self.next_obs_mse_per_dim),
            "reward_mse": self.reward_mse,
        }


@final
@dataclass(frozen=True)
class FitReport:
    """What :func:`world_model_fit` measured (see the module docstring)."""

    transitions: int
    """Held-out transitions measured."""
    training_transitions: int
    """Training rows the naive predictors' statistics come from."""
    model: PredictorError
    model_nll: float
    """The members' mean Gaussian NLL per held-out transition, averaged over members (nats)."""
    no_change: PredictorError
    best_constant: PredictorError

    @property
    def next_obs_beats_naive(self) -> bool | None:
        """Whether the model's next-observation MSE is below both naive predictors' (``None`` when a naive
        predictor is exact, error 0: there is nothing left to predict)."""
        return _beats(self.model.next_obs_mse, self.no_change.next_obs_mse, self.best_constant.next_obs_mse)

    @property
    def reward_beats_naive(self) -> bool | None:
        """Whether the model's reward MSE is below the naive predictors' (``None`` when the training mean
        predicts every held-out reward exactly, e.g. a constant reward)."""
        return _beats(self.model.reward_mse, self.no_change.reward_mse, self.best_constant.reward_mse)

    @property
    def beats_naive(self) -> bool:
        """Whether the model beats both naive predictors on every group where they are not exact."""
        groups = (self.next_obs_beats_naive, self.reward_beats_naive)
        return all(g is not False for g in groups) and any(g is not None for g in groups)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: the fields and the three verdicts."""
        return {
            "transitions": self.transitions,
            "training_transitions": self.training_transitions,
            "model": {**self.model.to_json(), "nll": self.model_nll},
            "no_change": self.no_change.to_json(),
            "best_constant": self.best_constant.to_json(),
            "next_obs_beats_naive": self.next_obs_beats_naive,
            "reward_beats_naive": self.reward_beats_naive,
            "beats_naive": self.beats_naive,
        }


def _beats(model: float, *naive: float) -> bool | None:
    if min(naive) == 0.0:
        return None
    return model < min(naive)


@checked
def world_model_fit(
    learner: WorldModelLearner,
    training: PrimaryBuffer | Mapping[str, Tensor],
    held_out: Mapping[str, Tensor],
) -> FitReport:
    """The world model's one-step errors on ``held_out`` against the naive predictors (module docstring).

    ``training``: the primary transitions the model trained on, a :class:`PrimaryBuffer` (its stored rows)
    or a mapping with ``next_obs (N, obs_dim)`` and ``reward (N,)``.  ``held_out``: a mapping with ``obs``
    and ``next_obs`` ``(B, obs_dim)``, ``action`` as stored in a primary buffer (``(B,)`` int64 for
    discrete actions, ``(B, action_dim)`` floats otherwise) and ``reward (B,)``; transitions the model
    never trained on.  Changes nothing.  Raises a one-line ``ValueError`` naming the argument for a
    missing field, wrong shapes, no rows, or non-finite values.
    """
    spec = learner.spec
    rows = training.state_dict() if isinstance(training, PrimaryBuffer) else training
    train_next = _field(rows, "training", "next_obs", _TRAINING)
    train_reward = _field(rows, "training", "reward", _TRAINING)
    n = len(training) if isinstance(training, PrimaryBuffer) else _rows(train_reward)
    train_next, train_reward = train_next[:n], train_reward[:n]
    if n < 1 or tuple(train_next.shape) != (n, spec.obs_dim) or train_reward.dim() != 1:
        raise ValueError(
            f"training must hold N >= 1 rows: next_obs (N, {spec.obs_dim}) and reward (N,), got "
            f"{tuple(train_next.shape)} and {tuple(train_reward.shape)}"
        )
    obs, next_obs, action, reward = (_field(held_out, "held_out", key, _HELD_OUT) for key in _HELD_OUT)
    b = _rows(reward)
    action_shape = (b,) if spec.discrete else (b, spec.action_dim)
    if (
        b < 1
        or tuple(obs.shape) != (b, spec.obs_dim)
        or tuple(next_obs.shape) != (b, spec.obs_dim)
        or tuple(action.shape) != action_shape
        or reward.dim() != 1
    ):
        raise ValueError(
            f"held_out must hold B >= 1 transitions: obs and next_obs (B, {spec.obs_dim}), action "
            f"{'(B,)' if spec.discrete else f'(B, {spec.action_dim})'} and reward (B,), got obs "
            f"{tuple(obs.shape)}, action {tuple(action.shape)}, reward {tuple(reward.shape)}, next_obs "
            f"{tuple(next_obs.shape)}"
        )
    with (
        declassify(reason="the world model's fit is reported, never fed back into training"),
        torch.no_grad(),
    ):
        for name, value in (("training", train_next), ("training", train_reward)):
            if not bool(torch.isfinite(value).all()):
                raise ValueError(f"{name} contains NaN or infinite values")
        for value in (obs, next_obs, reward):
            if not bool(torch.isfinite(value.to(torch.float64)).all()):
                raise ValueError("held_out contains NaN or infinite values")
        mean_next = train_next.to(torch.float64).mean(dim=0)
        mean_reward = train_reward.to(torch.float64).mean()
        predicted_next, predicted_reward, nll_sum = [], [], 0.0
        for start in range(0, b, _CHUNK):
            part = slice(start, start + _CHUNK)
            pred = learner.predict(obs[part], action[part])
            nll = learner.prediction_nll(pred, next_obs[part], reward[part])
            nll_sum += float(nll.to(torch.float64).mean()) * int(reward[part].shape[0])
            predicted_next.append(pred.next_obs_mean.to(torch.float64).mean(dim=0).squeeze(1))
            predicted_reward.append(pred.reward_mean.to(torch.float64).mean(dim=0).squeeze(1))
        target_next, target_reward = next_obs.to(torch.float64), reward.to(torch.float64)
        model = _errors(torch.cat(predicted_next), torch.cat(predicted_reward), target_next, target_reward)
        no_change = _errors(obs.to(torch.float64), mean_reward.expand(b), target_next, target_reward)
        constant = _errors(mean_next.expand(b, -1), mean_reward.expand(b), target_next, target_reward)
        model_nll = nll_sum / b
    return FitReport(
        transitions=b,
        training_transitions=n,
        model=model,
        model_nll=model_nll,
        no_change=no_change,
        best_constant=constant,
    )


def _field(data: Mapping[str, Tensor], name: str, key: str, needs: tuple[str, ...]) -> Tensor:
    value = data.get(key)
    if not isinstance(value, Tensor):
        raise ValueError(f"{name} has no tensor {key!r}: it needs {', '.join(map(repr, needs))}")
    return value


def _rows(reward: Tensor) -> int:
    return int(reward.shape[0]) if reward.dim() == 1 else 0


def _errors(next_pred: Tensor, reward_pred: Tensor, next_obs: Tensor, reward: Tensor) -> PredictorError:
    per_dim = (next_pred - next_obs).square().mean(dim=0)
    return PredictorError(
        next_obs_mse=float(per_dim.mean()),
        next_obs_mse_per_dim=tuple(float(v) for v in per_dim),
        reward_mse=float((reward_pred - reward).square().mean()),
    )
