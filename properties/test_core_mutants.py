"""Mutation analysis of the torch core: bugs injected into the isolation core must fail ``properties/``.

``properties/_core_mutants.py`` generates the mutants (named bug classes, and negated conditions
and dropped join terms by AST over the core's label and gate decisions) and runs each in a copy of
the package, in a subprocess, with ``pytest -x`` over the killer tests
(``_core_mutants.DEFAULT_TESTS``: the program property of ``test_theorem1_programs.py`` first, then
the audit of the example trainer and the op-level properties), measuring each mutant's time to
counterexample.  Only killer tests that pass on the unmutated core count (the baseline runs beside
the mutants; a mutant killed by a test that fails there is run again without it).

The test passes iff every non-equivalent mutant that ran was killed; ``_core_mutants.EQUIVALENT``
lists the equivalent ones with their argument.  The results are the evidence ``core_mutation_score``
(every mutant: id, class, function, which test killed it, seconds to counterexample), reported in
the compliance report apart from the specification's ``mutation_score``.

What runs where:

* default profile (CI): every named mutant and the first systematic mutant of each (file, operator)
  pair, two at a time -- about six minutes on two cores (``make unit`` leaves this test, marked
  ``mutation``, to the quick report, which runs it once);
* audit profile (``--hypothesis-profile=audit``) or ``AMAL_ALL_CORE_MUTANTS=1``: every mutant,
  the equivalent ones included (each must survive).
"""

from __future__ import annotations

import os
import statistics
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import _core_mutants as cm
import pytest
from hypothesis import settings

pytestmark = pytest.mark.mutation

JOBS = 2
TIMEOUT_S = 420.0  # a mutant that makes the suite hang past this is killed by "timeout"


def full_run() -> bool:
    return os.environ.get("AMAL_ALL_CORE_MUTANTS") == "1" or settings.default.max_examples >= 1000


def ci_selection(mutants: list[cm.CoreMutant]) -> list[cm.CoreMutant]:
    """Every named mutant that is not equivalent, and the first systematic mutant of each (file,
    operator) pair that is not equivalent."""
    chosen: list[cm.CoreMutant] = []
    seen: set[tuple[str, str]] = set()
    for m in mutants:
        if m.id in cm.EQUIVALENT:
            continue
        key = (m.file, m.cls)
        if m.named or key not in seen:
            chosen.append(m)
            seen.add(key)
    return chosen


@pytest.fixture(scope="module")
def mutants() -> list[cm.CoreMutant]:
    return cm.generate()


def test_mutants_apply_to_the_current_core_and_cover_every_named_class(mutants: list[cm.CoreMutant]) -> None:
    """Generation succeeded (no ``StaleMutant``); ids are unique; the named classes are all there."""
    ids = [m.id for m in mutants]
    assert len(set(ids)) == len(ids)
    assert len({m.source for m in mutants}) == len(mutants), "two mutants are the same program"
    classes = {m.cls for m in mutants if m.named}
    for required in (
        "gate ignores a parameter's own storage label",
        "gate ignores optimizer-state labels",
        "input gradients leave a module call unlabelled",
        "output-gradient label not joined",
        "running statistics / buffers written during a call left unlabelled",
        "the global foreign-optimizer hook disabled",
        "writes into protected memory not refused",
        "neutral ops labelled as if value-dependent",
        "join replaced by left operand in the per-op rule",
        "Rows ranges ignored on lookup",
        "track_in_place disabled",
        "label store drops labels on partial writes",
        "pickling drops labels",
    ):
        assert required in classes, required
    assert {m.cls for m in mutants if not m.named} == set(cm.SYSTEMATIC_OPERATORS)
    assert set(cm.EQUIVALENT) <= set(ids), "an equivalent mutant's id is stale"
    assert {m.file for m in mutants} <= {f"{cm.PACKAGE}/{name}.py" for name in cm.CORE_FILES}


def score(
    mutants: list[cm.CoreMutant],
    rows: list[dict[str, Any]],
    baseline: dict[str, bool],
    seconds: float,
    selection: str,
) -> dict[str, Any]:
    ran = [r for r in rows if r["run"]]
    equivalent = [{"id": mid, "reason": reason} for mid, reason in cm.EQUIVALENT.items()]
    scored = [r for r in ran if r["id"] not in cm.EQUIVALENT]
    killed = [r for r in scored if r["killed_by"] is not None]
    times = [r["seconds_to_counterexample"] for r in killed]
    by_test: dict[str, int] = {}
    for r in killed:
        by_test[r["killed_by"]] = by_test.get(r["killed_by"], 0) + 1
    return {
        "total": len(mutants),
        "run": len(ran),
        "scored": len(scored),
        "killed": len(killed),
        "equivalent": equivalent,
        "survivors": [r["id"] for r in scored if r["killed_by"] is None],
        "score": len(killed) / len(scored) if scored else 0.0,
        "median_seconds_to_counterexample": round(statistics.median(times), 1) if times else None,
        "max_seconds_to_counterexample": max(times) if times else None,
        "killed_by_test": by_test,
        "baseline": {
            test: "passes" if ok else "fails on the unmutated core (not counted)"
            for test, ok in baseline.items()
        },
        "selection": selection,
        "seconds": round(seconds, 1),
        "jobs": JOBS,
        "mutants": rows,
    }


def test_every_non_equivalent_core_mutant_is_killed(mutants: list[cm.CoreMutant], evidence: Any) -> None:
    started = time.monotonic()
    full = full_run()
    chosen = [m for m in mutants if full or m in ci_selection(mutants)]
    tests = list(cm.DEFAULT_TESTS)
    with ThreadPoolExecutor(max_workers=JOBS) as pool:
        baseline_runs: dict[str, Future[cm.Result]] = {
            t: pool.submit(cm.run_baseline, [t], TIMEOUT_S) for t in tests
        }
        runs = {m.id: pool.submit(cm.run_mutant, m, tests, TIMEOUT_S) for m in chosen}
        baseline = {t: f.result().killed_by is None for t, f in baseline_runs.items()}
        results = {mid: f.result() for mid, f in runs.items()}
        usable = [t for t in tests if baseline[t]]
        assert cm.PROGRAMS in usable, "the program property fails on the unmutated core"
        # A kill by a test that fails on the unmutated core proves nothing: run those mutants again.
        invalid = {t for t in tests if not baseline[t]}
        again = {
            m.id: pool.submit(cm.run_mutant, m, usable, TIMEOUT_S)
            for m in chosen
            if results[m.id].killed_by in invalid
        }
        results.update({mid: f.result() for mid, f in again.items()})
    rows = cm.records(mutants, results)
    selection = (
        "every mutant"
        if full
        else "CI: every named mutant, the first systematic mutant of each file x operator"
    )
    result = score(mutants, rows, baseline, time.monotonic() - started, selection)
    evidence.record("core_mutation_score", result)

    for mid in cm.EQUIVALENT:
        row = next(r for r in rows if r["id"] == mid)
        assert row["killed_by"] is None, f"{mid} is listed as equivalent but was killed: {row['detail']}"
    assert result["survivors"] == [], "surviving core mutants:\n" + "\n".join(
        next(r["description"] for r in rows if r["id"] == s) for s in result["survivors"]
    )
