"""What a proof obligation is: a claim, its assumptions, and the checks that discharge it.

Each file ``proofs/<name>.py`` defines one module-level ``OBLIGATION``.  The report
(:mod:`amal_tools.compliance.runner`) runs its checks, each in its own
process with an exact command an auditor can rerun, and derives verdicts:

* a check's verdict comes from its method: a solver that exhausts every case
  (``smt`` returning ``proved``; ``crosshair`` reporting "Confirmed over all
  paths" for every condition) gives ``proved``; a theorem that ``coqc`` compiles
  with only the axioms the check accepts (``coq``) gives ``proved (Coq)``, and
  ``not checked`` where Coq is not installed; properties that pass on
  generated examples (``hypothesis``, ``measurement``, ``certificate``) give
  ``tested``; a failure gives ``violated``.  For an obligation of kind
  ``refutation`` (the paper's claim is false) a check passes by exhibiting a
  counterexample, and gives ``paper claim refuted``; a ``measurement`` that
  records contradicting evidence gives ``paper claim refuted (statistical)``.
* an obligation's verdict is its weakest check's: any ``violated`` makes it
  ``violated``; a check not run leaves it ``not checked``; ``proved`` needs every
  check proved (``proved (Coq)`` if every check is a Coq proof); a refutation
  needs a check that exhibits a counterexample or a Coq proof of the refutation
  (then ``paper claim refuted``), or else a contradicting measurement (then
  ``paper claim refuted (statistical)``).
  "Tested" is never reported as "proved".
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

__all__ = ["Check", "Kind", "Method", "Obligation", "SmtOutcome", "Verdict"]

_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")


class Verdict(enum.Enum):
    PROVED = "proved"
    PROVED_COQ = "proved (Coq)"
    """A machine-checked proof: ``coqc`` compiled the theorem, and ``Print Assumptions`` names no
    axiom but those the check accepts."""
    TESTED = "tested"
    VIOLATED = "violated"
    REFUTED = "paper claim refuted"
    """A counterexample to the paper's statement: found by a solver, checked by Coq, or a generated
    case recorded verbatim."""
    REFUTED_STATISTICAL = "paper claim refuted (statistical)"
    """The paper's statement contradicted by a measurement (fitted slopes, estimated floors): evidence
    against it, like *tested* for a claim, not a counterexample."""
    NOT_CHECKED = "not checked"
    """Only for checks the report did not run (timing measurements in the quick report; Coq checks
    where ``coqc`` is not installed) and the obligations they leave incomplete: never a pass."""


class Kind(enum.Enum):
    CLAIM = "claim"
    """We assert the statement holds (as stated, or as we corrected it)."""
    REFUTATION = "refutation"
    """We assert the paper's statement is false and exhibit a counterexample."""


class Method(enum.Enum):
    SMT = "smt"
    """``target`` is ``"proofs/<file>.py:<function>"``; the function takes no arguments and returns an
    :class:`SmtOutcome` (z3: a claim is proved by showing its negation unsatisfiable)."""
    CROSSHAIR = "crosshair"
    """``target`` names contract-bearing code: a dotted function
    (``amal_verified.isolation.reference.law_gate``), the same as ``path.py:function``, or a file.
    Run with ``crosshair check --analysis_kind=PEP316 --report_all``: proved iff every condition is
    "Confirmed over all paths"; a counterexample violates; conditions neither confirmed nor refuted
    within the timeout leave it tested."""
    HYPOTHESIS = "hypothesis"
    """``target`` is a pytest node id (``properties/test_x.py::test_y``) or file of Hypothesis properties."""
    MEASUREMENT = "measurement"
    """``target`` is a pytest node id of a statistical or timing measurement (fitted slopes, exponents)."""
    CERTIFICATE = "certificate"
    """``target`` is a pytest node id that trains a run and certifies it by replay from primary data."""
    COQ = "coq"
    """``target`` is ``"proofs/coq/<File>.v:<theorem>"``: the development is compiled with ``coqc``
    and the theorem's statement and ``Print Assumptions`` are recorded; ``axioms`` lists the axioms
    it may depend on (each named in the obligation's assumptions)."""
    """``target`` is a pytest node id that trains a run and certifies it by replay from primary data."""


@dataclass(frozen=True)
class SmtOutcome:
    """What an SMT check returns.

    ``status``: ``"proved"`` (negation unsatisfiable), ``"counterexample"`` (a model was found; for a
    refutation that is success), or ``"unknown"`` (the solver gave up: never a pass).
    ``formula``: the proved formula or the query, as the solver prints it (``sexpr()``).
    ``model``: the counterexample verbatim (``str(model)``), empty when proved.
    """

    status: str
    formula: str
    model: str = ""
    settings: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in {"proved", "counterexample", "unknown"}:
            raise ValueError(
                f"SmtOutcome.status must be proved, counterexample or unknown, got {self.status!r}"
            )


@dataclass(frozen=True)
class Check:
    """One way an obligation is discharged.

    ``files``: repository-relative paths of the code the check is about (the report records their
    sha256); the check's own file is always included.  ``axioms``: for a ``coq`` check, the axioms
    ``Print Assumptions`` may name, as it prints them (any other fails the check); empty for every
    other method.
    ``quick``: part of the quick report (CI).  Only timing measurements may set ``quick=False``
    (they run alone, in the full report): anything else left out would let the quick report call
    an obligation discharged that was not.
    """

    name: str
    method: Method
    target: str
    files: tuple[str, ...] = ()
    quick: bool = True
    timeout_s: float = 1800.0
    axioms: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("Check.name must not be empty")
        if self.method is Method.SMT and ":" not in self.target:
            raise ValueError(f"an smt check's target is 'proofs/<file>.py:<function>', got {self.target!r}")
        if self.method is Method.COQ and not re.match(r"^proofs/coq/[^/:]+\.v:[A-Za-z_][\w']*$", self.target):
            raise ValueError(f"a coq check's target is 'proofs/coq/<File>.v:<theorem>', got {self.target!r}")
        if self.axioms and self.method is not Method.COQ:
            raise ValueError(f"check {self.name!r}: only a coq check accepts axioms")
        pytest_methods = (Method.HYPOTHESIS, Method.MEASUREMENT, Method.CERTIFICATE)
        if self.method in pytest_methods and not self.target.split("::", 1)[0].endswith(".py"):
            raise ValueError(
                f"a {self.method.value} check's target is a pytest file or node id "
                f"(tests/test_x.py[::test_y]), got {self.target!r}"
            )
        if not self.quick and self.method is not Method.MEASUREMENT:
            raise ValueError(
                f"check {self.name!r}: only timing measurements may be left out of the quick report "
                f"(quick=False), not a {self.method.value} check"
            )


@dataclass(frozen=True)
class Obligation:
    """A claim (``kind=CLAIM``) or a refutation of the paper's claim (``kind=REFUTATION``)."""

    id: str
    title: str
    paper: str
    claim: str
    assumptions: tuple[str, ...]
    kind: Kind
    checks: tuple[Check, ...]
    notes: str = ""

    def __post_init__(self) -> None:
        if not _ID.match(self.id):
            raise ValueError(f"Obligation.id must be lower-case words joined by '-', got {self.id!r}")
        if not self.checks:
            raise ValueError(f"obligation {self.id} has no checks: nothing would discharge it")
        names = [c.name for c in self.checks]
        if len(set(names)) != len(names):
            raise ValueError(f"obligation {self.id} has checks with the same name: {names}")
