"""CrossHair verifies the executable specification ``amal_verified/reference.py``.

The ``law_*`` obligations enumerate bounded inputs (``REFERENCE_BOUNDS``), so
CrossHair must report every one of them "Confirmed over all paths" -- a proof
within the bounds, not a sample.  Deliberately broken copies of the
specification (an inverted gate check, a dropped join term, ...) must be
reported with a counterexample, so these tests can fail.

Runtime on two cores: about 30 s for the confirmation (two CrossHair
processes in parallel, ~50 s of CPU) and about 1 s per broken copy.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from amal_verified import reference

REFERENCE = Path(reference.__file__)
# per_condition_timeout is CPU seconds per obligation: far above what exhausting the paths takes
# (at most ~25 s), so a slow machine still reaches "Confirmed over all paths" instead of "Not confirmed".
FLAGS = ("--analysis_kind=PEP316", "--per_condition_timeout=600", "--report_all")
CONFIRMED = "info: Confirmed over all paths."
# One process for the largest obligation, one for the rest: roughly 20 s + 30 s of CPU.
SEPARATE = ("law_lattice_triples",)


def _crosshair(*targets: str, cwd: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "crosshair", "check", *targets, *FLAGS],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str], timeout: float) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"crosshair did not finish in {timeout} s:\n{out}\n{err}")
    return proc.returncode, out, err


def _obligation_lines(source: str) -> dict[str, int]:
    """Each ``law_*`` function of ``source`` and the line of its ``post:`` condition."""
    lines = source.splitlines()
    found: dict[str, int] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("law_"):
            assert node.end_lineno is not None
            posts = [
                n for n in range(node.lineno, node.end_lineno + 1) if lines[n - 1].strip().startswith("post:")
            ]
            assert len(posts) == 1, f"{node.name} should state exactly one postcondition"
            found[node.name] = posts[0]
    return found


def test_obligations_cover_the_bounds_the_module_declares() -> None:
    bounds = reference.REFERENCE_BOUNDS
    assert bounds.max_sources_per_label == len(reference.SOURCES) == 3
    assert bounds.labels == len(reference.LABELS) == 2 ** len(reference.SOURCES)
    assert len(set(reference.LABELS)) == len(reference.LABELS)
    assert {kind for kind, _ in reference.SOURCES} == set(bounds.kinds)
    assert {name for _, name in reference.SOURCES} == set(bounds.source_names)
    assert all(reference.is_label(lbl) for lbl in (*reference.LABELS, *reference.GATE_LABELS))
    assert len(reference.NI_LABELS) == 2 ** len(bounds.noninterference_sources)


def test_every_obligation_is_confirmed_over_all_paths() -> None:
    lines = _obligation_lines(REFERENCE.read_text())
    assert set(SEPARATE) <= set(lines)
    assert len(lines) >= 6
    module = reference.__name__
    procs = [
        _crosshair(*(f"{module}.{name}" for name in SEPARATE)),
        _crosshair(*(f"{module}.{name}" for name in sorted(lines) if name not in SEPARATE)),
    ]
    results = [_finish(proc, timeout=400) for proc in procs]
    output = "\n".join(out for _, out, _ in results)
    details = "\n".join(f"--- rc={rc}\n{out}\n{err[-2000:]}" for rc, out, err in results)
    assert all(rc == 0 for rc, _, _ in results), details
    assert ": error:" not in output, details
    for name, line in lines.items():
        assert f"{REFERENCE}:{line}: {CONFIRMED}" in output, f"{name} not confirmed:\n{details}"


def _strip_contract(source: str, function: str) -> str:
    """Remove the ``pre:``/``post:`` lines of ``function``'s docstring."""
    start = source.index(f"\ndef {function}(")
    doc_start = source.index('"""', start)
    doc_end = source.index('"""', doc_start + 3)
    doc = source[doc_start:doc_end]
    kept = "\n".join(line for line in doc.split("\n") if not re.match(r"\s+(pre|post):", line))
    assert kept != doc, f"{function} has no contract to strip"
    return source[:doc_start] + kept + source[doc_end:]


# name: (substitutions, functions whose contracts are removed, obligation that must fail, expected text)
MUTANTS: dict[str, tuple[list[tuple[str, str]], list[str], str, str]] = {
    # Caught by gate_decision's own contract, enforced while law_gate enumerates.
    "gate_inverted_check": (
        [("if name in grad_labels and has_aux(", "if name in grad_labels and not has_aux(")],
        [],
        "law_gate",
        "contract violated",
    ),
    "gate_refuses_unprotected": (
        [("name for name in protected if name in grad_labels", "name for name in grad_labels if True")],
        [],
        "law_gate",
        "contract violated",
    ),
    "join_drops_a_term": (
        [("    return a | b\n", "    return a\n")],
        [],
        "law_lattice_pairs",
        "contract violated",
    ),
    "inplace_always_replaces": (
        [
            (
                "    if overwrites_whole_storage:\n        return written",
                "    if True:\n        return written",
            )
        ],
        [],
        "law_lattice_pairs",
        "contract violated",
    ),
    # Contracts removed: the laws and the self-composition checks must catch these on their own.
    "join_left_biased_without_contract": (
        [("    return a | b\n", "    return a or b\n")],
        ["join", "join_all", "op_label", "inplace_label"],
        "law_lattice_pairs",
        "join is not commutative",
    ),
    "gate_accepts_everything_without_contract": (
        [
            (
                "    return _NO_NAMES.union(name for name in protected if",
                "    return _NO_NAMES.union(name for name in protected if False and",
            )
        ],
        ["gate_decision", "gated_step"],
        "law_gate_noninterference",
        "aux data reached gated parameter",
    ),
    "op_label_drops_an_input_without_contract": (
        [("    return join_all(input_labels)\n", "    return join_all(input_labels[:1])\n")],
        ["op_label"],
        "law_op_noninterference",
        "depends on aux data",
    ),
    "inplace_always_replaces_without_contract": (
        [
            (
                "    if overwrites_whole_storage:\n        return written",
                "    if True:\n        return written",
            )
        ],
        ["inplace_label"],
        "law_inplace_noninterference",
        "depends on aux data",
    ),
}


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_a_broken_copy_is_caught(mutant: str, tmp_path: Path) -> None:
    substitutions, stripped, obligation, expected = MUTANTS[mutant]
    source = REFERENCE.read_text()
    for old, new in substitutions:
        assert source.count(old) == 1, f"mutant {mutant} is stale: {old!r} not found exactly once"
        source = source.replace(old, new)
    for function in stripped:
        source = _strip_contract(source, function)
    module = f"mutant_{mutant}"
    (tmp_path / f"{module}.py").write_text(source)
    rc, out, err = _finish(_crosshair(f"{module}.{obligation}", cwd=tmp_path), timeout=300)
    assert rc == 1, f"crosshair missed mutant {mutant} (rc={rc}):\n{out}\n{err[-2000:]}"
    assert ": error: false when calling " + obligation in out, out
    assert expected in out, out
