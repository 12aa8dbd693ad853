"""``reference.py`` agrees with the Coq development on every label of its bounds.

``proofs/coq/vectors.txt`` holds what Coq computes (``proofs/coq/Vectors.v``) for the lattice
(join, order, auxiliary test and part, operation and in-place labels) on every pair of the 8 labels
over ``primary:a``, ``aux:a``, ``aux:b``, and for the gate decision on two parameters (each without
a gradient or with any of the 8 labels) and every protected subset, and whether the gated step of
the program language Theorem 1 is proved for (``Isolation.v``) refuses in the same cases: it must
refuse exactly when ``reference.gate_decision`` refuses some parameter.  The first test checks
``reference.py`` against every line; the second checks that the stored lines are what Coq computes
from the current development (it needs ``coqc``; with ``AMAL_REQUIRE_COQ`` set, as in CI, a missing
``coqc`` fails instead of skipping).  With the lemmas of ``Labels.v`` this is the chain
Coq → ``reference.py``; ``properties/test_reference_agreement.py`` continues it to torch.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import pytest
from amal_tools.compliance.coq import COQ_INSTALL, compile_development
from amal_tools.compliance.coq_vectors import vector_lines

from amal_verified.isolation import reference

ROOT = Path(__file__).resolve().parents[2]
COQ_DIR = ROOT / "proofs" / "coq"
VECTORS = COQ_DIR / "vectors.txt"

EXPECTED_COUNTS = {
    "join": 64,
    "flows_to": 64,
    "has_aux": 8,
    "aux_part": 8,
    "op_label": 128,
    "inplace_label": 128,
    "gate": 324,
    "gated_step": 324,
}


def _label(text: str) -> reference.Label:
    if not text:
        return reference.BOTTOM
    return frozenset((kind, name) for kind, _, name in (s.partition(":") for s in text.split(",")))


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split(",")) if text else frozenset()


def _bool(text: str) -> bool:
    assert text in ("true", "false"), text
    return text == "true"


def _reference_disagrees(line: str) -> str | None:
    """What ``reference.py`` computes differently from Coq on one vector (``None`` if it agrees)."""
    kind, *fields = line.split("|")
    got: object
    if kind == "join":
        a, b, want = _label(fields[0]), _label(fields[1]), _label(fields[2])
        got = reference.join(a, b)
    elif kind == "flows_to":
        a, b, want_b = _label(fields[0]), _label(fields[1]), _bool(fields[2])
        got, want = reference.flows_to(a, b), want_b
    elif kind == "has_aux":
        got, want = reference.has_aux(_label(fields[0])), _bool(fields[1])
    elif kind == "aux_part":
        got, want = reference.aux_part(_label(fields[0])), _label(fields[1])
    elif kind == "op_label":
        inputs = [_label(fields[0]), _label(fields[1])]
        got = reference.op_label(inputs, label_neutral=_bool(fields[2]))
        want = _label(fields[3])
    elif kind == "inplace_label":
        got = reference.inplace_label(_label(fields[0]), [_label(fields[1])], _bool(fields[2]))
        want = _label(fields[3])
    elif kind == "gate":
        grads = {n: _label(f) for n, f in zip(("p", "q"), fields[:2], strict=True) if f != "none"}
        got = reference.gate_decision(grads, _names(fields[2]))
        want = _names(fields[3])
    elif kind == "gated_step":
        grads = {n: _label(f) for n, f in zip(("p", "q"), fields[:2], strict=True) if f != "none"}
        got = bool(reference.gate_decision(grads, _names(fields[2])))
        want = _bool(fields[3])
    else:
        return f"unknown vector kind {kind!r}"
    return None if got == want else f"{line}: reference.py gives {got!r}"


def _stored() -> list[str]:
    return VECTORS.read_text(encoding="utf-8").splitlines()


def test_vectors_cover_the_reference_bounds() -> None:
    lines = _stored()
    assert Counter(line.split("|", 1)[0] for line in lines) == EXPECTED_COUNTS
    joined = {_label(line.split("|")[1]) for line in lines if line.startswith("join|")}
    assert joined == set(reference.LABELS)


def test_reference_agrees_with_coq_on_every_vector() -> None:
    problems = [p for p in map(_reference_disagrees, _stored()) if p is not None]
    assert not problems, "\n".join(problems[:20])


def test_stored_vectors_are_what_coq_computes(tmp_path: Path) -> None:
    if shutil.which("coqc") is None:
        message = f"coqc is not installed; install Coq with: {COQ_INSTALL}"
        if os.environ.get("AMAL_REQUIRE_COQ"):
            pytest.fail(message)
        pytest.skip(message)
    compile_development(COQ_DIR, tmp_path, upto="Vectors.v")
    computed = vector_lines((tmp_path / "vectors.out").read_text(encoding="utf-8"))
    assert computed == _stored(), "proofs/coq/vectors.txt is stale: regenerate it with make coq-vectors"
