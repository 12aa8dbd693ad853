"""``reference.py`` runs whole programs as Coq's semantics does (``proofs/coq/programs.txt``).

``proofs/coq/Programs.v`` instantiates the language Theorem 1 is proved for (``Isolation.v``) with
concrete values and operations, generates 400 programs (protected and unprotected storages,
several training steps, inputs from two primary and three auxiliary sources, out-of-place
operations, partial in-place writes, gated and ungated optimizer steps, storages read and written
by the same command) and runs each with the language's own definitions on two data streams that
agree on primary sources only; extraction to OCaml prints the programs and the results
(``make coq-vectors``).  Here each program is translated into ``reference.py``'s commands
(``reference.Input``, ``Op``, ``WritePart``, ``Step``) and run with ``reference.exec_command``:

- every step command must be refused or applied as in Coq, with the same gate decision
  (``reference.gate_decision`` against ``Labels.gate_decision``);
- after every training step, every storage must carry Coq's label and, in each stream, Coq's value;
- the reference's own two runs must agree on every protected storage (Theorem 1 for the
  reference's rules, which Coq proves for these programs: ``generated_protected_trajectories_agree``).

The last test checks that the stored lines are what the current Coq sources compute (it needs
``coqc`` and ``ocamlfind``; with ``AMAL_REQUIRE_COQ`` set, as in CI, a missing one fails instead of
skipping).  ``properties/test_reference_agreement.py`` continues the chain from ``reference.py`` to
torch, on its own generated programs.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from amal_tools.compliance.coq import COQ_INSTALL
from amal_tools.compliance.coq_programs import OCAML_INSTALL, program_lines

from amal_verified.isolation import reference as ref

ROOT = Path(__file__).resolve().parents[1]
COQ_DIR = ROOT / "proofs" / "coq"
PROGRAMS = COQ_DIR / "programs.txt"
PROGRAM_COUNT = 400
STREAMS = ("A", "B")

MODULUS = 1009


def _sum_mod(values: Sequence[int]) -> int:
    total = 0
    for v in values:
        total = (total + v) % MODULUS
    return total


def evaluate(op: str, values: Sequence[int]) -> int:
    """The operations of ``Programs.v`` (``eval``), written out again."""
    acc: int
    if op == "add":
        return _sum_mod(values)
    if op == "mul":
        acc = 1
        for v in values:
            acc = acc * v % MODULUS
        return acc
    if op == "mix":
        acc = 7
        for v in values:
            acc = (acc * 31 + v + 1) % MODULUS
        return acc
    if op == "zeros":
        return 0
    assert op == "sgd", op
    if len(values) < 2:
        return 0
    p, g, *rest = values
    return (p + (MODULUS - 1) * g + 3 * _sum_mod(rest)) % MODULUS


def _label(text: str) -> ref.Label:
    if not text:
        return ref.BOTTOM
    return frozenset((kind, name) for kind, _, name in (s.partition(":") for s in text.split(",")))


def _locs(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",")) if text else ()


def _source(text: str) -> ref.Source:
    kind, _, name = text.partition(":")
    return (kind, name)


@dataclass
class Program:
    number: int
    locations: int
    protected: frozenset[int]
    steps: int
    init: dict[int, ref.Cell] = field(default_factory=dict)
    # per training step: the commands, and the data of each stream ((source, k) -> datum)
    commands: list[list[ref.Command]] = field(default_factory=list)
    data: list[dict[str, dict[tuple[ref.Source, int], int]]] = field(default_factory=list)
    # (t, i, stream) -> (refused, gate decision); t -> [(label, value in A, value in B)]
    outcomes: dict[tuple[int, int, str], tuple[bool, frozenset[str]]] = field(default_factory=dict)
    memory: dict[int, list[tuple[ref.Label, int, int]]] = field(default_factory=dict)


def _command(kind: str, fields: list[str]) -> ref.Command:
    if kind == "input":
        return ref.Input(_source(fields[0]), int(fields[1]), int(fields[2]))
    if kind == "op":
        return ref.Op(fields[0], _locs(fields[1]), int(fields[2]))
    if kind == "write_part":
        return ref.WritePart(fields[0], _locs(fields[1]), int(fields[2]))
    assert kind == "step", kind
    assert fields[0] in ("gated", "ungated"), fields[0]
    updates = tuple((int(p), int(g)) for p, _, g in (u.partition(":") for u in fields[2].split(",")))
    return ref.Step(fields[0] == "gated", fields[1], updates, _locs(fields[3]))


def parse(lines: Sequence[str]) -> list[Program]:
    """The programs of ``programs.txt`` (format: ``proofs/coq/Programs.v``)."""
    programs: list[Program] = []
    for line in lines:
        kind, *fields = line.split("|")
        if kind == "program":
            attrs = dict(f.split("=", 1) for f in fields[1:])
            steps = int(attrs["steps"])
            programs.append(
                Program(
                    int(fields[0]),
                    int(attrs["locations"]),
                    frozenset(_locs(attrs["protected"])),
                    steps,
                    commands=[[] for _ in range(steps)],
                    data=[{s: {} for s in STREAMS} for _ in range(steps)],
                )
            )
            continue
        program = programs[-1]
        if kind == "init":
            program.init[int(fields[0])] = ref.Cell(int(fields[2]), _label(fields[1]))
        elif kind == "cmd":
            t, i = int(fields[0]), int(fields[1])
            assert i == len(program.commands[t]), line
            command = _command(fields[2], fields[3:])
            program.commands[t].append(command)
            if isinstance(command, ref.Input):
                for stream, datum in zip(STREAMS, fields[6:8], strict=True):
                    known = program.data[t][stream].setdefault((command.source, command.index), int(datum))
                    assert known == int(datum), f"two data for one (source, k): {line}"
        elif kind == "outcome":
            t, i, stream = int(fields[0]), int(fields[1]), fields[2]
            assert fields[3] in ("applied", "refused"), line
            names = frozenset(fields[4].split(",")) if fields[4] else frozenset()
            program.outcomes[(t, i, stream)] = (fields[3] == "refused", names)
        elif kind == "memory":
            cells = []
            for cell in fields[1].split(";"):
                lbl, a, b = cell.split("/")
                cells.append((_label(lbl), int(a), int(b)))
            program.memory[int(fields[0])] = cells
        else:
            raise AssertionError(f"unknown line {line!r}")
    return programs


def _stored() -> list[str]:
    return PROGRAMS.read_text(encoding="utf-8").splitlines()


def _count(
    coverage: Counter[str],
    program: Program,
    command: ref.Command,
    before: dict[int, ref.Cell],
    after: dict[int, ref.Cell],
    outcome: ref.StepOutcome | None,
) -> None:
    """Tally what the command exercises (stream A), for :func:`test_programs_exercise_the_language`."""
    if isinstance(command, ref.Step):
        params = {p for p, _ in command.updates}
        kind = "gated" if command.gated else "ungated"
        assert outcome is not None
        coverage[f"{kind} step {'refused' if outcome.refused else 'applied'}"] += 1
        if outcome.refused and not outcome.gate:
            coverage[f"{kind} step refused with a clean gate decision"] += 1
        if outcome.gate and not outcome.refused:
            coverage["ungated step applied although the gate names a parameter"] += 1
        if params - program.protected and params & program.protected:
            coverage["step over protected and unprotected parameters"] += 1
        if {g for _, g in command.updates} & params or set(command.extra) & params:
            coverage["step reading a parameter it updates as gradient or state"] += 1
        if len(command.updates) > 1:
            coverage["step over several parameters"] += 1
        return
    dst = command.dst
    if after[dst] is before[dst] and dst in program.protected:
        coverage["write into protected memory refused"] += 1
    if isinstance(command, ref.Op | ref.WritePart):
        if dst in command.srcs:
            coverage["command reading the storage it writes"] += 1
        if len(set(command.srcs)) < len(command.srcs):
            coverage["command reading one storage twice"] += 1
        if (
            isinstance(command, ref.WritePart)
            and ref.has_aux(after[dst].label)
            and not any(ref.has_aux(before[s].label) for s in command.srcs)
        ):
            coverage["partial write keeping an auxiliary label"] += 1
        if (
            isinstance(command, ref.Op)
            and ref.has_aux(before[dst].label)
            and not ref.has_aux(after[dst].label)
        ):
            coverage["whole overwrite clearing an auxiliary label"] += 1


def _disagreements(program: Program, coverage: Counter[str]) -> list[str]:
    """Where the reference's runs of ``program`` differ from Coq's (empty if nowhere)."""
    where = f"program {program.number}"
    complete = sorted(program.memory) == list(range(program.steps)) and all(
        len(cells) == program.locations for cells in program.memory.values()
    )
    if sorted(program.init) != list(range(program.locations)) or not complete:
        return [f"{where}: the initial memory or a memory after a step is incomplete"]
    problems: list[str] = []
    semantics = ref.Semantics(evaluate, lambda op: op == "zeros", program.protected)
    memories = {stream: dict(program.init) for stream in STREAMS}
    for t, commands in enumerate(program.commands):
        steps = {i for i, c in enumerate(commands) if isinstance(c, ref.Step)}
        listed = {i for (u, i, _) in program.outcomes if u == t}
        if listed != steps or len([k for k in program.outcomes if k[0] == t]) != len(steps) * len(STREAMS):
            problems.append(
                f"{where}, step {t}: Coq lists outcomes of {sorted(listed)}, steps are {sorted(steps)}"
            )
        for stream in STREAMS:
            for i, command in enumerate(commands):
                before = memories[stream]
                after, outcome = ref.exec_command(before, command, program.data[t][stream], semantics)
                memories[stream] = after
                if stream == "A":
                    _count(coverage, program, command, before, after, outcome)
                if outcome is not None and (t, i, stream) in program.outcomes:
                    refused, gate = program.outcomes[(t, i, stream)]
                    if (outcome.refused, outcome.gate) != (refused, gate):
                        problems.append(
                            f"{where}, step {t}, command {i}, stream {stream}: reference refused="
                            f"{outcome.refused} gate={sorted(outcome.gate)}, "
                            f"Coq refused={refused} gate={sorted(gate)}"
                        )
        for loc, (lbl, value_a, value_b) in enumerate(program.memory[t]):
            for stream, value in zip(STREAMS, (value_a, value_b), strict=True):
                got = memories[stream][loc]
                if got.label != lbl or got.value != value:
                    problems.append(
                        f"{where}, after step {t}, location {loc}, stream {stream}: reference "
                        f"{sorted(got.label)}/{got.value}, Coq {sorted(lbl)}/{value}"
                    )
        problems.extend(
            f"{where}, after step {t}: the reference's runs differ at protected location {loc}"
            for loc in sorted(program.protected)
            if memories["A"][loc] != memories["B"][loc]
        )
    return problems


@functools.cache
def _check_all() -> tuple[list[Program], list[str], Counter[str]]:
    programs = parse(_stored())
    coverage: Counter[str] = Counter()
    problems = [p for program in programs for p in _disagreements(program, coverage)]
    return programs, problems, coverage


def test_reference_runs_every_program_as_coq_does() -> None:
    programs, problems, _ = _check_all()
    assert [p.number for p in programs] == list(range(PROGRAM_COUNT))
    assert not problems, f"{len(problems)} disagreements with Coq:\n" + "\n".join(problems[:20])


# What the 400 programs exercise, at least (stream A; counts at the stored file are far above).
MINIMUM_COVERAGE = {
    "gated step applied": 100,
    "gated step refused": 100,
    "gated step refused with a clean gate decision": 20,
    "ungated step applied": 100,
    "ungated step refused": 20,
    "ungated step applied although the gate names a parameter": 20,
    "step over protected and unprotected parameters": 20,
    "step reading a parameter it updates as gradient or state": 20,
    "step over several parameters": 100,
    "write into protected memory refused": 100,
    "command reading the storage it writes": 50,
    "command reading one storage twice": 50,
    "partial write keeping an auxiliary label": 20,
    "whole overwrite clearing an auxiliary label": 20,
}


def test_programs_exercise_the_language() -> None:
    programs, _, coverage = _check_all()
    low = {k: coverage[k] for k, n in MINIMUM_COVERAGE.items() if coverage[k] < n}
    assert not low, f"too few cases: {low} (all: {dict(coverage)})"
    assert Counter(p.steps for p in programs).keys() == {1, 2, 3, 4}
    sources = {c.source for p in programs for cs in p.commands for c in cs if isinstance(c, ref.Input)}
    assert sum(kind == ref.AUX for kind, _ in sources) == 3
    assert sum(kind == ref.PRIMARY for kind, _ in sources) == 2


def test_stored_programs_are_what_coq_computes(tmp_path: Path) -> None:
    missing = [tool for tool in ("coqc", "ocamlfind") if shutil.which(tool) is None]
    if missing:
        message = f"{' and '.join(missing)} not installed; install Coq with: {COQ_INSTALL} ({OCAML_INSTALL})"
        if os.environ.get("AMAL_REQUIRE_COQ"):
            pytest.fail(message)
        pytest.skip(message)
    computed = program_lines(COQ_DIR, tmp_path)
    assert computed == _stored(), "proofs/coq/programs.txt is stale: regenerate it with make coq-vectors"
