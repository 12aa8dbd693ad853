"""Executable specification of the label lattice and of the gate's decision.

This module is the *reference* the torch implementation is tested against
(``properties/test_reference_agreement.py``).  It is pure Python, imports
nothing from the rest of the package, and is written independently of
:mod:`amal_verified.labels`: a label here is a ``frozenset`` of
``(kind, name)`` pairs, ``kind`` being ``"primary"`` or ``"aux"``.

What it specifies
-----------------
* **The lattice.**  Labels are ordered by inclusion (:func:`flows_to`);
  :func:`join` is set union, the least upper bound; :data:`BOTTOM` (no tagged
  data) is the identity.
* **Labels of computed values.**  An operation's output carries the join of its
  inputs' labels (:func:`op_label`), except *label-neutral* ("factory-like")
  operations, whose output values depend on no input value (``zeros_like``,
  ``ones_like``, ``empty_like``, ``full_like``, ``new_zeros``, ...: only
  shapes, dtypes and devices are read); they produce :data:`BOTTOM`.  An
  in-place write joins into the label of the written storage
  (:func:`inplace_label`), except a write that overwrites the whole storage,
  which replaces it: nothing of the old contents survives.
* **The gate.**  :func:`gate_decision` is the set of protected parameters whose
  gradient label contains an auxiliary source; a gated step refuses (and
  changes nothing) iff that set is non-empty.  :func:`gated_step` models one
  gated update, and :func:`law_gate_noninterference` checks Theorem 1 of the
  paper for it by self-composition: two runs that agree on the primary data
  but differ arbitrarily on the auxiliary data leave every protected parameter
  identical.

How it is verified
------------------
Every public function states its contract as PEP 316 ``pre:`` / ``post:``
lines.  CrossHair cannot exhaust the paths of a function that receives a
*symbolic* ``frozenset`` (measured: it never reports confirmation, even with
``len(label) <= 3`` in the precondition), so those functions carry a
``crosshair: off`` directive and are verified through the ``law_*``
obligations at the end of the module.  Each obligation takes small integers,
bounded by its ``pre:`` conditions, that index concrete tables of labels
(:data:`LABELS`, :data:`GATE_LABELS`), so CrossHair enumerates every input in
the bounds and reports "Confirmed over all paths".  While it does so it
enforces the contracts of every function the obligation calls; an obligation
turns a violated callee contract into a failing result (CrossHair would
otherwise drop such a path silently and still report confirmation).

The bounds (:data:`REFERENCE_BOUNDS`):

* sources are drawn from :data:`SOURCES` = ``primary:a``, ``aux:a``, ``aux:b``
  (two kinds, names from ``{"a", "b"}``, one name shared by both kinds), so a
  label has at most 3 sources and there are 8 labels;
* lattice laws are checked for every pair and every triple of labels, and
  :func:`op_label` for up to 3 inputs;
* gate obligations use up to 3 parameters (names ``p``, ``q``, ``r``), every
  subset of them protected, and per parameter either no gradient or one of the
  5 labels in :data:`GATE_LABELS` (empty, primary-only, aux-only, mixed, two
  auxiliary sources); monotonicity adds each of the 2 auxiliary sources to each
  parameter;
* the noninterference obligations use unbounded integers as data and
  parameter values (handled symbolically, not enumerated).

Within these bounds "confirmed" is a proof; beyond them the obligations are
tests.  Run them with::

    crosshair check amal_verified/reference.py --analysis_kind=PEP316 \\
        --per_condition_timeout=300 --report_all
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
    "PRIMARY",
    "REFERENCE_BOUNDS",
    "SOURCES",
    "Label",
    "ReferenceBounds",
    "Source",
    "aux_part",
    "flows_to",
    "gate_decision",
    "gate_sources",
    "gated_step",
    "gradient_value",
    "has_aux",
    "inplace_label",
    "is_label",
    "is_source",
    "join",
    "join_all",
    "label",
    "op_label",
]

Source: TypeAlias = tuple[str, str]
"""``(kind, name)``: ``kind`` is :data:`PRIMARY` or :data:`AUX`, ``name`` a non-empty string."""

Label: TypeAlias = frozenset[tuple[str, str]]
"""A set of sources: every data source a value may depend on."""

PRIMARY: Final = "primary"
AUX: Final = "aux"
KINDS: Final[tuple[str, str]] = (PRIMARY, AUX)

BOTTOM: Final[Label] = frozenset()
"""The label of untagged data (and of label-neutral results): the lattice's bottom."""


# --------------------------------------------------------------------------- well-formedness


def is_source(value: object) -> bool:
    """Whether ``value`` is a ``(kind, name)`` pair with a known kind and a non-empty name."""
    # crosshair: off
    if not isinstance(value, tuple) or len(value) != 2:
        return False
    kind, name = value
    return kind in KINDS and isinstance(name, str) and name != ""


def is_label(value: object) -> bool:
    """Whether ``value`` is a ``frozenset`` of sources."""
    # crosshair: off
    if not isinstance(value, frozenset):
        return False
    return all(is_source(s) for s in value)


def label(*sources: Source) -> Label:
    """Build a label from sources, e.g. ``label(("aux", "a"), ("primary", "a"))``.

    pre: all(is_source(s) for s in sources)
    post: is_label(__return__)
    post: all(s in __return__ for s in sources)
    post: all(s in sources for s in __return__)
    """
    # crosshair: off
    return frozenset(sources)


# --------------------------------------------------------------------------- the lattice


def join(a: Label, b: Label) -> Label:
    """The least upper bound of two labels: every source of either, and nothing else.

    pre: is_label(a) and is_label(b)
    post: is_label(__return__)
    post: all(s in __return__ for s in a) and all(s in __return__ for s in b)
    post: all(s in a or s in b for s in __return__)
    """
    # crosshair: off
    collected: set[Source] = set()
    for part in (a, b):
        for source in part:
            collected.add(source)
    return frozenset(collected)


def join_all(labels: Sequence[Label]) -> Label:
    """The join of any number of labels; :data:`BOTTOM` for none.

    pre: all(is_label(x) for x in labels)
    post: is_label(__return__)
    post: all(flows_to(x, __return__) for x in labels)
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
    for source in a:
        if source not in b:
            return False
    return True


def aux_part(lbl: Label) -> Label:
    """The auxiliary sources of a label.

    pre: is_label(lbl)
    post: flows_to(__return__, lbl)
    post: all(kind == AUX for kind, _ in __return__)
    post: all(s in __return__ for s in lbl if s[0] == AUX)
    """
    # crosshair: off
    return frozenset(s for s in lbl if s[0] == AUX)


def has_aux(lbl: Label) -> bool:
    """Whether any auxiliary source is in the label.

    pre: is_label(lbl)
    post: __return__ == any(kind == AUX for kind, _ in lbl)
    post: __return__ == (aux_part(lbl) != BOTTOM)
    """
    # crosshair: off
    for kind, _name in lbl:
        if kind == AUX:
            return True
    return False


# --------------------------------------------------------------------------- labels of computed values


def op_label(input_labels: Sequence[Label], *, label_neutral: bool = False) -> Label:
    """The label of an operation's output.

    The join of the inputs' labels; :data:`BOTTOM` for a label-neutral
    ("factory-like") operation, whose output values depend on no input's
    values (``zeros_like``, ``ones_like``, ``empty_like``, ``full_like``,
    ``new_zeros``, ...).

    pre: all(is_label(x) for x in input_labels)
    post: is_label(__return__)
    post: label_neutral or all(flows_to(x, __return__) for x in input_labels)
    post: flows_to(__return__, join_all(input_labels))
    post: not label_neutral or __return__ == BOTTOM
    """
    # crosshair: off
    if label_neutral:
        return BOTTOM
    return join_all(input_labels)


def inplace_label(
    target_label: Label, input_labels: Sequence[Label], overwrites_whole_storage: bool
) -> Label:
    """The label of a storage after an in-place write into it (or into a view of it).

    ``target_label`` is the storage's label before the write; ``input_labels``
    are the labels of everything the written values are computed from (for
    ``x.add_(y)`` that is ``[label(x), label(y)]``, for ``x.copy_(y)`` just
    ``[label(y)]``).  Labels belong to storages, not to views: writing into a
    slice labels the whole storage.  A write that overwrites every element of
    the storage replaces its label; any other write joins into it.

    pre: is_label(target_label) and all(is_label(x) for x in input_labels)
    post: is_label(__return__)
    post: all(flows_to(x, __return__) for x in input_labels)
    post: overwrites_whole_storage or flows_to(target_label, __return__)
    post: flows_to(__return__, join(target_label, join_all(input_labels)))
    post: not overwrites_whole_storage or __return__ == join_all(input_labels)
    """
    # crosshair: off
    written = join_all(input_labels)
    if overwrites_whole_storage:
        return written
    return join(target_label, written)


# --------------------------------------------------------------------------- the gate


def gate_decision(grad_labels: Mapping[str, Label], protected: frozenset[str]) -> frozenset[str]:
    """The protected parameters whose gradient label contains an auxiliary source.

    ``grad_labels`` maps parameter names to the labels of their gradients (a
    parameter without a gradient may be absent); ``protected`` names the
    parameters the gated optimizer updates.  The gated step must refuse, and
    change nothing, iff the result is non-empty.

    pre: all(isinstance(n, str) for n in grad_labels)
    pre: all(is_label(x) for x in grad_labels.values())
    pre: all(isinstance(n, str) for n in protected)
    post: __return__ <= protected
    post: all(has_aux(grad_labels[n]) for n in __return__)
    post: all(n in __return__ for n in protected if n in grad_labels and has_aux(grad_labels[n]))
    """
    # crosshair: off
    refused: set[str] = set()
    for name in protected:
        grad = grad_labels.get(name)
        if grad is not None and has_aux(grad):
            refused.add(name)
    return frozenset(refused)


def gate_sources(grad_labels: Mapping[str, Label], protected: frozenset[str]) -> Label:
    """The auxiliary sources a refusal names: those in the refused parameters' gradient labels.

    pre: all(isinstance(n, str) for n in grad_labels)
    pre: all(is_label(x) for x in grad_labels.values())
    pre: all(isinstance(n, str) for n in protected)
    post: all(kind == AUX for kind, _ in __return__)
    post: (__return__ == BOTTOM) == (gate_decision(grad_labels, protected) == frozenset())
    post: all(any(s in grad_labels[n] for n in protected if n in grad_labels) for s in __return__)
    """
    # crosshair: off
    refused = gate_decision(grad_labels, protected)
    return join_all([aux_part(grad_labels[name]) for name in sorted(refused)])


def gradient_value(lbl: Label, data: Mapping[Source, int]) -> int:
    """A model gradient that reads the data of exactly the sources in its label.

    The label of a real gradient over-approximates what it reads (that is the
    tracking's job, tested in ``properties/``); this model reads all of it, so
    any leak of auxiliary data through the gate is visible in its value.

    pre: is_label(lbl)
    post: lbl != BOTTOM or __return__ == 0
    """
    # crosshair: off
    total = 0
    for weight, source in enumerate(sorted(lbl), start=1):
        total += weight * data.get(source, 0)
    return total


def gated_step(
    theta: Mapping[str, int], grad_labels: Mapping[str, Label], data: Mapping[Source, int]
) -> dict[str, int]:
    """One gated update of the protected parameters ``theta`` (name to value).

    The parameters of a gated optimizer are exactly the protected ones.  If the
    gate refuses, every parameter keeps its value; otherwise each one moves by
    its model gradient.

    pre: all(is_label(x) for x in grad_labels.values())
    post: set(__return__) == set(theta)
    post: gate_decision(grad_labels, frozenset(theta)) == frozenset() or __return__ == dict(theta)
    """
    # crosshair: off
    if gate_decision(grad_labels, frozenset(theta)):
        return dict(theta)
    return {
        name: value - gradient_value(grad_labels.get(name, BOTTOM), data) for name, value in theta.items()
    }


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
    max_params: int
    gate_labels: int


SOURCES: Final[tuple[Source, ...]] = ((PRIMARY, "a"), (AUX, "a"), (AUX, "b"))
"""The source universe of the obligations (a name shared by both kinds on purpose)."""

LABELS: Final[tuple[Label, ...]] = tuple(
    frozenset(chosen) for size in range(len(SOURCES) + 1) for chosen in combinations(SOURCES, size)
)
"""Every label over :data:`SOURCES` (8 of them, bottom first)."""

GATE_LABELS: Final[tuple[Label, ...]] = (
    BOTTOM,
    frozenset({(PRIMARY, "a")}),
    frozenset({(AUX, "a")}),
    frozenset({(PRIMARY, "a"), (AUX, "b")}),
    frozenset({(AUX, "a"), (AUX, "b")}),
)
"""Gradient labels the gate obligations use: empty, primary-only, aux-only, mixed, two aux sources."""

PARAM_NAMES: Final[tuple[str, ...]] = ("p", "q", "r")

REFERENCE_BOUNDS: Final = ReferenceBounds(
    kinds=KINDS,
    source_names=("a", "b"),
    sources=SOURCES,
    max_sources_per_label=len(SOURCES),
    labels=len(LABELS),
    max_op_inputs=3,
    param_names=PARAM_NAMES,
    max_params=len(PARAM_NAMES),
    gate_labels=len(GATE_LABELS),
)

_NO_GRAD: Final = len(GATE_LABELS)
"""Index meaning "this parameter has no gradient" in the gate obligations."""


# --------------------------------------------------------------------------- obligations

Problems: TypeAlias = tuple[str, ...]


def _is_contract_failure(exc: BaseException) -> bool:
    # CrossHair raises these (BaseException subclasses) when a called function's contract fails.
    cls = type(exc)
    return cls.__module__.startswith("crosshair") and cls.__name__ in (
        "PreconditionFailed",
        "PostconditionFailed",
    )


def _obligation(check: Callable[[], Problems]) -> Problems:
    """Run ``check``; a violated contract of anything it calls becomes a problem, not a dropped path."""
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
    ab, ba = join(a, b), join(b, a)
    if ab != ba:
        problems.append("join not commutative")
    if join(a, a) != a:
        problems.append("join not idempotent")
    if join(BOTTOM, a) != a or join(a, BOTTOM) != a:
        problems.append("bottom is not the identity of join")
    if not (flows_to(a, ab) and flows_to(b, ab)):
        problems.append("a ⊑ a⊔b fails")
    if flows_to(a, b) != (ab == b):
        problems.append("flows_to is not the order of join (a ⊑ b iff a⊔b = b)")
    if not flows_to(a, a) or not flows_to(BOTTOM, a):
        problems.append("flows_to not reflexive or bottom not least")
    if flows_to(a, b) and flows_to(b, a) and a != b:
        problems.append("flows_to not antisymmetric")
    if has_aux(ab) != (has_aux(a) or has_aux(b)):
        problems.append("has_aux does not distribute over join")
    if flows_to(a, b) and has_aux(a) and not has_aux(b):
        problems.append("has_aux not monotone")
    if has_aux(BOTTOM):
        problems.append("bottom has an aux source")
    if join_all([]) != BOTTOM or join_all([a]) != a or join_all([a, b]) != ab:
        problems.append("join_all disagrees with join")
    if op_label([]) != BOTTOM or op_label([a]) != a or op_label([a, b]) != ab:
        problems.append("op_label is not the join of its inputs")
    if op_label([a, b], label_neutral=True) != BOTTOM:
        problems.append("label-neutral op_label is not bottom")
    if inplace_label(a, [b], False) != ab:
        problems.append("partial in-place write does not join")
    if inplace_label(a, [b], True) != b:
        problems.append("whole-storage overwrite does not replace")
    if inplace_label(a, [a, b], True) != ab:
        problems.append("whole-storage read-modify-write (add_) loses the target's label")
    if problems:
        problems.append(f"at a={_show(a)} b={_show(b)}")
    return tuple(problems)


def _triple_laws(a: Label, b: Label, c: Label) -> Problems:
    problems: list[str] = []
    ab, bc = join(a, b), join(b, c)
    abc = join(ab, c)
    if abc != join(a, bc):
        problems.append("join not associative")
    if flows_to(a, c) and flows_to(b, c) and not flows_to(ab, c):
        problems.append("join is not the least upper bound")
    if flows_to(a, b) and flows_to(b, c) and not flows_to(a, c):
        problems.append("flows_to not transitive")
    if flows_to(a, b) and not (flows_to(join(a, c), join(b, c)) and flows_to(join(c, a), join(c, b))):
        problems.append("join not monotone")
    if join_all([a, b, c]) != abc or op_label([a, b, c]) != abc:
        problems.append("join_all / op_label of three inputs is not a⊔b⊔c")
    if inplace_label(a, [b, c], False) != abc or inplace_label(a, [b, c], True) != bc:
        problems.append("inplace_label of two inputs")
    for whole in (False, True):
        if flows_to(a, b) and not flows_to(inplace_label(a, [c], whole), inplace_label(b, [c], whole)):
            problems.append("inplace_label not monotone in the target")
        if flows_to(a, b) and not flows_to(inplace_label(c, [a], whole), inplace_label(c, [b], whole)):
            problems.append("inplace_label not monotone in the written data")
    if problems:
        problems.append(f"at a={_show(a)} b={_show(b)} c={_show(c)}")
    return tuple(problems)


def law_lattice_pairs(i: int, j: int) -> Problems:
    """Lattice laws over every pair of labels (commutativity, idempotence, identity, order, has_aux).

    pre: 0 <= i < len(LABELS) and 0 <= j < len(LABELS)
    post: __return__ == ()
    """
    return _obligation(lambda: _pair_laws(LABELS[i], LABELS[j]))


def law_lattice_triples(i: int, j: int, k: int) -> Problems:
    """Lattice laws over every triple (associativity, least upper bound, transitivity, monotonicity).

    pre: 0 <= i < len(LABELS) and 0 <= j < len(LABELS) and 0 <= k < len(LABELS)
    post: __return__ == ()
    """
    return _obligation(lambda: _triple_laws(LABELS[i], LABELS[j], LABELS[k]))


def _grads(choices: Sequence[int]) -> dict[str, Label]:
    return {name: GATE_LABELS[c] for name, c in zip(PARAM_NAMES, choices, strict=True) if c != _NO_GRAD}


def _protected_sets() -> list[frozenset[str]]:
    return [frozenset(s) for size in range(len(PARAM_NAMES) + 1) for s in combinations(PARAM_NAMES, size)]


def _gate_laws(grads: dict[str, Label]) -> Problems:
    problems: list[str] = []
    for protected in _protected_sets():
        refused = gate_decision(grads, protected)
        for name in PARAM_NAMES:
            grad = grads.get(name, BOTTOM)
            if name in refused and (name not in protected or not has_aux(grad)):
                problems.append(f"refused {name} (protected={name in protected}, label={_show(grad)})")
            if name in protected and has_aux(grad) and name not in refused:
                problems.append(f"accepted aux-labelled protected {name}")
            # Monotone: adding an aux source to any parameter's label never shrinks the refusal.
            for source in SOURCES:
                if source[0] != AUX:
                    continue
                tainted = dict(grads)
                tainted[name] = join(grad, frozenset({source}))
                if not refused <= gate_decision(tainted, protected):
                    problems.append(f"not monotone: adding {source} to {name}")
        # Monotone in the protected set as well.
        for bigger in _protected_sets():
            if protected <= bigger and not refused <= gate_decision(grads, bigger):
                problems.append("protecting more parameters shrank the refusal")
        sources = gate_sources(grads, protected)
        if (sources == BOTTOM) != (refused == frozenset()):
            problems.append("gate_sources empty iff accepted fails")
        if problems:
            problems.append(f"at protected={sorted(protected)}")
            break
    if problems:
        problems.append("grads=" + ", ".join(f"{n}:{_show(g)}" for n, g in sorted(grads.items())))
    return tuple(problems)


def law_gate(i: int, j: int, k: int) -> Problems:
    """The gate's contract for every gradient labelling of 3 parameters and every protected subset.

    Refusals are protected and aux-labelled, every aux-labelled protected
    parameter is refused, and the refusal is monotone in the labels and in the
    protected set.

    pre: 0 <= i <= len(GATE_LABELS) and 0 <= j <= len(GATE_LABELS) and 0 <= k <= len(GATE_LABELS)
    post: __return__ == ()
    """
    return _obligation(lambda: _gate_laws(_grads((i, j, k))))


def _data(primary_a: int, aux_a: int, aux_b: int) -> dict[Source, int]:
    return {(PRIMARY, "a"): primary_a, (AUX, "a"): aux_a, (AUX, "b"): aux_b}


def law_gate_noninterference(
    i: int, j: int, protect: int, theta_p: int, theta_q: int, x: int, u1: int, v1: int, u2: int, v2: int
) -> Problems:
    """Theorem 1 for one gated step, by self-composition.

    Two runs see the same primary datum ``x`` but arbitrary auxiliary data
    (``u1, v1`` versus ``u2, v2``); parameters ``p`` and ``q`` have gradients
    labelled ``LABELS[i]`` and ``LABELS[j]``; ``protect`` selects which of them
    the gated optimizer owns.  Every protected parameter must end equal in both
    runs: an accepted step reads no auxiliary datum.

    pre: 0 <= i < len(LABELS) and 0 <= j < len(LABELS) and 0 <= protect < 4
    post: __return__ == ()
    """

    def check() -> Problems:
        grads = {"p": LABELS[i], "q": LABELS[j]}
        values = {"p": theta_p, "q": theta_q}
        theta = {name: values[name] for bit, name in enumerate(("p", "q")) if (protect >> bit) & 1}
        run1 = gated_step(theta, grads, _data(x, u1, v1))
        run2 = gated_step(theta, grads, _data(x, u2, v2))
        leaked = [name for name in sorted(theta) if run1[name] != run2[name]]
        return tuple(f"aux data reached protected {name}" for name in leaked)

    return _obligation(check)


_OPS: Final[tuple[str, ...]] = ("add", "mul", "first", "zeros_like")


def _apply(op: str, left: int, right: int) -> int:
    if op == "add":
        return left + right
    if op == "mul":
        return left * right
    if op == "first":
        return left
    return 0  # zeros_like: reads only the shape


def law_op_noninterference(i: int, j: int, op: int, x: int, u1: int, v1: int, u2: int, v2: int) -> Problems:
    """:func:`op_label` is sound: a result without an aux source is equal across aux data.

    Inputs labelled ``LABELS[i]`` and ``LABELS[j]`` hold values read from
    their sources' data; the operation is one of add, mul, first-argument
    (a view) and ``zeros_like`` (label-neutral).

    pre: 0 <= i < len(LABELS) and 0 <= j < len(LABELS) and 0 <= op < len(_OPS)
    post: __return__ == ()
    """

    def check() -> Problems:
        left_label, right_label = LABELS[i], LABELS[j]
        name = _OPS[op]
        out_label = op_label([left_label, right_label], label_neutral=name == "zeros_like")
        results = []
        for data in (_data(x, u1, v1), _data(x, u2, v2)):
            left, right = gradient_value(left_label, data), gradient_value(right_label, data)
            results.append(_apply(name, left, right))
        if not has_aux(out_label) and results[0] != results[1]:
            return (f"{name}: result labelled {_show(out_label)} depends on aux data",)
        return ()

    return _obligation(check)


def law_inplace_noninterference(
    i: int, j: int, mode: int, x: int, u1: int, v1: int, u2: int, v2: int
) -> Problems:
    """:func:`inplace_label` is sound for a two-element storage.

    The storage (label ``LABELS[i]``) holds two values read from its sources;
    a value labelled ``LABELS[j]`` is added into or copied over either one
    element (a slice view) or the whole storage.  If the storage's new label
    has no aux source, both elements must be equal across aux data.

    pre: 0 <= i < len(LABELS) and 0 <= j < len(LABELS) and 0 <= mode < 4
    post: __return__ == ()
    """

    def check() -> Problems:
        target, written = LABELS[i], LABELS[j]
        copy, whole = bool(mode & 1), bool(mode & 2)
        inputs = [written] if copy else [target, written]
        new_label = inplace_label(target, inputs, whole)
        results = []
        for data in (_data(x, u1, v1), _data(x, u2, v2)):
            cells = [gradient_value(target, data), 2 * gradient_value(target, data) + 1]
            value = gradient_value(written, data)
            for index in range(2) if whole else range(1, 2):
                cells[index] = value if copy else cells[index] + value
            results.append(cells)
        if not has_aux(new_label) and results[0] != results[1]:
            kind = ("copy_" if copy else "add_") + (" over the whole storage" if whole else " into a slice")
            return (f"{kind}: storage labelled {_show(new_label)} depends on aux data",)
        return ()

    return _obligation(check)
