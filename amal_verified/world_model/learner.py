"""One world-model update (paper Eq. 3), shared by the trainer and by ``amal certify``.

:class:`WorldModelLearner` owns the ensemble world model, its optimizer and the two random streams
the update consumes (the batch sampler and the members' bootstrap generators).  One call to
:meth:`WorldModelLearner.update` is::

    batch  = D_P.sample(batch_size, generator=<world-model/batches>)          # primary data only
    idx    = bootstrap_indices(batch_size, <world-model/bootstrap/k> for each member k)
    loss   = Σ_k NLL_k(batch[idx_k]) + 0.01 · Σ_k log-std bound penalty_k     # Eq. 1 / Eq. 3
    GatedOptimizer(Adam).step()                                                # refuses aux-derived grads

and returns the facts the ledger records: the batch digest (indices and contents), the parameter
digest after the step and the labels the loss carried.

Options of :class:`WorldModelSpec` beyond the paper's defaults (which they leave bit for bit unchanged),
all going through the same update, gate, primary buffer and ledger digests:

- ``model="linear-gaussian"``: :class:`~amal_verified.world_model.linear.LinearGaussianWorldModel`,
  ``[s', r] ~ N(W [s, a, 1], I)`` in float64, trained on its mean NLL (a least-squares loss) without
  bootstrapping (it is one model: ``members=1``);
- ``optimizer="sgd"``: plain gradient descent ``θ ← θ − lr · ∇loss`` (``torch.optim.SGD``, no momentum)
  instead of Adam;
- ``weight_decay=λ``: the loss gains ``(λ / 2) Σ ‖θ‖²`` over every parameter (L2, the same gradient as
  torch's coupled ``weight_decay``, not AdamW's decoupled decay);
- ``full_batch=True``: every update uses every transition of the primary buffer once, in storage order
  (rows ``0 .. len−1``; ``indices`` in the digest are ``0 .. len−1``) instead of ``batch_size`` rows
  drawn with replacement; ``batch_size`` is then unused;
- ``normalise=True`` (the ensemble only): MBPO-style input and target normalisation.  At the start of
  each world-model round, :meth:`WorldModelLearner.begin_round` computes the per-dimension mean and
  std of ``s``, ``a`` (one-hot for discrete actions), ``s' − s`` and ``r`` over every transition stored
  in the primary buffer (:func:`~amal_verified.world_model.ensemble.normalisation_statistics`: float64,
  constant dimensions not scaled) and writes them into the model's normalisation buffers
  (:class:`~amal_verified.world_model.ensemble.EnsembleWorldModel`, ``normalise=True``), where they stay
  fixed for the round's updates.  The statistics are computed from the primary buffer alone (also in
  the ``unsafe_mix`` ablation), so they carry primary labels only; as buffers of the model they are
  protected by the gate (a write of auxiliary-derived data into them is refused) and covered by the
  parameter digest (``state_dict`` holds buffers), so the ledger records them and ``amal certify``
  replays them: the replay calls ``begin_round`` before the first update of every round, on the
  same buffer contents.  The model's outputs are de-normalised, so the information-gain bonus,
  imagined rollouts and every reader of predictions work in the data's units (the information gain
  is invariant under the per-dimension affine map anyway: it is a mutual information).

Early stopping
--------------
``holdout=h > 0`` holds a fraction ``h`` of the primary buffer's rows out of training, as MBPO does:
storage row ``i`` is held out when ``splitmix64(seed + i) < h · 2**64`` (``seed`` from the stream
``world-model/holdout``; :meth:`WorldModelLearner.held_out_mask`), so a row keeps its role for the whole
run and batches are drawn uniformly from the training rows.  A round (:meth:`WorldModelLearner.begin_round`
with an update limit) then ends early: the *held-out loss* (:meth:`WorldModelLearner.validation_loss`: the
members' mean squared error of ``[s', r]`` on the last :data:`VALIDATION_ROWS` held-out rows) is taken
before the round's first update and after every ``check_every``-th update and the last one; a check
improves when it is below the round's best by more than :data:`MIN_IMPROVEMENT` (1 %), and the round ends
after ``patience`` checks without improvement or at the limit.  The update that ends a round returns the
round's held-out losses (``WorldModelUpdate.round_end``), which the ledger records; the decision is a
function of primary data and the learner's state alone, so the replay recomputes it exactly.  With
``normalise``, the statistics are those of the training rows.  ``holdout = 0`` (default): every round runs
to its limit and nothing above happens.

With all four (linear-Gaussian, SGD, ``weight_decay > 0``, full batch) an update is one step of gradient
descent on a fixed μ-strongly convex, L-smooth objective (μ, L: see the linear model's docstring):
the setting of the paper's Theorem 2.  :meth:`WorldModelLearner.full_batch_loss` evaluates that
objective without stepping.

Because the update reads nothing but the primary buffer, the learner's own state and its own
streams, replaying it in a fresh process from the recorded primary data alone reproduces every
digest bit for bit — that replay is the run's certificate (Theorem 1).  This module therefore
imports no environment, policy or auxiliary-agent code.

``unsafe_mix=True`` is the paper's "standard MARL" baseline, for comparison only: each batch is
drawn from ``D_P ∪ D_A`` (rows split between primary and auxiliary data in proportion to their sizes;
with ``full_batch`` every row of ``D_P`` and then of each ``D_A^i``) and the optimizer is **not**
gated.  Its runs cannot certify.

The world model sees one transition per sequence (``T = 1``, GRU state starting at zero): Eq. 1 is a
Markov model ``p(s', r | s, a)``, the supported tasks are fully observed, and one-step sequences cost
a sixteenth of the paper's 16-step windows.  Discrete actions are fed one-hot.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal, final, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from amal_verified.common.rng_streams import RunStreams
from amal_verified.common.runtime_checks import checked
from amal_verified.isolation.buffers import AuxBuffer, Batch, PrimaryBuffer
from amal_verified.isolation.errors import IsolationViolation
from amal_verified.isolation.escapes import declassify
from amal_verified.isolation.gate import GatedOptimizer
from amal_verified.isolation.labels import Label, SourceKind
from amal_verified.isolation.tagging import label_of
from amal_verified.record.ledger import batch_digest, state_digest
from amal_verified.world_model.ensemble import (
    DEFAULT_DECODER,
    DEFAULT_ENCODER,
    DEFAULT_GRU_HIDDEN,
    EnsembleWorldModel,
    WorldModelOutput,
    bootstrap_indices,
    member_generators,
    normalisation_statistics,
)
from amal_verified.world_model.linear import LinearGaussianWorldModel

__all__ = [
    "MODELS",
    "OPTIMIZERS",
    "ModelName",
    "OptimizerName",
    "WorldModelLearner",
    "WorldModelSpec",
    "WorldModelUpdate",
]

BOUND_PENALTY: Final = 0.01
MAX_HOLDOUT: Final = 0.5
# Early stopping (MBPO's rule): a check improves when it lowers the best held-out loss of the round by
# more than this fraction; the held-out loss is taken over at most the last VALIDATION_ROWS held-out rows.
MIN_IMPROVEMENT: Final = 0.01
VALIDATION_ROWS: Final = 1024
_STATE_FORMAT: Final = 1
ModelName = Literal["ensemble", "linear-gaussian"]
OptimizerName = Literal["adam", "sgd"]
MODELS: Final[tuple[str, ...]] = get_args(ModelName)
OPTIMIZERS: Final[tuple[str, ...]] = get_args(OptimizerName)
# Options added after the paper's configuration, with the defaults that reproduce it.  ``to_json`` leaves
# them out while they hold these values, so the documents (and config digests) of default runs are
# unchanged; ``from_json`` fills them in.
_OPTION_DEFAULTS: Final[dict[str, Any]] = {
    "model": "ensemble",
    "optimizer": "adam",
    "weight_decay": 0.0,
    "full_batch": False,
    "normalise": False,
    "holdout": 0.0,
    "check_every": 20,
    "patience": 5,
}
# Fields of the recurrent ensemble that the linear-Gaussian model has no use for.
_ENSEMBLE_ONLY: Final[dict[str, Any]] = {
    "shared_trunk": False,
    "encoder_sizes": DEFAULT_ENCODER,
    "gru_hidden": DEFAULT_GRU_HIDDEN,
    "decoder_sizes": DEFAULT_DECODER,
    "normalise": False,
}


@final
@dataclass(frozen=True)
class WorldModelSpec:
    """Everything that determines a world-model learner besides the run seed.

    ``action_dim`` is the number of actions for a discrete task (actions are one-hot encoded) and
    the action dimension otherwise.  Defaults are the paper's (Table 1, §6.3).  ``model``,
    ``optimizer``, ``weight_decay``, ``full_batch`` and ``normalise`` are described in the module
    docstring; ``model="linear-gaussian"`` needs ``members=1`` and the ensemble-only fields
    (``shared_trunk``, ``encoder_sizes``, ``gru_hidden``, ``decoder_sizes``, ``normalise``) at their
    defaults.  Bad values raise
    ``ValueError`` naming the field.
    """

    obs_dim: int
    action_dim: int
    discrete: bool
    members: int = 20
    lr: float = 3e-4
    batch_size: int = 256
    shared_trunk: bool = False
    encoder_sizes: tuple[int, ...] = DEFAULT_ENCODER
    gru_hidden: int = DEFAULT_GRU_HIDDEN
    decoder_sizes: tuple[int, ...] = DEFAULT_DECODER
    model: ModelName = "ensemble"
    optimizer: OptimizerName = "adam"
    weight_decay: float = 0.0
    full_batch: bool = False
    normalise: bool = False
    holdout: float = 0.0
    check_every: int = 20
    patience: int = 5

    def __post_init__(self) -> None:
        for name in ("obs_dim", "action_dim", "members", "batch_size", "gru_hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"WorldModelSpec.{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.lr, float | int) and 0.0 < self.lr < float("inf")):
            raise ValueError(f"WorldModelSpec.lr must be a finite positive number, got {self.lr!r}")
        for name, choices in (("model", MODELS), ("optimizer", OPTIMIZERS)):
            if getattr(self, name) not in choices:
                raise ValueError(
                    f"WorldModelSpec.{name} must be one of {', '.join(map(repr, choices))}, "
                    f"got {getattr(self, name)!r}"
                )
        wd = self.weight_decay
        if isinstance(wd, bool) or not (isinstance(wd, float | int) and 0.0 <= wd < float("inf")):
            raise ValueError(f"WorldModelSpec.weight_decay must be a finite number >= 0, got {wd!r}")
        for name in ("full_batch", "normalise"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"WorldModelSpec.{name} must be True or False, got {getattr(self, name)!r}")
        for name in ("check_every", "patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"WorldModelSpec.{name} must be a positive integer, got {value!r}")
        h = self.holdout
        if isinstance(h, bool) or not (isinstance(h, float | int) and 0.0 <= h <= MAX_HOLDOUT):
            raise ValueError(
                f"WorldModelSpec.holdout must be a fraction in [0, {MAX_HOLDOUT}] of the primary "
                f"transitions, got {h!r}"
            )
        if h and self.full_batch:
            raise ValueError(
                "WorldModelSpec.holdout > 0 needs full_batch=False: a full-batch update trains on every "
                "stored transition, so none is held out"
            )
        if self.model == "linear-gaussian":
            if self.members != 1:
                raise ValueError(
                    f"WorldModelSpec.members must be 1 with model='linear-gaussian' (a single model, "
                    f"not an ensemble), got {self.members}"
                )
            for name, default in _ENSEMBLE_ONLY.items():
                if getattr(self, name) != default:
                    raise ValueError(
                        f"WorldModelSpec.{name} configures the recurrent ensemble and has no effect with "
                        f"model='linear-gaussian': leave it at its default {default!r}"
                    )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists); options at their defaults are left out (see above)."""
        return {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in asdict(self).items()
            if k not in _OPTION_DEFAULTS or v != _OPTION_DEFAULTS[k]
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WorldModelSpec:
        """Inverse of :meth:`to_json`; ``ValueError`` naming unknown or missing keys."""
        fields = set(cls.__dataclass_fields__)
        unknown, missing = set(data) - fields, {"obs_dim", "action_dim", "discrete"} - set(data)
        if unknown or missing:
            raise ValueError(
                f"world-model spec: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}"
            )
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


@final
@dataclass(frozen=True)
class WorldModelUpdate:
    """What one update did: the ledger's record fields plus the loss (a float, primary-derived)."""

    index: int
    loss: float
    batch_digest: str
    param_digest: str
    labels: tuple[str, ...]
    round_end: tuple[float, ...] | None = None


@final
class WorldModelLearner:
    """The world model with its optimizer and random streams (see the module docstring).

    The streams are claimed from ``streams`` under the names ``world-model/init``,
    ``world-model/batches`` and ``world-model/bootstrap`` (whatever the configuration uses of them);
    nothing else in a run may claim them.

    ``members=(start, stop)`` keeps members ``start .. stop - 1`` of the ensemble only (initialised as
    in the whole learner, drawing the same batches and their own bootstrap streams).  Members share
    nothing in an update (each has its own loss term, and Adam and SGD act element-wise), so its
    updates are the whole learner's restricted to those members up to rounding; bit for bit only where
    torch's kernels take the same path for the smaller tensors (the vectorised and scalar forms of
    ``exp`` or ``softplus`` differ in the last bit, and which one runs depends on shapes).
    :mod:`amal_verified.run.primary_replay` checks that before it relies on it.  Such a learner
    reports an empty ``param_digest`` (the digest is of the whole model) and needs full members (no
    shared trunk, not the linear model) and the gated learner.
    """

    @checked
    def __init__(
        self,
        spec: WorldModelSpec,
        streams: RunStreams,
        *,
        unsafe_mix: bool = False,
        members: tuple[int, int] | None = None,
    ) -> None:
        if unsafe_mix and spec.holdout:
            raise ValueError(
                "unsafe_mix needs holdout=0: the ablation's batches mix primary and auxiliary rows, and a "
                "held-out split of the primary data alone would not compare like with like"
            )
        self.spec: Final = spec
        self.unsafe_mix: Final = unsafe_mix
        self.member_range: Final = _member_range(spec, unsafe_mix, members)
        init = streams.torch_generator("world-model/init")
        model: EnsembleWorldModel | LinearGaussianWorldModel = (
            EnsembleWorldModel(
                spec.obs_dim,
                spec.action_dim,
                members=spec.members,
                generator=init,
                encoder_sizes=spec.encoder_sizes,
                gru_hidden=spec.gru_hidden,
                decoder_sizes=spec.decoder_sizes,
                shared_trunk=spec.shared_trunk,
                normalise=spec.normalise,
            )
            if spec.model == "ensemble"
            else LinearGaussianWorldModel(spec.obs_dim, spec.action_dim, generator=init)
        )
        start, stop = self.member_range
        if isinstance(model, EnsembleWorldModel) and (start, stop) != (0, spec.members):
            model = model.select_members(start, stop)
        self.model: Final[EnsembleWorldModel | LinearGaussianWorldModel] = model
        inner: torch.optim.Optimizer = (
            torch.optim.Adam(self.model.parameters(), lr=spec.lr)
            if spec.optimizer == "adam"
            else torch.optim.SGD(self.model.parameters(), lr=spec.lr)
        )
        self.optimizer: Final[torch.optim.Optimizer] = (
            inner if unsafe_mix else GatedOptimizer(inner, names=self.model)
        )
        self._batches: Final = streams.torch_generator("world-model/batches")
        self._members: Final = member_generators(streams.int_seed("world-model/bootstrap"), spec.members)[
            start:stop
        ]
        self.updates = 0
        self._rounds = 0
        # Which primary rows are held out is a function of the row and this stream's seed alone.
        self._holdout_seed: Final = streams.int_seed("world-model/holdout") if spec.holdout else None
        self._held_out = torch.zeros(0, dtype=torch.bool)
        self._rows_cache: dict[bool, tuple[int, Tensor]] = {}
        self._round_open = False
        self._round_limit: int | None = None
        self._round_updates = 0
        self._round_losses: list[float] = []
        self._best = math.inf
        self._stale = 0

    @property
    def in_round(self) -> bool:
        """Whether the round begun by :meth:`begin_round` has updates left: it ends at its ``updates``
        limit or, with a held-out split, when the held-out loss stops improving."""
        return self._round_open

    @property
    def whole(self) -> bool:
        """Whether this learner holds every member (not a replay worker's range of them)."""
        return self.member_range == (0, self.spec.members)

    # ------------------------------------------------------------------ inputs

    def encode_action(self, action: Tensor) -> Tensor:
        """``(B,)`` int64 actions → one-hot floats (discrete); ``(B, A)`` floats unchanged (continuous)."""
        if self.spec.discrete:
            return F.one_hot(action.long(), self.spec.action_dim).to(torch.float32)
        return action.to(torch.float32)

    def _batch(self, primary: PrimaryBuffer, aux: Sequence[AuxBuffer]) -> Batch:
        if self.spec.full_batch:
            return _whole(primary, [] if not self.unsafe_mix else [b for b in aux if len(b)])
        size = self.spec.batch_size
        if self.spec.holdout:
            train = self._rows(len(primary), held_out=False)
            picks = torch.randint(0, len(train), (size,), generator=self._batches, dtype=torch.int64)
            return primary.take(train[picks])
        if not self.unsafe_mix:
            return primary.sample(size, generator=self._batches)
        # D_P ∪ D_A, uniformly over all stored transitions: the ablation's data, never the default.
        sizes = [len(primary), *(len(b) for b in aux)]
        picks = torch.randint(0, sum(sizes), (size,), generator=self._batches)
        owner = torch.searchsorted(torch.tensor(sizes).cumsum(0), picks, right=True)
        counts = torch.bincount(owner, minlength=len(sizes)).tolist()
        buffers: list[PrimaryBuffer | AuxBuffer] = [primary, *aux]
        parts = [b.sample(c, generator=self._batches) for b, c in zip(buffers, counts, strict=True) if c]
        return Batch(
            **{
                name: torch.cat([getattr(p, name) for p in parts])
                for name in ("obs", "action", "reward", "next_obs", "done", "indices")
            }
        )

    # ------------------------------------------------------------------ update

    def begin_round(self, primary: PrimaryBuffer, updates: int | None = None) -> None:
        """Start a world-model round of at most ``updates`` updates (``None``: no limit).

        With ``normalise``, set the model's normalisation statistics from every training transition
        stored in ``primary`` (see the module docstring).  With ``holdout``, take the held-out loss
        before the round's first update (see "Early stopping" in the module docstring).  Call it before
        the first update of each round (the trainer and the replay do); :attr:`in_round` says when the
        round is over.  ``ValueError`` if the buffer is empty or, with ``holdout``, holds no held-out or
        no training transition yet.
        """
        if updates is not None and (isinstance(updates, bool) or not isinstance(updates, int) or updates < 1):
            raise ValueError(f"begin_round: updates must be a positive integer or None, got {updates!r}")
        size = len(primary)
        if size == 0:
            raise ValueError(
                f"{type(primary).__name__}(source={primary.source.name!r}): the buffer is empty; "
                "add transitions first"
            )
        if self.spec.holdout:
            held, train = self._rows(size, held_out=True), self._rows(size, held_out=False)
            if not len(held) or not len(train):
                raise ValueError(
                    f"holdout={self.spec.holdout} splits the {size} stored primary transitions into "
                    f"{len(train)} for training and {len(held)} held out: both need some; store more "
                    "before the first round (learning_starts) or change the holdout fraction"
                )
        if self.spec.normalise:
            assert isinstance(self.model, EnsembleWorldModel)  # the spec allows normalise for it only
            if self.spec.holdout:
                batch = primary.take(self._rows(size, held_out=False))
                rows = {name: getattr(batch, name) for name in ("obs", "action", "reward", "next_obs")}
            else:
                rows = primary.state_dict()  # copies of the stored rows [0, len)
            statistics = normalisation_statistics(
                rows["obs"], self.encode_action(rows["action"]), rows["reward"], rows["next_obs"]
            )
            self.model.set_normalisation(statistics)
        self._rounds += 1
        self._round_open = True
        self._round_limit = updates
        self._round_updates = 0
        self._round_losses = []
        if self.spec.holdout:
            loss = self.validation_loss(primary)
            self._round_losses = [loss]
            self._best, self._stale = loss, 0

    def update(self, primary: PrimaryBuffer, aux: Sequence[AuxBuffer] = ()) -> WorldModelUpdate:
        """One gradient step of Eq. 3 on a batch of ``primary`` (see the module docstring).

        ``aux`` is read only by the ``unsafe_mix`` ablation.  Raises ``ValueError`` if the primary
        buffer is empty or, with ``normalise``, no round has begun (:meth:`begin_round`), and
        :class:`~amal_verified.isolation.errors.IsolationViolation` (from the gate, before any parameter
        changes) if the loss depends on auxiliary data.
        """
        if self.spec.normalise and self._rounds == 0:
            raise ValueError(
                "normalise=True: call begin_round(primary) before the first update of every round (it sets "
                "the normalisation statistics)"
            )
        if self.spec.holdout and not self._round_open:
            raise ValueError(
                "holdout > 0: call begin_round(primary, updates) before the updates of every round (the "
                "round's held-out loss decides when it ends; in_round says when it has)"
            )
        batch = self._batch(primary, aux)
        loss = self._loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # The sources this update read: its gradients' labels (which the gate checks and which follow
        # primary data onto the protected parameters) joined with the loss's own.
        grads = [p.grad for group in self.optimizer.param_groups for p in group["params"]]
        read = Label.join_all([label_of(loss), *(label_of(g) for g in grads if g is not None)])
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.updates += 1
        labels = tuple(sorted(str(s) for s in read.sources))
        with declassify(reason="the world-model loss is logged, never fed back into training"):
            loss_value = float(loss.detach())
        digest = batch_digest(
            batch.indices, batch.obs, batch.action, batch.reward, batch.next_obs, batch.done
        )
        return WorldModelUpdate(
            index=self.updates,
            loss=loss_value,
            batch_digest=digest,
            param_digest=self.param_digest() if self.whole else "",
            labels=labels,
            round_end=self._advance_round(primary),
        )

    def _advance_round(self, primary: PrimaryBuffer) -> tuple[float, ...] | None:
        """Count an update of the open round and decide whether the round ends; the round's held-out
        losses when it ends with a held-out split, else ``None``."""
        if not self._round_open:
            return None
        self._round_updates += 1
        n = self._round_updates
        at_limit = self._round_limit is not None and n >= self._round_limit
        if not self.spec.holdout:
            self._round_open = not at_limit
            return None
        if n % self.spec.check_every == 0 or at_limit:
            loss = self.validation_loss(primary)
            self._round_losses.append(loss)
            if loss < self._best * (1.0 - MIN_IMPROVEMENT):
                self._best, self._stale = loss, 0
            else:  # NaN never improves
                self._stale += 1
        if at_limit or self._stale >= self.spec.patience:
            self._round_open = False
            return tuple(self._round_losses)
        return None

    def validation_loss(self, primary: PrimaryBuffer) -> float:
        """Mean squared error of the members' mean predictions of ``[s', r]`` on the last
        :data:`VALIDATION_ROWS` held-out transitions of ``primary`` (averaged over members, rows and
        dimensions).  Needs ``holdout > 0``; reads ``primary`` and changes nothing.

        The value decides when a round of this learner stops, so it must not depend on auxiliary data:
        :class:`~amal_verified.isolation.errors.IsolationViolation` if it does (only the unsafe ablation's
        model can).
        """
        if not self.spec.holdout:
            raise ValueError("validation_loss needs a held-out split: WorldModelSpec.holdout > 0")
        held = self._rows(len(primary), held_out=True)[-VALIDATION_ROWS:]
        if not len(held):
            raise ValueError(f"no held-out transition among the {len(primary)} stored primary transitions")
        batch = primary.take(held)
        prediction = self.predict(batch.obs, batch.action)
        with torch.no_grad():
            obs_error = (prediction.next_obs_mean[:, :, 0, :] - batch.next_obs).square()
            reward_error = (prediction.reward_mean[:, :, 0] - batch.reward).square()
            loss = torch.cat([obs_error, reward_error.unsqueeze(-1)], dim=-1).mean()
        label = label_of(loss)
        if label.has_aux and not self.unsafe_mix:
            raise IsolationViolation(
                f"the world model's held-out loss depends on auxiliary data ({label}): it would decide when "
                "the gated learner stops",
                sources=[source for source in label.sources if source.kind is SourceKind.AUX],
            )
        with declassify(reason="the held-out loss of primary data ends the world model's own round"):
            return float(loss)

    def held_out_mask(self, size: int) -> Tensor:
        """Which of the primary buffer's storage rows ``[0, size)`` are held out: a bool tensor ``(size,)``.

        Row ``i`` is held out when ``splitmix64(seed + i) < holdout · 2**64`` (``seed``: the stream
        ``world-model/holdout``): a row keeps its role for the whole run (a transition stored there is
        never trained on), and which rows are held out depends on nothing but the row and the run seed.
        All ``False`` with ``holdout = 0``."""
        if self._holdout_seed is None:
            return torch.zeros(size, dtype=torch.bool)
        known = len(self._held_out)
        if size > known:
            fresh = _splitmix64(np.arange(known, size, dtype=np.uint64) + np.uint64(self._holdout_seed))
            threshold = np.uint64(min(int(self.spec.holdout * 2.0**64), 2**64 - 1))
            self._held_out = torch.cat([self._held_out, torch.from_numpy(fresh < threshold)])
        return self._held_out[:size].clone()

    def _rows(self, size: int, *, held_out: bool) -> Tensor:
        """The storage rows ``[0, size)`` that are held out (or used for training), ascending, int64.
        Kept for the last size asked (a round's updates all ask for the same); callers never write it."""
        cached = self._rows_cache.get(held_out)
        if cached is not None and cached[0] == size:
            return cached[1]
        mask = self.held_out_mask(size)
        rows = torch.nonzero(mask if held_out else ~mask).flatten()
        self._rows_cache[held_out] = (size, rows)
        return rows

    def _loss(self, batch: Batch) -> Tensor:
        model = self.model
        if isinstance(model, LinearGaussianWorldModel):
            out = model(batch.obs, self.encode_action(batch.action))
            loss = model.nll(out, batch.next_obs, batch.reward).sum()
        else:
            idx = bootstrap_indices(len(batch), self._members)
            obs = batch.obs.unsqueeze(1)
            action = self.encode_action(batch.action).unsqueeze(1)
            out = model(obs[idx], action[idx])
            nll = model.nll(out, batch.next_obs.unsqueeze(1)[idx], batch.reward.unsqueeze(1)[idx])
            loss = nll.sum() + BOUND_PENALTY * model.log_std_bound_penalty().sum()
        if self.spec.weight_decay:
            squares = torch.stack([p.square().sum().to(loss.dtype) for p in model.parameters()])
            loss = loss + 0.5 * self.spec.weight_decay * squares.sum()
        return loss

    def full_batch_loss(self, primary: PrimaryBuffer) -> float:
        """The objective the next update minimises, at the current parameters, without stepping.

        Only for configurations whose update is deterministic gradient descent on a fixed objective
        (``model="linear-gaussian"``, ``full_batch=True``); ``ValueError`` otherwise.  Reads ``primary``
        exactly as :meth:`update` does and changes nothing.
        """
        if self.spec.model != "linear-gaussian" or not self.spec.full_batch or self.unsafe_mix:
            raise ValueError(
                "full_batch_loss needs model='linear-gaussian' and full_batch=True (without the unsafe "
                "ablation): other configurations draw a random batch or bootstrap for every update"
            )
        with torch.no_grad():
            loss = self._loss(self._batch(primary, ()))
        with declassify(reason="the world-model objective is reported, never fed back into training"):
            return float(loss)

    def param_digest(self) -> str:
        """SHA-256 of the world model's ``state_dict`` (parameters and buffers)."""
        return state_digest(self.model.state_dict())

    @torch.no_grad()
    def predict(self, obs: Tensor, action: Tensor) -> WorldModelOutput:
        """Every member's one-step prediction for ``obs (B, obs_dim)`` and actions as stored in buffers.

        Shapes of the result are ``(K, B, 1, ·)``
        (see :class:`~amal_verified.world_model.ensemble.WorldModelOutput`;
        ``K = 1`` and float64 for the linear-Gaussian model).
        """
        if isinstance(self.model, LinearGaussianWorldModel):
            linear: WorldModelOutput = self.model(obs, self.encode_action(action))
            return linear
        out: WorldModelOutput = self.model(obs.unsqueeze(1), self.encode_action(action).unsqueeze(1))
        return out

    @torch.no_grad()
    def prediction_nll(self, prediction: WorldModelOutput, next_obs: Tensor, reward: Tensor) -> Tensor:
        """Each member's mean NLL of ``next_obs (B, obs_dim)`` and ``reward (B,)`` under ``prediction``
        (from :meth:`predict` on the same rows): shape ``(K,)``, whichever model the spec selects."""
        if isinstance(self.model, LinearGaussianWorldModel):
            linear: Tensor = self.model.nll(prediction, next_obs, reward)
            return linear
        nll: Tensor = self.model.nll(prediction, next_obs.unsqueeze(1), reward.unsqueeze(1))
        return nll

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Model, optimizer state, update count and both streams' generator states (and, with ``normalise``,
        the rounds begun)."""
        return {
            "format": _STATE_FORMAT,
            "spec": self.spec.to_json(),
            "unsafe_mix": self.unsafe_mix,
            "updates": self.updates,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "batches": self._batches.get_state(),
            "members": [g.get_state() for g in self._members],
            **({} if self.whole else {"member_range": list(self.member_range)}),
            **({"rounds": self._rounds} if self.spec.normalise else {}),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; ``ValueError`` (and nothing changed) for another configuration."""
        if state.get("format") != _STATE_FORMAT:
            raise ValueError(f"world-model learner state has format {state.get('format')!r}, expected 1")
        if WorldModelSpec.from_json(state["spec"]) != self.spec or state["unsafe_mix"] != self.unsafe_mix:
            raise ValueError("world-model learner state belongs to a different configuration")
        if tuple(state.get("member_range", (0, self.spec.members))) != self.member_range:
            raise ValueError("world-model learner state holds another range of the ensemble's members")
        members = state["members"]
        if len(members) != len(self._members):
            raise ValueError(
                f"state has {len(members)} member generators, the model has {len(self._members)}"
            )
        snapshot = {k: v.clone() for k, v in self.model.state_dict().items()}
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            self.model.load_state_dict(snapshot)
            raise ValueError(f"world-model learner state does not fit the model: {exc}") from exc
        self._batches.set_state(state["batches"])
        for g, s in zip(self._members, members, strict=True):
            g.set_state(s)
        self.updates = int(state["updates"])
        self._rounds = int(state.get("rounds", 0))


def _splitmix64(x: np.ndarray[Any, np.dtype[np.uint64]]) -> np.ndarray[Any, np.dtype[np.uint64]]:
    """SplitMix64's output function, elementwise (uint64 arithmetic wraps modulo 2**64)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _member_range(spec: WorldModelSpec, unsafe_mix: bool, members: tuple[int, int] | None) -> tuple[int, int]:
    if members is None:
        return (0, spec.members)
    start, stop = members
    if spec.holdout:
        raise ValueError(
            "a range of members needs holdout=0: the held-out loss that ends a round is the whole ensemble's"
        )
    if spec.model != "ensemble" or spec.shared_trunk or unsafe_mix:
        raise ValueError(
            "a range of members needs the gated ensemble with full members (model='ensemble', "
            "shared_trunk=False, not the unsafe ablation): other learners' members share parameters"
        )
    if not 0 <= start < stop <= spec.members:
        raise ValueError(f"members {members} must be a non-empty range within (0, {spec.members})")
    return (start, stop)


def _whole(primary: PrimaryBuffer, aux: Sequence[AuxBuffer]) -> Batch:
    """Every stored transition of ``primary`` (then of each ``aux`` buffer), in storage order.

    Read through the buffers' ``state_dict``, whose rows ``[0, len)`` are copies tagged with the
    buffer's source, like :meth:`~amal_verified.isolation.buffers.PrimaryBuffer.sample`'s.  ``ValueError`` if
    ``primary`` is empty.
    """
    if len(primary) == 0:
        raise ValueError(
            f"{type(primary).__name__}(source={primary.source.name!r}): the buffer is empty; "
            "add transitions first"
        )
    states = [b.state_dict() for b in (primary, *aux)]
    fields = ("obs", "action", "reward", "next_obs", "done")
    return Batch(
        **{name: torch.cat([s[name] for s in states]) for name in fields},
        indices=torch.cat([torch.arange(s["size"], dtype=torch.int64) for s in states]),
    )
