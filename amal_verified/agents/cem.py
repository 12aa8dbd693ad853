"""Auxiliary-agent evolution by the cross-entropy method (paper §4.4, Algorithm 1).

The paper evolves the parameters ψ of the auxiliary agents with CEM::

    N(μ₀, Σ₀);  for g = 1..G:  ψ_i ~ N(μ_{g-1}, Σ_{g-1});  F(ψ_i) = Diversity(ψ_i) − β·Distance(ψ_i, π_φ);
                                E = top-ρ({ψ_i});  μ_g, Σ_g = MLE(E)

This module makes each piece concrete:

- :class:`CEM` — the search distribution, a diagonal Gaussian over flat parameter
  vectors, with an ask/tell interface, its *own* ``torch.Generator`` and a
  state dict that resumes bit for bit.
- :class:`FlatMLPPolicy` — a small deterministic MLP whose parameters are one
  flat vector, evaluated for a whole population at once (batched matrix
  products, no Python loop over the population).
- :func:`behaviour`, :func:`behaviour_divergence`, :func:`diversity`,
  :func:`distance_to_primary` and :func:`fitness` — the fitness of Algorithm 1
  defined in *behaviour space on a shared probe set of states* (see
  :func:`fitness` for the exact formulas).

Nothing here reads or advances the global torch RNG: sampling uses the
generator passed to :class:`CEM`, and the policies and fitness are
deterministic.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final, final

import torch

from amal_verified.common.runtime_checks import checked

__all__ = [
    "CEM",
    "FlatMLPPolicy",
    "behaviour",
    "behaviour_divergence",
    "distance_to_primary",
    "diversity",
    "fitness",
]

_STATE_FORMAT: Final = 1
_STATE_KEYS: Final = frozenset(
    {
        "format",
        "dim",
        "population",
        "elite_fraction",
        "std_floor",
        "dtype",
        "mean",
        "std",
        "generation",
        "pending",
        "generator_state",
    }
)
_FLOAT_DTYPES: Final = (torch.float32, torch.float64)
# Tolerance for ⌈ρ·population⌉: 0.2 * 100 must give 20, not 21, whatever the float rounding.
_CEIL_EPS: Final = 1e-9


def _check_positive_int(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")


def _as_vector(name: str, value: float | int | torch.Tensor, dim: int, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        if value.shape not in ((dim,), ()):
            raise ValueError(f"{name} must be a scalar or have shape ({dim},), got {tuple(value.shape)}")
        if not value.is_floating_point() and value.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"{name} must be a real tensor, got dtype {value.dtype}")
        out = value.detach().to(device="cpu", dtype=dtype).expand(dim).clone()
    else:
        out = torch.full((dim,), float(value), dtype=dtype)
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"{name} must be finite")
    return out


@final
class CEM:
    """Cross-entropy method over flat parameter vectors, with a diagonal Gaussian search distribution.

    Usage (one generation)::

        candidates = cem.ask()                 # (population, dim), ψ_i ~ N(μ, diag σ²)
        cem.tell(candidates, fitness_values)   # (population,) — higher is better

    Contract:

    - **Sampling** uses only the ``generator`` given at construction
      (``torch.randn(..., generator=generator)``); the global torch RNG is never
      read or advanced, and two CEMs with different generators never influence
      each other.  Candidates are ``μ + σ ⊙ ε`` with ``ε ~ N(0, I)``.
    - **Elite selection**: the top ``n_elite = ⌈elite_fraction · population⌉``
      candidates by fitness (computed with a 1e-9 tolerance so ``0.2·100`` is 20).
      Ties are broken deterministically by index: among equal fitness values
      the candidate with the lower row index wins (a stable descending sort).
    - **MLE update** of a diagonal Gaussian on the elite set:
      ``μ ← mean(E)`` and ``σ ← max(std(E, unbiased=False), std_floor)``
      elementwise.  The maximum-likelihood σ is the *biased* (1/n) standard
      deviation.  No smoothing is applied.
    - **Variance floor**: without it CEM's σ collapses geometrically once the
      elite set concentrates (with one elite it is exactly 0 after one step),
      and the auxiliary agents would stop exploring.  Clamping σ at
      ``std_floor > 0`` keeps every coordinate sampling with at least that
      spread, forever.  ``init_std`` must be ≥ ``std_floor``.
    - **Protocol**: :meth:`tell` must follow :meth:`ask` and receive exactly the
      candidates :meth:`ask` returned (compared bit for bit); a second
      :meth:`ask` before :meth:`tell` discards the earlier candidates.
    - **Validation**: a :meth:`tell` with malformed fitness (wrong shape or
      dtype, NaN or ±Inf), with no outstanding :meth:`ask`, or with other
      candidates raises ``ValueError`` and leaves the CEM exactly as it was
      (μ, σ, generation, outstanding candidates, generator state).
    - :meth:`state_dict` / :meth:`load_state_dict` capture μ, σ, the generation
      count, outstanding candidates and the generator state, so a resumed CEM
      produces bit for bit the candidates an uninterrupted one would.

    Defaults follow the paper's Table 1 (population 100, elite fraction 0.2).
    """

    @checked
    def __init__(
        self,
        dim: int,
        *,
        population: int = 100,
        elite_fraction: float | int = 0.2,
        init_mean: float | int | torch.Tensor = 0.0,
        init_std: float | int | torch.Tensor = 1.0,
        std_floor: float | int = 1e-2,
        generator: torch.Generator,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        _check_positive_int("dim", dim)
        _check_positive_int("population", population)
        if not (0.0 < elite_fraction <= 1.0) or math.isnan(elite_fraction):
            raise ValueError(f"elite_fraction must lie in (0, 1], got {elite_fraction}")
        if not (math.isfinite(std_floor) and std_floor > 0.0):
            raise ValueError(f"std_floor must be a finite positive number, got {std_floor}")
        if dtype not in _FLOAT_DTYPES:
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        if generator.device.type != "cpu":
            raise ValueError(f"generator must be a CPU torch.Generator, got device {generator.device}")
        mean = _as_vector("init_mean", init_mean, dim, dtype)
        std = _as_vector("init_std", init_std, dim, dtype)
        if bool((std < std_floor).any()):
            raise ValueError(f"init_std must be >= std_floor ({std_floor}) in every coordinate")
        self._dim = dim
        self._population = population
        self._elite_fraction = float(elite_fraction)
        self._num_elite = max(1, min(population, math.ceil(population * elite_fraction - _CEIL_EPS)))
        self._std_floor = float(std_floor)
        self._dtype = dtype
        self._mean = mean
        self._std = std
        self._generation = 0
        self._pending: torch.Tensor | None = None
        self._generator = generator

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        """Length of each parameter vector."""
        return self._dim

    @property
    def population(self) -> int:
        """Number of candidates per :meth:`ask`."""
        return self._population

    @property
    def num_elite(self) -> int:
        """``⌈elite_fraction · population⌉`` (at least 1)."""
        return self._num_elite

    @property
    def std_floor(self) -> float:
        """Lower bound applied to σ after every update."""
        return self._std_floor

    @property
    def generation(self) -> int:
        """Number of completed :meth:`tell` calls."""
        return self._generation

    @property
    def mean(self) -> torch.Tensor:
        """A copy of μ, shape ``(dim,)``."""
        return self._mean.clone()

    @property
    def std(self) -> torch.Tensor:
        """A copy of σ, shape ``(dim,)``; every entry is ≥ :attr:`std_floor`."""
        return self._std.clone()

    # ------------------------------------------------------------------ ask / tell
    def ask(self) -> torch.Tensor:
        """Sample ``population`` candidates ψ_i ~ N(μ, diag σ²); returns a ``(population, dim)`` tensor.

        Draws ``population · dim`` standard normals from the CEM's own generator.
        The returned tensor is a fresh copy: mutating it does not affect the CEM.
        """
        eps = torch.randn((self._population, self._dim), generator=self._generator, dtype=self._dtype)
        candidates = self._mean + self._std * eps
        self._pending = candidates
        return candidates.clone()

    @checked
    def tell(self, candidates: torch.Tensor, fitness: torch.Tensor) -> None:
        """Update μ, σ from the elite of the last :meth:`ask` (higher fitness is better).

        ``candidates`` must equal (bit for bit) the tensor the last :meth:`ask`
        returned; ``fitness`` must be a finite floating tensor of shape
        ``(population,)``.  On any error nothing changes.
        """
        pending = self._pending
        if pending is None:
            raise ValueError("tell() without an outstanding ask(): call ask() first")
        if candidates.shape != pending.shape or candidates.dtype != pending.dtype:
            raise ValueError(
                f"candidates must be the ({self._population}, {self._dim}) {self._dtype} tensor returned by "
                f"ask(), got shape {tuple(candidates.shape)} dtype {candidates.dtype}"
            )
        if not torch.equal(candidates.detach().cpu(), pending):
            raise ValueError("candidates differ from those returned by the last ask()")
        if fitness.shape != (self._population,):
            raise ValueError(f"fitness must have shape ({self._population},), got {tuple(fitness.shape)}")
        if not fitness.is_floating_point():
            raise ValueError(f"fitness must be a floating-point tensor, got dtype {fitness.dtype}")
        fit = fitness.detach().cpu()
        bad = ~torch.isfinite(fit)
        if bool(bad.any()):
            idx = bad.nonzero().flatten().tolist()
            raise ValueError(f"fitness contains NaN or Inf at indices {idx[:10]}; CEM state unchanged")
        order = torch.sort(fit, descending=True, stable=True).indices
        elite = pending.index_select(0, order[: self._num_elite])
        mean = elite.mean(dim=0)
        std = elite.std(dim=0, correction=0).clamp_min(self._std_floor)
        self._mean = mean
        self._std = std
        self._generation += 1
        self._pending = None

    @checked
    def replace_pending(self, candidates: torch.Tensor) -> None:
        """Make ``candidates`` the outstanding population the next :meth:`tell` ranks.

        For methods that change the sampled candidates before evaluating them (CEM-RL improves some
        by gradient steps and ranks the improved ones).  ``candidates`` must be a finite
        ``(population, dim)`` tensor of the CEM's dtype and an :meth:`ask` must be outstanding; it is
        copied.  On any error nothing changes.
        """
        if self._pending is None:
            raise ValueError("replace_pending() without an outstanding ask(): call ask() first")
        if candidates.shape != (self._population, self._dim) or candidates.dtype != self._dtype:
            raise ValueError(
                f"candidates must be a ({self._population}, {self._dim}) {self._dtype} tensor, "
                f"got shape {tuple(candidates.shape)} dtype {candidates.dtype}"
            )
        if not bool(torch.isfinite(candidates).all()):
            raise ValueError("candidates contain NaN or Inf; CEM state unchanged")
        self._pending = candidates.detach().cpu().clone()

    @checked
    def elite_indices(self, fitness: torch.Tensor) -> torch.Tensor:
        """The indices :meth:`tell` would select for ``fitness``: top ``num_elite``, ties by lower index."""
        if fitness.dim() != 1:
            raise ValueError(f"fitness must be 1-D, got shape {tuple(fitness.shape)}")
        order = torch.sort(fitness.detach().cpu(), descending=True, stable=True).indices
        return order[: min(self._num_elite, fitness.shape[0])].clone()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume bit for bit (copies, never views of the live state)."""
        return {
            "format": _STATE_FORMAT,
            "dim": self._dim,
            "population": self._population,
            "elite_fraction": self._elite_fraction,
            "std_floor": self._std_floor,
            "dtype": str(self._dtype),
            "mean": self._mean.clone(),
            "std": self._std.clone(),
            "generation": self._generation,
            "pending": None if self._pending is None else self._pending.clone(),
            "generator_state": self._generator.get_state(),
        }

    @checked
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` of a CEM with the same configuration.

        Validates everything before changing anything: on ``ValueError`` the CEM
        (and its generator) is unchanged.  The generator passed at construction
        keeps being used; its state is overwritten with the saved one.
        """
        keys = set(state.keys())
        if keys != _STATE_KEYS:
            raise ValueError(
                f"CEM.load_state_dict: malformed state (missing {sorted(_STATE_KEYS - keys)}, "
                f"unexpected {sorted(keys - _STATE_KEYS)})"
            )
        if state["format"] != _STATE_FORMAT:
            raise ValueError(f"CEM.load_state_dict: unsupported format {state['format']!r}")
        config = {
            "dim": self._dim,
            "population": self._population,
            "elite_fraction": self._elite_fraction,
            "std_floor": self._std_floor,
            "dtype": str(self._dtype),
        }
        for key, expected in config.items():
            if state[key] != expected:
                raise ValueError(f"CEM.load_state_dict: {key} is {state[key]!r}, this CEM has {expected!r}")
        mean, std = state["mean"], state["std"]
        for name, t in (("mean", mean), ("std", std)):
            if (
                not isinstance(t, torch.Tensor)
                or t.shape != (self._dim,)
                or t.dtype != self._dtype
                or not bool(torch.isfinite(t).all())
            ):
                raise ValueError(f"CEM.load_state_dict: {name} must be a finite ({self._dim},) {self._dtype}")
        if bool((std < self._std_floor).any()):
            raise ValueError("CEM.load_state_dict: std below std_floor")
        generation = state["generation"]
        if type(generation) is not int or generation < 0:
            raise ValueError(
                f"CEM.load_state_dict: generation must be a non-negative int, got {generation!r}"
            )
        pending = state["pending"]
        if pending is not None and (
            not isinstance(pending, torch.Tensor)
            or pending.shape != (self._population, self._dim)
            or pending.dtype != self._dtype
        ):
            raise ValueError("CEM.load_state_dict: pending must be None or a (population, dim) tensor")
        gen_state = state["generator_state"]
        if not isinstance(gen_state, torch.Tensor) or gen_state.dtype != torch.uint8:
            raise ValueError("CEM.load_state_dict: generator_state must be a torch.uint8 tensor")
        scratch = torch.Generator(device="cpu")
        try:
            scratch.set_state(gen_state)
        except RuntimeError as exc:
            raise ValueError(f"CEM.load_state_dict: invalid generator_state ({exc})") from None
        self._generator.set_state(scratch.get_state())
        self._mean = mean.detach().clone()
        self._std = std.detach().clone()
        self._generation = generation
        self._pending = None if pending is None else pending.detach().clone()


# ====================================================================== policies


@final
class FlatMLPPolicy:
    """A deterministic MLP whose parameters are one flat vector, evaluated for a whole population at once.

    Architecture: ``obs_dim → hidden[0] → … → hidden[-1] → action_dim`` with
    ``tanh`` hidden activations.  Parameter layout in the flat vector, layer
    by layer: the weight matrix ``W`` of shape ``(in, out)`` in row-major order,
    then the bias ``b`` of shape ``(out,)``; a layer computes ``x @ W + b``.

    Outputs (:meth:`distribution`):

    - ``discrete=True``: action probabilities ``softmax(logits)``, shape ``(P, B, action_dim)``;
      :meth:`act` returns ``argmax(logits)`` as ``int64`` of shape ``(P, B)``
      (ties → lowest action index).
    - ``discrete=False``: mean actions ``action_scale · tanh(out)``, shape
      ``(P, B, action_dim)``; :meth:`act` returns exactly these means.

    Everything is batched over the population with ``torch.baddbmm``; no
    Python loop over P, no randomness.
    """

    @checked
    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden: int | Sequence[int] = (32,),
        discrete: bool = False,
        *,
        action_scale: float | int = 1.0,
    ) -> None:
        _check_positive_int("obs_dim", obs_dim)
        _check_positive_int("action_dim", action_dim)
        sizes = (hidden,) if isinstance(hidden, int) else tuple(hidden)
        for h in sizes:
            if not isinstance(h, int) or isinstance(h, bool) or h < 1:
                raise ValueError(f"hidden sizes must be positive integers, got {hidden!r}")
        if not (math.isfinite(action_scale) and action_scale > 0.0):
            raise ValueError(f"action_scale must be finite and positive, got {action_scale}")
        self.obs_dim: Final = obs_dim
        self.action_dim: Final = action_dim
        self.hidden: Final = sizes
        self.discrete: Final = discrete
        self.action_scale: Final = float(action_scale)
        dims = (obs_dim, *sizes, action_dim)
        self._layers: tuple[tuple[int, int], ...] = tuple(itertools.pairwise(dims))
        self.num_params: Final = sum(i * o + o for i, o in self._layers)

    def _check(self, params: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        if params.dim() != 2 or params.shape[1] != self.num_params:
            raise ValueError(f"params must have shape (P, {self.num_params}), got {tuple(params.shape)}")
        if not params.is_floating_point():
            raise ValueError(f"params must be floating point, got {params.dtype}")
        p = params.shape[0]
        if obs.dim() == 2 and obs.shape[1] == self.obs_dim:
            obs = obs.unsqueeze(0).expand(p, -1, -1)
        if obs.dim() != 3 or obs.shape[0] != p or obs.shape[2] != self.obs_dim:
            raise ValueError(
                f"obs must have shape ({p}, B, {self.obs_dim}) or (B, {self.obs_dim}), got {tuple(obs.shape)}"
            )
        return obs.to(params.dtype)

    def _forward(self, params: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        x = self._check(params, obs)
        p = params.shape[0]
        offset = 0
        last = len(self._layers) - 1
        for k, (i, o) in enumerate(self._layers):
            w = params[:, offset : offset + i * o].reshape(p, i, o)
            offset += i * o
            b = params[:, offset : offset + o].reshape(p, 1, o)
            offset += o
            x = torch.baddbmm(b, x, w)
            if k != last:
                x = torch.tanh(x)
        return x

    @checked
    def distribution(self, params: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """Per-state action distribution, ``(P, B, A)``: probabilities (discrete) or mean actions.

        ``params``: ``(P, num_params)``; ``obs``: ``(P, B, obs_dim)`` or a shared ``(B, obs_dim)``.
        """
        out = self._forward(params, obs)
        if self.discrete:
            return torch.softmax(out, dim=-1)
        return self.action_scale * torch.tanh(out)

    @checked
    def act(self, params: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic actions: ``(P, B)`` int64 argmax (discrete) or ``(P, B, A)`` means (continuous)."""
        out = self._forward(params, obs)
        if self.discrete:
            return out.argmax(dim=-1)
        return self.action_scale * torch.tanh(out)

    @checked
    def init_params(
        self, population: int, *, generator: torch.Generator, scale: float | int = 1.0
    ) -> torch.Tensor:
        """``(population, num_params)`` parameters, each weight ~ N(0, scale²/fan_in), biases 0.

        Uses only ``generator``.  Handy as a CEM ``init_mean`` (``population=1``).
        """
        _check_positive_int("population", population)
        chunks: list[torch.Tensor] = []
        for i, o in self._layers:
            w = torch.randn((population, i * o), generator=generator) * (scale / math.sqrt(i))
            chunks += [w, torch.zeros((population, o))]
        return torch.cat(chunks, dim=1)


# ====================================================================== fitness


@checked
def behaviour(policy: FlatMLPPolicy, params: torch.Tensor, probe_states: torch.Tensor) -> torch.Tensor:
    """Behaviour descriptors of a population on a shared probe set: ``policy.distribution(params, probes)``.

    ``params``: ``(P, num_params)``; ``probe_states``: ``(B, obs_dim)`` — the same
    states for every member.  Returns ``(P, B, A)``: action probabilities for
    discrete policies, mean actions for continuous ones.  The primary policy's
    behaviour must be computed on the same probe states in the same form,
    shape ``(B, A)``.
    """
    if probe_states.dim() != 2:
        raise ValueError(f"probe_states must have shape (B, obs_dim), got {tuple(probe_states.shape)}")
    return policy.distribution(params, probe_states)


@checked
def behaviour_divergence(a: torch.Tensor, b: torch.Tensor, *, discrete: bool) -> torch.Tensor:
    """Mean over probe states of a per-state divergence between two behaviours (broadcasting).

    Inputs are ``(..., B, A)`` and broadcast against each other; the result has
    the broadcast leading shape ``(...)``:

    - continuous: ``d(a, b) = mean_s ‖a_s − b_s‖²`` (squared Euclidean
      distance of mean actions, summed over action dimensions);
    - discrete: ``d(a, b) = mean_s ½ Σ_k |a_{s,k} − b_{s,k}|`` (total variation
      between action distributions, in [0, 1]; symmetric, and finite even when
      a probability is 0 — unlike KL).

    Both are symmetric, non-negative, and exactly 0 when ``a == b``.
    """
    diff = a - b
    per_state = 0.5 * diff.abs().sum(dim=-1) if discrete else diff.square().sum(dim=-1)
    return per_state.mean(dim=-1)


@checked
def diversity(
    behaviours: torch.Tensor, *, discrete: bool, reference: torch.Tensor | None = None
) -> torch.Tensor:
    """Diversity(ψ_i) for every member, shape ``(P,)``.

    - ``reference is None``: mean divergence to the *other* members of the
      current population, ``1/(P−1) Σ_{j≠i} d(b_i, b_j)`` (requires P ≥ 2);
    - ``reference`` of shape ``(R, B, A)`` (e.g. the current auxiliary agents):
      ``1/R Σ_r d(b_i, ref_r)``.

    ``d`` is :func:`behaviour_divergence`.  Computed by broadcasting, with
    O(P·max(P, R)·B·A) memory.
    """
    if behaviours.dim() != 3:
        raise ValueError(f"behaviours must have shape (P, B, A), got {tuple(behaviours.shape)}")
    if reference is None:
        p = behaviours.shape[0]
        if p < 2:
            raise ValueError("diversity within the population needs at least 2 members (or pass reference)")
        pair = behaviour_divergence(behaviours.unsqueeze(1), behaviours.unsqueeze(0), discrete=discrete)
        return pair.sum(dim=1) / (p - 1)  # the diagonal d(b_i, b_i) is exactly 0
    if reference.dim() != 3 or reference.shape[1:] != behaviours.shape[1:] or reference.shape[0] < 1:
        raise ValueError(
            f"reference must have shape (R>=1, {behaviours.shape[1]}, {behaviours.shape[2]}), "
            f"got {tuple(reference.shape)}"
        )
    pair = behaviour_divergence(behaviours.unsqueeze(1), reference.unsqueeze(0), discrete=discrete)
    return pair.mean(dim=1)


@checked
def distance_to_primary(
    behaviours: torch.Tensor, primary_behaviour: torch.Tensor, *, discrete: bool
) -> torch.Tensor:
    """Distance(ψ_i, π_φ) = d(b_i, b_φ) for every member, shape ``(P,)``.

    ``d`` is :func:`behaviour_divergence`; ``primary_behaviour`` is ``(B, A)``.
    """
    if behaviours.dim() != 3:
        raise ValueError(f"behaviours must have shape (P, B, A), got {tuple(behaviours.shape)}")
    if primary_behaviour.shape != behaviours.shape[1:]:
        raise ValueError(
            f"primary_behaviour must have shape {tuple(behaviours.shape[1:])}, "
            f"got {tuple(primary_behaviour.shape)}"
        )
    return behaviour_divergence(behaviours, primary_behaviour.unsqueeze(0), discrete=discrete)


@checked
def fitness(
    behaviours: torch.Tensor,
    primary_behaviour: torch.Tensor,
    beta: float | int,
    *,
    discrete: bool,
    reference: torch.Tensor | None = None,
) -> torch.Tensor:
    """F(ψ_i) = Diversity(ψ_i) − β·Distance(ψ_i, π_φ) for the whole population, shape ``(P,)``.

    Defined in behaviour space on a shared probe set of B states:

    - ``behaviours``: ``(P, B, A)`` from :func:`behaviour`;
      ``primary_behaviour``: ``(B, A)``, π_φ on the same probes, same form
      (probabilities if ``discrete`` else mean actions);
    - Diversity: :func:`diversity` (to the other population members, or to
      ``reference``); Distance: :func:`distance_to_primary`; both use the
      divergence of :func:`behaviour_divergence`;
    - ``beta ≥ 0`` trades novelty against plausibility: β = 0 rewards pure
      diversity, large β keeps auxiliary agents close to the primary policy.

    Raises ``ValueError`` for a negative or non-finite β or non-finite behaviours.
    """
    if not (math.isfinite(beta) and beta >= 0.0):
        raise ValueError(f"beta must be finite and >= 0, got {beta}")
    if not bool(torch.isfinite(behaviours).all()) or not bool(torch.isfinite(primary_behaviour).all()):
        raise ValueError("behaviours and primary_behaviour must be finite")
    div = diversity(behaviours, discrete=discrete, reference=reference)
    dist = distance_to_primary(behaviours, primary_behaviour, discrete=discrete)
    return div - beta * dist
