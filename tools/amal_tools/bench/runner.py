"""Running the benchmark grid: (method × task × seed) cells in worker processes, resumable.

:func:`run_benchmark` executes a :class:`BenchPlan`:

0. **Not applicable** — cells whose method cannot run the task by the catalogue
   (:func:`~amal_tools.bench.methods.not_applicable_reason`: SAC, TD3, CEM-RL on discrete
   actions) are written to ``<out>/skipped/`` with the reason, without a worker.
1. **Levels** — for every (task, seed) with a cell still to run: the mean return of a uniformly
   random policy and, where the task has a reference (``TaskSpec.reference == "solver"``), of the
   reference solution, on the run seed's evaluation episodes
   (:mod:`amal_tools.bench.references`).  Written to ``<out>/levels.json`` as each one is
   measured (a reference solve can take minutes).
2. **Cells** — every (method, task, seed) in a fresh worker process (``spawn``, one task per
   process, one torch thread; or one Ray task each with ``backend="ray"``, on this machine or a
   cluster, the records coming back to the driver: :mod:`amal_tools.bench.executors`): train with
   :func:`~amal_tools.bench.methods.train_method`, then
   evaluate the final policy on the task's shifted environment (``extras["shift"]``).  Each cell
   writes ``<out>/records/<method>__<task>__<seed>.json`` when it finishes, with the commit of the
   code that produced it (``RunRecord.provenance``); a cell whose method finds it cannot run the
   task writes ``<out>/skipped/...json`` with the reason; a cell that fails writes
   ``<out>/failed/...json`` with the traceback and the grid goes on (a failed cell is reported, and
   makes the command exit non-zero, but loses nobody else's result).
3. **Performance ratios** — :func:`amal_tools.bench.ratios.measure_ratios`, run after the cells,
   alone, so that no other worker competes for the cores while it times.
4. **Report** — ``RESULTS.md`` and plots (:mod:`amal_tools.bench.report`).

Resuming: a cell whose record already exists with the same budget and evaluation schedule is not
run again, so an interrupted full run (hours) continues where it stopped and can be spread over
several sittings.  ``--fresh`` semantics belong to the caller: delete the directory.

Determinism: every cell's randomness comes from its seed (the trainer's streams, SB3's ``seed``,
the evaluation seeds); workers are fresh processes, so nothing leaks between cells through global
state.  Timing numbers (``train_seconds``, steps/s) are measurements and vary; returns do not.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, final

from amal_tools.bench.executors import Backend, run_unordered
from amal_tools.bench.methods import METHODS, not_applicable_reason
from amal_tools.bench.records import RunRecord, load_records
from amal_tools.bench.tasks import Mode, TaskSpec, task_by_name
from amal_tools.compliance.provenance import git_state
from amal_verified.common.runtime_checks import checked

__all__ = ["BenchOutcome", "BenchPlan", "Cell", "code_commit", "run_benchmark", "utc_now"]

_RECORDS: Final = "records"
_SKIPPED: Final = "skipped"
_FAILED: Final = "failed"
LEVELS_FILE: Final = "levels.json"


@final
@dataclass(frozen=True)
class Cell:
    """One (method, task, seed) of the grid with its budget."""

    method: str
    task: str
    seed: int
    budget: int

    @property
    def key(self) -> str:
        """File stem: ``method__task__seed``."""
        return f"{self.method}__{self.task}__{self.seed}"


@final
@dataclass(frozen=True)
class BenchPlan:
    """What to run: mode, tasks, methods, seeds, where to, how many workers.

    ``budget`` overrides every task's budget for the mode (smoke tests); ``eval_episodes`` overrides
    the task's evaluation episode count.  ``keep_runs`` keeps each cell's working files (the AMAL run
    directory with its ledger, data and checkpoint, for ``amal certify``) in ``<out>/work/``; by
    default they are deleted once the cell's record is written.
    """

    mode: Mode
    tasks: tuple[TaskSpec, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    out: Path
    jobs: int = 1
    budget: int | None = None
    eval_episodes: int | None = None
    ratios: bool = True
    keep_runs: bool = False
    backend: Backend = "local"

    def __post_init__(self) -> None:
        if not self.tasks or not self.methods or not self.seeds:
            raise ValueError("a benchmark plan needs at least one task, one method and one seed")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; known: {', '.join(METHODS)}")
        if len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"seeds must be distinct non-negative integers, got {self.seeds}")
        if self.jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {self.jobs}")
        if self.backend not in ("local", "ray"):
            raise ValueError(f"backend must be 'local' or 'ray', got {self.backend!r}")
        if self.backend == "ray" and self.keep_runs:
            raise ValueError(
                "--keep-runs keeps run directories where cells train; with --backend ray that is another "
                "machine's scratch space: run the cells to keep with the local backend"
            )
        for task in self.tasks:
            self.budget_of(task)
        if self.eval_episodes is not None and self.eval_episodes < 1:
            raise ValueError(f"eval_episodes must be >= 1, got {self.eval_episodes}")

    def budget_of(self, task: TaskSpec) -> int:
        """The task's budget in this plan (``ValueError`` if the mode gives it none)."""
        budget = self.budget if self.budget is not None else task.budgets.get(self.mode)
        if budget is None:
            raise ValueError(
                f"task {task.name} has no {self.mode} budget; give one with --budget or pick its mode"
            )
        if budget < task.evaluations:
            raise ValueError(f"budget {budget} is below {task.name}'s {task.evaluations} evaluations")
        return budget

    def episodes_of(self, task: TaskSpec) -> int:
        """Evaluation episodes per evaluation point for ``task``."""
        return self.eval_episodes if self.eval_episodes is not None else task.eval_episodes[self.mode]

    def cells(self) -> tuple[Cell, ...]:
        """Every cell, task-major then method then seed."""
        return tuple(
            Cell(m, t.name, s, self.budget_of(t))
            for t in self.tasks
            for m in self.methods
            for s in self.seeds
        )


@final
@dataclass(frozen=True)
class BenchOutcome:
    """What a run left in ``out``: records, skipped cells (reasons), failed cells (tracebacks), and
    the keys of the planned cells that have none of the three yet (``pending``: not run so far)."""

    records: tuple[RunRecord, ...]
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    pending: tuple[str, ...] = ()


def code_commit() -> str:
    """The git commit of the running ``amal_verified`` code, ``"... (with uncommitted changes)"`` when
    tracked files differ from it, or a sentence saying it is not a git checkout."""
    state = git_state(Path(__file__).resolve().parent)
    if state["commit"] is None:
        return "unknown (not a git checkout)"
    return str(state["commit"]) + (" (with uncommitted changes)" if state["dirty"] else "")


def utc_now() -> str:
    """The current time as ``YYYY-MM-DD HH:MM UTC`` (the benchmark's timestamps)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True, allow_nan=False) + "\n")
    os.replace(tmp, path)


def _done(plan: BenchPlan, cell: Cell) -> bool:
    record = plan.out / _RECORDS / f"{cell.key}.json"
    if (plan.out / _SKIPPED / f"{cell.key}.json").exists():
        return True
    if not record.exists():
        return False
    try:
        existing = RunRecord.from_json(json.loads(record.read_text()))
    except (ValueError, OSError):
        return False
    task = task_by_name(cell.task)
    return existing.budget == cell.budget and tuple(p.step for p in existing.curve) == task.eval_steps(
        cell.budget
    )


def _run_cell(cell: Cell, mode: Mode, out: str, eval_episodes: int, keep_runs: bool) -> tuple[str, str]:
    """Worker body: train, evaluate under shift, write the record.  Returns (status, detail)."""
    import torch

    from amal_tools.bench.baselines import NotApplicable
    from amal_tools.bench.evaluation import evaluate_policy
    from amal_tools.bench.methods import train_method

    torch.set_num_threads(1)
    root = Path(out)
    task = task_by_name(cell.task)
    try:
        trained = train_method(
            cell.method,
            task,
            seed=cell.seed,
            budget=cell.budget,
            eval_steps=task.eval_steps(cell.budget),
            eval_episodes=eval_episodes,
            work_dir=root / "work" / cell.key,
            mode=mode,
        )
        shifted = evaluate_policy(
            task, trained.act, run_seed=cell.seed, episodes=eval_episodes, shift=task.shift
        )
        record = RunRecord(
            method=cell.method,
            task=cell.task,
            seed=cell.seed,
            budget=cell.budget,
            curve=trained.curve,
            train_seconds=trained.train_seconds,
            extras={
                **trained.extras,
                "shift": {
                    "description": task.shift.description,
                    "returns": list(shifted.returns),
                    "success": shifted.success,
                },
            },
            provenance={"git_commit": code_commit(), "finished": utc_now()},
        )
        record.write(root / _RECORDS)
        if not keep_runs:
            shutil.rmtree(root / "work" / cell.key, ignore_errors=True)
        return "done", cell.key
    except NotApplicable as exc:
        _write_json(
            root / _SKIPPED / f"{cell.key}.json",
            {"method": cell.method, "task": cell.task, "reason": str(exc)},
        )
        return "skipped", str(exc)
    except Exception:
        detail = traceback.format_exc()
        _write_json(root / _FAILED / f"{cell.key}.json", {"cell": cell.key, "traceback": detail})
        return "failed", detail


def _run_cell_returning_files(cell: Cell, mode: Mode, eval_episodes: int) -> tuple[str, str, dict[str, str]]:
    """:func:`_run_cell` in a scratch directory of the worker's machine; the files it wrote (record,
    skipped or failed note) come back to the driver, which writes them into the results directory,
    so that the results directory need not be shared with the machines that run cells (Ray)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="amal-bench-cell-") as scratch:
        status, detail = _run_cell(cell, mode, scratch, eval_episodes, False)
        root = Path(scratch)
        files = {
            str(path.relative_to(root)): path.read_text(encoding="utf-8")
            for kind in (_RECORDS, _SKIPPED, _FAILED)
            for path in sorted((root / kind).glob("*.json"))
        }
    return status, detail, files


def _levels_cell(task_name: str, seed: int, episodes: int) -> tuple[str, int, dict[str, Any]]:
    import torch

    from amal_tools.bench.references import task_level

    torch.set_num_threads(1)
    return task_name, seed, task_level(task_by_name(task_name), seed=seed, episodes=episodes).to_json()


@checked
def run_benchmark(plan: BenchPlan, *, log: Callable[[str], None] = print) -> BenchOutcome:
    """Run ``plan`` (see the module docstring); returns what ``plan.out`` holds afterwards."""
    plan.out.mkdir(parents=True, exist_ok=True)
    for cell in plan.cells():  # known from the catalogue: no worker, and the same reason every time
        reason = not_applicable_reason(cell.method, task_by_name(cell.task))
        if reason is not None:
            _write_json(
                plan.out / _SKIPPED / f"{cell.key}.json",
                {"method": cell.method, "task": cell.task, "reason": reason},
            )
    todo = [c for c in plan.cells() if not _done(plan, c)]
    _run_levels(plan, {c.task for c in todo}, log)
    log(f"{len(plan.cells()) - len(todo)} of {len(plan.cells())} cells already done; running {len(todo)}")
    for stale in (plan.out / _FAILED / f"{c.key}.json" for c in todo):
        stale.unlink(missing_ok=True)
    if plan.backend == "ray":
        calls: list[tuple[Any, ...]] = [(c, plan.mode, plan.episodes_of(task_by_name(c.task))) for c in todo]
        worker: Callable[..., Any] = _run_cell_returning_files
    else:
        out = str(plan.out)
        calls = [(c, plan.mode, out, plan.episodes_of(task_by_name(c.task)), plan.keep_runs) for c in todo]
        worker = _run_cell
    finished = run_unordered(worker, calls, backend=plan.backend, jobs=plan.jobs)
    for n, (args, result, error) in enumerate(finished, start=1):
        cell = args[0]
        if error is not None:  # the worker died (e.g. out of memory) or could not be reached
            status, detail = "failed", f"worker crashed: {type(error).__name__}: {error}"
            _write_json(plan.out / _FAILED / f"{cell.key}.json", {"cell": cell.key, "traceback": detail})
        elif plan.backend == "ray":
            status, detail, files = result
            for name, text in files.items():
                _write_json(plan.out / name, json.loads(text))
        else:
            status, detail = result
        last = detail.strip().splitlines()[-1] if status == "failed" and detail.strip() else ""
        log(f"[{n}/{len(todo)}] {cell.key}: {status}{(' — ' + last) if last else ''}")
    return collect(plan.out, plan.cells())


def _run_levels(plan: BenchPlan, tasks: set[str], log: Callable[[str], None]) -> None:
    """Measure the levels of ``tasks`` (those with cells to run) not yet in ``levels.json``."""
    path = plan.out / LEVELS_FILE
    levels: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.exists() else {}
    wanted = [
        (t.name, s, plan.episodes_of(t))
        for t in plan.tasks
        if t.name in tasks
        for s in plan.seeds
        if str(s) not in levels.get(t.name, {})
        or levels[t.name][str(s)].get("episodes") != plan.episodes_of(t)
    ]
    if not wanted:
        return
    log(f"measuring random and reference levels for {len(wanted)} (task, seed) pairs")
    for _, result, error in run_unordered(_levels_cell, wanted, backend=plan.backend, jobs=plan.jobs):
        if error is not None:
            raise error
        name, seed, level = result
        levels.setdefault(name, {})[str(seed)] = level
        _write_json(path, levels)  # an interrupted sitting keeps every level already measured


@checked
def collect(out: Path, cells: Sequence[Cell] | None = None) -> BenchOutcome:
    """The records, skipped and failed cells in ``out`` (restricted to ``cells`` if given, and then
    with the given cells that have none of them as ``pending``)."""
    keys = None if cells is None else {c.key for c in cells}

    def wanted(path: Path) -> bool:
        return keys is None or path.stem in keys

    records_dir = out / _RECORDS
    files = [p for p in sorted(records_dir.glob("*.json")) if wanted(p)] if records_dir.is_dir() else []
    records = tuple(load_records(files)) if files else ()
    skipped = {
        p.stem: str(json.loads(p.read_text())["reason"])
        for p in sorted((out / _SKIPPED).glob("*.json"))
        if wanted(p)
    }
    failed = {
        p.stem: str(json.loads(p.read_text())["traceback"])
        for p in sorted((out / _FAILED).glob("*.json"))
        if wanted(p)
    }
    seen = {f"{r.method}__{r.task}__{r.seed}" for r in records} | set(skipped) | set(failed)
    pending = () if cells is None else tuple(c.key for c in cells if c.key not in seen)
    return BenchOutcome(records=records, skipped=skipped, failed=failed, pending=pending)
