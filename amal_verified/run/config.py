"""The configuration of a training run, its world-model update schedule and its run-directory layout.

This module is shared by the trainer and by ``amal certify``; like :mod:`amal_verified.world_model.learner`
it imports no environment, policy or auxiliary-agent code.

Defaults are the paper's Table 1 where it gives a value (learning rates 3e-4, batch 256, buffer
10^6, γ 0.99, λ 0.3, N = 16 auxiliary agents, CEM population 100 with elite fraction 0.2, M = 100,
K = 20).  Everything the paper leaves open (when to update what, how much imagined data the policy
sees) is a named field below with the reason for its default.

World-model update schedule
---------------------------
World-model updates happen in rounds: after the ``n``-th primary transition has been stored, for
every ``n >= learning_starts`` that is a multiple of ``wm_train_every``, the trainer runs
``wm_updates_per_round`` updates.  Update ``u`` (1-based, the ledger's ``step``) therefore saw
exactly :func:`primary_count_at_update` transitions — a function of the configuration alone, which is
what lets ``amal certify`` replay update ``u`` on the recorded primary data without anything else.

Run directory
-------------
``config.json`` (this configuration, canonical JSON), ``ledger.jsonl`` (hash-chained world-model
updates), ``data/`` (the primary transitions, in chunks, with ``manifest.json``), ``checkpoint.pt``
(the latest checkpoint), ``run.json`` (status, ledger head and count, updated atomically with every
checkpoint), ``metrics.csv`` and ``tensorboard/`` (logs), ``certificate.json`` (written by ``amal
certify``), and ``UNSAFE_MIX`` (present only for the ablation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Final, Literal, final

from amal_verified.record.files import (
    CERTIFICATE_FILENAME,
    CHECKPOINT_FILENAME,
    CONFIG_FILENAME,
    DATA_DIRNAME,
    MANIFEST_FILENAME,
    RUN_FILENAME,
    UNSAFE_MARKER_FILENAME,
    read_json,
    write_json_atomic,
)
from amal_verified.record.ledger import config_digest
from amal_verified.world_model.learner import MODELS, OPTIMIZERS, ModelName, OptimizerName

__all__ = [
    "CERTIFICATE_FILENAME",
    "CHECKPOINT_FILENAME",
    "CONFIG_FILENAME",
    "DATA_DIRNAME",
    "MANIFEST_FILENAME",
    "RUN_FILENAME",
    "UNSAFE_MARKER_FILENAME",
    "TrainConfig",
    "document_digest",
    "primary_count_at_update",
    "read_json",
    "updates_completed_by",
    "write_json_atomic",
]

# Fields added after the first runs, with their defaults (see TrainConfig.to_json).
_LATER_FIELDS: Final[dict[str, Any]] = {
    "aux_seed": None,
    "wm_model": "ensemble",
    "wm_optimizer": "adam",
    "wm_weight_decay": 0.0,
    "wm_full_batch": False,
}


@final
@dataclass(frozen=True)
class TrainConfig:
    """A training run.  Construct with keywords; invalid values raise ``ValueError`` naming the field."""

    env_id: str = "CartPole-v1"
    total_steps: int = 20_000
    seed: int = 0
    # --- Table 1 -------------------------------------------------------------------------------
    wm_lr: float = 3e-4
    policy_lr: float = 3e-4
    batch_size: int = 256
    buffer_size: int = 1_000_000
    gamma: float = 0.99
    info_weight: float = 0.3
    num_aux_agents: int = 16
    cem_population: int = 100
    cem_elite_fraction: float = 0.2
    mi_outer_samples: int = 100
    ensemble_size: int = 20
    # --- world model ---------------------------------------------------------------------------
    shared_trunk: bool = False
    wm_hidden_scale: float = 1.0  # 1.0 = the paper's widths; tests use smaller models
    learning_starts: int = 1_000
    wm_train_every: int = 250
    wm_updates_per_round: int = 25
    eig_estimator: Literal["pce", "nmc"] = "pce"
    # The learner's options beyond the paper's configuration (WorldModelSpec's model, optimizer,
    # weight_decay and full_batch; see amal_verified.world_model.learner).  wm_model="linear-gaussian" with
    # wm_optimizer="sgd", wm_weight_decay > 0 and wm_full_batch=True is the strongly convex configuration
    # in which the corrected Theorem 2 applies.  Left out of to_json at their defaults.
    wm_model: ModelName = "ensemble"
    wm_optimizer: OptimizerName = "adam"
    wm_weight_decay: float = 0.0
    wm_full_batch: bool = False
    # --- policy --------------------------------------------------------------------------------
    policy_hidden: int = 256
    policy_tau: float | None = None  # None: 0.02 for discrete actions, 0.005 for continuous (see policy.py)
    random_steps: int = 1_000
    policy_updates_per_step: int = 1
    real_ratio: float = 1.0  # no imagined data by default: measured slower on Pendulum (README)
    aux_ratio: float = 0.0  # policy batches without aux rows by default: measured on CartPole (README)
    rollout_batch: int = 1_000
    rollout_length: int = 1
    imagined_rounds_kept: int = 4
    # --- auxiliary agents ----------------------------------------------------------------------
    aux_hidden: int = 32
    aux_buffer_size: int = 100_000
    aux_obs_noise: float | None = None  # None: the environment's default perturbation
    # The auxiliary side's own seed: its streams (cem, cem/probes, aux/<i>/*) derive from it instead of
    # ``seed``, so auxiliary randomness can vary while the primary side stays fixed.  None: ``seed``.
    aux_seed: int | None = None
    cem_every: int = 1_000
    cem_beta: float = 1.0
    cem_std_floor: float = 0.02
    probe_states: int = 256
    # --- run -----------------------------------------------------------------------------------
    unsafe_mix: bool = False
    eval_every: int = 2_000
    eval_episodes: int = 10
    log_every: int = 500
    checkpoint_every: int = 5_000
    threads: int = 1

    def __post_init__(self) -> None:
        positive = (
            "total_steps",
            "batch_size",
            "buffer_size",
            "num_aux_agents",
            "cem_population",
            "mi_outer_samples",
            "ensemble_size",
            "wm_train_every",
            "wm_updates_per_round",
            "policy_hidden",
            "rollout_batch",
            "rollout_length",
            "imagined_rounds_kept",
            "aux_hidden",
            "aux_buffer_size",
            "cem_every",
            "probe_states",
            "eval_every",
            "eval_episodes",
            "log_every",
            "checkpoint_every",
            "threads",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.aux_seed is not None and (
            isinstance(self.aux_seed, bool) or not isinstance(self.aux_seed, int) or self.aux_seed < 0
        ):
            raise ValueError(f"aux_seed must be None or a non-negative integer, got {self.aux_seed!r}")
        for name in ("seed", "learning_starts", "random_steps", "policy_updates_per_step"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        for name in ("wm_lr", "policy_lr", "wm_hidden_scale"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"{name} must be a finite positive number, got {value!r}")
        for name in ("gamma", "cem_elite_fraction", "real_ratio", "aux_ratio"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
        for name in ("info_weight", "cem_beta", "cem_std_floor"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        if self.cem_std_floor == 0.0:
            raise ValueError("cem_std_floor must be > 0 (the variance floor of the CEM update)")
        if self.policy_tau is not None and not 0.0 < self.policy_tau <= 1.0:
            raise ValueError(f"policy_tau must be None or lie in (0, 1], got {self.policy_tau!r}")
        if self.aux_obs_noise is not None and not (
            math.isfinite(self.aux_obs_noise) and self.aux_obs_noise >= 0
        ):
            raise ValueError(f"aux_obs_noise must be None or a finite value >= 0, got {self.aux_obs_noise!r}")
        if self.eig_estimator not in ("pce", "nmc"):
            raise ValueError(f"eig_estimator must be 'pce' or 'nmc', got {self.eig_estimator!r}")
        self._check_world_model_options()
        if self.num_aux_agents > self.cem_population:
            raise ValueError(
                f"num_aux_agents ({self.num_aux_agents}) cannot exceed cem_population "
                f"({self.cem_population}): the auxiliary agents are the best candidates of a CEM generation"
            )
        if self.learning_starts < 1:
            raise ValueError("learning_starts must be at least 1: the world model needs primary data")
        if not self.env_id:
            raise ValueError("env_id must be a gymnasium environment id")

    def _check_world_model_options(self) -> None:
        if self.wm_model not in MODELS:
            raise ValueError(f"wm_model must be one of {MODELS}, got {self.wm_model!r}")
        if self.wm_optimizer not in OPTIMIZERS:
            raise ValueError(f"wm_optimizer must be one of {OPTIMIZERS}, got {self.wm_optimizer!r}")
        wd = self.wm_weight_decay
        if isinstance(wd, bool) or not (isinstance(wd, float | int) and math.isfinite(wd) and wd >= 0.0):
            raise ValueError(f"wm_weight_decay must be a finite number >= 0, got {wd!r}")
        if not isinstance(self.wm_full_batch, bool):
            raise ValueError(f"wm_full_batch must be True or False, got {self.wm_full_batch!r}")
        if self.wm_model != "linear-gaussian":
            return
        # A single linear model: no ensemble to size or shape, no member disagreement to reward, no
        # members to drive imagined rollouts.  Each conflicting field is named rather than ignored.
        needs = {
            "ensemble_size": (1, "it is one model, not an ensemble"),
            "shared_trunk": (False, "it has no trunk"),
            "wm_hidden_scale": (1.0, "it has no hidden layers"),
            "info_weight": (0.0, "one model has no member disagreement, so its information gain is 0"),
            "real_ratio": (1.0, "imagined rollouts need an ensemble's members"),
        }
        for name, (value, why) in needs.items():
            if getattr(self, name) != value:
                raise ValueError(
                    f"{name} must be {value!r} with wm_model='linear-gaussian' ({why}), "
                    f"got {getattr(self, name)!r}"
                )

    # ------------------------------------------------------------------ serialisation

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of every field.  Fields added after the first runs (``aux_seed`` and the
        ``wm_*`` learner options) are left out while they hold their defaults, so the documents and
        digests of configurations written before they existed are unchanged."""
        document = asdict(self)
        for name, default in _LATER_FIELDS.items():
            if document[name] == default:
                del document[name]
        return document

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_json`; unknown keys raise ``ValueError`` (missing keys take defaults)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown configuration keys {unknown}")
        return cls(**dict(data))

    # ------------------------------------------------------------------ schedule

    @property
    def first_round(self) -> int:
        """The primary-transition count at which the first world-model round runs."""
        every = self.wm_train_every
        return -(-self.learning_starts // every) * every


def primary_count_at_update(config: TrainConfig, update: int) -> int:
    """How many primary transitions were stored when world-model update ``update`` (1-based) ran."""
    if update < 1:
        raise ValueError(f"updates are numbered from 1, got {update}")
    round_index = (update - 1) // config.wm_updates_per_round
    return config.first_round + round_index * config.wm_train_every


def updates_completed_by(config: TrainConfig, primary_count: int) -> int:
    """How many world-model updates have run once ``primary_count`` transitions are stored (and the
    round due at that count, if any, has finished)."""
    if primary_count < config.first_round:
        return 0
    rounds = (primary_count - config.first_round) // config.wm_train_every + 1
    return rounds * config.wm_updates_per_round


# ---------------------------------------------------------------------------------------- files


def document_digest(document: Mapping[str, Any]) -> str:
    """The ledger header's ``config_digest`` of a ``config.json`` document.

    Covers everything except ``train.total_steps``: the run's length decides how many world-model
    updates happen, never what any of them computes, and a resumed run may be extended.
    """
    train = {k: v for k, v in document.get("train", {}).items() if k != "total_steps"}
    return config_digest({**document, "train": train})
