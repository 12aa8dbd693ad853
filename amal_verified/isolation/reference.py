"""Executable specification of the label lattice and of the gate's decision.

This module is the *reference* the torch implementation is tested against
(``properties/test_reference_agreement.py``).  It is pure Python, imports
nothing from the rest of the package, and is written independently of
:mod:`amal_verified.isolation.labels`: a label here is a ``frozenset`` of
``(kind, name)`` pairs, ``kind`` being ``"primary"`` or ``"aux"``.

What it specifies
-----------------
* **The lattice.**  Labels are ordered by inclusion (:func:`flows_to`);
  :func:`join` is the least upper bound; :data:`BOTTOM` (no tagged data) is
  its identity.
* **Labels of computed values.**  An operation's output carries the join of its
  inputs' labels (:func:`op_label`), except *label-neutral* ("factory-like")
  operations, whose output values depend on no input's values (``zeros_like``,
  ``ones_like``, ``empty_like``, ``full_like``, ``new_zeros``, ...: they read
  only shapes, dtypes and devices); those produce :data:`BOTTOM`.  An in-place
  write joins into the label of the written *storage* (:func:`inplace_label`),
  whichever view it goes through, except a write that overwrites the whole
  storage, which replaces it: nothing of the old contents survives.
* **The gate.**  :func:`gate_decision` is the set of protected parameters whose
  gradient label contains an auxiliary source; a gated step refuses (and
  changes nothing) iff that set is non-empty.  :func:`gated_step` models one
  gated update; :func:`law_gate_noninterference` checks Theorem 1 of the paper
  for it by self-composition: two runs that agree on the primary data but
  differ arbitrarily on the auxiliary data leave every protected parameter
  identical.

How it is verified
------------------
Every public function states its contract as PEP 316 ``pre:`` / ``post:``
lines, and every lattice law is the postcondition of a ``law_*`` obligation.
CrossHair cannot exhaust the paths of a function that receives a *symbolic*
``frozenset`` (it does not report confirmation, even with
``len(label) <= 3`` in the precondition), so the public functions carry a
``crosshair: off`` directive and are verified through the obligations: each
obligation takes small integers, bounded by its ``pre:`` conditions, that index
tables of concrete labels, so CrossHair enumerates every input within the
bounds and reports "Confirmed over all paths".  While it does so it enforces
the contract of every function the obligation calls.  CrossHair *drops* a path
on which a called function's postcondition fails (and may still report
confirmation), so every obligation turns such a failure into a failing result.

Bounds (:data:`REFERENCE_BOUNDS`):

* sources: :data:`SOURCES` = ``primary:a``, ``aux:a``, ``aux:b`` (both kinds,
  names from ``{"a", "b"}``, one name shared by both kinds), hence at most 3
  sources per label and 8 labels (:data:`LABELS`);
* lattice laws: every pair and every triple of labels; :func:`join_all` and
  :func:`op_label` with 0 to 2 inputs; :func:`inplace_label` with 1 or 2 inputs;
* gate: 2 parameters named ``p`` and ``q``, each without a gradient or with
  one of the 5 gradient labels of :data:`GATE_LABELS` (empty, primary-only,
  aux-only, mixed, two aux sources), every protected subset; monotonicity adds
  each aux source to each parameter's label;
* noninterference: labels over ``primary:a`` and ``aux:a`` (:data:`NI_LABELS`),
  two parameters, and unbounded integers as data and parameter values (solved
  symbolically, not enumerated).

Within these bounds "confirmed" is a proof; beyond them the obligations are
tests.  Run them with (about a minute of CPU)::

    crosshair check amal_verified/isolation/reference.py --analysis_kind=PEP316 \\
        --per_condition_timeout=600 --report_all
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Final, TypeAlias

__all__ = [
    "AUX",
    "BOTTOM",
    "GATE_LABELS",
    "KINDS",
    "LABELS",
    "NI_LABELS",
    "PARAM_NAMES",
    "PRIMARY",
    "REFERENCE_BOUNDS",
    "SOURCES",
    "Cell",
    "Command",
    "Input",
    "Label",
    "Op",
    "ReferenceBounds",
    "Semantics",
    "Source",
    "Step",
    "StepOutcome",
    "WritePart",
    "aux_part",
    "exec_command",
    "flows_to",
    "gate_decision",
    "gate_sources",
    "gated_step",
    "gradient_value",
    "has_aux",
    "inplace_label",
    "is_label",
    "join",
    "join_all",
    "label",
    "location_name",
    "op_label",
    "step_outcome",
]

Source: TypeAlias = tuple[str, str]
"""``(kind, name)``: ``kind`` is :data:`PRIMARY` or :data:`AUX`, ``name`` a non-empty string."""

Label: TypeAlias = frozenset[tuple[str, str]]
"""A set of sources: every data source a value may depend on."""

PRIMARY: Final = "primary"
AUX: Final = "aux"
KINDS: Final[tuple[str, str]] = (PRIMARY, AUX)

BOTTOM: Final[Label] = frozenset()
"""The label of untagged data and of label-neutral results: the lattice's bottom."""

_NO_NAMES: Final[frozenset[str]] = frozenset()

# Code that runs under CrossHair builds sets with operators and ``BOTTOM.union(...)``, never
# with the ``set``/``frozenset``/``dict`` constructors: CrossHair swaps those for containers
# that can hold symbolic values, and comparing them is slow.  Contracts are kept to operators
# and loops for the same reason: a contracted call is costly under analysis (measurements:
# benchmarks/README.md, "Design measurements quoted by the code").


def is_label(value: object) -> bool:
    """Whether ``value`` is a ``frozenset`` of ``(kind, name)`` with known kinds and non-empty names."""
    # crosshair: off
    if not isinstance(value, frozenset):
        return False
    for source in value:
        if not isinstance(source, tuple) or len(source) != 2:
            return False
        kind, name = source
        if kind not in KINDS or not isinstance(name, str) or not name:
            return False
    return True


def label(*sources: Source) -> Label:
    """Build a label, e.g. ``label(("aux", "a"), ("primary", "a"))``.

    pre: is_label(BOTTOM.union(sources))
    post: all(s in __return__ for s in sources)
    post: all(s in sources for s in __return__)
    """
    # crosshair: off
    return BOTTOM.union(sources)


# --------------------------------------------------------------------------- the lattice


def join(a: Label, b: Label) -> Label:
    """The least upper bound of two labels: every source of either, and nothing else.

    pre: is_label(a) and is_label(b)
    post: a <= __return__ and b <= __return__
    post: all(s in a or s in b for s in __return__)
    """
    # crosshair: off
    return a | b


def join_all(labels: Sequence[Label]) -> Label:
    """The join of any number of labels; :data:`BOTTOM` for none.

    pre: all(is_label(x) for x in labels)
    post: all(x <= __return__ for x in labels)
    post: all(any(s in x for x in labels) for s in __return__)
    """
    # crosshair: off
    result = BOTTOM
    for x in labels:
        result = join(result, x)
    return result


def flows_to(a: Label, b: Label) -> bool:
    """The lattice order ``a ⊑ b``: data labelled ``a`` may flow into a value labelled ``b``.

    pre: is_label(a) and is_label(b)
    post: __return__ == all(s in b for s in a)
    """
    # crosshair: off
    return a <= b


def aux_part(lbl: Label) -> Label:
    """The auxiliary sources of a label.

    pre: is_label(lbl)
    post: __return__ <= lbl
    post: all(kind == AUX for kind, _ in __return__)
    post: all(s in __return__ for s in lbl if s[0] == AUX)
    """
    # crosshair: off
    return BOTTOM.union(s for s in lbl if s[0] == AUX)


def has_aux(lbl: Label) -> bool:
    """Whether the label contains an auxiliary source.

    pre: is_label(lbl)
    post: __return__ == any(kind == AUX for kind, _ in lbl)
    """
    # crosshair: off
    return any(kind == AUX for kind, _name in lbl)


# --------------------------------------------------------------------------- labels of computed values


def op_label(input_labels: Sequence[Label], *, label_neutral: bool = False) -> Label:
    """The label of an operation's output.

    The join of the inputs' labels; :data:`BOTTOM` for a label-neutral
    ("factory-like") operation, whose output values depend on no input's
    values (``zeros_like``, ``ones_like``, ``empty_like``, ``full_like``,
    ``new_zeros``, ...).

    pre: all(is_label(x) for x in input_labels)
    post: label_neutral or all(x <= __return__ for x in input_labels)
    post: all(any(s in x for x in input_labels) for s in __return__)
    post: not label_neutral or __return__ == BOTTOM
    """
    # crosshair: off
    if label_neutral:
        return BOTTOM
    return join_all(input_labels)


def inplace_label(
    target_label: Label, input_labels: Sequence[Label], overwrites_whole_storage: bool
) -> Label:
    """The label of a storage after an in-place write into it or into a view of it.

    ``target_label`` is the storage's label before the write; ``input_labels``
    are the labels of everything the written values are computed from: for
    ``x.add_(y)`` that is ``[label(x), label(y)]``, for ``x.copy_(y)`` just
    ``[label(y)]``.  Labels belong to storages, not views: writing into a slice
    relabels the whole storage.  A write that overwrites every element of the
    storage replaces its label; any other write joins into it.

    pre: is_label(target_label) and all(is_label(x) for x in input_labels)
    post: all(x <= __return__ for x in input_labels)
    post: overwrites_whole_storage or target_label <= __return__
    post: all(s in target_label or any(s in x for x in input_labels) for s in __return__)
    post: not overwrites_whole_storage or all(any(s in x for x in input_labels) for s in __return__)
    """
    # crosshair: off
    written = join_all(input_labels)
    if overwrites_whole_storage:
        return written
    return join(target_label, written)


# --------------------------------------------------------------------------- the gate


def _aux_in(lbl: Label) -> bool:
    # Contracts' own statement of "has an aux source" (no contract, so no nested enforcement).
    return any(kind == AUX for kind, _ in lbl)


def gate_decision(grad_labels: Mapping[str, Label], protected: frozenset[str]) -> frozenset[str]:
    """The protected parameters whose gradient label contains an auxiliary source.

    ``grad_labels`` maps parameter names to the labels of their gradients (a
    parameter without a gradient may be absent); ``protected`` names the
    parameters the gated optimizer updates.  The gated step must refuse, and
    change nothing, iff the result is non-empty.  Unprotected parameters are
    never refused; parameters with an empty or primary-only label are never
    refused.

    pre: all(isinstance(n, str) and is_label(x) for n, x in grad_labels.items())
    pre: all(isinstance(n, str) for n in protected)
    post: __return__ <= protected
    post: all(_aux_in(grad_labels[n]) for n in __return__)
    post: all(n in __return__ for n in protected if _aux_in(grad_labels.get(n, BOTTOM)))
    """
    # crosshair: off
    return _NO_NAMES.union(name for name in protected if name in grad_labels and has_aux(grad_labels[name]))


def gate_sources(grad_labels: Mapping[str, Label], protected: frozenset[str]) -> Label:
    """The auxiliary sources a refusal names: those in the refused parameters' gradient labels.

    pre: all(isinstance(n, str) and is_label(x) for n, x in grad_labels.items())
    pre: all(isinstance(n, str) for n in protected)
    post: all(kind == AUX for kind, _ in __return__)
    post: all(any(s in grad_labels[n] for n in protected if n in grad_labels) for s in __return__)
    post: all(s in __return__ for n in protected for s in grad_labels.get(n, BOTTOM) if s[0] == AUX)
    """
    # crosshair: off
    refused = gate_decision(grad_labels, protected)
    return join_all([aux_part(grad_labels[name]) for name in refused])


def gradient_value(lbl: Label, data: Mapping[Source, int]) -> int:
    """A model gradient (or any computed value) that reads the data of exactly its label's sources.

    A real value's label over-approximates what it reads (checking that is the
    job of the tests in ``properties/``); this model reads all of it, so a leak
    of auxiliary data shows up in its value.

    pre: is_label(lbl)
    post: lbl != BOTTOM or __return__ == 0
    """
    # crosshair: off
    total = 0
    for source in lbl:
        total += data.get(source, 0)
    return total


def gated_step(
    theta: Mapping[str, int], grad_labels: Mapping[str, Label], data: Mapping[Source, int]
) -> dict[str, int]:
    """One gated update of the parameters ``theta`` (name to value) with the given gradient labels.

    A gated optimizer's parameters are exactly the protected ones.  If the
    gate refuses, every parameter keeps its value; otherwise each one moves by
    its model gradient (:func:`gradient_value`).

    pre: all(isinstance(n, str) and is_label(x) for n, x in grad_labels.items())
    post: __return__.keys() == theta.keys()
    post: __return__ == {**theta} or not any(_aux_in(grad_labels.get(n, BOTTOM)) for n in theta)
    """
    # crosshair: off
    if gate_decision(grad_labels, _NO_NAMES.union(theta)):
        return {**theta}
    return {
        name: value - gradient_value(grad_labels.get(name, BOTTOM), data) for name, value in theta.items()
    }


# --------------------------------------------------------------------------- programs
#
# Straight-line programs over a memory of numbered storages, each holding a value and a label: the
# rules above composed, command by command.  The commands are those of the language Theorem 1 is
# proved for in Coq (proofs/coq/Isolation.v); properties/test_reference_coq_programs.py runs
# the programs Coq generates and evaluates (proofs/coq/programs.txt) through these functions.


@dataclass(frozen=True)
class Cell:
    """A storage's contents: a value and the label of the storage."""

    value: int
    label: Label


@dataclass(frozen=True)
class Input:
    """Store the ``index``-th datum of ``source`` into storage ``dst``, labelled with ``source`` alone."""

    source: Source
    index: int
    dst: int


@dataclass(frozen=True)
class Op:
    """Store ``op`` of the values of ``srcs`` into ``dst``, overwriting all of it (:func:`op_label`)."""

    op: str
    srcs: tuple[int, ...]
    dst: int


@dataclass(frozen=True)
class WritePart:
    """Write ``op`` of ``dst``'s old value and the values of ``srcs`` into part of ``dst``
    (:func:`inplace_label`, not a whole overwrite)."""

    op: str
    srcs: tuple[int, ...]
    dst: int


@dataclass(frozen=True)
class Step:
    """An optimizer step: each ``(parameter, gradient)`` of ``updates`` sets the parameter to ``op`` of
    the parameter's, the gradient's and the ``extra`` storages' values (optimizer state, tensor
    hyperparameters).  ``gated``: a :class:`~amal_verified.isolation.gate.GatedOptimizer`'s step;
    otherwise any other optimizer's.  The parameters of one step are distinct."""

    gated: bool
    op: str
    updates: tuple[tuple[int, int], ...]
    extra: tuple[int, ...]


Command: TypeAlias = Input | Op | WritePart | Step


@dataclass(frozen=True)
class Semantics:
    """What a program runs with: the operations' values (``evaluate(op, values)``), which operations
    are label-neutral, and the protected storages (a write into one is refused if its label has an
    auxiliary source)."""

    evaluate: Callable[[str, Sequence[int]], int]
    label_neutral: Callable[[str], bool]
    protected: frozenset[int]


@dataclass(frozen=True)
class StepOutcome:
    """``refused``: the step changed nothing.  ``gate``: :func:`gate_decision` over the step's
    parameters (named by :func:`location_name`) and their gradients' labels."""

    refused: bool
    gate: frozenset[str]


def location_name(location: int) -> str:
    """The parameter name of a storage in :class:`StepOutcome`: ``l<location>``."""
    return f"l{location}"


def _write(memory: dict[int, Cell], dst: int, cell: Cell, protected: frozenset[int]) -> None:
    # The dispatcher's protection: an auxiliary-labelled write into protected memory is refused.
    if dst in protected and has_aux(cell.label):
        return
    memory[dst] = cell


def step_outcome(memory: Mapping[int, Cell], step: Step, protected: frozenset[int]) -> StepOutcome:
    """Whether ``step`` is refused on ``memory``, and the gate decision on its gradients.

    A gated step is refused when :func:`gate_decision` names one of its parameters, or a parameter
    or a shared storage it reads has an auxiliary source (what ``GatedOptimizer.check`` reads).  Any
    other step is refused when it would give a protected parameter an auxiliary label: the gate
    decision over its protected parameters (the global step hook's check of their gradients), or a
    protected parameter or the shared storages it reads carrying an auxiliary source.
    """
    # crosshair: off
    params = [p for p, _ in step.updates]
    if len(set(params)) != len(params):
        raise ValueError(f"a step updates a parameter twice: {params}")
    grads = {location_name(p): memory[g].label for p, g in step.updates}
    gate = gate_decision(grads, _NO_NAMES.union(grads))
    checked = params if step.gated else [p for p in params if p in protected]
    decided = gate if step.gated else gate_decision(grads, _NO_NAMES.union(map(location_name, checked)))
    read = [memory[p].label for p in checked] + ([memory[e].label for e in step.extra] if checked else [])
    return StepOutcome(refused=bool(decided) or any(has_aux(x) for x in read), gate=gate)


def exec_command(
    memory: Mapping[int, Cell], command: Command, data: Mapping[tuple[Source, int], int], semantics: Semantics
) -> tuple[dict[int, Cell], StepOutcome | None]:
    """The memory after ``command`` (a new dict), and the step's outcome if it is a :class:`Step`.

    ``data`` maps ``(source, index)`` to the datum an :class:`Input` reads.
    """
    # crosshair: off
    after = dict(memory)
    if isinstance(command, Input):
        cell = Cell(data[(command.source, command.index)], label(command.source))
        _write(after, command.dst, cell, semantics.protected)
    elif isinstance(command, Op):
        values = [memory[s].value for s in command.srcs]
        neutral = semantics.label_neutral(command.op)
        lbl = op_label([memory[s].label for s in command.srcs], label_neutral=neutral)
        _write(after, command.dst, Cell(semantics.evaluate(command.op, values), lbl), semantics.protected)
    elif isinstance(command, WritePart):
        target = memory[command.dst]
        values = [target.value, *(memory[s].value for s in command.srcs)]
        lbl = inplace_label(target.label, [memory[s].label for s in command.srcs], False)
        _write(after, command.dst, Cell(semantics.evaluate(command.op, values), lbl), semantics.protected)
    else:
        outcome = step_outcome(memory, command, semantics.protected)
        if not outcome.refused:
            shared = [memory[e] for e in command.extra]
            for p, g in command.updates:
                reads = [memory[p], memory[g], *shared]
                value = semantics.evaluate(command.op, [c.value for c in reads])
                after[p] = Cell(value, join_all([c.label for c in reads]))
        return after, outcome
    return after, None


# --------------------------------------------------------------------------- bounds


@dataclass(frozen=True)
class ReferenceBounds:
    """The finite domain over which the ``law_*`` obligations are exhaustive."""

    kinds: tuple[str, ...]
    source_names: tuple[str, ...]
    sources: tuple[Source, ...]
    max_sources_per_label: int
    labels: int
    max_op_inputs: int
    param_names: tuple[str, ...]
    gate_labels: int
    noninterference_sources: tuple[Source, ...]


SOURCES: Final[tuple[Source, ...]] = ((PRIMARY, "a"), (AUX, "a"), (AUX, "b"))
"""The source universe of the lattice obligations (one name shared by both kinds, on purpose)."""

LABELS: Final[tuple[Label, ...]] = tuple(
    frozenset(chosen) for size in range(len(SOURCES) + 1) for chosen in combinations(SOURCES, size)
)
"""Every label over :data:`SOURCES`: 8 of them, bottom first."""

GATE_LABELS: Final[tuple[Label, ...]] = (
    BOTTOM,
    frozenset({(PRIMARY, "a")}),
    frozenset({(AUX, "a")}),
    frozenset({(PRIMARY, "a"), (AUX, "b")}),
    frozenset({(AUX, "a"), (AUX, "b")}),
)
"""Gradient labels of the gate obligation: empty, primary-only, aux-only, mixed, two aux sources."""

NI_SOURCES: Final[tuple[Source, ...]] = ((PRIMARY, "a"), (AUX, "a"))
NI_LABELS: Final[tuple[Label, ...]] = tuple(
    frozenset(chosen) for size in range(len(NI_SOURCES) + 1) for chosen in combinations(NI_SOURCES, size)
)
"""Labels of the noninterference obligations: every label over ``primary:a`` and ``aux:a``."""

PARAM_NAMES: Final[tuple[str, ...]] = ("p", "q")

REFERENCE_BOUNDS: Final = ReferenceBounds(
    kinds=KINDS,
    source_names=("a", "b"),
    sources=SOURCES,
    max_sources_per_label=len(SOURCES),
    labels=len(LABELS),
    max_op_inputs=2,
    param_names=PARAM_NAMES,
    gate_labels=len(GATE_LABELS),
    noninterference_sources=NI_SOURCES,
)

_NO_GRAD: Final = len(GATE_LABELS)
"""Index meaning "no gradient" for a parameter in :func:`law_gate`."""

_AUX_SINGLETONS: Final[tuple[Label, ...]] = tuple(frozenset({s}) for s in SOURCES if s[0] == AUX)


# --------------------------------------------------------------------------- obligations

Problems: TypeAlias = tuple[str, ...]


def _is_contract_failure(exc: BaseException) -> bool:
    # CrossHair raises these BaseException subclasses when a called function's contract fails.
    cls = type(exc)
    return cls.__module__.startswith("crosshair") and cls.__name__ in (
        "PreconditionFailed",
        "PostconditionFailed",
    )


def _obligation(check: Callable[[], Problems]) -> Problems:
    """Run ``check``; a violated contract of a called function becomes a problem, not a dropped path."""
    try:
        return check()
    except BaseException as exc:
        if _is_contract_failure(exc):
            return (f"contract violated: {exc}",)
        raise


def _show(lbl: Label) -> str:
    return "{" + ",".join(f"{kind}:{name}" for kind, name in sorted(lbl)) + "}"


def _pair_laws(a: Label, b: Label) -> Problems:
    problems: list[str] = []
    ab = join(a, b)
    if ab != join(b, a):
        problems.append("join is not commutative")
    if join(a, a) != a:
        problems.append("join is not idempotent")
    if join(BOTTOM, a) != a:
        problems.append("bottom is not the identity of join")
    a_b = flows_to(a, b)
    if not (flows_to(a, ab) and flows_to(b, ab)):
        problems.append("a ⊑ a⊔b fails")
    if a_b != (ab == b):
        problems.append("flows_to is not the order of join (a ⊑ b iff a⊔b = b)")
    if not flows_to(a, a) or not flows_to(BOTTOM, a):
        problems.append("flows_to is not reflexive, or bottom is not least")
    if a_b and flows_to(b, a) and a != b:
        problems.append("flows_to is not antisymmetric")
    aux_a, aux_b, aux_ab = has_aux(a), has_aux(b), has_aux(ab)
    if aux_ab != (aux_a or aux_b):
        problems.append("has_aux does not distribute over join")
    if a_b and aux_a and not aux_b:
        problems.append("has_aux is not monotone")
    if aux_a != (aux_part(a) != BOTTOM):
        problems.append("has_aux disagrees with aux_part")
    if join_all([]) != BOTTOM or join_all([a, b]) != ab:
        problems.append("join_all disagrees with join")
    if op_label([a]) != a or op_label([a, b]) != ab or op_label([a, b], label_neutral=True) != BOTTOM:
        problems.append("op_label is not the join of its inputs (or bottom for a label-neutral op)")
    if inplace_label(a, [b], False) != ab:
        problems.append("a partial in-place write does not join into the storage's label")
    if inplace_label(a, [b], True) != b:
        problems.append("a whole-storage overwrite does not replace the storage's label")
    if inplace_label(a, [a, b], True) != ab:
        problems.append("a whole-storage read-modify-write (add_) loses the storage's label")
    if problems:
        problems.append(f"at a={_show(a)} b={_show(b)}")
    return tuple(problems)


def law_lattice_pairs(i: int, j: int) -> Problems:
    """Laws over every pair of labels.

    join is commutative and idempotent with identity bottom; flows_to is a
    partial order and the order of join (a ⊑ a⊔b; a ⊑ b iff a⊔b = b); has_aux
    distributes over join and is monotone; join_all, op_label and inplace_label
    (partial write, whole overwrite, whole read-modify-write) agree with join.

    pre: 0 <= i < len(LABELS) and 0 <= j < len(LABELS)
    post: __return__ == ()
    """
    return _obligation(lambda: _pair_laws(LABELS[i], LABELS[j]))


def _triple_laws(a: Label, b: Label, c: Label) -> Problems:
    problems: list[str] = []
    ab, bc, ac = join(a, b), join(b, c), join(a, c)
    if join(ab, c) != join(a, bc):
        problems.append("join is not associative")
    # flows_to is ⊆ (law_lattice_pairs), so the order laws below are stated with <=.
    if a <= c and b <= c and not ab <= c:
        problems.append("join is not the least upper bound")
    if a <= b and b <= c and not a <= c:
        problems.append("flows_to is not transitive")
    if a <= b and not ac <= bc:
        problems.append("join is not monotone")
    if problems:
        problems.append(f"at a={_show(a)} b={_show(b)} c={_show(c)}")
    return tuple(problems)


def law_lattice_triples(i: int, j: int, k: int) -> Problems:
    """Laws over every triple of labels: associativity, least upper bound, transitivity, monotonicity.

    pre: 0 <= i < len(LABELS) and 0 <= j < len(LABELS) and 0 <= k < len(LABELS)
    post: __return__ == ()
    """
    return _obligation(lambda: _triple_laws(LABELS[i], LABELS[j], LABELS[k]))


def _gate_laws(grads: dict[str, Label], protected: frozenset[str]) -> Problems:
    problems: list[str] = []
    refused = gate_decision(grads, protected)  # its contract: refused ⊆ protected, iff aux-labelled
    for name in PARAM_NAMES:
        grad = grads.get(name, BOTTOM)
        # Monotone: adding an aux source to any parameter's label never shrinks the refusal.
        for single in _AUX_SINGLETONS:
            if not refused <= gate_decision({**grads, name: grad | single}, protected):
                problems.append(f"adding {_show(single)} to {name} shrank the refusal")
    if (gate_sources(grads, protected) == BOTTOM) != (refused == _NO_NAMES):
        problems.append("gate_sources is empty although the gate refuses (or the reverse)")
    if problems:
        shown = ", ".join(f"{n}:{_show(g)}" for n, g in sorted(grads.items()))
        problems.append(f"at grads={shown} protected={sorted(protected)}")
    return tuple(problems)


def law_gate(i: int, j: int, mask: int) -> Problems:
    """The gate for every gradient labelling of two parameters and every protected subset.

    Parameter ``p`` (``q``) has no gradient if ``i`` (``j``) is
    ``len(GATE_LABELS)``, else a gradient labelled ``GATE_LABELS[i]``; bit n of
    ``mask`` protects the n-th parameter.  Checks gate_decision's and
    gate_sources' contracts (refusals are protected and aux-labelled, every
    aux-labelled protected parameter is refused, so unprotected, empty and
    primary-only ones never are) and that adding an aux source to any
    parameter's label never shrinks the refusal.

    pre: 0 <= i <= len(GATE_LABELS) and 0 <= j <= len(GATE_LABELS) and 0 <= mask < 4
    post: __return__ == ()
    """

    def check() -> Problems:
        grads = {name: GATE_LABELS[c] for name, c in zip(PARAM_NAMES, (i, j), strict=True) if c != _NO_GRAD}
        protected = _NO_NAMES.union(name for bit, name in enumerate(PARAM_NAMES) if (mask >> bit) & 1)
        return _gate_laws(grads, protected)

    return _obligation(check)


def _ni_data(x: int, u: int) -> dict[Source, int]:
    return {(PRIMARY, "a"): x, (AUX, "a"): u}


def _ni_step_inputs(
    i: int, j: int, mask: int, theta_p: int, theta_q: int
) -> tuple[dict[str, Label], dict[str, int]]:
    """The gradient labels of ``p`` and ``q`` (``NI_LABELS[i]``, ``NI_LABELS[j]``) and the gated
    parameters' values (bit n of ``mask`` gates the n-th)."""
    values = {"p": theta_p, "q": theta_q}
    theta = {name: values[name] for bit, name in enumerate(("p", "q")) if (mask >> bit) & 1}
    return {"p": NI_LABELS[i], "q": NI_LABELS[j]}, theta


def law_gate_noninterference(
    i: int, j: int, mask: int, theta_p: int, theta_q: int, x: int, u1: int, u2: int
) -> Problems:
    """Theorem 1 for one gated step, by self-composition.

    Two runs see the same primary datum ``x`` but different auxiliary data
    ``u1`` and ``u2``; parameters ``p`` and ``q`` have gradients labelled
    ``NI_LABELS[i]`` and ``NI_LABELS[j]``; bit n of ``mask`` puts the n-th of
    them in the gated optimizer.  Every gated parameter must end equal in both
    runs: an accepted step reads no auxiliary datum.

    pre: 0 <= i < len(NI_LABELS) and 0 <= j < len(NI_LABELS) and 0 <= mask < 4
    post: __return__ == ()
    """

    def check() -> Problems:
        grads, theta = _ni_step_inputs(i, j, mask, theta_p, theta_q)
        run1 = gated_step(theta, grads, _ni_data(x, u1))
        run2 = gated_step(theta, grads, _ni_data(x, u2))
        return tuple(
            f"aux data reached gated parameter {n}" for n in ("p", "q") if n in theta and run1[n] != run2[n]
        )

    return _obligation(check)


def law_gate_progress(i: int, j: int, mask: int, theta_p: int, theta_q: int, x: int, u: int) -> Problems:
    """An accepted gated step is a step: the liveness that noninterference leaves open.

    A gate that never steps satisfies :func:`law_gate_noninterference` trivially.
    Here parameters ``p`` and ``q`` have gradients labelled ``NI_LABELS[i]`` and
    ``NI_LABELS[j]`` (over ``primary:a`` and ``aux:a``, with data ``x`` and
    ``u``); bit n of ``mask`` puts the n-th of them in the gated optimizer.  If
    no gated parameter's label has an auxiliary source the step is accepted and
    each gated parameter moves by exactly its gradient (``x`` if its label has
    ``primary:a``, else 0: written out here, not taken from
    :func:`gradient_value`); otherwise every gated parameter keeps its value.

    pre: 0 <= i < len(NI_LABELS) and 0 <= j < len(NI_LABELS) and 0 <= mask < 4
    post: __return__ == ()
    """

    def check() -> Problems:
        grads, theta = _ni_step_inputs(i, j, mask, theta_p, theta_q)
        after = gated_step(theta, grads, _ni_data(x, u))
        if any((AUX, "a") in grads[name] for name in theta):
            expected = dict(theta)
        else:
            expected = {n: v - (x if (PRIMARY, "a") in grads[n] else 0) for n, v in theta.items()}
        return tuple(
            f"gated parameter {n} is {after[n]} after the step, expected {expected[n]}"
            for n in sorted(theta)
            if after[n] != expected[n]
        )

    return _obligation(check)


_OPS: Final[tuple[str, ...]] = ("add", "mul", "first", "zeros_like")


def _apply(op: str, left: int, right: int) -> int:
    if op == "add":
        return left + right
    if op == "mul":
        return left * right
    if op == "first":
        return left
    return 0  # zeros_like reads only the shape


def law_op_noninterference(i: int, j: int, op: int, x: int, u1: int, u2: int) -> Problems:
    """:func:`op_label` is sound: a result whose label has no aux source is equal across aux data.

    Inputs labelled ``NI_LABELS[i]`` and ``NI_LABELS[j]`` hold values read from
    their sources' data (:func:`gradient_value`); the operation is add, mul,
    first-argument (a view or copy) or ``zeros_like`` (label-neutral).

    pre: 0 <= i < len(NI_LABELS) and 0 <= j < len(NI_LABELS) and 0 <= op < len(_OPS)
    post: __return__ == ()
    """

    def check() -> Problems:
        left_label, right_label = NI_LABELS[i], NI_LABELS[j]
        name = _OPS[op]
        out_label = op_label([left_label, right_label], label_neutral=name == "zeros_like")
        if has_aux(out_label):
            return ()
        d1, d2 = _ni_data(x, u1), _ni_data(x, u2)
        r1 = _apply(name, gradient_value(left_label, d1), gradient_value(right_label, d1))
        r2 = _apply(name, gradient_value(left_label, d2), gradient_value(right_label, d2))
        return () if r1 == r2 else (f"{name}: a result labelled {_show(out_label)} depends on aux data",)

    return _obligation(check)


def law_inplace_noninterference(i: int, j: int, mode: int, x: int, u1: int, u2: int) -> Problems:
    """:func:`inplace_label` is sound for a two-element storage.

    The storage (labelled ``NI_LABELS[i]``) holds two values read from its
    sources; a value labelled ``NI_LABELS[j]`` is added into (``add_``) or
    copied over (``copy_``) either its second element (through a slice view) or
    the whole storage, as bits 0 and 1 of ``mode`` say.  If the storage's new
    label has no aux source, both elements must be equal across aux data.

    pre: 0 <= i < len(NI_LABELS) and 0 <= j < len(NI_LABELS) and 0 <= mode < 4
    post: __return__ == ()
    """

    def check() -> Problems:
        target, written = NI_LABELS[i], NI_LABELS[j]
        copy, whole = bool(mode & 1), bool(mode & 2)
        new_label = inplace_label(target, [written] if copy else [target, written], whole)
        if has_aux(new_label):
            return ()
        runs = []
        for data in (_ni_data(x, u1), _ni_data(x, u2)):
            old, value = gradient_value(target, data), gradient_value(written, data)
            first = (value if copy else old + value) if whole else old
            second = value if copy else 2 * old + 1 + value
            runs.append((first, second))
        if runs[0] != runs[1]:
            what = ("copy_" if copy else "add_") + (" over the whole storage" if whole else " into a slice")
            return (f"{what}: a storage labelled {_show(new_label)} depends on aux data",)
        return ()

    return _obligation(check)
