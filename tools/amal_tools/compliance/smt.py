"""The z3 queries SMT obligations are made of, returning :class:`SmtOutcome` (import z3 only here).

A claim is *proved* when z3 shows its negation unsatisfiable; a satisfying model of the negation
is a counterexample, reported verbatim; z3's ``unknown`` (timeout, undecided nonlinear case) is
neither, and never counts as a pass.  Every outcome carries the formula checked (``sexpr()``)
and the solver settings, so the report shows what exactly was proved.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import z3

from amal_tools.compliance.obligation import SmtOutcome

__all__ = ["TIMEOUT_MS", "all_proved", "prove", "search", "solver_settings"]

TIMEOUT_MS: Final = 60_000


def solver_settings() -> dict[str, str]:
    return {
        "solver": "z3 " + z3.get_version_string(),
        "logic": "QF_NRA (default tactic)",
        "timeout_ms": str(TIMEOUT_MS),
    }


def _solve(formula: z3.BoolRef) -> tuple[z3.CheckSatResult, z3.Solver]:
    solver = z3.Solver()
    solver.set("timeout", TIMEOUT_MS)
    solver.add(formula)
    return solver.check(), solver


def prove(premises: Sequence[z3.BoolRef], claim: z3.BoolRef) -> SmtOutcome:
    """``proved`` iff ``premises ⇒ claim`` is valid (negation unsat); else a counterexample or ``unknown``."""
    statement = z3.Implies(z3.And(*premises), claim)
    result, solver = _solve(z3.Not(statement))
    if result == z3.unsat:
        return SmtOutcome("proved", statement.sexpr(), settings=solver_settings())
    if result == z3.sat:
        return SmtOutcome("counterexample", statement.sexpr(), str(solver.model()), solver_settings())
    return SmtOutcome("unknown", statement.sexpr(), settings=solver_settings())


def search(query: z3.BoolRef) -> SmtOutcome:
    """Look for a witness of ``query`` (e.g. a counterexample to a paper's claim).

    ``counterexample`` with the model when one exists; ``proved`` when none can (the query is
    unsat: the claim it tried to break holds on the searched family); ``unknown`` otherwise.
    """
    result, solver = _solve(query)
    if result == z3.sat:
        return SmtOutcome("counterexample", query.sexpr(), str(solver.model()), solver_settings())
    if result == z3.unsat:
        return SmtOutcome("proved", query.sexpr(), settings=solver_settings())
    return SmtOutcome("unknown", query.sexpr(), settings=solver_settings())


def all_proved(outcomes: Sequence[SmtOutcome]) -> SmtOutcome:
    """Conjunction of several proofs: ``proved`` iff each is; otherwise the first that is not."""
    if not outcomes:
        raise ValueError("all_proved needs at least one outcome")
    formula = "\n".join(o.formula for o in outcomes)
    for o in outcomes:
        if o.status != "proved":
            return SmtOutcome(o.status, formula, o.model, o.settings)
    return SmtOutcome("proved", formula, settings=outcomes[0].settings)
