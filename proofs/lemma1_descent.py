"""Lemma 1 (descent lemma): under L-smoothness, η ≤ 1/L gives f(θ⁺) ≤ f(θ) − (η/2)‖∇f(θ)‖².

Claim.  f L-smooth, θ⁺ = θ − η∇f(θ) with 0 < η ≤ 1/L: f(θ⁺) ≤ f(θ) − (η/2)‖∇f(θ)‖².

Assumption (premise).  The quadratic upper bound of L-smoothness,
f(y) ≤ f(x) + ⟨∇f(x), y − x⟩ + (L/2)‖y − x‖², at y = θ⁺ (so y − x = −ηg, with g = ∇f(θ), q = ‖g‖²):
f(θ⁺) ≤ f(θ) − ηq + (Lη²/2)q.

Proof (z3, nonlinear real arithmetic): with f⁺, f, q ≥ 0, L > 0, 0 < η ≤ 1/L as reals, the premise
implies f⁺ ≤ f − (η/2)q (since −η + Lη²/2 ≤ −η/2 iff ηL ≤ 1); negation unsat.

Machine-checked in Coq (``proofs/coq/Lemmas.v``, ``lemma1_descent``) over an abstract real
inner-product space, from the quadratic upper bound as a premise for every pair of points, and
``lemma1_step_size_needed``: (L/2)x² satisfies the premise and violates the inequality at x = 1 for
every η ∈ (1/L, 2/L).  Only the axioms of Coq's standard reals are used.

The step-size condition cannot be dropped: z3 also proves that for every η ∈ (1/L, 2/L) the 1-d
quadratic f(x) = (L/2)x² violates the inequality at every x ≠ 0 (f(x⁺) = (1−ηL)² f(x) and
(1−ηL)² > 1 − ηL there).  Hypothesis properties check the lemma on generated strongly convex losses
(quadratics and log-cosh ridges) along trajectories stepped through ``GatedOptimizer``, and find a
violation for some η ∈ (1/L, 2/L).
"""

from __future__ import annotations

import z3
from amal_tools.compliance.coq import REALS_AXIOMS
from amal_tools.compliance.obligation import Check, Kind, Method, Obligation, SmtOutcome
from amal_tools.compliance.smt import prove


def descent_from_smoothness() -> SmtOutcome:
    """f⁺ ≤ f − ηq + (Lη²/2)q ∧ 0 < η ≤ 1/L ⇒ f⁺ ≤ f − (η/2)q."""
    big_l, eta, f, f_next, q = z3.Reals("L eta f f_next q")
    premises = [
        big_l > 0,
        eta > 0,
        eta * big_l <= 1,
        q >= 0,
        f_next <= f - eta * q + big_l * eta * eta / 2 * q,
    ]
    return prove(premises, f_next <= f - eta / 2 * q)


def step_size_condition_is_needed() -> SmtOutcome:
    """For 1/L < η < 2/L and x ≠ 0, f = (L/2)x² gives f(x − ηLx) > f(x) − (η/2)(Lx)²."""
    big_l, eta, x = z3.Reals("L eta x")
    x_next = x - eta * big_l * x
    premises = [big_l > 0, eta * big_l > 1, eta * big_l < 2, x != 0]
    claim = big_l / 2 * x_next * x_next > big_l / 2 * x * x - eta / 2 * (big_l * x) * (big_l * x)
    return prove(premises, claim)


OBLIGATION = Obligation(
    id="lemma1-descent",
    title="Lemma 1 (descent lemma)",
    paper="Appendix A.2, Lemma 1, eq. (17)",
    claim="Under L-smoothness, for 0 < η ≤ 1/L: f(θ − η∇f(θ)) ≤ f(θ) − (η/2)‖∇f(θ)‖².  (Needs η ≤ 1/L.)",
    assumptions=(
        "f is L-smooth: f(y) ≤ f(x) + ⟨∇f(x), y−x⟩ + (L/2)‖y−x‖² (premise of the SMT proof)",
        "properties: float64 values of generated strongly convex, L-smooth losses; slack 1e-9 relative to f "
        "plus a few roundings",
    ),
    kind=Kind.CLAIM,
    checks=(
        Check(
            "Coq: descent from the quadratic upper bound, for η ≤ 1/L",
            Method.COQ,
            "proofs/coq/Lemmas.v:lemma1_descent",
            files=("proofs/coq/_CoqProject", "proofs/coq/Theorem2.v"),
            axioms=REALS_AXIOMS,
        ),
        Check(
            "Coq: fails on (L/2)x² for every η ∈ (1/L, 2/L)",
            Method.COQ,
            "proofs/coq/Lemmas.v:lemma1_step_size_needed",
            files=("proofs/coq/_CoqProject", "proofs/coq/Theorem2.v"),
            axioms=REALS_AXIOMS,
        ),
        Check(
            "z3: descent from the quadratic upper bound",
            Method.SMT,
            "proofs/lemma1_descent.py:descent_from_smoothness",
        ),
        Check(
            "z3: fails on (L/2)x² for every η ∈ (1/L, 2/L)",
            Method.SMT,
            "proofs/lemma1_descent.py:step_size_condition_is_needed",
        ),
        Check(
            "Hypothesis: descent along GatedOptimizer trajectories; a found violation above 1/L",
            Method.HYPOTHESIS,
            "properties/test_theorem2_convergence.py::TestLemma1Descent",
            files=("amal_verified/isolation/gate.py", "amal_verified/isolation/tagging.py"),
        ),
    ),
    notes="For η ∈ (0, 2/L) the same premise gives the weaker f(θ⁺) ≤ f(θ) − η(1 − ηL/2)‖∇f(θ)‖².",
)
