"""The reference-model property suite under Hypothesis's CrossHair backend (symbolic search).

``properties/test_gate_mutants.py`` runs its Hypothesis suite over the pure-Python reference
model (``amal_verified/isolation/reference.py``) with random examples.  The reference is pure Python over
small sets and integers, which is where the ``hypothesis-crosshair`` backend adds power: each
"example" is a symbolic path that CrossHair's SMT solver steers towards unexplored branches.  Here:

* the whole suite holds on the reference under the symbolic backend;
* the symbolic backend kills, on its own, a mutant of each class the issue names (dropped join
  term, inverted check, label compared by name) in each function CI checks with CrossHair.

Budget: ``REFERENCE_PATHS`` / ``KILL_PATHS`` symbolic paths per property (about 1 s per 10), the
same in every profile: this complements the random suite, whose example count the profile scales.
Measured: 20 paths did not find the counterexample to ``join.label-by-name.1`` (it needs two
sources sharing a name with different kinds); 60 do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import _mutants
import pytest
import test_gate_mutants as suite
from hypothesis import HealthCheck, Phase, given, settings

from amal_verified.isolation import reference

REFERENCE_PATHS = 20  # per property, on the unmutated reference (every property runs to the end)
KILL_PATHS = 60  # per property, on a mutant (the search stops at the first failure)


def _symbolic_failure(module: Any, paths: int, focus: str = "") -> str | None:
    """The first property of the suite the symbolic backend breaks on ``module``, or None."""
    config = settings(
        backend="crosshair",
        max_examples=paths,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    for prop in sorted(suite.PROPERTIES, key=lambda p: focus not in p.focus):
        try:
            config(given(**prop.strategies)(suite._bind(prop.check, module)))()
        except AssertionError as exc:
            return f"{prop.name}: {exc}"
        except Exception as exc:
            if type(exc).__module__.startswith("hypothesis"):
                raise  # a broken harness is not a kill
            return f"{prop.name}: {type(exc).__name__}: {exc}"
    return None


def test_the_suite_holds_on_the_reference_under_symbolic_search() -> None:
    assert _symbolic_failure(reference, REFERENCE_PATHS) is None


@pytest.mark.parametrize("named_class", sorted(_mutants.NAMED_CLASSES))
def test_symbolic_search_kills_each_named_mutant_class(named_class: str, tmp_path: Path) -> None:
    mutants = _mutants.generate(suite.REFERENCE.read_text(encoding="utf-8"))
    chosen = [m for m in suite.ci_crosshair_subset(mutants) if m.named_class == named_class]
    assert chosen, f"no {named_class} mutant in {suite.CI_CROSSHAIR_FUNCTIONS}"
    for m in chosen:
        with suite.imported(m.write(tmp_path), m.module_name) as module:
            assert _symbolic_failure(module, KILL_PATHS, focus=m.function) is not None, (
                f"{m.id} survived: {m.description}"
            )
