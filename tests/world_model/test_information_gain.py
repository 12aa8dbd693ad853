"""EIG estimators against the linear-Gaussian model with closed-form mutual information.

θ ~ N(0, s²), o = θ·x + ε, ε ~ N(0, σ²): I(θ; o) = ½ ln(1 + a) with a = s²x²/σ² (kept ≤ 1, see NOTES).
Leading-order theory: NMC bias ≈ +a/(2K), PCE bias ≈ −a/(2K); with fresh inner samples the variance
of one outer term is a/(1+a) + O(1/K), so Var[Î] ≈ a/((1+a)M).

Bias is measured with a control variate: the test's ``log_prob`` records the observations and
parameters it is called with, and the exact term mean_j[log p(o_j|θ_j) − log p(o_j)] (expectation
exactly I) is subtracted from each estimate.  What remains is log p(o_j) − log p̂(o_j) averaged over
j, whose variance is O(a/K) instead of O(1): the bias of the public estimator, measured cheaply.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from amal_verified.world_model.information_gain import (
    eig_from_log_likelihoods,
    gaussian_ensemble_eig,
    gaussian_ensemble_eig_reference,
    nmc_eig,
    pce_eig,
)

DT = torch.float32
Recorder = list[tuple[torch.Tensor, torch.Tensor]]


class LinearGaussian:
    """θ ~ N(0, s²), o | θ ~ N(θx, σ²), with a recording log_prob for control variates."""

    def __init__(self, s: float, x: float, sigma: float) -> None:
        self.s, self.x, self.sigma = s, x, sigma
        self.calls: Recorder = []

    @property
    def snr(self) -> float:
        return self.s**2 * self.x**2 / self.sigma**2

    @property
    def truth(self) -> float:
        return 0.5 * math.log1p(self.snr)

    def log_prob(self, o: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        self.calls.append((o, theta))
        z = (o - theta * self.x) / self.sigma
        return -0.5 * z.square() - math.log(self.sigma) - 0.5 * math.log(2 * math.pi)

    def sample_prior(self, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
        return self.s * torch.randn(shape, generator=g, dtype=DT)

    def sample_obs(self, theta: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return theta * self.x + self.sigma * torch.randn(theta.shape, generator=g, dtype=DT)

    def exact_term(self) -> torch.Tensor:
        """mean_j [log p(o_j|θ_j) − log p(o_j)] for the last log_prob call (expectation: truth)."""
        o, theta = self.calls[-1]
        o, theta0 = o[..., 0], theta[..., 0]
        var = self.s**2 * self.x**2 + self.sigma**2
        log_marginal = -0.5 * o.square() / var - 0.5 * math.log(var)
        log_own = -0.5 * ((o - theta0 * self.x) / self.sigma).square() - math.log(self.sigma)
        self.calls.clear()
        return (log_own - log_marginal).mean(dim=-1)


Est = Callable[..., torch.Tensor]


def _run(
    est: Est, model: LinearGaussian, *, m: int, k: int, reps: int, seed: int, regime: str = "fresh"
) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return est(
        model.log_prob,
        model.sample_prior,
        model.sample_obs,
        outer=m,
        inner=k,
        generator=g,
        regime=regime,
        batch_shape=(reps,),
    )


def _slope(xs: list[int], ys: list[float]) -> float:
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


@pytest.mark.parametrize(("s", "x", "sigma"), [(1.0, 1.0, 1.0), (1.0, 0.5, 1.0), (2.0, 0.25, 0.5)])
def test_nmc_above_and_pce_below_truth_on_average(s: float, x: float, sigma: float) -> None:
    model = LinearGaussian(s, x, sigma)
    k = 8
    nmc = _run(nmc_eig, model, m=2048, k=k, reps=32, seed=1)
    pce = _run(pce_eig, model, m=2048, k=k, reps=32, seed=2)
    se_nmc = (nmc.std() / math.sqrt(nmc.numel())).item()
    se_pce = (pce.std() / math.sqrt(pce.numel())).item()
    bias = model.snr / (2 * k)
    # Raw estimates, no control variate: the leading-order bias is several standard errors.
    assert nmc.mean().item() > model.truth + 0.5 * bias - 3 * se_nmc
    assert nmc.mean().item() > model.truth
    assert pce.mean().item() < model.truth
    assert pce.mean().item() < model.truth - 0.5 * bias + 3 * se_pce
    assert pce.mean().item() < nmc.mean().item()
    assert abs(nmc.mean().item() - model.truth - bias) < 0.3 * bias + 4 * se_nmc


def test_bias_shrinks_like_one_over_k() -> None:
    model = LinearGaussian(1.0, math.sqrt(1 / 3), 1.0)  # a = 1/3: finite third moment boundary
    ks = [4, 8, 16, 32, 64]
    nmc_bias, pce_bias = [], []
    for k in ks:
        d_nmc = _run(nmc_eig, model, m=2048, k=k, reps=48, seed=100 + k) - model.exact_term()
        d_pce = _run(pce_eig, model, m=2048, k=k, reps=48, seed=200 + k) - model.exact_term()
        nmc_bias.append(d_nmc.mean().item())
        pce_bias.append(d_pce.mean().item())
        se = d_nmc.std().item() / math.sqrt(d_nmc.numel())
        # NMC bias ≈ a/(2K)·(factor ≤ ~1); measured factor 0.94–1.07.
        assert nmc_bias[-1] > 0
        assert nmc_bias[-1] == pytest.approx(model.snr / (2 * k), abs=0.2 * model.snr / (2 * k) + 3 * se)
        assert pce_bias[-1] < 0
    nmc_slope = _slope(ks, nmc_bias)
    pce_slope = _slope(ks, [-b for b in pce_bias])
    assert -1.25 <= nmc_slope <= -0.75, nmc_slope
    assert -1.25 <= pce_slope <= -0.75, pce_slope


def test_variance_falls_like_one_over_m_with_fresh_inner_samples() -> None:
    model = LinearGaussian(1.0, 1.0, 1.0)
    ms = [16, 64, 256, 1024]
    variances = [_run(nmc_eig, model, m=m, k=8, reps=400, seed=300 + m).var().item() for m in ms]
    slope = _slope(ms, variances)
    assert -1.25 <= slope <= -0.75, slope
    # Var ≈ [a/(1+a) + O(a/K)]/M; at K = 8 the inner-sample term adds ≈ 40–50 % (measured).
    expected = model.snr / (1 + model.snr) / 1024
    assert expected < variances[-1] < expected * 2.0


def test_fixed_ensemble_variance_floors() -> None:
    model = LinearGaussian(1.0, 1.0, 1.0)
    k, reps = 8, 200
    # Same seeds for both M: each replicate keeps the same ensemble (inner samples are drawn first).
    fixed = {m: _run(nmc_eig, model, m=m, k=k, reps=reps, seed=7, regime="fixed") for m in (512, 4096)}
    fresh = _run(nmc_eig, model, m=4096, k=k, reps=reps, seed=8, regime="fresh")
    ratio = fixed[512].var().item() / fixed[4096].var().item()
    assert ratio < 2.5, ratio  # a floor: with fresh inner samples the ratio would be ≈ 8
    assert fixed[4096].var().item() > 10 * fresh.var().item()
    # The floor is about c/K² with c = O(a) (world_model/information_gain.py).
    assert 1e-3 < fixed[4096].var().item() < 1e-2
    # The fixed-ensemble estimator has the same O(1/K) bias on average over ensembles.
    assert fixed[4096].mean().item() > model.truth


def test_fixed_ensemble_floor_shrinks_like_one_over_k_squared() -> None:
    """The floor is Var over ensembles of the ensemble-induced error, and it falls like 1/K², not 1/K.

    p̂(o) = (1/K) Σ_k p(o|θ_k) is a normalised density, so the first-order error term
    ∫ p(o) (p(o) − p̂(o))/p(o) do vanishes for every ensemble; what is left is the second-order
    term whose mean is the a/(2K) bias and whose spread over ensembles is O(1/K).  The control
    variate removes the outer-sampling noise so the floor itself is what the slope is fitted to.
    """
    model = LinearGaussian(1.0, math.sqrt(0.2), 1.0)
    ks = [8, 16, 32]
    floors = [
        (_run(nmc_eig, model, m=4096, k=k, reps=100, seed=k, regime="fixed") - model.exact_term())
        .var()
        .item()
        for k in ks
    ]
    assert _slope(ks, floors) < -1.5, floors


def test_eig_from_log_likelihoods_contracts() -> None:
    g = torch.Generator().manual_seed(0)
    log_lik = torch.randn(3, 50, 6, generator=g, dtype=torch.float64) * 5
    pce = eig_from_log_likelihoods(log_lik, "pce")
    nmc = eig_from_log_likelihoods(log_lik, "nmc")
    assert pce.shape == nmc.shape == (3,)
    assert (pce <= math.log(6) + 1e-12).all()
    # Hand computation for one row.
    row = log_lik[1]
    expected = (row[:, 0] - (torch.logsumexp(row[:, 1:], dim=-1) - math.log(5))).mean()
    assert nmc[1].item() == pytest.approx(expected.item(), rel=1e-12)
    # Identical likelihoods carry no information.
    flat = torch.zeros(4, 3, dtype=torch.float64)
    assert eig_from_log_likelihoods(flat, "nmc").item() == 0.0
    assert eig_from_log_likelihoods(flat, "pce").item() == 0.0


def test_deterministic_and_global_rng_untouched() -> None:
    model = LinearGaussian(1.0, 1.0, 1.0)
    state = torch.get_rng_state()
    a = _run(pce_eig, model, m=64, k=4, reps=3, seed=11, regime="fixed")
    b = _run(pce_eig, model, m=64, k=4, reps=3, seed=11, regime="fixed")
    assert torch.equal(a, b)
    assert torch.equal(state, torch.get_rng_state())
    single = _run(nmc_eig, model, m=64, k=4, reps=1, seed=11)
    assert single.shape == (1,)
    g = torch.Generator().manual_seed(0)
    scalar = nmc_eig(model.log_prob, model.sample_prior, model.sample_obs, outer=5, inner=3, generator=g)
    assert scalar.shape == ()


# ---- Gaussian ensemble helper -------------------------------------------------------------------


def _two_member_mi_quadrature(delta: float) -> float:
    """I(member; o) for an equal mixture of N(0, 1) and N(delta, 1), by quadrature."""
    o = torch.linspace(-12.0, delta + 12.0, 200_001, dtype=torch.float64)
    p0 = torch.exp(-0.5 * o**2) / math.sqrt(2 * math.pi)
    p1 = torch.exp(-0.5 * (o - delta) ** 2) / math.sqrt(2 * math.pi)
    mix = 0.5 * (p0 + p1)
    integrand = 0.5 * p0 * torch.log(p0 / mix) + 0.5 * p1 * torch.log(p1 / mix)
    return float(torch.trapezoid(integrand, o))


def test_ensemble_identical_members_give_zero() -> None:
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(1, 7, 3, generator=g, dtype=torch.float64).expand(5, 7, 3)
    std = torch.rand(1, 7, 3, generator=g, dtype=torch.float64).add(0.1).expand(5, 7, 3)
    for est in ("pce", "nmc"):
        out = gaussian_ensemble_eig(mean, std, num_samples=16, generator=g, estimator=est)
        assert out.shape == (7,)
        assert torch.allclose(out, torch.zeros(7, dtype=torch.float64), atol=1e-12)


def test_ensemble_two_members_approach_ln2_and_match_quadrature() -> None:
    deltas = [0.0, 1.0, 2.0, 4.0, 20.0]
    means = torch.zeros(2, len(deltas), 1, dtype=torch.float64)
    means[1, :, 0] = torch.tensor(deltas, dtype=torch.float64)
    stds = torch.ones_like(means)
    g = torch.Generator().manual_seed(3)
    pce = gaussian_ensemble_eig(means, stds, num_samples=40_000, generator=g)
    g = torch.Generator().manual_seed(3)
    nmc = gaussian_ensemble_eig(means, stds, num_samples=40_000, generator=g, estimator="nmc")
    for i, delta in enumerate(deltas):
        assert pce[i].item() == pytest.approx(_two_member_mi_quadrature(delta), abs=5e-3)
    assert pce[-1].item() == pytest.approx(math.log(2), abs=1e-6)
    assert (pce <= math.log(2) + 1e-12).all()
    # Same draws: leave-one-out NMC is ≥ PCE and unbounded (about δ²/2 for two unit Gaussians).
    assert (nmc >= pce - 1e-12).all()
    assert nmc[-1].item() == pytest.approx(20.0**2 / 2, rel=0.02)


def test_ensemble_vectorised_over_batch_and_differentiable() -> None:
    g = torch.Generator().manual_seed(5)
    means = torch.randn(4, 6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    stds = torch.rand(4, 6, 3, generator=g, dtype=torch.float64).add(0.5).requires_grad_()
    out = gaussian_ensemble_eig(means, stds, num_samples=8, generator=torch.Generator().manual_seed(1))
    assert out.shape == (6,)
    assert ((out >= 0) | torch.isclose(out, torch.zeros_like(out), atol=0.05)).all()
    assert (out <= math.log(4) + 1e-12).all()
    out.sum().backward()
    assert means.grad is not None and torch.isfinite(means.grad).all()
    assert stds.grad is not None and torch.isfinite(stds.grad).all()
    # Wider predictive spread relative to member disagreement → less information.
    wide = gaussian_ensemble_eig(
        means.detach(), stds.detach() * 10, num_samples=8, generator=torch.Generator().manual_seed(1)
    )
    assert (wide < out.detach()).all()


def _trainer_like(
    members: int, states: int, dim: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(dim)
    centre = torch.randn((1, states, dim), generator=g, dtype=dtype)
    means = centre + 0.3 * torch.randn((members, states, dim), generator=g, dtype=dtype)
    stds = torch.exp(-1.0 + 0.3 * torch.randn((members, states, dim), generator=g, dtype=dtype))
    return means, stds


@pytest.mark.parametrize("dim", [4, 18])
@pytest.mark.parametrize("estimator", ["pce", "nmc"])
def test_quadratic_form_matches_direct_form_at_trainer_sizes(dim: int, estimator: str) -> None:
    """K = 20 members, 5 samples each, D = 4 (Pendulum) and 18 (HalfCheetah): within 1e-9 nats, with
    the same draw from the generator, and a float32 ensemble gives the float64 estimate rounded once."""
    means, stds = _trainer_like(20, 300, dim, torch.float64)
    gens = [torch.Generator().manual_seed(11) for _ in range(2)]
    fast = gaussian_ensemble_eig(means, stds, num_samples=5, generator=gens[0], estimator=estimator)
    direct = gaussian_ensemble_eig_reference(
        means, stds, num_samples=5, generator=gens[1], estimator=estimator
    )
    assert fast.shape == (300,) and fast.dtype == torch.float64
    assert float((fast - direct).abs().max()) <= 1e-9
    assert torch.equal(gens[0].get_state(), gens[1].get_state())
    m32, s32 = means.float(), stds.float()
    fast32 = gaussian_ensemble_eig(m32, s32, num_samples=5, generator=torch.Generator().manual_seed(11))
    direct32 = gaussian_ensemble_eig_reference(
        m32, s32, num_samples=5, generator=torch.Generator().manual_seed(11)
    )
    assert fast32.dtype == torch.float32
    torch.testing.assert_close(fast32, direct32, rtol=2**-23, atol=1e-9)
    again = gaussian_ensemble_eig(m32, s32, num_samples=5, generator=torch.Generator().manual_seed(11))
    assert torch.equal(fast32, again)  # the trainer's bonus: bit for bit from the same generator state


@pytest.mark.parametrize("estimator", ["pce", "nmc"])
def test_quadratic_form_gradients_match_direct_form(estimator: str) -> None:
    means, stds = _trainer_like(6, 5, 3, torch.float64)
    grads = []
    for fn in (gaussian_ensemble_eig, gaussian_ensemble_eig_reference):
        m, s = means.clone().requires_grad_(), stds.clone().requires_grad_()
        out = fn(m, s, num_samples=4, generator=torch.Generator().manual_seed(3), estimator=estimator)
        grads.append(torch.autograd.grad(out.sum(), (m, s)))
    for fast, direct in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(fast, direct, rtol=1e-9, atol=1e-12)


# ---- input validation ---------------------------------------------------------------------------


def test_rejects_bad_counts_and_outputs() -> None:
    model = LinearGaussian(1.0, 1.0, 1.0)
    g = torch.Generator().manual_seed(0)
    args = (model.log_prob, model.sample_prior, model.sample_obs)
    with pytest.raises(ValueError, match="outer"):
        nmc_eig(*args, outer=0, inner=3, generator=g)
    with pytest.raises(ValueError, match="inner"):
        pce_eig(*args, outer=3, inner=0, generator=g)
    with pytest.raises(ValueError, match="inner"):
        nmc_eig(*args, outer=3, inner=True, generator=g)
    with pytest.raises(ValueError, match="batch_shape"):
        nmc_eig(*args, outer=3, inner=3, generator=g, batch_shape=(0,))
    with pytest.raises(TypeError):
        nmc_eig(*args, outer=3, inner=3, generator=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        nmc_eig(*args, outer=3, inner=3, generator=g, regime="sometimes")  # type: ignore[arg-type]

    def nan_log_prob(o: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return model.log_prob(o, theta) * float("nan")

    with pytest.raises(ValueError, match="NaN"):
        nmc_eig(nan_log_prob, model.sample_prior, model.sample_obs, outer=3, inner=3, generator=g)

    def wrong_shape(o: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return model.log_prob(o, theta).sum(-1)

    with pytest.raises(ValueError, match="log_prob"):
        nmc_eig(wrong_shape, model.sample_prior, model.sample_obs, outer=3, inner=3, generator=g)

    def bad_prior(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
        return torch.zeros(2, dtype=DT)

    with pytest.raises(ValueError, match="sample_prior"):
        nmc_eig(model.log_prob, bad_prior, model.sample_obs, outer=3, inner=3, generator=g)

    def nan_obs(theta: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return theta * float("nan")

    with pytest.raises(ValueError, match="sample_obs"):
        pce_eig(model.log_prob, model.sample_prior, nan_obs, outer=3, inner=3, generator=g)

    with pytest.raises(ValueError, match="log_lik"):
        eig_from_log_likelihoods(torch.zeros(4, 1), "nmc")
    with pytest.raises(ValueError, match="log_lik"):
        eig_from_log_likelihoods(torch.tensor([[-math.inf, 0.0]]), "pce")


def test_ensemble_rejects_bad_inputs() -> None:
    g = torch.Generator().manual_seed(0)
    m = torch.zeros(3, 2, 4)
    s = torch.ones(3, 2, 4)
    with pytest.raises(ValueError, match="means"):
        gaussian_ensemble_eig(m[0], s[0], num_samples=2, generator=g)
    with pytest.raises(ValueError, match="stds"):
        gaussian_ensemble_eig(m, s[:2], num_samples=2, generator=g)
    with pytest.raises(ValueError, match="stds"):
        gaussian_ensemble_eig(m, s * 0, num_samples=2, generator=g)
    with pytest.raises(ValueError, match="means"):
        gaussian_ensemble_eig(m * float("nan"), s, num_samples=2, generator=g)
    with pytest.raises(ValueError, match="num_samples"):
        gaussian_ensemble_eig(m, s, num_samples=0, generator=g)
    with pytest.raises(ValueError, match="K >= 2"):
        gaussian_ensemble_eig(m[:1], s[:1], num_samples=2, generator=g, estimator="nmc")
    assert gaussian_ensemble_eig(m[:1], s[:1], num_samples=2, generator=g).shape == (2,)
