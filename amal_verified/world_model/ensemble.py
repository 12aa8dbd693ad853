"""The paper's world model (§6.3, Eq. 1) as a batched ensemble of Gaussian recurrent models.

Architecture of one member (paper §6.3; the choices the paper leaves open are stated here):

- **encoder**: MLP ``obs → 256 → 256 → 128``, ELU after every layer; it sees the observation only;
- **dynamics**: GRU with 256 hidden units whose input at step ``t`` is ``[encoder(obs_t), action_t]``;
- **decoder**: MLP ``256 → 128 → 256 → 256`` (the paper's ``128-256-256``), ELU after every layer;
- **Gaussian heads** (one linear layer ``256 → 2·obs + 2``): mean and log-std of ``p(s'|s,a)`` (diagonal)
  and of ``p(r|s,a)``, so ``p(s', r | s, a) = p(s'|s,a) p(r|s,a)`` (Eq. 1), conditioned through the GRU
  state on the whole prefix of the sequence.

Contracts:

- **Residual prediction.** The network predicts the *change* ``s' − s``; the returned
  ``next_obs_mean`` is ``obs + delta`` (absolute), so :meth:`EnsembleWorldModel.nll` takes the absolute
  next observation as target. Deltas are small and centred, which is easier to fit than ``s'``.
- **Soft log-std bounds** (PETS, Chua et al. 2018): ``log_std = hi − softplus(hi − raw)`` then
  ``log_std = lo + softplus(log_std − lo)``, with learnable per-member, per-dimension bounds ``lo``
  (initialised to −5) and ``hi`` (initialised to 0.25; PETS's log-variance bounds −10 and 0.5, halved).
  The bounds are trained; add ``0.01 * model.log_std_bound_penalty()`` to the loss, as PETS does, to
  keep them tight.
- **Batched members.** All ``K`` members run at once: every layer's weights have a leading member
  dimension (:class:`EnsembleLinear`, ``torch.baddbmm``), and :class:`EnsembleGRU` runs one time loop
  shared by all members. There is no Python loop over members and no ``torch.func``: the parameters are
  ordinary ``nn.Parameter``\\ s, as the library's module-boundary tracking requires.
- **No global RNG.** Initialisation draws from the explicit ``generator``; bootstrapping
  (:func:`bootstrap_indices`) and sampling (:meth:`EnsembleWorldModel.sample`) take explicit generators.
  ``torch.get_rng_state()`` is never read or advanced (tested).
- **Normalisation (optional, ``normalise=True``), MBPO-style.** Statistics are buffers of the model, set
  only by :meth:`EnsembleWorldModel.set_normalisation` (never running statistics updated by a forward
  pass, which any data reaching the model could write): the inputs ``s`` and ``a`` are standardised,
  ``(x − mean) / std`` per dimension, and the network's outputs are in standardised units of the change
  ``s' − s`` and of the reward, de-normalised before they are returned: ``next_obs_mean = obs +
  delta_mean + delta_std · Δ̂``, ``next_obs_log_std = log_std_n + log delta_std`` (and the same for the
  reward).  Every output of the model, and so everything that reads it (the NLL, sampling, the
  information gain), is in the data's own units; the soft log-std bounds act in standardised units.
  The NLL of the de-normalised output differs from the NLL in standardised units by
  ``Σ_d log delta_std_d + log reward_std``, a constant of the statistics, so its gradients are the
  standardised loss's (up to rounding).  Each statistic has a leading member dimension (all members hold
  the same values), so that a member range (:meth:`select_members`) carries its statistics.
  :func:`normalisation_statistics` computes them (from primary data only, in the learner).  Without
  ``normalise`` the model has no such buffers and its ``state_dict`` is the paper model's.

Full members or K heads on a shared trunk
-----------------------------------------
``shared_trunk=True`` shares the encoder and GRU between members (one set of weights, run once) and keeps a
separate decoder and Gaussian head per member, so it has fewer parameters and runs the trunk once instead of
``K`` times. Parameters: 545,352 per full member (K=5: 2.73 M, K=20: 10.9 M); the shared trunk is 404,352
shared plus 141,000 per member (K=5: 1.11 M, K=20: 3.22 M). Full members cost about ``K`` single models of
the same architecture: batching removes the Python loop over members but gives no speed-up on CPU at the
paper's sizes, where each member's matrix products already keep one core busy (measurements:
``benchmarks/README.md``, "Design measurements quoted by the code").

The default is **full members** (``shared_trunk=False``): the ensemble's disagreement is what the paper's
information-gain term measures (Proposition 1 averages over world-model samples θ), and members that share
an encoder and GRU can only disagree through their decoders (expected, not verified, to understate
epistemic uncertainty). The shared trunk's saving also holds only when members share their input
batch: with bootstrapped per-member batches (``(K, B, T, ·)`` inputs) the trunk runs on ``K·B`` rows, as
many as full members. Choose ``shared_trunk=True`` when a cheaper predictive mean is what is needed.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from amal_verified.common.runtime_checks import checked

__all__ = [
    "DEFAULT_DECODER",
    "DEFAULT_ENCODER",
    "DEFAULT_GRU_HIDDEN",
    "EnsembleGRU",
    "EnsembleLinear",
    "EnsembleWorldModel",
    "WorldModelOutput",
    "WorldModelSample",
    "bootstrap_indices",
    "member_generators",
    "normalisation_statistics",
]

DEFAULT_ENCODER: tuple[int, ...] = (256, 256, 128)
DEFAULT_GRU_HIDDEN = 256
DEFAULT_DECODER: tuple[int, ...] = (128, 256, 256)
_LOG_STD_MIN_INIT = -5.0
_LOG_STD_MAX_INIT = 0.25
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
STD_FLOOR = 1e-6
"""A dimension whose standard deviation is below this is treated as constant: centred, not scaled (std 1),
so rounding noise in a constant is never magnified (MBPO's StandardScaler does the same below 1e-12)."""
_NORMALISED = ("obs", "action", "delta", "reward")


def _uniform(shape: tuple[int, ...], bound: float, generator: torch.Generator) -> Tensor:
    return torch.empty(shape).uniform_(-bound, bound, generator=generator)


@checked
class EnsembleLinear(nn.Module):
    """``members`` independent affine maps applied at once: ``y[k] = x[k] @ weight[k] + bias[k]``.

    ``weight`` has shape ``(members, in_features, out_features)`` and ``bias`` ``(members, 1,
    out_features)``. Initialised like ``nn.Linear`` (uniform in ``±1/sqrt(in_features)``), from
    ``generator`` only.
    """

    def __init__(
        self, members: int, in_features: int, out_features: int, *, generator: torch.Generator
    ) -> None:
        super().__init__()
        if members < 1 or in_features < 1 or out_features < 1:
            raise ValueError(
                f"EnsembleLinear sizes must be positive, got members={members}, "
                f"in_features={in_features}, out_features={out_features}"
            )
        self.members = members
        self.in_features = in_features
        self.out_features = out_features
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(_uniform((members, in_features, out_features), bound, generator))
        self.bias = nn.Parameter(_uniform((members, 1, out_features), bound, generator))

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(members, *rows, in_features)`` → ``(members, *rows, out_features)``."""
        rows = x.shape[1:-1]
        flat = x.reshape(self.members, -1, self.in_features)
        return torch.baddbmm(self.bias, flat, self.weight).reshape(self.members, *rows, self.out_features)


@checked
class EnsembleGRU(nn.Module):
    """``members`` GRUs (PyTorch's equations and gate order r, z, n) sharing one loop over time.

    Weights: ``weight_ih (members, input, 3·hidden)``, ``weight_hh (members, hidden, 3·hidden)``, biases
    ``(members, 1, 3·hidden)``; initialised like ``nn.GRU`` (uniform in ``±1/sqrt(hidden)``) from
    ``generator``. The input projection of all time steps is one batched product; only the recurrent
    product runs inside the time loop.
    """

    def __init__(
        self, members: int, input_size: int, hidden_size: int, *, generator: torch.Generator
    ) -> None:
        super().__init__()
        if members < 1 or input_size < 1 or hidden_size < 1:
            raise ValueError(
                f"EnsembleGRU sizes must be positive, got members={members}, input_size={input_size}, "
                f"hidden_size={hidden_size}"
            )
        self.members = members
        self.input_size = input_size
        self.hidden_size = hidden_size
        bound = 1.0 / math.sqrt(hidden_size)
        self.weight_ih = nn.Parameter(_uniform((members, input_size, 3 * hidden_size), bound, generator))
        self.weight_hh = nn.Parameter(_uniform((members, hidden_size, 3 * hidden_size), bound, generator))
        self.bias_ih = nn.Parameter(_uniform((members, 1, 3 * hidden_size), bound, generator))
        self.bias_hh = nn.Parameter(_uniform((members, 1, 3 * hidden_size), bound, generator))

    def forward(self, x: Tensor, h: Tensor | None) -> tuple[Tensor, Tensor]:
        """``x``: ``(members, batch, time, input)``, ``h``: ``(members, batch, hidden)``, or ``None`` for
        the zero initial state.

        Returns ``(outputs (members, batch, time, hidden), final hidden (members, batch, hidden))``.

        With ``h=None`` the first step's recurrent product ``0 · weight_hh`` is not computed: its
        result is ``bias_hh`` exactly, and ``weight_hh`` is linked in through a zero-width product so
        that it still receives that step's gradient, zero (so an optimizer's per-parameter state
        advances exactly as with the product).  Outputs, gradients and optimizer states are those of
        the computation with an explicit zero ``h``, bit for bit (``tests/world_model``).
        """
        k, b, t, _ = x.shape
        hid = self.hidden_size
        gi = torch.baddbmm(self.bias_ih, x.reshape(k, b * t, self.input_size), self.weight_ih)
        # unbind (one backward node) rather than indexing per step: each indexing backward would
        # allocate and zero a gradient the size of the whole sequence.
        steps = gi.reshape(k, b, t, 3 * hid).unbind(dim=2)
        outputs: list[Tensor] = []
        first = h is None
        if h is None:
            h = x.new_zeros(()).expand(k, b, hid)
        for gi_t in steps:
            if first:
                # A (K, 1, 0) × (K, 0, 3H) product is an exact zero that carries weight_hh's gradient.
                link = torch.bmm(x.new_zeros((k, 1, 0)), self.weight_hh[:, :0, :])
                gh = (self.bias_hh + link).expand(k, b, 3 * hid)
                first = False
            else:
                gh = torch.baddbmm(self.bias_hh, h, self.weight_hh)
            i_r, i_z, i_n = gi_t.chunk(3, dim=-1)
            h_r, h_z, h_n = gh.chunk(3, dim=-1)
            r = torch.sigmoid(i_r + h_r)
            z = torch.sigmoid(i_z + h_z)
            n = torch.tanh(i_n + r * h_n)
            h = (1.0 - z) * n + z * h
            outputs.append(h)
        return torch.stack(outputs, dim=2), h


class _EnsembleMLP(nn.Module):
    """EnsembleLinear layers of the given widths, ELU after every layer."""

    def __init__(
        self, members: int, in_features: int, sizes: Sequence[int], generator: torch.Generator
    ) -> None:
        super().__init__()
        self.sizes = tuple(sizes)
        widths = [in_features, *sizes]
        self.layers = nn.ModuleList(
            EnsembleLinear(members, a, b, generator=generator) for a, b in itertools.pairwise(widths)
        )

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = F.elu(layer(x))
        return x


@dataclass(frozen=True)
class WorldModelOutput:
    """Per-member Gaussian parameters of ``p(s'|s,a)`` and ``p(r|s,a)``.

    ``next_obs_mean`` is absolute (``obs + predicted delta``). Shapes: ``next_obs_mean`` and
    ``next_obs_log_std`` ``(K, B, T, obs_dim)``; ``reward_mean`` and ``reward_log_std`` ``(K, B, T)``;
    ``final_hidden`` ``(K, B, gru_hidden)`` (pass it back as ``hidden`` to continue the sequence).
    """

    next_obs_mean: Tensor
    next_obs_log_std: Tensor
    reward_mean: Tensor
    reward_log_std: Tensor
    final_hidden: Tensor


@dataclass(frozen=True)
class WorldModelSample:
    """One draw per batch row from a uniformly chosen member.

    ``next_obs`` ``(B, T, obs_dim)``, ``reward`` ``(B, T)``, ``member`` ``(B,)`` int64 (the member used
    for every step of that row).
    """

    next_obs: Tensor
    reward: Tensor
    member: Tensor


def _soft_bound(raw: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    bounded = hi - F.softplus(hi - raw)
    return lo + F.softplus(bounded - lo)


class _DataCheck(nn.Module):
    """Value checks on one tensor, run as a module call of its own.

    Under the library's tracking, a module call whose tensor inputs share one label runs on plain
    tensors, so these checks read values without recording an escape, even when the caller mixes
    labels (e.g. primary predictions against an auxiliary target, which the gate then refuses). The
    only information leaving is whether the check raised.
    """

    def forward(self, x: Tensor, name: str, what: str) -> None:
        if what == "finite":
            ok, problem = torch.isfinite(x).all(), "contains NaN or infinite values"
        elif what == "non-negative":
            ok, problem = (x >= 0).all(), "must be non-negative"
        elif what == "std":
            ok, problem = (x > 0).all(), "must be positive (a standard deviation)"
        else:
            ok, problem = (x > 0).all(), "selects no element for at least one member"
        if not bool(ok):
            raise ValueError(f"{name} {problem}")


_DATA_CHECK = _DataCheck()


def _check_finite(name: str, x: Tensor) -> None:
    _DATA_CHECK(x, name, "finite")


def _check_float(name: str, x: Tensor, dtype: torch.dtype) -> None:
    if x.dtype != dtype:
        hint = " (encode discrete actions as one-hot floats)" if not x.is_floating_point() else ""
        raise ValueError(f"{name} must have dtype {dtype} (the model's), got {x.dtype}{hint}")


class _GaussianNLL(nn.Module):
    """Per-member Gaussian NLL. A module so that, under tracking, validation runs on plain tensors."""

    def forward(
        self,
        mean: Tensor,
        log_std: Tensor,
        reward_mean: Tensor,
        reward_log_std: Tensor,
        next_obs: Tensor,
        reward: Tensor,
        mask: Tensor | None,
    ) -> Tensor:
        k, b, t, o = mean.shape
        dtype = mean.dtype
        _check_float("next_obs", next_obs, dtype)
        _check_float("reward", reward, dtype)
        if next_obs.shape not in ((b, t, o), (k, b, t, o)):
            raise ValueError(
                f"next_obs must have shape (B, T, obs_dim) = {(b, t, o)} or (K, B, T, obs_dim) = "
                f"{(k, b, t, o)}, got {tuple(next_obs.shape)}"
            )
        if reward.shape not in ((b, t), (k, b, t)):
            raise ValueError(
                f"reward must have shape (B, T) = {(b, t)} or (K, B, T) = {(k, b, t)}, "
                f"got {tuple(reward.shape)}"
            )
        _check_finite("next_obs", next_obs)
        _check_finite("reward", reward)
        obs_term = 0.5 * ((next_obs - mean) * torch.exp(-log_std)).square() + log_std + _HALF_LOG_2PI
        rew_term = 0.5 * ((reward - reward_mean) * torch.exp(-reward_log_std)).square() + reward_log_std
        per_step = obs_term.sum(dim=-1) + rew_term + _HALF_LOG_2PI  # (K, B, T)
        if mask is None:
            return per_step.mean(dim=(1, 2))
        if mask.shape not in ((b, t), (k, b, t)):
            raise ValueError(
                f"mask must have shape (B, T) = {(b, t)} or (K, B, T) = {(k, b, t)}, got {tuple(mask.shape)}"
            )
        if mask.dtype == torch.bool:
            weights = mask.to(dtype)
        elif mask.dtype == dtype:
            _check_finite("mask", mask)
            _DATA_CHECK(mask, "mask", "non-negative")
            weights = mask
        else:
            raise ValueError(f"mask must be bool or {dtype}, got {mask.dtype}")
        total = weights.expand(k, b, t).sum(dim=(1, 2))
        _DATA_CHECK(total, "mask", "positive")
        return (per_step * weights).sum(dim=(1, 2)) / total


@checked
class EnsembleWorldModel(nn.Module):
    """``members`` Gaussian recurrent world models (paper §6.3), evaluated as one batched computation.

    Construct with an explicit ``generator`` (e.g. ``torch.Generator().manual_seed(seed)``): the
    initial parameters are a function of its state alone, and the global RNG is never used.
    ``shared_trunk=True`` shares the encoder and GRU between members (see the module docstring for the
    trade-off; full members are the default).

    Call ``model(obs, action, hidden)``: ``obs (B, T, obs_dim)`` and ``action (B, T, action_dim)``, both
    floating with the model's dtype, shared by all members; or ``(K, B, T, ·)`` to give each member its
    own batch (bootstrapping: ``obs[bootstrap_indices(B, gens)]``). ``hidden`` is ``None`` (zeros),
    ``(B, gru_hidden)`` (same start for every member) or ``(K, B, gru_hidden)``. Returns a
    :class:`WorldModelOutput`.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        *,
        members: int = 5,
        generator: torch.Generator,
        encoder_sizes: Sequence[int] = DEFAULT_ENCODER,
        gru_hidden: int = DEFAULT_GRU_HIDDEN,
        decoder_sizes: Sequence[int] = DEFAULT_DECODER,
        shared_trunk: bool = False,
        normalise: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (
            ("obs_dim", obs_dim),
            ("action_dim", action_dim),
            ("members", members),
            ("gru_hidden", gru_hidden),
        ):
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        for name, sizes in (("encoder_sizes", encoder_sizes), ("decoder_sizes", decoder_sizes)):
            if len(sizes) == 0 or any(s < 1 for s in sizes):
                raise ValueError(
                    f"{name} must be a non-empty sequence of positive widths, got {tuple(sizes)}"
                )
        self.obs_dim = obs_dim
        self.action_dim = action_dim
        self.members = members
        self.gru_hidden = gru_hidden
        self.shared_trunk = shared_trunk
        trunk = 1 if shared_trunk else members
        self.encoder = _EnsembleMLP(trunk, obs_dim, encoder_sizes, generator)
        self.gru = EnsembleGRU(trunk, encoder_sizes[-1] + action_dim, gru_hidden, generator=generator)
        self.decoder = _EnsembleMLP(members, gru_hidden, decoder_sizes, generator)
        self.head = EnsembleLinear(members, decoder_sizes[-1], 2 * obs_dim + 2, generator=generator)
        self.obs_log_std_min = nn.Parameter(torch.full((members, 1, 1, obs_dim), _LOG_STD_MIN_INIT))
        self.obs_log_std_max = nn.Parameter(torch.full((members, 1, 1, obs_dim), _LOG_STD_MAX_INIT))
        self.reward_log_std_min = nn.Parameter(torch.full((members, 1, 1), _LOG_STD_MIN_INIT))
        self.reward_log_std_max = nn.Parameter(torch.full((members, 1, 1), _LOG_STD_MAX_INIT))
        self._nll = _GaussianNLL()
        self.normalise = normalise
        if normalise:
            # Identity until set_normalisation: mean 0, std 1.
            for name, dim in (("obs", obs_dim), ("action", action_dim), ("delta", obs_dim), ("reward", 0)):
                shape = (members, 1, 1, dim) if dim else (members, 1, 1)
                self.register_buffer(f"norm_{name}_mean", torch.zeros(shape))
                self.register_buffer(f"norm_{name}_std", torch.ones(shape))

    @torch.no_grad()
    def set_normalisation(self, statistics: dict[str, Tensor]) -> None:
        """Copy ``statistics`` (:func:`normalisation_statistics`'s: ``{obs,action,delta,reward}_{mean,std}``,
        each ``(obs_dim,)``, ``(action_dim,)``, ``(obs_dim,)`` or ``()``) into every member's normalisation
        buffers, converted to the model's dtype.  ``ValueError`` if the model has no normalisation, a key is
        missing or a shape is wrong; a std must be positive and finite (nothing is copied otherwise)."""
        if not self.normalise:
            raise ValueError("this model has no normalisation: construct it with normalise=True")
        checked: list[tuple[Tensor, Tensor]] = []
        for name in _NORMALISED:
            for kind in ("mean", "std"):
                key = f"{name}_{kind}"
                buffer: Tensor = getattr(self, f"norm_{key}")
                value = statistics.get(key)
                expected = tuple(buffer.shape[3:])
                if not isinstance(value, Tensor) or tuple(value.shape) != expected:
                    got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                    raise ValueError(
                        f"normalisation statistic {key!r} must be a tensor of shape {expected}, got {got}"
                    )
                _check_finite(key, value)
                if kind == "std":
                    _DATA_CHECK(value, key, "std")
                checked.append((buffer, value))
        for buffer, value in checked:
            buffer.copy_(value.to(buffer.dtype).expand_as(buffer))

    def _statistic(self, name: str, leading: int) -> Tensor:
        """Normalisation buffer ``norm_<name>`` for a tensor whose leading (member) size is ``leading``:
        member 0's alone for 1 (a shared trunk's one input; every member holds the same statistics)."""
        value: Tensor = getattr(self, f"norm_{name}")
        return value[:1] if leading == 1 else value

    def select_members(self, start: int, stop: int) -> EnsembleWorldModel:
        """A new model of members ``start .. stop - 1`` of this one, with copies of their parameters.

        Members of full-member ensembles share no parameter, so the new model computes, bit for bit,
        what those members compute here.  ``ValueError`` for a shared trunk (its members share the
        encoder and GRU) or a range outside ``0 .. members``.
        """
        if self.shared_trunk:
            raise ValueError("select_members needs full members: a shared trunk belongs to every member")
        if not 0 <= start < stop <= self.members:
            raise ValueError(
                f"member range [{start}, {stop}) must be non-empty and lie within [0, {self.members})"
            )
        picked = EnsembleWorldModel(
            self.obs_dim,
            self.action_dim,
            members=stop - start,
            generator=torch.Generator().manual_seed(0),  # every parameter is overwritten below
            encoder_sizes=self.encoder.sizes,
            gru_hidden=self.gru_hidden,
            decoder_sizes=self.decoder.sizes,
            normalise=self.normalise,
        ).to(self._dtype())
        with torch.no_grad():
            picked.load_state_dict({k: v[start:stop].clone() for k, v in self.state_dict().items()})
        return picked

    def _dtype(self) -> torch.dtype:
        return self.head.weight.dtype

    def _validate_inputs(self, obs: Tensor, action: Tensor, hidden: Tensor | None) -> tuple[int, int]:
        dtype = self._dtype()
        _check_float("obs", obs, dtype)
        _check_float("action", action, dtype)
        if obs.dim() not in (3, 4) or obs.shape[-1] != self.obs_dim:
            raise ValueError(
                f"obs must have shape (B, T, {self.obs_dim}) or ({self.members}, B, T, {self.obs_dim}), "
                f"got {tuple(obs.shape)}"
            )
        if obs.dim() == 4 and obs.shape[0] != self.members:
            raise ValueError(
                f"obs has a member dimension of {obs.shape[0]}, the model has {self.members} members"
            )
        b, t = obs.shape[-3], obs.shape[-2]
        if b < 1 or t < 1:
            raise ValueError(f"obs must have at least one row and one time step, got {tuple(obs.shape)}")
        allowed = ((b, t, self.action_dim), (self.members, b, t, self.action_dim))
        if action.shape not in allowed:
            raise ValueError(
                f"action must have shape {allowed[0]} or {allowed[1]}, got {tuple(action.shape)}"
            )
        if hidden is not None:
            _check_float("hidden", hidden, dtype)
            allowed_h = ((b, self.gru_hidden), (self.members, b, self.gru_hidden))
            if hidden.shape not in allowed_h:
                raise ValueError(
                    f"hidden must have shape {allowed_h[0]} or {allowed_h[1]}, got {tuple(hidden.shape)}"
                )
        _check_finite("obs", obs)
        _check_finite("action", action)
        return b, t

    def forward(self, obs: Tensor, action: Tensor, hidden: Tensor | None = None) -> WorldModelOutput:
        """Gaussian predictions of every member for every step; see the class docstring for shapes."""
        b, t = self._validate_inputs(obs, action, hidden)
        k, o = self.members, self.obs_dim
        per_member = obs.dim() == 4 or action.dim() == 4 or (hidden is not None and hidden.dim() == 3)
        if per_member:
            obs = obs.expand(k, b, t, o)
            action = action.expand(k, b, t, self.action_dim)
        # hidden=None reaches the GRU as None: it skips the first step's product with a zero state.
        h: Tensor | None
        if self.shared_trunk:
            # One trunk over all rows: (1, B, ...) when members share the input, (1, K·B, ...) otherwise.
            rows = k * b if per_member else b
            x_obs, x_act = obs.reshape(1, rows, t, o), action.reshape(1, rows, t, self.action_dim)
            h = (
                None
                if hidden is None
                else hidden.expand(*((k, b) if per_member else (b,)), self.gru_hidden).reshape(
                    1, rows, self.gru_hidden
                )
            )
        else:
            x_obs, x_act = obs.expand(k, b, t, o), action.expand(k, b, t, self.action_dim)
            h = None if hidden is None else hidden.expand(k, b, self.gru_hidden)
        if self.normalise:
            trunk = x_obs.shape[0]
            x_obs = (x_obs - self._statistic("obs_mean", trunk)) / self._statistic("obs_std", trunk)
            x_act = (x_act - self._statistic("action_mean", trunk)) / self._statistic("action_std", trunk)
        z = self.encoder(x_obs)
        seq, h_last = self.gru(torch.cat([z, x_act], dim=-1), h)
        seq = seq.reshape(-1, b, t, self.gru_hidden).expand(k, b, t, self.gru_hidden)
        h_last = h_last.reshape(-1, b, self.gru_hidden).expand(k, b, self.gru_hidden)
        out = self.head(self.decoder(seq))
        delta, raw_obs_ls, rew_mean, raw_rew_ls = out.split([o, o, 1, 1], dim=-1)
        obs_log_std = _soft_bound(raw_obs_ls, self.obs_log_std_min, self.obs_log_std_max)
        rew_mean = rew_mean.squeeze(-1)
        rew_log_std = _soft_bound(raw_rew_ls.squeeze(-1), self.reward_log_std_min, self.reward_log_std_max)
        if self.normalise:
            delta_std, reward_std = self._statistic("delta_std", k), self._statistic("reward_std", k)
            delta = self._statistic("delta_mean", k) + delta_std * delta
            obs_log_std = obs_log_std + torch.log(delta_std)
            rew_mean = self._statistic("reward_mean", k) + reward_std * rew_mean
            rew_log_std = rew_log_std + torch.log(reward_std)
        return WorldModelOutput(
            next_obs_mean=obs + delta,
            next_obs_log_std=obs_log_std,
            reward_mean=rew_mean,
            reward_log_std=rew_log_std,
            final_hidden=h_last,
        )

    def nll(
        self, output: WorldModelOutput, next_obs: Tensor, reward: Tensor, *, mask: Tensor | None = None
    ) -> Tensor:
        """Gaussian negative log-likelihood of ``(next_obs, reward)`` under each member: shape ``(K,)``.

        Per step the NLL is ``−log N(next_obs; mean, diag σ²) − log N(reward; mean, σ²)`` (summed over
        observation dimensions, as one joint density, Eq. 1), then averaged over batch and time, or over
        the steps selected by ``mask`` (``(B, T)`` or ``(K, B, T)``, bool or non-negative weights). Targets
        are ``(B, T, obs_dim)``/``(B, T)`` shared by all members or ``(K, ...)`` per member. The training
        loss is ``model.nll(...).sum()``. Raises ``ValueError`` naming the argument on a wrong shape,
        dtype, NaN or infinity.
        """
        result: Tensor = self._nll(
            output.next_obs_mean,
            output.next_obs_log_std,
            output.reward_mean,
            output.reward_log_std,
            next_obs,
            reward,
            mask,
        )
        return result

    def log_std_bound_penalty(self) -> Tensor:
        """PETS's regulariser per member, shape ``(K,)``: ``Σ max bounds − Σ min bounds`` (obs and reward)."""
        obs_gap = (self.obs_log_std_max - self.obs_log_std_min).sum(dim=(1, 2, 3))
        return obs_gap + (self.reward_log_std_max - self.reward_log_std_min).sum(dim=(1, 2))

    def sample(self, output: WorldModelOutput, generator: torch.Generator) -> WorldModelSample:
        """Draw next observation and reward for each batch row from one uniformly chosen member.

        The member is drawn once per row (and used for every time step of that row), then a Gaussian
        sample is drawn from it; both draws use ``generator`` only.
        """
        mean = output.next_obs_mean
        k, b, _, _ = mean.shape
        member = torch.randint(0, k, (b,), generator=generator)
        rows = torch.arange(b)
        obs_mean, obs_std = mean[member, rows], output.next_obs_log_std[member, rows].exp()
        rew_mean, rew_std = output.reward_mean[member, rows], output.reward_log_std[member, rows].exp()
        obs_noise = torch.randn(obs_mean.shape, generator=generator, dtype=obs_mean.dtype)
        rew_noise = torch.randn(rew_mean.shape, generator=generator, dtype=rew_mean.dtype)
        return WorldModelSample(
            next_obs=obs_mean + obs_std * obs_noise,
            reward=rew_mean + rew_std * rew_noise,
            member=member,
        )


@checked
def normalisation_statistics(
    obs: Tensor, action: Tensor, reward: Tensor, next_obs: Tensor
) -> dict[str, Tensor]:
    """Per-dimension means and standard deviations for :meth:`EnsembleWorldModel.set_normalisation`.

    ``obs`` and ``next_obs`` ``(N, obs_dim)``, ``action`` ``(N, action_dim)`` (floating; discrete actions
    one-hot), ``reward (N,)``: the statistics of ``obs``, ``action``, the change ``next_obs − obs`` and
    ``reward`` over the ``N`` rows, computed in float64 (population std, ``correction=0``), returned in
    float64.  A std below :data:`STD_FLOOR` becomes 1 (a constant dimension is centred, not scaled).  The
    result is a deterministic function of the rows and their order; it carries their labels.  ``ValueError``
    for no rows, mismatched rows or non-finite values.
    """
    n = obs.shape[0] if obs.dim() == 2 else 0
    if (
        n < 1
        or next_obs.shape != obs.shape
        or action.dim() != 2
        or action.shape[0] != n
        or tuple(reward.shape) != (n,)
    ):
        raise ValueError(
            f"normalisation statistics need N >= 1 rows: obs and next_obs (N, obs_dim), action "
            f"(N, action_dim), reward (N,), got {tuple(obs.shape)}, {tuple(next_obs.shape)}, "
            f"{tuple(action.shape)}, {tuple(reward.shape)}"
        )
    columns = {
        "obs": obs.to(torch.float64),
        "action": action.to(torch.float64),
        "delta": next_obs.to(torch.float64) - obs.to(torch.float64),
        "reward": reward.to(torch.float64),
    }
    statistics: dict[str, Tensor] = {}
    for name, value in columns.items():
        _check_finite(name, value)
        std, mean = torch.std_mean(value, dim=0, correction=0)
        statistics[f"{name}_mean"] = mean
        statistics[f"{name}_std"] = torch.where(std < STD_FLOOR, torch.ones_like(std), std)
    return statistics


@checked
def member_generators(seed: int, members: int) -> tuple[torch.Generator, ...]:
    """``members`` independent generators derived from ``seed`` (numpy ``SeedSequence.spawn``).

    Deterministic in ``(seed, members)``; member ``i``'s stream does not depend on ``members``.
    """
    if members < 1:
        raise ValueError(f"members must be positive, got {members}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    children = np.random.SeedSequence(seed).spawn(members)
    return tuple(
        torch.Generator().manual_seed(int(c.generate_state(1, np.uint64)[0] >> np.uint64(1)))
        for c in children
    )


@checked
def bootstrap_indices(batch_size: int, generators: Sequence[torch.Generator]) -> Tensor:
    """One bootstrap resample per member: ``(K, batch_size)`` int64 indices, row ``k`` from ``generators[k]``.

    Index a batch with them to give each member its own data: ``obs[idx]`` is ``(K, B, T, obs_dim)``.
    Member ``k``'s indices depend on ``generators[k]`` only.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if len(generators) == 0:
        raise ValueError("generators must hold one torch.Generator per member, got none")
    return torch.stack([torch.randint(0, batch_size, (batch_size,), generator=g) for g in generators])
