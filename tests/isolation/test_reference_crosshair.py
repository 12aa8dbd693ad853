"""CrossHair verifies the executable specification ``amal_verified/isolation/reference.py``.

The ``law_*`` obligations enumerate bounded inputs (``REFERENCE_BOUNDS``), so
CrossHair must report every one of them "Confirmed over all paths" -- a proof
within the bounds, not a sample.

That these checks can fail is shown by the mutation analysis in
``properties/test_gate_mutants.py``: copies of the specification with one
expression of the gate-decision path mutated (an inverted gate check, a dropped
join term, a label compared by name, ...) must each be killed, by a CrossHair
counterexample on these laws or by a Hypothesis property.

Runtime on two cores: about 27 s (two CrossHair processes in parallel, ~54 s of
CPU).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from amal_verified.isolation import reference

REFERENCE = Path(reference.__file__)
# per_condition_timeout is CPU seconds per obligation: far above what exhausting the paths takes
# (at most ~25 s), so a slow machine still reaches "Confirmed over all paths" instead of "Not confirmed".
FLAGS = ("--analysis_kind=PEP316", "--per_condition_timeout=600", "--report_all")
CONFIRMED = "info: Confirmed over all paths."
# Two processes of about equal CPU (measured: triples ~23 s, inplace ~4 s; pairs ~9 s, gate ~11 s,
# gate noninterference ~3.5 s, op noninterference ~3.5 s).
SEPARATE = ("law_lattice_triples", "law_inplace_noninterference")


def _crosshair(*targets: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "crosshair", "check", *targets, *FLAGS],
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


@pytest.mark.slow
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
