"""Theorem 2 as stated is false: (1 − ημ)^t is not a valid rate for every η ∈ (0, 2/L).

The paper's claim (§5.2, eq. 12).  Under Assumption 1 (f L-smooth, μ-strongly convex, η ∈ (0, 2/L)),
gradient descent satisfies ‖θ_t − θ*‖² ≤ (1 − ημ)^t ‖θ_0 − θ*‖².

Refutation.  For 0 < μ ≤ L the 1-d quadratic f(x) = (L/2)x² is μ-strongly convex and L-smooth, and one
step multiplies ‖x − x*‖² by exactly (1 − ηL)².  So the statement fails as soon as
(1 − ηL)² > 1 − ημ for some admissible μ, L, η.  z3 finds such values (with 1 − ημ > 0, so the
failure is not an artefact of a negative bound), e.g. μ = 1, L = 10, η = 0.195: 0.9025 > 0.805.

Where the statement holds.  On quadratics with spectrum in [μ, L] (and, by the max(|1−ημ|, |1−ηL|)
contraction of ``theorem2-corrected``, on the whole class) the stated rate holds for all t exactly
when η ≤ (2L − μ)/L².  z3 proves, for 0 < μ ≤ L and 0 < η < 2/L:
(a) η ≤ (2L − μ)/L² and λ ∈ [μ, L] imply (1 − ηλ)² ≤ 1 − ημ (each eigen-direction, hence every
    quadratic, contracts at least at the stated rate), and
(b) η > (2L − μ)/L² implies (1 − ηL)² > 1 − ημ (the direction of eigenvalue L breaks it),
i.e. [∀λ ∈ [μ, L]: (1 − ηλ)² ≤ 1 − ημ] ⟺ η ≤ (2L − μ)/L².  (2L − μ)/L² < 2/L whenever μ > 0, so the
paper's range of step sizes is strictly too wide for every μ, L.

Machine-checked in Coq (``proofs/coq/Theorem2.v``, over an abstract real inner-product space and
the class given by its gradient characterisations): the paper's statement is false
(``paper_statement_false``), with the counterexample above computed (``counterexample_mu1_L10_eta0195``),
and on the whole class, not only on quadratics, the stated rate holds for every start and every t iff
η ≤ (2L − μ)/L² (``stated_rate_threshold``); on ℝ, for every f with μ ≤ f'' ≤ L, the "if" direction
with no other premise (``proofs/coq/OneDim.v``, which also uses the excluded middle).

Discharged also by: the z3 counterexample (the refutation), the z3 proof of the threshold, and Hypothesis
properties that search generated strongly convex losses stepped through ``GatedOptimizer`` for a
violation (``hypothesis.find``; the one found is kept as a regression test) and test the threshold
from both sides on the quadratic with eigenvalue L.
"""

from __future__ import annotations

import z3
from amal_tools.compliance.coq import CLASSICAL_AXIOMS, REALS_AXIOMS
from amal_tools.compliance.obligation import Check, Kind, Method, Obligation, SmtOutcome
from amal_tools.compliance.smt import prove, search

_TEST = "properties/test_theorem2_convergence.py"
_COQ = "proofs/coq/Theorem2.v"


def counterexample_to_stated_rate() -> SmtOutcome:
    """Find 0 < μ ≤ L, 0 < η < 2/L, 1 − ημ > 0 with (1 − ηL)² > 1 − ημ: (L/2)x² violates eq. 12 at t = 1."""
    mu, big_l, eta = z3.Reals("mu L eta")
    query = z3.And(
        mu > 0,
        big_l >= mu,
        eta > 0,
        eta * big_l < 2,
        1 - eta * mu > 0,
        (1 - eta * big_l) * (1 - eta * big_l) > 1 - eta * mu,
    )
    # unsat ("proved") would mean the paper's claim holds on this family: the refutation failed
    return search(query)


def threshold_on_quadratics() -> SmtOutcome:
    """Prove (a) and (b) of the module docstring: the stated rate holds on [μ, L] iff η ≤ (2L − μ)/L²."""
    mu, big_l, eta, lam = z3.Reals("mu L eta lam")
    admissible = z3.And(mu > 0, big_l >= mu, eta > 0, eta * big_l < 2)
    below = eta * big_l * big_l <= 2 * big_l - mu  # η ≤ (2L − μ)/L², multiplied by L² > 0
    claim = z3.And(
        z3.Implies(z3.And(below, lam >= mu, lam <= big_l), (1 - eta * lam) * (1 - eta * lam) <= 1 - eta * mu),
        z3.Implies(z3.Not(below), (1 - eta * big_l) * (1 - eta * big_l) > 1 - eta * mu),
    )
    return prove([admissible], claim)


OBLIGATION = Obligation(
    id="theorem2-as-stated",
    title="Theorem 2 as stated: (1 − ημ)^t for every η ∈ (0, 2/L) — refuted",
    paper="§5.2 Theorem 2, eq. (12), with Assumption 1.3 (η_t ∈ (0, 2/L))",
    claim=(
        "The paper claims ‖θ_t−θ*‖² ≤ (1−ημ)^t‖θ_0−θ*‖² for every μ-strongly convex, L-smooth loss and every "
        "η ∈ (0, 2/L).  False: f(x) = (L/2)x² with μ = 1, L = 10, η = 0.195 gives (1−ηL)² = 0.9025 > 0.805 "
        "after one step.  The stated rate holds on the class exactly when η ≤ (2L−μ)/L²."
    ),
    assumptions=(
        "0 < μ ≤ L; the 1-d quadratic (L/2)x² is μ-strongly convex and L-smooth",
        "the threshold's 'if' direction on non-quadratic losses uses the max(|1−ημ|,|1−ηL|) contraction "
        "(obligation theorem2-corrected)",
        "properties: float64 gradient descent through GatedOptimizer(SGD); a violation must exceed a "
        "relative slack of 1e-9 plus a few roundings per step",
        "Coq: the class is given by μ-strong monotonicity, 1/L-co-coercivity and Nesterov 2.1.11 of the "
        "gradient on an abstract real inner-product space; the proofs depend on the axioms of Coq's "
        "standard reals only: "
        + ", ".join(REALS_AXIOMS)
        + " (on ℝ, with f'': also the excluded middle, "
        + ", ".join(CLASSICAL_AXIOMS)
        + ")",
    ),
    kind=Kind.REFUTATION,
    checks=(
        Check(
            "Coq: the paper's statement is false",
            Method.COQ,
            f"{_COQ}:paper_statement_false",
            axioms=REALS_AXIOMS,
        ),
        Check(
            "Coq: the counterexample μ = 1, L = 10, η = 0.195 computed",
            Method.COQ,
            f"{_COQ}:counterexample_mu1_L10_eta0195",
            axioms=REALS_AXIOMS,
        ),
        Check(
            "Coq: on the whole class the stated rate holds iff η ≤ (2L−μ)/L²",
            Method.COQ,
            f"{_COQ}:stated_rate_threshold",
            axioms=REALS_AXIOMS,
        ),
        Check(
            "Coq: on ℝ, μ ≤ f'' ≤ L and η ≤ (2L−μ)/L² give the stated rate",
            Method.COQ,
            "proofs/coq/OneDim.v:one_dim_paper_rate_below_threshold",
            files=("proofs/coq/_CoqProject", _COQ),
            axioms=REALS_AXIOMS + CLASSICAL_AXIOMS,
        ),
        Check(
            "z3: a counterexample (μ, L, η) to eq. 12",
            Method.SMT,
            "proofs/theorem2_as_stated.py:counterexample_to_stated_rate",
        ),
        Check(
            "z3: on [μ, L], the stated rate holds iff η ≤ (2L−μ)/L²",
            Method.SMT,
            "proofs/theorem2_as_stated.py:threshold_on_quadratics",
        ),
        Check(
            "Hypothesis: search for a violation, kept counterexample, threshold from both sides",
            Method.HYPOTHESIS,
            f"{_TEST}::TestTheorem2AsStated",
            files=("amal_verified/isolation/gate.py", "amal_verified/isolation/tagging.py"),
        ),
    ),
    notes="Correct forms: obligation theorem2-corrected.",
)
