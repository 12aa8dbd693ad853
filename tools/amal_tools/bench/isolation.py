"""Isolation and reality-gap metrics of a finished training run (``amal bench``; paper Theorem 1, §1).

Theorem 1 says the world model is a function of the primary data alone.  "With and without
auxiliary agents" must therefore hold the primary data fixed — comparing against a run without
auxiliary agents would also change the policy, hence the primary data, and measure that instead of
the auxiliary agents' influence.  For one complete run (AMAL or the ``--unsafe-mix`` ablation):

- **with aux** (:func:`final_learner`): the run's own final world model, loaded from
  ``checkpoint.pt``;
- **without aux** (:func:`primary_only_learner`): the world model retrained by replaying the run's
  world-model update schedule on the run's recorded primary stream (``data/``) alone, gated, with the
  run's own seeds — :class:`~amal_verified.run.primary_replay.PrimaryReplay`, the replay ``amal certify``
  checks: the same ``RunStreams(config.seed)``, the same ``WorldModelLearner(spec, streams)``, the
  same primary-buffer seed, update ``u`` run once the buffer holds
  :func:`~amal_verified.run.config.primary_count_at_update` transitions, for as many updates as the
  run made (``run.json``'s ``world_model_updates``).  For an AMAL run this is the run's model bit
  for bit; for the ablation it is the model the ablation would have had without auxiliary data.

:func:`isolation_metrics` compares the two:

- ``param_l2``: the L2 norm of the difference of all parameters, flattened in the world model's
  ``named_parameters()`` order (computed in float64); ``param_max_abs``: the largest ``|Δ|``;
- ``identical``: the two ``state_dict``\\ s are bitwise equal (their ledger ``state_digest``\\ s,
  also reported, are equal);
- ``kl_mean`` / ``kl_max``: on a fixed held-out set of *real* transitions, the KL divergence
  ``KL(P_without ‖ P_with)`` of the predictive distributions of ``(next obs, reward)``, averaged /
  maximised over transitions.  The ensemble's predictive is a mixture; each model is summarised per
  transition by its moment-matched diagonal Gaussian (float64): mean ``μ = mean_k μ_k``, variance
  ``σ² = mean_k σ_k² + mean_k (μ_k − μ)²`` (``σ_k = exp(log_std_k)``), per dimension of
  ``(next obs, reward)``.  Per dimension, with ``r = σ_p² / σ_q²`` and ``t = r − 1``::

      KL = ½ [ (t − log1p(t)) + (μ_p − μ_q)² / σ_q² ]

  summed over dimensions.  Identical models give identical moments, hence ``t = 0`` and ``μ_p − μ_q
  = 0`` and a KL of exactly ``0.0``.  ``t − log1p(t)`` is mathematically ``≥ 0``; it is clamped at
  0, which can only remove a rounding error (``|t| ≲ 1e-16``, where the term is ``< 1e-32``),
  never a real difference.

:func:`prediction_error` is the world model's one-step prediction error on the real environment,
as in :func:`amal_verified.run.evaluate.evaluate_run`: ``next_obs_mse`` and ``reward_mse`` of the
ensemble-mean prediction (mean over transitions and dimensions), and ``nll``, the Gaussian negative
log-likelihood of ``(next obs, reward)`` per transition, averaged over transitions and then over
members (``model.nll(...).mean()``).  :func:`measure_run` reports it for both models: for AMAL they
are identical by construction; for the ablation the difference is the reality gap its auxiliary
data caused (§1).

**Fit on the run's own primary data** (``measure_run``'s ``wm_primary_fit``): the same errors of both
models on :data:`PRIMARY_FIT_TRANSITIONS` transitions of the run's recorded primary stream, evenly
spaced over it (index ``i · count // m``, all of them if fewer), with the naive predictors'
errors on those transitions (:mod:`amal_tools.bench.naive_predictors`).  These are training data,
drawn by the run's own policy: a model above the best constant here has not fitted its data, while a
model below it here and above it on the held-out random-action transitions does not generalise to
those states.

**Held-out real transitions** (:func:`real_transitions`): ``count`` consecutive transitions of the
task's *real* environment (:func:`amal_verified.envs.make_env`, never an auxiliary environment),
under actions drawn uniformly from the action space (discrete: ``integers(n)``; box: ``uniform(low,
high)`` per dimension, float32) by ``RunStreams(seed).numpy_generator("bench/isolation/actions")``;
each episode (the first, and the next whenever one terminates or is truncated) is reset with
``seed=integers(2**31)`` drawn from ``RunStreams(seed).numpy_generator("bench/isolation/episodes")``.
The set is a function of ``(env_id, seed, count)``, so AMAL and the ablation are scored on identical
data; pick ``seed`` apart from the training seeds (the stream names differ from every training
stream's anyway).

Errors: an incomplete run, a missing or corrupt ``config.json``, ``run.json``, ``checkpoint.pt`` or
primary-data chunk, and a checkpoint that does not fit the configuration raise ``ValueError`` naming
the file; non-finite parameters or predictions raise ``ValueError`` saying so.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, final

import torch
from torch import Tensor

from amal_tools.bench.held_out import ACTION_STREAM, EPISODE_STREAM, real_transitions
from amal_tools.bench.naive_predictors import measure_naive_errors
from amal_verified.common.rng_streams import RunStreams
from amal_verified.common.runtime_checks import checked
from amal_verified.isolation.escapes import declassify
from amal_verified.record.checkpoint import CheckpointError, load_checkpoint
from amal_verified.record.ledger import LEDGER_FILENAME, verify
from amal_verified.record.primary_log import PrimaryStream, load_primary_stream
from amal_verified.run.config import (
    CHECKPOINT_FILENAME,
    CONFIG_FILENAME,
    DATA_DIRNAME,
    RUN_FILENAME,
    TrainConfig,
    read_json,
)
from amal_verified.run.primary_replay import PrimaryReplay
from amal_verified.run.run_dir import sealed_checkpoint
from amal_verified.world_model.ensemble import WorldModelOutput
from amal_verified.world_model.learner import WorldModelLearner, WorldModelSpec

__all__ = [
    "ACTION_STREAM",
    "EPISODE_STREAM",
    "PRIMARY_FIT_TRANSITIONS",
    "IsolationMetrics",
    "PredictionError",
    "final_learner",
    "isolation_metrics",
    "measure_run",
    "prediction_error",
    "primary_only_learner",
    "real_transitions",
]

PRIMARY_FIT_TRANSITIONS: Final = 4096
"""How many of the run's own primary transitions ``measure_run`` scores the fit on (evenly spaced)."""
_FIELDS: Final = ("obs", "action", "reward", "next_obs")


# ---------------------------------------------------------------------------------------- results


@final
@dataclass(frozen=True)
class IsolationMetrics:
    """How far the with-aux world model is from the primary-only one (see the module docstring)."""

    param_l2: float
    param_max_abs: float
    kl_mean: float
    kl_max: float
    identical: bool
    parameters: int
    transitions: int
    with_aux_digest: str
    primary_only_digest: str

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return {
            "param_l2": self.param_l2,
            "param_max_abs": self.param_max_abs,
            "kl_mean": self.kl_mean,
            "kl_max": self.kl_max,
            "identical": self.identical,
            "parameters": self.parameters,
            "transitions": self.transitions,
            "with_aux_digest": self.with_aux_digest,
            "primary_only_digest": self.primary_only_digest,
        }


@final
@dataclass(frozen=True)
class PredictionError:
    """One world model's one-step prediction error on real transitions (see the module docstring)."""

    next_obs_mse: float
    reward_mse: float
    nll: float
    transitions: int

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return {
            "next_obs_mse": self.next_obs_mse,
            "reward_mse": self.reward_mse,
            "nll": self.nll,
            "transitions": self.transitions,
        }


# ---------------------------------------------------------------------------------------- the run


def _run_files(run_dir: str | Path) -> tuple[Path, TrainConfig, WorldModelSpec, dict[str, Any]]:
    """The run's directory, configuration, world-model spec and ``run.json``; ``ValueError`` unless
    the files are readable and the run is complete."""
    path = Path(run_dir)
    if not path.is_dir():
        raise ValueError(f"{path}: no such run directory")
    config_path = path / CONFIG_FILENAME
    document = read_json(config_path, "run configuration")
    try:
        config = TrainConfig.from_json(document["train"])
        spec = WorldModelSpec.from_json(document["world_model"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            f"{config_path}: not a valid run configuration ({type(exc).__name__}: {exc})"
        ) from None
    run_path = path / RUN_FILENAME
    status = read_json(run_path, "run status")
    if not isinstance(status, dict) or status.get("status") != "complete":
        shown = status.get("status") if isinstance(status, dict) else None
        raise ValueError(
            f"{run_path}: the run is not complete (status {shown!r}); finish it with "
            f"`amal train --resume --out {path}` first"
        )
    updates = status.get("world_model_updates")
    if isinstance(updates, bool) or not isinstance(updates, int) or updates < 0:
        raise ValueError(f"{run_path}: 'world_model_updates' is missing or not a count ({updates!r})")
    return path, config, spec, status


@checked
def final_learner(run_dir: str | Path) -> WorldModelLearner:
    """The run's own final world-model learner ("with aux"), loaded from its ``checkpoint.pt``.

    ``ValueError`` naming the file for an incomplete run, a missing or corrupt checkpoint, or one
    whose learner does not fit the run's configuration or ``run.json``, or that no seal of the run's
    ``checkpoints.jsonl`` records (changed after the run wrote it).
    """
    path, config, spec, status = _run_files(run_dir)
    checkpoint = path / CHECKPOINT_FILENAME
    try:
        state = load_checkpoint(checkpoint)
    except CheckpointError as exc:
        raise ValueError(str(exc)) from None
    if state.get("step") != status.get("step") or not isinstance(state.get("learner"), Mapping):
        raise ValueError(
            f"{checkpoint}: not the final checkpoint of the run described by {path / RUN_FILENAME} "
            f"(checkpoint step {state.get('step')!r}, run step {status.get('step')!r})"
        )
    header = verify(path).header
    if header is None:
        raise ValueError(f"{path / LEDGER_FILENAME} has no valid run header: {path} is not an intact run")
    sealed_checkpoint(path, header.genesis)  # the checkpoint is the one the run wrote
    torch.set_num_threads(config.threads)
    learner = WorldModelLearner(spec, RunStreams(config.seed), unsafe_mix=config.unsafe_mix)
    try:
        learner.load_state_dict(state["learner"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(
            f"{checkpoint}: the world-model learner does not load ({type(exc).__name__}: {exc})"
        ) from None
    if learner.updates != status["world_model_updates"]:
        raise ValueError(
            f"{checkpoint}: the learner made {learner.updates} updates, {path / RUN_FILENAME} records "
            f"{status['world_model_updates']}"
        )
    return learner


@checked
def primary_only_learner(run_dir: str | Path) -> WorldModelLearner:
    """The run's world model retrained from its recorded primary data alone ("without aux").

    Replays the run's update schedule with :class:`~amal_verified.run.primary_replay.PrimaryReplay` (see the
    module docstring), for AMAL and ``--unsafe-mix`` runs alike.  Sets the process up as the trainer
    does (deterministic algorithms, the run's thread count).  ``ValueError`` naming the file for an
    incomplete run or missing, changed or truncated primary data.
    """
    path, config, spec, status = _run_files(run_dir)
    return _replayed(path, config, spec, status, _primary_stream(path))


def _primary_stream(path: Path) -> PrimaryStream:
    stream = load_primary_stream(path)
    if stream.problems:
        first = stream.problems[0]
        raise ValueError(f"{path / DATA_DIRNAME / first.file}: {first.message}")
    return stream


def _replayed(
    path: Path, config: TrainConfig, spec: WorldModelSpec, status: Mapping[str, Any], stream: PrimaryStream
) -> WorldModelLearner:
    replay = PrimaryReplay(config, spec, stream.tensors, stream.count)
    for _ in range(int(status["world_model_updates"])):
        try:
            replay.update()
        except ValueError as exc:
            raise ValueError(f"{path / DATA_DIRNAME}: {exc}") from None
    return replay.learner


def _primary_sample(stream: PrimaryStream, limit: int) -> dict[str, Tensor]:
    """``min(count, limit)`` transitions of the recorded primary stream, evenly spaced over it."""
    m = min(stream.count, limit)
    index = torch.arange(m, dtype=torch.int64) * stream.count // m
    return {name: stream.tensors[name][index] for name in _FIELDS}


# ---------------------------------------------------------------------------------------- real data


def _check_transitions(learner: WorldModelLearner, transitions: Mapping[str, Tensor]) -> int:
    missing = [name for name in _FIELDS if name not in transitions]
    if missing:
        raise ValueError(f"transitions: missing fields {missing} (expected {list(_FIELDS)})")
    n = int(transitions["obs"].shape[0]) if transitions["obs"].dim() == 2 else -1
    spec = learner.spec
    action_shape = (n,) if spec.discrete else (n, spec.action_dim)
    expected = {
        "obs": (n, spec.obs_dim),
        "action": action_shape,
        "reward": (n,),
        "next_obs": (n, spec.obs_dim),
    }
    for name, shape in expected.items():
        if n < 1 or tuple(transitions[name].shape) != shape:
            raise ValueError(
                f"transitions: {name} has shape {tuple(transitions[name].shape)}, the world model "
                f"(obs_dim {spec.obs_dim}, action_dim {spec.action_dim}, "
                f"{'discrete' if spec.discrete else 'continuous'}) needs {shape} with at least one row"
            )
    return n


def _predict(learner: WorldModelLearner, transitions: Mapping[str, Tensor], what: str) -> WorldModelOutput:
    obs, action = transitions["obs"].to(torch.float32), transitions["action"]
    pred = learner.predict(obs, action if learner.spec.discrete else action.to(torch.float32))
    for field in ("next_obs_mean", "next_obs_log_std", "reward_mean", "reward_log_std"):
        value: Tensor = getattr(pred, field)
        if not bool(torch.isfinite(value).all()):
            rows = value.reshape(value.shape[0], value.shape[1], -1)
            bad = int((~torch.isfinite(rows)).any(dim=2).any(dim=0).sum())
            raise ValueError(
                f"{what}: the world model predicts non-finite values ({field}) on {bad} of the "
                f"{obs.shape[0]} held-out transitions"
            )
    return pred


def _moments(pred: WorldModelOutput) -> tuple[Tensor, Tensor]:
    """Moment-matched diagonal Gaussian of the ensemble per transition: mean and variance, ``(B, D)``
    float64 with ``D = obs_dim + 1`` (next observation, then reward)."""
    means = torch.cat([pred.next_obs_mean[:, :, 0], pred.reward_mean[:, :, :1]], dim=-1).double()
    log_std = torch.cat([pred.next_obs_log_std[:, :, 0], pred.reward_log_std[:, :, :1]], dim=-1).double()
    mean = means.mean(dim=0)
    var = torch.exp(2.0 * log_std).mean(dim=0) + (means - mean).square().mean(dim=0)
    return mean, var


def _kl(p_mean: Tensor, p_var: Tensor, q_mean: Tensor, q_var: Tensor) -> Tensor:
    """``KL(N(p) ‖ N(q))`` per row, summed over the diagonal dimensions (see the module docstring)."""
    t = p_var / q_var - 1.0
    spread = (t - torch.log1p(t)).clamp_min(0.0)
    return 0.5 * (spread + (p_mean - q_mean).square() / q_var).sum(dim=-1)


# ---------------------------------------------------------------------------------------- metrics


@checked
@declassify(reason="the benchmark measures world models, whatever they learned from")
def isolation_metrics(
    with_aux: WorldModelLearner, primary_only: WorldModelLearner, transitions: Mapping[str, Tensor]
) -> IsolationMetrics:
    """Parameter distance and predictive KL between two world models (see the module docstring).

    ``ValueError`` if the learners have different specifications or parameter layouts, if a
    parameter or a prediction is not finite, or if ``transitions`` do not fit the models.
    """
    if with_aux.spec != primary_only.spec:
        raise ValueError("with_aux and primary_only are world models of different specifications")
    n = _check_transitions(with_aux, transitions)
    named_q = list(with_aux.model.named_parameters())
    named_p = list(primary_only.model.named_parameters())
    layout_q = [(name, tuple(p.shape)) for name, p in named_q]
    if layout_q != [(name, tuple(p.shape)) for name, p in named_p]:
        raise ValueError("with_aux and primary_only have different parameter names or shapes")
    with torch.no_grad():
        flat_q = torch.cat([p.detach().reshape(-1).double() for _, p in named_q])
        flat_p = torch.cat([p.detach().reshape(-1).double() for _, p in named_p])
        for what, flat in (("with_aux", flat_q), ("primary_only", flat_p)):
            if not bool(torch.isfinite(flat).all()):
                raise ValueError(f"{what}: the world model has non-finite parameters")
        diff = flat_q - flat_p
        l2 = float(torch.linalg.vector_norm(diff))
        max_abs = float(diff.abs().max())
        q_mean, q_var = _moments(_predict(with_aux, transitions, "with_aux"))
        p_mean, p_var = _moments(_predict(primary_only, transitions, "primary_only"))
        kl = _kl(p_mean, p_var, q_mean, q_var)
    if not bool(torch.isfinite(kl).all()):
        raise ValueError("the KL divergence is not finite (a predictive variance underflowed to 0)")
    digest_q, digest_p = with_aux.param_digest(), primary_only.param_digest()
    return IsolationMetrics(
        param_l2=l2,
        param_max_abs=max_abs,
        kl_mean=float(kl.mean()),
        kl_max=float(kl.max()),
        identical=digest_q == digest_p,
        parameters=int(flat_q.numel()),
        transitions=n,
        with_aux_digest=digest_q,
        primary_only_digest=digest_p,
    )


@checked
@declassify(reason="the benchmark measures world models, whatever they learned from")
def prediction_error(learner: WorldModelLearner, transitions: Mapping[str, Tensor]) -> PredictionError:
    """One-step prediction error of ``learner`` on ``transitions`` (see the module docstring)."""
    n = _check_transitions(learner, transitions)
    next_obs, reward = transitions["next_obs"].to(torch.float32), transitions["reward"].to(torch.float32)
    with torch.no_grad():
        pred = _predict(learner, transitions, "prediction_error")
        mean_obs = pred.next_obs_mean.mean(dim=0)[:, 0]
        mean_rew = pred.reward_mean.mean(dim=0)[:, 0]
        obs_mse = (mean_obs.double() - next_obs.double()).square().mean()
        rew_mse = (mean_rew.double() - reward.double()).square().mean()
        nll = learner.prediction_nll(pred, next_obs, reward)
        nll_mean = float(nll.double().mean())
    if not math.isfinite(nll_mean):
        raise ValueError("prediction_error: the world model's NLL on the held-out transitions is not finite")
    return PredictionError(
        next_obs_mse=float(obs_mse), reward_mse=float(rew_mse), nll=nll_mean, transitions=n
    )


@checked
@declassify(reason="the benchmark measures world models, whatever they learned from")
def measure_run(run_dir: str | Path, *, transitions: Mapping[str, Tensor]) -> dict[str, Any]:
    """Isolation and real-environment prediction error of the complete run in ``run_dir``.

    ``transitions`` are held-out real transitions of the run's task (:func:`real_transitions`).
    Returns a JSON-ready dict::

        {"run_dir", "env_id", "unsafe_mix", "world_model_updates", "seconds",
         "isolation": IsolationMetrics.to_json(),
         "wm_real_error": {"with_aux": PredictionError.to_json(),
                           "primary_only": PredictionError.to_json()},
         "wm_primary_fit": {"with_aux": PredictionError.to_json(),
                            "primary_only": PredictionError.to_json(),
                            "naive": NaiveErrors.to_json()}}
    """
    start = time.perf_counter()
    path, config, spec, status = _run_files(run_dir)
    with_aux = final_learner(path)
    stream = _primary_stream(path)
    primary_only = _replayed(path, config, spec, status, stream)
    own = _primary_sample(stream, PRIMARY_FIT_TRANSITIONS)
    del stream  # the whole recorded stream can be large (KP-1000: about 1.6 GB)
    isolation = isolation_metrics(with_aux, primary_only, transitions)
    return {
        "run_dir": str(path),
        "env_id": config.env_id,
        "unsafe_mix": config.unsafe_mix,
        "world_model_updates": int(status["world_model_updates"]),
        "isolation": isolation.to_json(),
        "wm_real_error": {
            "with_aux": prediction_error(with_aux, transitions).to_json(),
            "primary_only": prediction_error(primary_only, transitions).to_json(),
        },
        "wm_primary_fit": {
            "with_aux": prediction_error(with_aux, own).to_json(),
            "primary_only": prediction_error(primary_only, own).to_json(),
            "naive": measure_naive_errors(config.env_id, own).to_json(),
        },
        "seconds": round(time.perf_counter() - start, 3),
    }
