"""The reference model's label lattice: join is a least upper bound and ``flows_to`` is its order.

Claim.  In the executable specification ``amal_verified/isolation/reference.py`` (labels are sets of
``(kind, name)`` sources, ``kind`` primary or aux): ``join`` is commutative, associative and idempotent
with identity ``BOTTOM`` (the empty label), and is the least upper bound of ``flows_to``, which is a
partial order (reflexive, antisymmetric, transitive) with least element ``BOTTOM``, and which is the
order of the join (a ⊑ b iff a ⊔ b = b); ``join`` is monotone; ``has_aux`` distributes over ``join`` and
is monotone, and agrees with ``aux_part``; ``join_all``, ``op_label`` (join of the inputs, ``BOTTOM`` for a
label-neutral operation) and ``inplace_label`` (a partial write joins into the storage's label, a
whole-storage overwrite replaces it, a whole read-modify-write keeps it) agree with ``join``; and every
public function called on the way meets its PEP 316 contract.

Assumptions (``REFERENCE_BOUNDS``).  Three sources, ``primary:a``, ``aux:a`` and ``aux:b`` (both kinds;
one name, ``a``, shared by both kinds on purpose, so that comparing sources by name alone is caught),
hence labels of at most 3 sources and all 8 labels over them (``LABELS``); every pair of labels
(``law_lattice_pairs``) and every triple (``law_lattice_triples``); ``join_all`` and ``op_label`` with 0 to
2 inputs, ``inplace_label`` with 1 or 2 inputs.  The laws are universally quantified set identities, so
three sources of two kinds exercise every case distinction the code makes (kind aux or not, source
shared or not), but beyond the bounds this is an argument, not a proof.  The reference is a model: that
the torch implementation computes the same labels is tested, not proved (obligation
``reference-gate``, ``properties/test_reference_agreement.py``).

Discharged by CrossHair.  Each law takes small integers bounded by its ``pre:`` condition that index
``LABELS``, so ``crosshair check --analysis_kind=PEP316 --per_condition_timeout=600 --report_all``
enumerates every input within the bounds; the verdict is "proved" only if every condition is reported
"Confirmed over all paths".  While enumerating, CrossHair enforces the contracts of every function a law
calls, and a law turns a violated contract into a failing result (CrossHair would otherwise drop the
path).  That these checks can fail: ``properties/test_gate_mutants.py`` mutates the lattice functions
(dropped join term, ``a | b`` → ``a & b``, ``<=`` → ``<``, label compared by name, ...) and CrossHair or
Hypothesis must kill every mutant (obligation ``reference-gate``, mutation score).  The noninterference
laws of the reference (``law_op_noninterference``, ``law_inplace_noninterference``,
``law_gate_noninterference``) are checks of ``theorem1-isolation``.
"""

from __future__ import annotations

from amal_tools.compliance.obligation import Check, Kind, Method, Obligation

_FILES = ("amal_verified/isolation/reference.py",)

OBLIGATION = Obligation(
    id="reference-lattice",
    title="Reference model: the label lattice (join, flows_to, has_aux, labels of computed values)",
    paper="§3 (label lattice and propagation, which Theorem 1's gate relies on)",
    claim=(
        "In amal_verified/isolation/reference.py, join is commutative, associative and idempotent "
        "with identity "
        "BOTTOM and is the least upper bound of flows_to, a partial order with least element BOTTOM that is "
        "the order of the join; join is monotone; has_aux distributes over join, is monotone and agrees "
        "with aux_part; join_all, op_label and inplace_label agree with join (a label-neutral op gives "
        "BOTTOM, a partial in-place write joins, a whole-storage overwrite replaces); every called function "
        "meets its contract."
    ),
    assumptions=(
        "REFERENCE_BOUNDS: sources primary:a, aux:a, aux:b (both kinds; name 'a' shared by both kinds), so "
        "labels have at most 3 sources and there are 8 of them (LABELS); every pair and every triple of "
        "labels; join_all and op_label with 0-2 inputs, inplace_label with 1-2 inputs",
        "proved only within those bounds (CrossHair enumerates them exhaustively); beyond them the laws are "
        "set identities whose case distinctions (aux or not, shared name or not) the bounds all contain: an "
        "argument, not a proof",
        "the reference is a model: the torch implementation's agreement with it is tested, not proved "
        "(reference-gate)",
    ),
    kind=Kind.CLAIM,
    checks=(
        Check(
            "CrossHair: laws over every pair of labels",
            Method.CROSSHAIR,
            "amal_verified/isolation/reference.py:law_lattice_pairs",
            files=_FILES,
            quick=True,  # ~9 s of CPU
        ),
        Check(
            "CrossHair: laws over every triple of labels (associativity, least upper bound, transitivity)",
            Method.CROSSHAIR,
            "amal_verified/isolation/reference.py:law_lattice_triples",
            files=_FILES,
            quick=True,  # ~23 s of CPU
        ),
    ),
    notes=(
        "CI (pytest) confirms every law_* obligation in tests/test_reference_crosshair.py; whether the "
        "checks can fail is measured by the mutation score of reference-gate "
        "(properties/test_gate_mutants.py)."
    ),
)
