"""Expected information gain (EIG) about world-model parameters: nested Monte Carlo estimators.

The paper's Proposition 1 (Eq. 7) averages the likelihood over *policy* samples π^(k); the quantity
that its own proof (Appendix A.1, Eq. 13) starts from, and the one an exploration bonus needs, is the
expected information gain about the world-model parameters θ from observations o::

    I(θ; o) = E_{p(θ) p(o|θ)} [ log p(o|θ) − log p(o) ],      p(o) = E_{p(θ)} [ p(o|θ) ].

``p(o)`` is intractable, so it is replaced by an inner Monte Carlo average over K parameter samples
(ensemble members or posterior samples) inside an outer average over M observations.

Naming.  As in the paper, **M is the number of outer observations** o_j (θ_j ~ p(θ), o_j ~ p(o|θ_j))
and **K the number of inner parameter samples** θ_k used to estimate log p(o_j).  Rainforth et al.
(2018, "On nesting Monte Carlo estimators") use the opposite letters (N outer, M inner); Foster et al.
(2019/2020, PCE) call the inner count L.

Estimators (all return nats):

* **NMC** (nested Monte Carlo)::

      Î_NMC = (1/M) Σ_j [ log p(o_j|θ_j) − log (1/K) Σ_k p(o_j|θ_k) ],   θ_k ∉ {θ_j}.

  Since log is concave, log of a mean of K likelihoods underestimates log p(o_j) on average, so the
  estimator is biased **upward**; to leading order the bias is Var_θ[p(o|θ)/p(o)] / (2K), i.e. O(1/K)
  (for the linear-Gaussian model θ ~ N(0, s²), o = θx + ε, ε ~ N(0, σ²) it is ≈ s²x²/(2σ²K)).  It is
  consistent as K → ∞ but not a bound.
* **PCE** (prior contrastive estimation, Foster et al.)::

      Î_PCE = (1/M) Σ_j [ log p(o_j|θ_j) − log (1/(K+1)) (p(o_j|θ_j) + Σ_k p(o_j|θ_k)) ].

  Including the generating θ_j among the K+1 contrastive terms makes E[Î_PCE] ≤ I (a lower bound,
  bias **downward**, also O(1/K)), and every single term is ≤ log(K+1).

Inner-sample regimes (``regime=``):

* ``"fresh"``: K new inner samples for every outer observation.  Bias O(1/K), variance
  ≈ Var[log p(o|θ)/p(o)] / M + O(1/(MK)) = O(1/M).  This is the setting of Proposition 1's claim.
* ``"fixed"``: one set of K inner samples (one ensemble) shared by all M observations of a
  replicate — what a trainer with a K-member ensemble computes.  The error of log p̂(o) is then
  common to all j and does not average out: **the variance stops falling in M and floors** at a
  level set by K alone (Var ≈ v/M + floor(K)).  Increasing M beyond ~v/floor buys nothing; only a
  larger ensemble helps.  How the floor scales: p̂ is a normalised mixture, so the first-order error
  ∫ p(o)(p(o) − p̂(o))/p(o) do is exactly 0 for every ensemble when the outer θ_j are drawn from the
  prior; the floor comes from the second-order term (mean = the O(1/K) bias, spread O(1/K)), so it
  falls like c/K² once K is large enough for the ratio p(o|θ)/p(o) to have light tails, not like
  c/K as a first-order argument would suggest (measured floors of the linear-Gaussian model:
  ``benchmarks/README.md``, "Design measurements quoted by the code").

For a Gaussian ensemble world model, :func:`gaussian_ensemble_eig` computes the information the next
observation carries about which member is right, in the fixed-ensemble regime.

No function here touches the global RNG: every random draw goes through the explicit
``torch.Generator`` passed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch

from amal_verified.common.runtime_checks import checked

__all__ = [
    "Estimator",
    "LogProb",
    "ObservationSampler",
    "PriorSampler",
    "Regime",
    "eig_from_log_likelihoods",
    "gaussian_ensemble_eig",
    "gaussian_ensemble_eig_reference",
    "nmc_eig",
    "pce_eig",
]

Estimator = Literal["nmc", "pce"]
Regime = Literal["fresh", "fixed"]

LogProb = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``log_prob(o, theta)``: log p(o|θ), broadcasting ``o`` of shape ``(*batch, M, 1, *obs_event)``
against ``theta`` of shape ``(*batch, M, K+1, *theta_event)`` to a result of shape ``(*batch, M, K+1)``."""

PriorSampler = Callable[[tuple[int, ...], torch.Generator], torch.Tensor]
"""``sample_prior(shape, generator)``: i.i.d. θ ~ p(θ) of shape ``(*shape, *theta_event)``."""

ObservationSampler = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
"""``sample_obs(theta, generator)``: o ~ p(o|θ) for θ of shape ``(*batch, M, *theta_event)``,
returning shape ``(*batch, M, *obs_event)``."""


def _positive_int(value: int, name: str) -> None:
    if isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def _check_batch_shape(batch_shape: tuple[int, ...]) -> None:
    for size in batch_shape:
        if isinstance(size, bool) or size < 1:
            raise ValueError(f"batch_shape must be a tuple of ints >= 1, got {batch_shape!r}")


def _check_leading(tensor: object, leading: tuple[int, ...], what: str) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{what} must return a torch.Tensor, got {type(tensor).__name__}")
    if tuple(tensor.shape[: len(leading)]) != leading:
        raise ValueError(
            f"{what} returned shape {tuple(tensor.shape)}, expected leading dimensions {leading}"
        )
    if not tensor.is_floating_point():
        raise ValueError(f"{what} must return a floating-point tensor, got dtype {tensor.dtype}")
    if torch.isnan(tensor).any():
        raise ValueError(f"{what} returned NaN")
    return tensor


def _log_mean_exp(x: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.logsumexp(x, dim=dim) - math.log(x.shape[dim])


@checked
def eig_from_log_likelihoods(log_lik: torch.Tensor, estimator: Estimator) -> torch.Tensor:
    """Reduce a log-likelihood matrix to an EIG estimate (nats), one per leading batch index.

    ``log_lik`` has shape ``(*batch, M, K+1)``: ``log_lik[..., j, 0] = log p(o_j|θ_j)`` for the
    parameter θ_j that generated o_j, and ``log_lik[..., j, 1:]`` are ``log p(o_j|θ_k)`` for the K
    inner samples.  Returns shape ``batch``:

    * ``"nmc"``: mean_j [col 0 − logmeanexp(cols 1..K)] (needs K ≥ 1; biased upward);
    * ``"pce"``: mean_j [col 0 − logmeanexp(cols 0..K)] (K+1 terms; a lower bound in expectation).

    Raises ``ValueError`` if the shape is wrong, any entry is NaN or +inf, or a generating-parameter
    entry (column 0) is −inf (the observation is impossible under the parameter that produced it).
    Inner columns may be −inf (zero likelihood).  Differentiable in ``log_lik``.
    """
    if log_lik.dim() < 2:
        raise ValueError(f"log_lik must have shape (*batch, M, K+1), got {tuple(log_lik.shape)}")
    if not log_lik.is_floating_point():
        raise ValueError(f"log_lik must be floating point, got dtype {log_lik.dtype}")
    m, k_plus_1 = log_lik.shape[-2], log_lik.shape[-1]
    shape = tuple(log_lik.shape)
    if m < 1:
        raise ValueError(f"log_lik must have M >= 1 outer observations (dim -2), got shape {shape}")
    if k_plus_1 < 2:
        raise ValueError(
            f"log_lik must have K >= 1 inner samples (dim -1 of size K+1 >= 2), got shape {shape}"
        )
    if torch.isnan(log_lik).any():
        raise ValueError("log_lik (log_prob output) contains NaN")
    if torch.isposinf(log_lik).any():
        raise ValueError("log_lik (log_prob output) contains +inf")
    own = log_lik[..., 0]
    if torch.isneginf(own).any():
        raise ValueError("log_lik[..., 0] (log p(o_j|θ_j) for the generating θ_j) contains -inf")
    if estimator == "nmc":
        log_marginal = _log_mean_exp(log_lik[..., 1:], dim=-1)
    else:
        log_marginal = _log_mean_exp(log_lik, dim=-1)
    return (own - log_marginal).mean(dim=-1)


def _log_likelihood_matrix(
    log_prob: LogProb,
    sample_prior: PriorSampler,
    sample_obs: ObservationSampler,
    outer: int,
    inner: int,
    generator: torch.Generator,
    regime: Regime,
    batch_shape: tuple[int, ...],
) -> torch.Tensor:
    _positive_int(outer, "outer (M)")
    _positive_int(inner, "inner (K)")
    _check_batch_shape(batch_shape)
    nb = len(batch_shape)
    # Inner samples first, so that in the "fixed" regime a replicate's ensemble does not depend on M.
    inner_shape = (*batch_shape, outer, inner) if regime == "fresh" else (*batch_shape, 1, inner)
    theta_inner = _check_leading(sample_prior(inner_shape, generator), inner_shape, "sample_prior")
    outer_shape = (*batch_shape, outer)
    theta_outer = _check_leading(sample_prior(outer_shape, generator), outer_shape, "sample_prior")
    event = tuple(theta_outer.shape[nb + 1 :])
    if tuple(theta_inner.shape[nb + 2 :]) != event:
        inner_event = tuple(theta_inner.shape[nb + 2 :])
        raise ValueError(f"sample_prior returned inconsistent event shapes: {inner_event} vs {event}")
    obs = _check_leading(sample_obs(theta_outer, generator), outer_shape, "sample_obs")
    theta_inner = theta_inner.expand(*batch_shape, outer, inner, *event)
    thetas = torch.cat([theta_outer.unsqueeze(nb + 1), theta_inner], dim=nb + 1)
    log_lik = log_prob(obs.unsqueeze(nb + 1), thetas)
    expected = (*batch_shape, outer, inner + 1)
    if not isinstance(log_lik, torch.Tensor) or tuple(log_lik.shape) != expected:
        got = tuple(log_lik.shape) if isinstance(log_lik, torch.Tensor) else type(log_lik).__name__
        raise ValueError(f"log_prob returned {got}, expected shape {expected} (*batch_shape, M, K+1)")
    return log_lik


@checked
def nmc_eig(
    log_prob: LogProb,
    sample_prior: PriorSampler,
    sample_obs: ObservationSampler,
    *,
    outer: int,
    inner: int,
    generator: torch.Generator,
    regime: Regime = "fresh",
    batch_shape: tuple[int, ...] = (),
) -> torch.Tensor:
    """Nested Monte Carlo estimate of I(θ; o) in nats, biased upward by O(1/K).

    For each of ``outer`` = M observations: θ_j ~ p(θ), o_j ~ p(o|θ_j); log p(o_j) is estimated by
    log (1/K) Σ_k p(o_j|θ_k) over ``inner`` = K samples θ_k ~ p(θ) that do **not** include θ_j.
    Returns a tensor of shape ``batch_shape``: independent replicates (e.g. seeds), computed in one
    vectorised pass (memory ∝ prod(batch_shape)·M·(K+1)).

    ``regime="fresh"``: new θ_1..θ_K for every j; bias O(1/K), variance O(1/M).
    ``regime="fixed"``: one θ_1..θ_K per replicate shared by all j (an ensemble); bias O(1/K) but the
    variance stops falling like 1/M and floors at a K-dependent level (≈ c/K² for large K, see the
    module docstring).

    Random draws use only ``generator`` (inner samples are drawn before outer ones, so a replicate's
    fixed ensemble is the same for every M given the same generator state).  See the module
    docstring for the callables' shape contracts; violations raise ``ValueError`` naming the callable.
    """
    log_lik = _log_likelihood_matrix(
        log_prob, sample_prior, sample_obs, outer, inner, generator, regime, batch_shape
    )
    return eig_from_log_likelihoods(log_lik, "nmc")


@checked
def pce_eig(
    log_prob: LogProb,
    sample_prior: PriorSampler,
    sample_obs: ObservationSampler,
    *,
    outer: int,
    inner: int,
    generator: torch.Generator,
    regime: Regime = "fresh",
    batch_shape: tuple[int, ...] = (),
) -> torch.Tensor:
    """Prior contrastive estimate of I(θ; o) in nats: a lower bound in expectation, bias O(1/K).

    As :func:`nmc_eig`, but log p(o_j) is estimated over the K+1 parameters {θ_j, θ_1..θ_K}
    (the generating θ_j included), so E[result] ≤ I(θ; o) and each term is ≤ log(K+1).
    Same arguments, regimes, shapes and errors as :func:`nmc_eig`.
    """
    log_lik = _log_likelihood_matrix(
        log_prob, sample_prior, sample_obs, outer, inner, generator, regime, batch_shape
    )
    return eig_from_log_likelihoods(log_lik, "pce")


_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_PAIRWISE_CHUNK_ELEMENTS = 1 << 16
"""``gaussian_ensemble_eig`` builds its pairwise terms for blocks of S states with K·K·S·D at most this
(S ≥ 1): ≤ 512 KiB of float64 per (K, K, S, D) tensor, cache-sized (2¹⁵…2¹⁷ measured alike at K = 20)."""


def _check_ensemble(
    means: torch.Tensor, stds: torch.Tensor, num_samples: int, estimator: Estimator
) -> tuple[int, int, int]:
    _positive_int(num_samples, "num_samples")
    if means.dim() != 3:
        raise ValueError(f"means must have shape (K, B, D), got {tuple(means.shape)}")
    if stds.shape != means.shape:
        raise ValueError(f"stds must have the shape of means {tuple(means.shape)}, got {tuple(stds.shape)}")
    if not means.is_floating_point() or not stds.is_floating_point():
        raise ValueError(f"means and stds must be floating point, got {means.dtype} and {stds.dtype}")
    k, b, d = means.shape
    if k < 1 or d < 1:
        raise ValueError(f"means must have K >= 1 members and D >= 1 dimensions, got {tuple(means.shape)}")
    if estimator == "nmc" and k < 2:
        raise ValueError(f"estimator='nmc' (leave-one-out) needs K >= 2 members, got K={k}")
    if not torch.isfinite(means).all():
        raise ValueError("means contains NaN or inf")
    if not torch.isfinite(stds).all() or not (stds > 0).all():
        raise ValueError("stds must be finite and > 0")
    return k, b, d


def _draw_noise(means: torch.Tensor, num_samples: int, generator: torch.Generator) -> torch.Tensor:
    """The estimators' only random draw: standard normal noise ``(num_samples, K, B, D)`` in the inputs'
    dtype (so the generator advances by the same amount whatever the arithmetic precision), as float64."""
    noise = torch.randn(
        (num_samples, *means.shape), generator=generator, dtype=means.dtype, device=means.device
    )
    return noise.to(torch.float64)


def _reduce_gain(own: torch.Tensor, log_lik: torch.Tensor, estimator: Estimator) -> torch.Tensor:
    """``own (B, ..., K_j)`` = log p(o|j) and ``log_lik (B, ..., K_j, K_k)`` = log p(o|k), whose diagonal
    is ``own``: own − log-mean-exp over k (all k for PCE, k ≠ j for NMC), averaged over every dimension
    but the first.  Shape ``(B,)``."""
    k = log_lik.shape[-1]
    if estimator == "pce":
        log_marginal = torch.logsumexp(log_lik, dim=-1) - math.log(k)
    else:
        off_diagonal = log_lik.diagonal_scatter(torch.full_like(own, -math.inf), dim1=-2, dim2=-1)
        log_marginal = torch.logsumexp(off_diagonal, dim=-1) - math.log(k - 1)
    gain = own - log_marginal
    return gain.mean(dim=tuple(range(1, gain.dim())))


@checked
def gaussian_ensemble_eig(
    means: torch.Tensor,
    stds: torch.Tensor,
    *,
    num_samples: int,
    generator: torch.Generator,
    estimator: Estimator = "pce",
) -> torch.Tensor:
    """Information gain (nats) of the next observation about a Gaussian ensemble's members, per input.

    ``means`` and ``stds`` have shape ``(K, B, D)``: member k predicts o ~ N(means[k, b],
    diag(stds[k, b]²)) for the b-th (state, action) pair.  The members are treated as K fixed
    samples of θ with a uniform prior (the "fixed ensemble" regime).  For each b, ``num_samples``
    observations are drawn from **every** member (stratified over members: K·num_samples outer
    draws), reparameterised, so the result is differentiable in ``means`` and ``stds``.  Returns
    shape ``(B,)`` in the dtype of ``means``.

    * ``"pce"`` (default): mean over j, o ~ member j of log p(o|j) − log (1/K) Σ_k p(o|k), the sum
      running over all K members.  With a uniform prior over members this mixture *is* the exact
      marginal, so this is an unbiased Monte Carlo estimate of I(member; o) — the information the
      observation carries about which member is right.  It lies in [0, ln K]: 0 when all members
      agree, → ln K as they become separable.  Read as an estimate of the EIG about a continuous θ
      of which the members are posterior samples, it is the PCE lower bound (K−1 contrastive terms).
    * ``"nmc"``: leave-one-out, log p(o|j) − log (1/(K−1)) Σ_{k≠j} p(o|k) (needs K ≥ 2).  The NMC
      estimate of the EIG about a continuous θ; biased upward, unbounded (it grows without limit as
      members separate), and ≥ the PCE value for every sample.

    ``num_samples`` only reduces the Monte Carlo noise over o (variance O(1/(K·num_samples))); as
    estimates of the continuous-θ EIG, the error from having only K members does not shrink with it.
    The result carries gradients; detach it before using it as a reward.  Raises ``ValueError`` for
    mismatched or non-3-D shapes, non-finite means, stds that are not finite and > 0,
    ``num_samples`` < 1, or ``"nmc"`` with K < 2.

    **Draws.**  Exactly one ``torch.randn((num_samples, K, B, D), dtype=means.dtype)`` from
    ``generator``, the draw :func:`gaussian_ensemble_eig_reference` makes: both compute the same
    estimate from the same generator state.

    **Computation** (float64 throughout, whatever the inputs' dtype).  With o = μ_j + σ_j ε an
    observation drawn from member j, δ = o − μ_j and a_k = 1/σ_k², each Gaussian log-density is
    expanded as a quadratic form in δ::

        log p(o|k) = −½ Σ_d a_kd δ_d² + Σ_d δ_d W_jkd − ½ Q_jk − Σ_d log σ_kd − (D/2) log 2π,
        W_jkd = a_kd (μ_kd − μ_jd),      Q_jk = Σ_d a_kd (μ_kd − μ_jd)².

    The first sum is one batched matrix product per state, (num_samples·K, D) × (D, K); the second
    one per (member j, state), (num_samples, D) × (D, K); W and Q do not depend on the sample and are
    built from the differences μ_k − μ_j.  The own term log p(o|j) is evaluated directly from δ/σ_j.
    W and Q are built for blocks of S states with K·K·S·D ≤ :data:`_PAIRWISE_CHUNK_ELEMENTS` (at
    least one state), so the largest temporaries are (K, K, S, D), (num_samples, K, B, D) and the
    log-likelihood matrix (B, num_samples, K, K): no (num_samples, K, K, B, D) or (K, K, B, D)
    tensor exists.  The result is a deterministic function of the inputs and the generator state
    (bit for bit, on one machine and thread count); the blocking can change its last bits, never
    more than rounding.

    **Agreement with the direct form** (:func:`gaussian_ensemble_eig_reference`).  Only differences
    enter (δ, μ_k − μ_j), never the means' absolute position, and each of the three sums has summands
    of one sign or bounded by the others (2|δ_d W_jkd| ≤ a_kd(δ_d² + (μ_kd − μ_jd)²)), so with
    u = 2⁻⁵³ an entry's absolute error is at most about 2(D + 2)·u·(Σ_d a_kd δ_d² + Q_jk).  The
    estimate's error is the softmax-weighted average of its entries' errors (log-sum-exp is
    1-Lipschitz in the max norm): only members likely for the drawn observation count, and for those
    Q_jk is small unless δ is large — an observation from a member much wider than member k (σ_j ≫
    σ_k) landing where k is likely, where the bound grows like u·(σ_j/σ_k)².  Measured (property
    tests ``properties/test_eig_quadratic_form.py``): within 1e-9 nats of the direct form (PCE; NMC
    within 1e-9 relative to its value, which grows without bound) for means spread over ±10³ around
    offsets up to ±10³, log-stds in [−10, 3], sharp well-separated members, pairs of members closer
    than their width among distant ones, and members of very different widths.  Expanding around one
    centre per state instead of μ_j (computing W and Q from the centred means by matrix products)
    would cancel terms of size (spread/σ)²: 1e-3 nats on a close pair of sharp members; float32
    arithmetic (u = 2⁻²⁴) loses this agreement altogether.
    """
    k, b, d = _check_ensemble(means, stds, num_samples, estimator)
    n = num_samples
    eps = _draw_noise(means, n, generator)
    mu, sd = means.to(torch.float64), stds.to(torch.float64)  # (K, B, D)
    delta = torch.addcmul(mu, sd, eps) - mu  # o − μ_j for o drawn from member j: (N, K_j, B, D)
    inv = sd.reciprocal()
    log_norm = sd.log().sum(dim=-1) + d * _HALF_LOG_2PI  # Σ_d log σ_kd + (D/2) log 2π: (K, B)
    own = -0.5 * (delta * inv).square_().sum(dim=-1) - log_norm  # log p(o|j): (N, K_j, B)
    # Member k last (small copies), so that the pairwise tensors below come out contiguous.
    by_last = mu.permute(1, 2, 0).contiguous()  # (B, D, K_k)
    precision_by_last = inv.square().permute(1, 2, 0).contiguous()  # a_k: (B, D, K_k)
    # −½ Σ_d a_kd δ_d²: per state, (N·K_j, D) × (D, K_k).
    by_state = delta.square().view(n * k, b, d).transpose(0, 1)
    log_lik = torch.bmm(by_state, -0.5 * precision_by_last).view(b, n, k, k)  # (B, N, K_j, K_k)
    # Σ_d δ_d W_jkd − ½ Q_jk − Σ_d log σ_kd − (D/2) log 2π: per member j and state, (N, D) × (D, K_k),
    # the pairwise W and Q built for a block of states at a time.
    by_member = delta.permute(1, 2, 0, 3)  # (K_j, B, N, D), a view
    block = max(1, _PAIRWISE_CHUNK_ELEMENTS // (k * k * d))
    parts: list[torch.Tensor] = []
    for i in range(0, b, block):
        diff = by_last[i : i + block] - mu[:, i : i + block].unsqueeze(-1)  # μ_k − μ_j: (K_j, S, D, K_k)
        s = diff.shape[1]
        weights = diff * precision_by_last[i : i + block]  # W_jk
        q = (weights * diff).sum(dim=2)  # Q_jk: (K_j, S, K_k)
        bias = (-0.5 * q - log_norm[:, i : i + block].t()).reshape(k * s, 1, k)
        rows = by_member[:, i : i + block].reshape(k * s, n, d)
        parts.append(torch.baddbmm(bias, rows, weights.reshape(k * s, d, k)).view(k, s, n, k))
    # In place on the product's output, which no backward formula reads: autograd-safe.
    log_lik.add_(torch.cat(parts, dim=1).permute(1, 2, 0, 3))
    own_b = own.permute(2, 0, 1)  # (B, N, K_j)
    log_lik.diagonal(dim1=-2, dim2=-1).copy_(own_b)
    return _reduce_gain(own_b, log_lik, estimator).to(means.dtype)


@checked
def gaussian_ensemble_eig_reference(
    means: torch.Tensor,
    stds: torch.Tensor,
    *,
    num_samples: int,
    generator: torch.Generator,
    estimator: Estimator = "pce",
) -> torch.Tensor:
    """:func:`gaussian_ensemble_eig` in the direct form, for tests: the same arguments, checks, draws and
    float64 arithmetic, each log-density evaluated as written, Σ_d −½((o_d − μ_kd)/σ_kd)² − log σ_kd −
    ½ log 2π, on a (num_samples, K, K, B, D) tensor.  Returns shape ``(B,)`` in the dtype of ``means``.
    """
    _check_ensemble(means, stds, num_samples, estimator)
    eps = _draw_noise(means, num_samples, generator)
    mu, sd = means.to(torch.float64), stds.to(torch.float64)
    obs = mu.unsqueeze(0) + sd.unsqueeze(0) * eps  # (N, K_j, B, D): obs[:, j] ~ member j
    # log p(obs[n, j, b] | member k): broadcast (N, K_j, 1, B, D) against (1, 1, K_k, B, D).
    z = (obs.unsqueeze(2) - mu.unsqueeze(0).unsqueeze(0)) / sd.unsqueeze(0).unsqueeze(0)
    log_lik = (-0.5 * z.square() - torch.log(sd).unsqueeze(0).unsqueeze(0) - _HALF_LOG_2PI).sum(dim=-1)
    log_lik = log_lik.permute(3, 0, 1, 2)  # (B, N, K_j, K_k)
    own = torch.diagonal(log_lik, dim1=-2, dim2=-1)  # (B, N, K_j)
    return _reduce_gain(own, log_lik, estimator).to(means.dtype)
