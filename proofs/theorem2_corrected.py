"""Theorem 2, corrected: the rates gradient descent really has on μ-strongly convex, L-smooth losses.

Claim.  Let f be μ-strongly convex and L-smooth (0 < μ ≤ L) with minimiser θ*, and
θ⁺ = θ − η∇f(θ).  Write d = θ − θ*, g = ∇f(θ) (so ∇f(θ*) = 0), a = ‖d‖², p = ⟨g, d⟩, q = ‖g‖²;
then ‖θ⁺ − θ*‖² = ‖d − ηg‖² = a − 2ηp + η²q exactly.

1. For every η ∈ (0, 2/L): a − 2ηp + η²q ≤ (1 − ημ(2 − ηL))·a, and the factor lies in [0, 1).
2. If moreover η ≤ 1/L, the factor is ≤ 1 − ημ: ‖θ_t − θ*‖² ≤ (1 − ημ)^t ‖θ_0 − θ*‖² (the paper's
   rate, on the step sizes where it holds).
3. (Nesterov, Thm 2.1.15) For η ∈ (0, 2/(μ+L)]: a − 2ηp + η²q ≤ (1 − 2ημL/(μ+L))·a, factor in [0, 1).
   Sharper, with Cauchy–Schwarz (q ≥ μ²a): a − 2ηp + η²q ≤ (1 − ημ)²·a for η ≤ 2/(μ+L), and there
   (1 − ημ)² = max(|1 − ημ|, |1 − ηL|)²: the per-step contraction of item 4 on that range, from scalar
   premises alone.
4. For η ∈ (0, 2/L), ρ = max(|1 − ημ|, |1 − ηL|) < 1 and |1 − ηλ| ≤ ρ for every λ ∈ [μ, L]; so
   ‖θ⁺ − θ*‖ ≤ ρ‖θ − θ*‖ (the step is θ⁺ − θ* = (I − ηH̄)(θ − θ*) with H̄ = ∫₀¹∇²f(θ* + s·d) ds,
   symmetric with spectrum in [μ, L] for twice-differentiable f; tight on quadratics).
5. t-step rates follow from a per-step factor r ∈ [0, 1) by induction: a_t ≤ R·a_0 and
   a_{t+1} ≤ r·a_t imply a_{t+1} ≤ (r·R)·a_0 (the inductive step is checked; R = r^t).

Assumptions (premises of the SMT checks, standard facts about the class, not re-derived here):
strong convexity with ∇f(θ*) = 0 gives p ≥ μ·a; co-coercivity of an L-smooth convex gradient gives
p ≥ q/L; Nesterov's (2.1.11) gives p ≥ μL/(μ+L)·a + q/(μ+L); Cauchy–Schwarz p² ≤ a·q; a, q ≥ 0.
Item 4's reduction to the scalar statement (the integral Hessian H̄) is the mean-value argument
above, not machine-checked.

Machine-checked in Coq (``proofs/coq/Theorem2.v``) over an abstract real inner-product space, from
the premises as properties of the gradient map (μ-strong monotonicity, 1/L-co-coercivity, Nesterov
2.1.11) rather than as scalar facts: items 1, 2 and 3 (the 2/(μ+L) rate from 2.1.11 alone), the
tight per-step factor max((1−ημ)², (1−ηL)²) for every η ∈ (0, 2/L) (from all three premises, with no
twice-differentiability), and the t-step rates by induction.  Coq's proofs use only the axioms of its
standard real numbers (``REALS_AXIOMS``).  In one dimension (``proofs/coq/OneDim.v``) the three
premises are derived, by the mean value theorem, from μ ≤ f'' ≤ L (which also uses the excluded
middle, ``CLASSICAL_AXIOMS``), so the rates hold for every such function on ℝ.

Discharged also by z3 (each claim proved by showing its negation unsatisfiable over the reals, nonlinear
arithmetic) and by Hypothesis properties that step generated quadratics (random spectra in [μ, L]
containing μ and L) and non-quadratic losses (μ/2‖x−c‖² plus (L−μ)-weighted log cosh ridges) through
``GatedOptimizer(torch.optim.SGD)`` and compare ‖θ_t − θ*‖² with each bound (relative slack 1e-9,
absolute slack of a few float64 rounding errors per step).
"""

from __future__ import annotations

import z3
from amal_tools.compliance.coq import CLASSICAL_AXIOMS, REALS_AXIOMS
from amal_tools.compliance.obligation import Check, Kind, Method, Obligation, SmtOutcome
from amal_tools.compliance.smt import all_proved, prove

_TEST = "properties/test_theorem2_convergence.py"
_FILES = ("amal_verified/isolation/gate.py", "amal_verified/isolation/tagging.py")
_COQ_DIR = "proofs/coq"
_COQ = f"{_COQ_DIR}/Theorem2.v"


def _class_premises(
    mu: z3.ArithRef, big_l: z3.ArithRef, eta: z3.ArithRef, a: z3.ArithRef, p: z3.ArithRef, q: z3.ArithRef
) -> list[z3.BoolRef]:
    """0 < μ ≤ L, η > 0, a = ‖d‖² ≥ 0, q = ‖g‖² ≥ 0 and Cauchy–Schwarz p² ≤ a·q for p = ⟨g, d⟩."""
    return [mu > 0, big_l >= mu, eta > 0, a >= 0, q >= 0, p * p <= a * q]


def contraction_for_every_step_size() -> SmtOutcome:
    """Items 1-2: ‖d⁺‖² ≤ (1 − ημ(2 − ηL))·a, factor in [0, 1), for η < 2/L; ≤ (1 − ημ)·a if η ≤ 1/L."""
    mu, big_l, eta, a, p, q = z3.Reals("mu L eta a p q")
    premises = _class_premises(mu, big_l, eta, a, p, q)
    premises += [eta * big_l < 2, p >= mu * a, big_l * p >= q]
    dist_next = a - 2 * eta * p + eta * eta * q
    factor = 1 - eta * mu * (2 - eta * big_l)
    return all_proved(
        [
            prove(premises, z3.And(dist_next <= factor * a, factor >= 0, factor < 1)),
            prove(
                [*premises, eta * big_l <= 1], z3.And(factor <= 1 - eta * mu, dist_next <= (1 - eta * mu) * a)
            ),
        ]
    )


def nesterov_rate() -> SmtOutcome:
    """Item 3: (μ+L)p ≥ μL·a + q and η ≤ 2/(μ+L) give ‖d⁺‖² ≤ (1 − 2ημL/(μ+L))·a, factor in [0, 1)."""
    mu, big_l, eta, a, p, q = z3.Reals("mu L eta a p q")
    premises = _class_premises(mu, big_l, eta, a, p, q)
    premises += [eta * (mu + big_l) <= 2, (mu + big_l) * p >= mu * big_l * a + q]
    dist_next = a - 2 * eta * p + eta * eta * q
    # Multiplied through by μ + L > 0: the rate is ((μ+L) − 2ημL)/(μ+L).
    scaled_factor = (mu + big_l) - 2 * eta * mu * big_l
    claim = z3.And(
        (mu + big_l) * dist_next <= scaled_factor * a,
        scaled_factor >= 0,
        scaled_factor < mu + big_l,
    )
    return prove(premises, claim)


def nesterov_tight_rate() -> SmtOutcome:
    """Item 3, sharper: η ≤ 2/(μ+L) gives ‖d⁺‖² ≤ (1 − ημ)²·a, and |1 − ηL| ≤ 1 − ημ there."""
    mu, big_l, eta, a, p, q = z3.Reals("mu L eta a p q")
    premises = _class_premises(mu, big_l, eta, a, p, q)
    premises += [eta * (mu + big_l) <= 2, (mu + big_l) * p >= mu * big_l * a + q]
    dist_next = a - 2 * eta * p + eta * eta * q
    one_minus = 1 - eta * mu
    claim = z3.And(
        dist_next <= one_minus * one_minus * a,
        one_minus >= 0,
        1 - eta * big_l <= one_minus,
        -(1 - eta * big_l) <= one_minus,
    )
    return prove(premises, claim)


def spectral_contraction() -> SmtOutcome:
    """Item 4: ρ = max(|1−ημ|, |1−ηL|) < 1 and |1 − ηλ| ≤ ρ for λ ∈ [μ, L], η ∈ (0, 2/L)."""
    mu, big_l, eta, lam = z3.Reals("mu L eta lam")

    def absolute(x: z3.ArithRef) -> z3.ArithRef:
        return z3.If(x >= 0, x, -x)

    at_mu, at_l = absolute(1 - eta * mu), absolute(1 - eta * big_l)
    rho = z3.If(at_mu >= at_l, at_mu, at_l)
    premises = [mu > 0, big_l >= mu, eta > 0, eta * big_l < 2, lam >= mu, lam <= big_l]
    return prove(premises, z3.And(rho < 1, absolute(1 - eta * lam) <= rho))


def rate_induction_step() -> SmtOutcome:
    """Item 5: a_t ≤ R·a_0 ∧ a_{t+1} ≤ r·a_t ∧ r ≥ 0 ⇒ a_{t+1} ≤ (r·R)·a_0 (so a_t ≤ r^t a_0 by induction)."""
    r, big_r, a0, at, at1 = z3.Reals("r R a0 a_t a_t1")
    premises = [r >= 0, r < 1, big_r >= 0, a0 >= 0, at >= 0, at <= big_r * a0, at1 <= r * at]
    return prove(premises, at1 <= (r * big_r) * a0)


OBLIGATION = Obligation(
    id="theorem2-corrected",
    title="Theorem 2, corrected: linear convergence of gradient descent at the rates that hold",
    paper="§5.2 Theorem 2 (eq. 12) and Assumption 1; Nesterov (2004) Thm 2.1.15",
    claim=(
        "For μ-strongly convex, L-smooth f and θ⁺ = θ − η∇f(θ): η ≤ 1/L gives ‖θ_t−θ*‖² ≤ (1−ημ)^t‖θ_0−θ*‖²; "
        "η ≤ 2/(μ+L) gives (1 − 2ημL/(μ+L))^t; every η ∈ (0, 2/L) gives the factor 1 − ημ(2−ηL) < 1 per "
        "step and contracts ‖θ−θ*‖ by max(|1−ημ|, |1−ηL|) < 1 per step."
    ),
    assumptions=(
        "0 < μ ≤ L; f is μ-strongly convex and L-smooth with minimiser θ*",
        "premises of the scalar chain: ⟨g,d⟩ ≥ μ‖d‖² (strong convexity), ⟨g,d⟩ ≥ ‖g‖²/L (co-coercivity), "
        "⟨g,d⟩ ≥ μL/(μ+L)‖d‖² + ‖g‖²/(μ+L) (Nesterov 2.1.11), Cauchy–Schwarz",
        "the per-step max(|1−ημ|,|1−ηL|) contraction uses f twice differentiable (integral mean-value form)",
        "properties: float64; relative slack 1e-9 plus an absolute slack of a few roundings per step",
        "Coq: the premises are stated for every pair of points of an abstract real inner-product space (the "
        "standard characterisations of μ-strongly convex, L-smooth functions); the proofs depend on the "
        "axioms of Coq's standard reals only: " + ", ".join(REALS_AXIOMS),
        "Coq, on ℝ: f twice differentiable with μ ≤ f'' ≤ L everywhere; the standard library's mean value "
        "theorem adds the excluded middle: " + ", ".join(CLASSICAL_AXIOMS),
    ),
    kind=Kind.CLAIM,
    checks=(
        Check(
            "Coq: every η ∈ (0, 2/L): ‖θ_t−θ*‖² ≤ (1 − ημ(2−ηL))^t ‖θ_0−θ*‖²",
            Method.COQ,
            f"{_COQ}:rate_every_step_size",
            axioms=REALS_AXIOMS,
        ),
        Check(
            "Coq: η ≤ 1/L: (1 − ημ)^t",
            Method.COQ,
            f"{_COQ}:rate_small_step",
            axioms=REALS_AXIOMS,
        ),
        Check(
            "Coq: η ≤ 2/(μ+L): (1 − 2ημL/(μ+L))^t",
            Method.COQ,
            f"{_COQ}:rate_nesterov",
            axioms=REALS_AXIOMS,
        ),
        Check(
            "Coq: on ℝ, μ ≤ f'' ≤ L alone gives the premises and the rate (1 − ημ(2−ηL))^t",
            Method.COQ,
            f"{_COQ_DIR}/OneDim.v:one_dim_rate_every_step_size",
            files=(f"{_COQ_DIR}/_CoqProject", _COQ),
            axioms=REALS_AXIOMS + CLASSICAL_AXIOMS,
        ),
        Check(
            "Coq: per step max((1−ημ)², (1−ηL)²) for every η ∈ (0, 2/L)",
            Method.COQ,
            f"{_COQ}:tight_contraction",
            axioms=REALS_AXIOMS,
        ),
        Check(
            "z3: contraction 1−ημ(2−ηL) for η < 2/L, and 1−ημ for η ≤ 1/L",
            Method.SMT,
            "proofs/theorem2_corrected.py:contraction_for_every_step_size",
        ),
        Check("z3: Nesterov rate 1 − 2ημL/(μ+L)", Method.SMT, "proofs/theorem2_corrected.py:nesterov_rate"),
        Check(
            "z3: (1 − ημ)² = max(|1−ημ|, |1−ηL|)² for η ≤ 2/(μ+L)",
            Method.SMT,
            "proofs/theorem2_corrected.py:nesterov_tight_rate",
        ),
        Check(
            "z3: max(|1−ημ|, |1−ηL|) < 1 bounds |1−ηλ| on [μ, L]",
            Method.SMT,
            "proofs/theorem2_corrected.py:spectral_contraction",
        ),
        Check("z3: t-step rate by induction", Method.SMT, "proofs/theorem2_corrected.py:rate_induction_step"),
        Check(
            "Hypothesis: the corrected rates on generated losses through GatedOptimizer",
            Method.HYPOTHESIS,
            f"{_TEST}::TestTheorem2Corrected",
            files=_FILES,
        ),
    ),
    notes=(
        "The paper's rate (1−ημ)^t for every η ∈ (0, 2/L) is false (obligation theorem2-as-stated); these "
        "are the standard corrections.  The t-step rates are the per-step factors raised to t by the checked "
        "inductive step."
    ),
)
