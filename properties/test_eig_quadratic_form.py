"""The trainer's information-gain estimator agrees with the direct form on generated ensembles.

:func:`~amal_verified.world_model.information_gain.gaussian_ensemble_eig` expands every Gaussian
log-density as a quadratic form (batched matrix products, float64);
:func:`~amal_verified.world_model.information_gain.gaussian_ensemble_eig_reference` evaluates each
density as written.  Both draw the same noise from the same generator, so they compute the same estimate
and differ by rounding only.  Claims, over Hypothesis-generated ensembles (K = 2–20 members, D = 1–18,
means spread over up to ±10³ around offsets up to ±10³, log-stds in [−10, 3]):

* PCE (the trainer's default, bounded by ln K): ``|fast − direct| ≤ 1e-9`` nats;
* NMC (leave-one-out, unbounded: well-separated sharp members give values near 10¹³, whose float64
  spacing alone exceeds 1e-9): ``|fast − direct| ≤ 1e-9 · max(1, |direct|)``;
* float32 inputs: both compute in float64 and round the result to float32 once, so they agree to
  that rounding;
* both advance the generator by the same draw, and the fast form is deterministic bit for bit.

Scenarios, each generated explicitly because uniform sampling rarely reaches them: ``generic``
(moderate spread and widths), ``sharp`` (every member equally sharp, σ down to e⁻¹⁰, far apart),
``mixed`` (every member's width drawn over the whole range, per dimension), ``bimodal`` (each width
either the sharpest or e³), ``close-pair`` (members 0 and 1 closer than their width, the rest far
away: the case where expanding around one centre per state would cancel ~(spread/σ)² to the size of a
likely term), ``identical`` (all members equal: the estimate is 0).

The explicit examples are the worst cases found by search (a close pair of members with σ = e⁻¹⁰ among
members 10³ apart, 10³ from the origin).  Seen to fail on deliberately wrong variants: expanding
around one centre per state (W and Q from the centred means by matrix products, the plain quadratic
form) differs by 8e-5 nats on the first example; keeping that centre only for the cross term (Q
from differences) by 5e-9 on the first; float32 arithmetic fails the generated examples.
"""

from __future__ import annotations

import math

import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from amal_verified.world_model.information_gain import (
    gaussian_ensemble_eig,
    gaussian_ensemble_eig_reference,
)

F64 = torch.float64
PCE_TOLERANCE = 1e-9
"""Nats: the agreement the fast form promises for the trainer's (bounded) estimator."""
NMC_RELATIVE_TOLERANCE = 1e-9
"""Relative to max(1, |value|): NMC values are unbounded."""
LOG_STD_MIN, LOG_STD_MAX = -10.0, 3.0

SCENARIOS = ("generic", "sharp", "mixed", "bimodal", "close-pair", "identical")


def _ensemble(
    scenario: str, members: int, states: int, dim: int, offset: float, spread: float, sharp: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(means, stds)``, each ``(members, states, dim)`` float64, for one scenario (module docstring)."""
    g = torch.Generator().manual_seed(seed)
    shape = (members, states, dim)
    means = offset + spread * torch.randn(shape, generator=g, dtype=F64)
    if scenario == "generic":
        log_std = -1.0 + 0.5 * torch.randn(shape, generator=g, dtype=F64)
    elif scenario == "sharp":
        log_std = torch.full(shape, sharp, dtype=F64)
    elif scenario == "mixed":
        log_std = sharp + (LOG_STD_MAX - sharp) * torch.rand(shape, generator=g, dtype=F64)
    elif scenario == "bimodal":
        log_std = torch.where(torch.rand(shape, generator=g) < 0.5, sharp, LOG_STD_MAX).to(F64)
    elif scenario == "close-pair":
        log_std = torch.full(shape, sharp, dtype=F64)
        means[1] = means[0] + math.exp(sharp) * torch.randn((states, dim), generator=g, dtype=F64)
    else:
        means = means[:1].expand(shape).clone()
        log_std = (sharp * torch.rand((1, states, dim), generator=g, dtype=F64)).expand(shape).clone()
    return means, log_std.exp()


_ensembles = st.builds(
    _ensemble,
    scenario=st.sampled_from(SCENARIOS),
    members=st.integers(2, 20),
    states=st.integers(1, 4),
    dim=st.integers(1, 18),
    offset=st.floats(-1e3, 1e3),
    spread=st.floats(1e-3, 1e3),
    sharp=st.floats(LOG_STD_MIN, 0.0),
    seed=st.integers(0, 2**31 - 1),
)


def _both(
    means: torch.Tensor, stds: torch.Tensor, samples: int, seed: int, estimator: str
) -> tuple[torch.Tensor, torch.Tensor]:
    fast_gen, direct_gen = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    fast = gaussian_ensemble_eig(
        means,
        stds,
        num_samples=samples,
        generator=fast_gen,
        estimator=estimator,  # type: ignore[arg-type]
    )
    direct = gaussian_ensemble_eig_reference(
        means,
        stds,
        num_samples=samples,
        generator=direct_gen,
        estimator=estimator,  # type: ignore[arg-type]
    )
    assert torch.equal(fast_gen.get_state(), direct_gen.get_state())  # the same draw, consumed alike
    return fast, direct


@settings(deadline=None)
@given(ensemble=_ensembles, samples=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
@example(ensemble=_ensemble("close-pair", 14, 3, 18, -1e3, 1e3, -10.0, 107), samples=3, seed=107)
@example(ensemble=_ensemble("close-pair", 8, 2, 6, 500.0, 500.0, -9.0, 3), samples=2, seed=3)
@example(ensemble=_ensemble("bimodal", 20, 4, 18, 1e3, 1e3, -10.0, 5), samples=4, seed=5)
def test_fast_form_agrees_with_direct_form(
    ensemble: tuple[torch.Tensor, torch.Tensor], samples: int, seed: int
) -> None:
    means, stds = ensemble
    k = means.shape[0]
    fast, direct = _both(means, stds, samples, seed, "pce")
    assert fast.dtype == F64 and fast.shape == (means.shape[1],)
    error = float((fast - direct).abs().max())
    assert error <= PCE_TOLERANCE, f"PCE: fast and direct forms differ by {error:.3e} nats"
    # Each PCE term is ≤ ln K (the own density is one of the K averaged); single draws may be < 0.
    assert bool((fast <= math.log(k) + PCE_TOLERANCE).all())

    fast, direct = _both(means, stds, samples, seed, "nmc")
    scale = direct.abs().clamp(min=1.0)
    relative = float(((fast - direct).abs() / scale).max())
    assert relative <= NMC_RELATIVE_TOLERANCE, f"NMC: relative difference {relative:.3e}"
    assert bool(torch.isfinite(fast).all())


@settings(deadline=None, max_examples=max(5, settings().max_examples // 5))
@given(ensemble=_ensembles, seed=st.integers(0, 2**31 - 1))
def test_float32_inputs_round_the_float64_estimate_once(
    ensemble: tuple[torch.Tensor, torch.Tensor], seed: int
) -> None:
    means, stds = (x.float() for x in ensemble)
    if not bool(torch.isfinite(means).all()) or not bool((stds > 0).all()):
        return  # outside float32's range: both forms reject it (checked in the unit tests)
    fast, direct = _both(means, stds, 2, seed, "pce")
    assert fast.dtype == direct.dtype == torch.float32
    spacing = torch.finfo(torch.float32).eps * direct.abs().clamp(min=1.0)
    assert bool(((fast - direct).abs() <= PCE_TOLERANCE + spacing).all())
    again = gaussian_ensemble_eig(means, stds, num_samples=2, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(fast, again)  # bit for bit from the same generator state
