"""Mutation analysis of the reference model's gate decision.

Every mutant that ``properties/_mutants.py`` generates from the gate-decision path
of ``amal_verified/isolation/reference.py`` (dropped join term, inverted check, label compared
by name, and standard operators) must be *killed*:

* by **CrossHair**: ``crosshair check`` on the mutant's ``law_*`` obligations (the
  contracts in the mutant's docstrings are the reference's, so a mutant breaks
  either a law or a contract the law enforces) reports a counterexample; or
* by **Hypothesis**: :data:`PROPERTIES`, a property suite over the reference API
  written here independently of the module's contracts and laws (the lattice laws,
  the gate's exact refusal set, its monotonicity, its sources, and noninterference
  by self-composition on random labels, parameters and data), fails on the mutant.
  It runs over a larger domain than CrossHair's bounds (3 source names, labels of
  up to 4 sources, up to 4 inputs, 3 parameters).

Mutation score = killed / (total - equivalent); :data:`_mutants.EQUIVALENT` lists
the equivalent mutants, each with its argument, and the test checks each one is
equivalent on every label over 6 sources.  The score must be 1.0, recorded as
evidence ``mutation_score``.

What runs where:

* default profile (CI): Hypothesis on *every* mutant (in-process, no shrinking: the
  first failing example is the detail); meanwhile one CrossHair process checks
  :func:`ci_crosshair_subset` -- for each of the three named classes, its
  first mutant in each of ``join``, ``has_aux`` and ``gate_decision`` (5 mutants) --
  on the first law that exercises the mutated function, and CrossHair itself must
  kill those.  About 6 s of CPU.
* audit profile (``--hypothesis-profile=audit``, 1000 examples per property) or
  ``AMAL_ALL_MUTANTS=1``: CrossHair on every mutant too, law by law
  (``_mutants.laws_for``, cheapest first, until one kills it), in two processes;
  then once more with the contracts of the mutated path stripped, which records
  what the laws alone kill (informative, not scored).  Several minutes of CPU.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from types import ModuleType
from typing import Any

import _mutants
import pytest
from _mutants import Mutant
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException

from amal_verified.isolation import reference

REFERENCE = Path(reference.__file__)

# ------------------------------------------------------------------------------------------- strategies

KINDS = ("primary", "aux")  # the test's own spelling, not reference.KINDS: a mutant cannot change it
NAMES = ("a", "b", "c")  # every name exists with both kinds: primary:a and aux:a are different sources
PARAMS = ("p", "q", "r")
Src = tuple[str, str]
Lbl = frozenset[Src]

sources = st.tuples(st.sampled_from(KINDS), st.sampled_from(NAMES))
labels = st.frozensets(sources, max_size=4)
label_lists = st.lists(labels, max_size=4)
# Half of the gradient labels are primary-only, so that the gate accepts often enough to be tested.
grad_labels = st.one_of(
    st.frozensets(st.tuples(st.just("primary"), st.sampled_from(NAMES)), max_size=3), labels
)
grad_maps = st.dictionaries(st.sampled_from(PARAMS), grad_labels)
protected_sets = st.frozensets(st.sampled_from(PARAMS))
ints = st.integers(-1000, 1000)
ALL_SOURCES: tuple[Src, ...] = tuple((k, n) for k in KINDS for n in NAMES)


def aux_in(lbl: Lbl) -> bool:
    """The test's own "has an auxiliary source" (never the mutant's)."""
    return any(kind == "aux" for kind, _ in lbl)


def union(lbls: list[Lbl]) -> Lbl:
    out: set[Src] = set()
    for x in lbls:
        out.update(x)
    return frozenset(out)


def data_pair() -> st.SearchStrategy[tuple[dict[Src, int], dict[Src, int]]]:
    """Two data assignments that agree on every primary source and may differ on every aux source."""
    values = st.fixed_dictionaries({s: st.tuples(ints, ints) for s in ALL_SOURCES})
    return values.map(
        lambda v: (
            {s: a for s, (a, _b) in v.items()},
            {s: (a if s[0] == "primary" else b) for s, (a, b) in v.items()},
        )
    )


# ------------------------------------------------------------------------------------------- properties
# Each property takes the module under test (the reference or a mutant) and asserts; the assertion
# messages become the kill's "detail".


def prop_join_is_the_least_upper_bound(m: ModuleType, a: Lbl, b: Lbl, c: Lbl) -> None:
    ab = m.join(a, b)
    assert a <= ab and b <= ab, "join is not an upper bound"
    assert all(s in a or s in b for s in ab), "join adds a source of neither input"
    assert ab == m.join(b, a), "join is not commutative"
    assert m.join(ab, c) == m.join(a, m.join(b, c)), "join is not associative"


def prop_flows_to_is_inclusion(m: ModuleType, a: Lbl, b: Lbl, c: Lbl) -> None:
    assert m.flows_to(a, b) == all(s in b for s in a), "flows_to is not source inclusion"
    assert m.flows_to(a, a) and m.flows_to(frozenset(), a), "flows_to is not reflexive / bottom not least"
    assert m.flows_to(a, c | a), "a does not flow to a larger label"


def prop_join_all_and_op_label(m: ModuleType, xs: list[Lbl], neutral: bool) -> None:
    for name, out in (("join_all", m.join_all(xs)), ("op_label", m.op_label(xs))):
        assert all(x <= out for x in xs), f"{name} lost an input's source"
        assert all(any(s in x for x in xs) for s in out), f"{name} invented a source"
    assert m.op_label(xs, label_neutral=True) == frozenset(), "a label-neutral op's output is not bottom"
    assert m.op_label(xs, label_neutral=neutral) == (frozenset() if neutral else union(xs))


def prop_inplace_label(m: ModuleType, target: Lbl, xs: list[Lbl], whole: bool) -> None:
    out = m.inplace_label(target, xs, whole)
    expected = union(xs) if whole else target | union(xs)
    what = "a whole-storage overwrite" if whole else "a partial write"
    assert out == expected, f"{what}: label {sorted(out)}, expected {sorted(expected)}"


def prop_aux_tests(m: ModuleType, lbl: Lbl, extra: Lbl) -> None:
    expected = aux_in(lbl)
    assert m.has_aux(lbl) == expected, "has_aux is wrong"
    assert m._aux_in(lbl) == expected, "_aux_in (the contracts' has_aux) is wrong"
    part = m.aux_part(lbl)
    assert part <= lbl and not any(k != "aux" for k, _ in part), "aux_part holds a non-aux source"
    assert all(s in part for s in lbl if s[0] == "aux"), "aux_part lost an aux source"
    assert m.has_aux(lbl | extra) == (expected or aux_in(extra)), "has_aux does not distribute over join"


def prop_gate_refuses_exactly_protected_aux(
    m: ModuleType, grads: dict[str, Lbl], protected: frozenset[str]
) -> None:
    refused = m.gate_decision(grads, protected)
    expected = frozenset(n for n in protected if aux_in(grads.get(n, frozenset())))
    assert refused == expected, f"gate refused {sorted(refused)}, expected {sorted(expected)}"


def prop_gate_is_monotone(
    m: ModuleType, grads: dict[str, Lbl], protected: frozenset[str], name: str, src: Src, more: frozenset[str]
) -> None:
    refused = m.gate_decision(grads, protected)
    bigger = {**grads, name: grads.get(name, frozenset()) | {src}}
    assert refused <= m.gate_decision(bigger, protected), f"adding {src} to {name} shrank the refusal"
    assert refused <= m.gate_decision(grads, protected | more), "protecting more shrank the refusal"


def prop_gate_sources(m: ModuleType, grads: dict[str, Lbl], protected: frozenset[str]) -> None:
    named = m.gate_sources(grads, protected)
    refused = [n for n in protected if aux_in(grads.get(n, frozenset()))]
    expected = frozenset(s for n in refused for s in grads[n] if s[0] == "aux")
    assert named == expected, f"refusal names {sorted(named)}, expected {sorted(expected)}"


def prop_gate_noninterference(
    m: ModuleType, grads: dict[str, Lbl], theta: dict[str, int], data: tuple[dict[Src, int], dict[Src, int]]
) -> None:
    run1, run2 = m.gated_step(theta, grads, data[0]), m.gated_step(theta, grads, data[1])
    leaked = sorted(n for n in theta if run1.get(n) != run2.get(n))
    assert not leaked, f"aux data reached gated parameter(s) {leaked}: {run1} vs {run2}"


def prop_gated_step_refuses_or_steps(
    m: ModuleType, grads: dict[str, Lbl], theta: dict[str, int], data: tuple[dict[Src, int], dict[Src, int]]
) -> None:
    out = m.gated_step(theta, grads, data[0])
    assert set(out) == set(theta), "gated_step changed the set of parameters"
    if any(aux_in(grads.get(n, frozenset())) for n in theta):
        assert out == theta, "a refused step changed a parameter"
    else:
        for n, v in theta.items():
            expected = v - sum(data[0][s] for s in grads.get(n, frozenset()))
            assert out[n] == expected, (
                f"an accepted step moved {n} to {out[n]}, not by its gradient to {expected}"
            )


_OPS: dict[str, Callable[[list[int]], int]] = {
    "sum": sum,
    "product": math.prod,
    "first": lambda vs: vs[0] if vs else 0,
    "zeros_like": lambda vs: 0,
}


def prop_op_noninterference(
    m: ModuleType, xs: list[Lbl], op: str, data: tuple[dict[Src, int], dict[Src, int]]
) -> None:
    out = m.op_label(xs, label_neutral=op == "zeros_like")
    if aux_in(out):
        return
    runs = [_OPS[op]([sum(d[s] for s in x) for x in xs]) for d in data]
    assert runs[0] == runs[1], f"{op}: a result labelled {sorted(out)} depends on aux data"


def prop_inplace_noninterference(
    m: ModuleType,
    target: Lbl,
    written: Lbl,
    copy: bool,
    whole: bool,
    data: tuple[dict[Src, int], dict[Src, int]],
) -> None:
    new = m.inplace_label(target, [written] if copy else [target, written], whole)
    if aux_in(new):
        return
    runs = []
    for d in data:
        old, value = sum(d[s] for s in target), sum(d[s] for s in written)
        first = (value if copy else old + value) if whole else old
        runs.append((first, value if copy else 2 * old + 1 + value))
    assert runs[0] == runs[1], (
        f"{'copy_' if copy else 'add_'}: a storage labelled {sorted(new)} depends on aux"
    )


thetas = st.dictionaries(st.sampled_from(PARAMS), ints, min_size=1)


@dataclass(frozen=True)
class Property:
    """A property of the reference API; ``focus``: the functions whose mutants it is aimed at."""

    name: str
    check: Callable[..., None]
    strategies: dict[str, st.SearchStrategy[Any]]
    focus: tuple[str, ...]


_GATE = {"grads": grad_maps, "protected": protected_sets}
_STEP = {"grads": grad_maps, "theta": thetas, "data": data_pair()}
_LABEL3 = {"a": labels, "b": labels, "c": labels}

PROPERTIES: tuple[Property, ...] = (
    Property(
        "gate refuses exactly the protected aux-labelled",
        prop_gate_refuses_exactly_protected_aux,
        _GATE,
        ("gate_decision", "has_aux"),
    ),
    Property("gate sources", prop_gate_sources, _GATE, ("gate_sources", "aux_part", "join_all", "join")),
    Property(
        "gate noninterference (self-composition)",
        prop_gate_noninterference,
        _STEP,
        ("gated_step", "gate_decision"),
    ),
    Property(
        "gated step refuses or steps by the gradient",
        prop_gated_step_refuses_or_steps,
        _STEP,
        ("gated_step",),
    ),
    Property(
        "gate is monotone",
        prop_gate_is_monotone,
        {**_GATE, "name": st.sampled_from(PARAMS), "src": sources, "more": protected_sets},
        ("gate_decision",),
    ),
    Property(
        "has_aux, _aux_in, aux_part",
        prop_aux_tests,
        {"lbl": labels, "extra": labels},
        ("has_aux", "_aux_in", "aux_part"),
    ),
    Property("join is the least upper bound", prop_join_is_the_least_upper_bound, _LABEL3, ("join",)),
    Property("flows_to is inclusion", prop_flows_to_is_inclusion, _LABEL3, ("flows_to",)),
    Property(
        "join_all and op_label",
        prop_join_all_and_op_label,
        {"xs": label_lists, "neutral": st.booleans()},
        ("join_all", "op_label"),
    ),
    Property(
        "inplace_label",
        prop_inplace_label,
        {"target": labels, "xs": label_lists, "whole": st.booleans()},
        ("inplace_label",),
    ),
    Property(
        "op_label noninterference",
        prop_op_noninterference,
        {"xs": label_lists, "op": st.sampled_from(sorted(_OPS)), "data": data_pair()},
        ("op_label",),
    ),
    Property(
        "inplace_label noninterference",
        prop_inplace_noninterference,
        {
            "target": labels,
            "written": labels,
            "copy": st.booleans(),
            "whole": st.booleans(),
            "data": data_pair(),
        },
        ("inplace_label",),
    ),
)
"""The suite; every property runs on every mutant (those aimed at the mutated function first)."""


def _max_examples() -> int:
    default = settings.default
    assert default is not None
    return default.max_examples


def hypothesis_kill(module: ModuleType, focus: str = "", max_examples: int | None = None) -> str | None:
    """Run :data:`PROPERTIES` against ``module``: the first failure (property, error, example), or None.

    Properties aimed at ``focus`` (the mutated function) run first; the rest run too, so a mutant
    survives only if the whole suite passes.  No shrinking: the first failing example is reported
    as found (shrinking would cost more than the whole suite on a surviving mutant).
    """
    config = settings(
        settings.default,
        max_examples=max_examples or _max_examples(),
        database=None,
        deadline=None,
        report_multiple_bugs=False,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    ordered = sorted(PROPERTIES, key=lambda p: focus not in p.focus)
    for prop in ordered:
        try:
            config(given(**prop.strategies)(_bind(prop.check, module)))()
        except HypothesisException:
            raise  # a broken harness (bad strategy, bad settings) is not a kill
        except Exception as exc:  # any failure of the mutant (assertion, KeyError, TypeError, ...) kills it
            notes = "\n".join(getattr(exc, "__notes__", []))
            return f"{prop.name}: {type(exc).__name__}: {exc}\n{notes}".strip()
    return None


def _bind(check: Callable[..., None], module: ModuleType) -> Callable[..., None]:
    def run(**kwargs: Any) -> None:
        check(module, **kwargs)

    return run


@contextmanager
def imported(path: Path, module_name: str) -> Iterator[ModuleType]:
    """Import the file at ``path`` as a fresh module (registered while in use: dataclasses need it)."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[module_name]


# ------------------------------------------------------------------------------------------- CrossHair

CROSSHAIR_FLAGS = ("--analysis_kind=PEP316", "--report_all")
_ERROR = re.compile(r"^(?P<path>.+?\.py):(?P<line>\d+): error: (?P<message>.*)$")
_CONFIRMED = re.compile(r"^(?P<path>.+?\.py):(?P<line>\d+): info: Confirmed over all paths\.$")


@dataclass(frozen=True)
class CrossHairResult:
    killed: bool
    detail: str


class CrossHairRun:
    """``crosshair check`` on each mutant's laws, in ``processes`` background processes.

    Start it, do other work, then :meth:`results`: which mutants got a counterexample.  Each
    mutant is checked on ``_mutants.laws_for(function)[law_index]`` (mutants whose function has
    fewer laws are skipped).  Mutants must already be written to ``directory``.  A CrossHair failure
    other than a counterexample (exit code 2: import error, crash) fails the test: it is not a kill.
    """

    def __init__(
        self,
        mutants: list[Mutant],
        directory: Path,
        *,
        law_index: int,
        per_condition_timeout: float,
        processes: int,
    ) -> None:
        self.mutants = [m for m in mutants if law_index < len(_mutants.laws_for(m.function))]
        self.law_index = law_index
        mutants = self.mutants
        self.procs: list[subprocess.Popen[str]] = []
        for batch in (mutants[i::processes] for i in range(processes)):
            if not batch:
                continue
            targets = [f"{m.module_name}.{_mutants.laws_for(m.function)[law_index]}" for m in batch]
            command = [
                sys.executable,
                "-m",
                "crosshair",
                "check",
                *targets,
                *CROSSHAIR_FLAGS,
                f"--per_condition_timeout={per_condition_timeout}",
            ]
            self.procs.append(
                subprocess.Popen(
                    command, cwd=directory, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                )
            )

    def results(self, timeout: float = 3600) -> dict[str, CrossHairResult]:
        errors: dict[str, list[str]] = {}
        confirmations: set[str] = set()
        for proc in self.procs:
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
                pytest.fail(f"crosshair did not finish:\n{out}\n{err[-2000:]}")
            if proc.returncode not in (0, 1):
                pytest.fail(
                    f"crosshair failed (rc={proc.returncode}), not a counterexample:\n{out}\n{err[-3000:]}"
                )
            for line in out.splitlines():
                match = _ERROR.match(line)
                if match:
                    module = Path(match["path"]).stem
                    errors.setdefault(module, []).append(f"line {match['line']}: {match['message']}")
                confirmed = _CONFIRMED.match(line)
                if confirmed:
                    module = Path(confirmed["path"]).stem
                    confirmations.add(module)
        results: dict[str, CrossHairResult] = {}
        for m in self.mutants:
            if m.module_name in errors:
                results[m.id] = CrossHairResult(True, "\n".join(errors[m.module_name])[:2000])
            else:
                law = _mutants.laws_for(m.function)[self.law_index]
                verdict = "confirmed over all paths" if m.module_name in confirmations else "not confirmed"
                results[m.id] = CrossHairResult(False, f"{law}: no counterexample, {verdict}")
        return results


# ------------------------------------------------------------------------------------------- selection

CI_CROSSHAIR_FUNCTIONS = ("join", "has_aux", "gate_decision")


def ci_crosshair_subset(mutants: list[Mutant]) -> list[Mutant]:
    """For each named class, its first mutant in each of :data:`CI_CROSSHAIR_FUNCTIONS` (where it has one)."""
    chosen: dict[tuple[str, str], Mutant] = {}
    for m in mutants:
        if m.named_class is not None and m.function in CI_CROSSHAIR_FUNCTIONS:
            chosen.setdefault((m.named_class, m.function), m)
    return list(chosen.values())


def full_run() -> bool:
    """CrossHair on every mutant: the audit profile (1000 examples) or ``AMAL_ALL_MUTANTS=1``."""
    return os.environ.get("AMAL_ALL_MUTANTS") == "1" or _max_examples() >= 1000


@pytest.fixture(scope="module")
def mutants() -> list[Mutant]:
    return _mutants.generate(REFERENCE.read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------- tests


def test_the_property_suite_holds_on_the_reference() -> None:
    """Otherwise a "kill" would mean nothing: every property passes on the unmutated reference."""
    assert hypothesis_kill(reference) is None


def test_mutants_cover_the_gate_path_and_the_named_classes(mutants: list[Mutant]) -> None:
    assert len({m.id for m in mutants}) == len(mutants)
    assert len({m.source for m in mutants}) == len(mutants), "two mutants are the same program"
    assert {m.function for m in mutants} == set(_mutants.TARGET_FUNCTIONS)
    assert {m.operator for m in mutants} == set(_mutants.OPERATORS)
    for cls in _mutants.NAMED_CLASSES:
        assert {m.function for m in mutants if m.operator == cls} & {"join", "gate_decision", "has_aux"}, cls
    subset = ci_crosshair_subset(mutants)
    assert {m.named_class for m in subset} == set(_mutants.NAMED_CLASSES)
    assert set(_mutants.EQUIVALENT) <= {m.id for m in mutants}, "an equivalent mutant's id is stale"


def _all_labels(universe: tuple[Src, ...]) -> Iterator[Lbl]:
    for size in range(len(universe) + 1):
        for chosen in combinations(universe, size):
            yield frozenset(chosen)


def test_equivalent_mutants_are_equivalent_on_every_small_label(
    mutants: list[Mutant], tmp_path: Path
) -> None:
    """The argument in ``_mutants.EQUIVALENT``, checked on all 64 labels over {primary, aux} x {a, b, c}."""
    by_id = {m.id: m for m in mutants}
    for mid in _mutants.EQUIVALENT:
        m = by_id[mid]
        with imported(m.write(tmp_path), m.module_name) as module:
            fn, original = getattr(module, m.function), getattr(reference, m.function)
            for lbl in _all_labels(ALL_SOURCES):
                assert fn(lbl) == original(lbl), f"{mid} differs from the reference at {sorted(lbl)}"


def score(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``mutation_score`` evidence: killed / (total - equivalent)."""
    equivalent = [
        {"id": r["id"], "reason": _mutants.EQUIVALENT[r["id"]]}
        for r in records
        if r["id"] in _mutants.EQUIVALENT
    ]
    killed = sum(1 for r in records if r["killed_by"] is not None)
    survivors = [r["id"] for r in records if r["killed_by"] is None and r["id"] not in _mutants.EQUIVALENT]
    denominator = len(records) - len(equivalent)
    return {
        "total": len(records),
        "killed": killed,
        "equivalent": equivalent,
        "survivors": survivors,
        "score": killed / denominator if denominator else 0.0,
        "mutants": records,
    }


def crosshair_rounds(
    mutants: list[Mutant], directory: Path, *, first: CrossHairRun | None = None
) -> dict[str, CrossHairResult]:
    """CrossHair on every law of every mutant, one law per round, until each mutant is killed or out of laws.

    ``first``: round 0, already started.  A survivor's result names every law that found nothing.
    """
    results: dict[str, CrossHairResult] = {}
    pending = mutants
    for index in range(max(len(_mutants.laws_for(m.function)) for m in mutants)):
        run = first if index == 0 and first is not None else None
        run = run or CrossHairRun(pending, directory, law_index=index, per_condition_timeout=60, processes=2)
        for mid, res in run.results().items():
            previous = results.get(mid)
            detail = res.detail if res.killed or previous is None else f"{previous.detail}; {res.detail}"
            results[mid] = CrossHairResult(res.killed, detail)
        pending = [m for m in pending if not results[m.id].killed]
    return results


def test_every_non_equivalent_mutant_is_killed(mutants: list[Mutant], tmp_path: Path, evidence: Any) -> None:
    started = time.monotonic()
    for m in mutants:
        m.write(tmp_path)
    full = full_run()
    # Per-condition timeout: a law exhausts its bounds in at most ~25 s of CPU, so in a full run a
    # surviving mutant's laws are really confirmed; in CI every selected mutant must fall within seconds.
    running = CrossHairRun(
        mutants if full else ci_crosshair_subset(mutants),
        tmp_path,
        law_index=0,
        per_condition_timeout=60 if full else 15,
        processes=2 if full else 1,  # in CI one process runs beside the in-process Hypothesis loop
    )
    hypothesis_found: dict[str, str | None] = {}
    for m in mutants:
        with imported(tmp_path / f"{m.module_name}.py", m.module_name) as module:
            hypothesis_found[m.id] = hypothesis_kill(module, m.function)
    crosshair = crosshair_rounds(mutants, tmp_path, first=running) if full else running.results()
    laws_only: dict[str, CrossHairResult] = {}
    if full:  # the laws alone, without the contracts of the mutated path: informative, not scored
        stripped_dir = tmp_path / "laws_only"
        stripped_dir.mkdir()
        for m in mutants:
            (stripped_dir / f"{m.module_name}.py").write_text(
                _mutants.strip_contracts(m.source), encoding="utf-8"
            )
        laws_only = crosshair_rounds(mutants, stripped_dir)
    records: list[dict[str, Any]] = []
    for m in mutants:
        found = hypothesis_found[m.id]
        ch = crosshair.get(m.id)
        killed_by = "crosshair" if ch and ch.killed else ("hypothesis" if found else None)
        records.append(
            {
                "id": m.id,
                "function": m.function,
                "operator": m.operator,
                "named_class": m.named_class,
                "description": m.description,
                "killed_by": killed_by,
                "crosshair": "not run" if ch is None else ("killed" if ch.killed else "survived"),
                "hypothesis": "killed" if found else "survived",
                "detail": (ch.detail if ch and ch.killed else found) or "",
                "crosshair_detail": ch.detail if ch else "",
                "crosshair_laws_only": (
                    "not run"
                    if m.id not in laws_only
                    else ("killed" if laws_only[m.id].killed else "survived")
                ),
                "crosshair_laws_only_detail": laws_only[m.id].detail if m.id in laws_only else "",
                "hypothesis_detail": "(the detail above)" if killed_by == "hypothesis" else (found or ""),
            }
        )
    result = score(records)
    result["settings"] = {
        "crosshair_on": "every mutant" if full else "CI subset (named classes x join/has_aux/gate_decision)",
        "hypothesis_max_examples_per_property": _max_examples(),
        "seconds": round(time.monotonic() - started, 1),
    }
    evidence.record("mutation_score", result)

    for mid in _mutants.EQUIVALENT:  # an "equivalent" mutant that a tool kills was not equivalent
        rec = next(r for r in records if r["id"] == mid)
        assert rec["killed_by"] is None, f"{mid} is listed as equivalent but was killed: {rec['detail']}"
    missed_by_crosshair = [m.id for m in ci_crosshair_subset(mutants) if not crosshair[m.id].killed]
    assert not missed_by_crosshair, f"CrossHair's laws missed named-class mutants {missed_by_crosshair}"
    assert result["survivors"] == [], "surviving mutants:\n" + "\n".join(
        next(r["description"] for r in records if r["id"] == s) for s in result["survivors"]
    )
    assert result["score"] == 1.0
