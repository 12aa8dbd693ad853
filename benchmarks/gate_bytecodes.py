"""Python work the gate adds to a CleanRL-sized training step, counted, not timed.

    .venv/bin/python benchmarks/gate_bytecodes.py                      # wm and SAC, batch 32, 20 steps
    .venv/bin/python benchmarks/gate_bytecodes.py --workloads wm --top 25
    .venv/bin/python benchmarks/gate_bytecodes.py --amal-path DIR      # count another copy of the library
    .venv/bin/python benchmarks/gate_bytecodes.py --json counts.json

What is counted
---------------
The workloads are ``small_model_overhead.py``'s (``_small_model_worker.py``: a world-model update,
and a whole SAC step plus that update; the five batch tensors tagged with ``av.primary`` each step
and the world model's Adam wrapped in ``av.GatedOptimizer`` on the gated side). For each workload a
plain and a gated worker, each a fresh interpreter (``python -P`` running this file by path, with
``PYTHONHASHSEED=0``; the plain one never imports ``amal_verified`` and fails if it finds it in
``sys.modules``), run ``--warmup`` steps and then ``--steps`` steps under ``sys.settrace`` with
opcode events, counting per code object:

- **bytecodes**: Python instructions executed (opcode events), torch's Python code included;
- **calls**: Python frames entered (function calls and generator resumptions).

Per step, both sides and the difference are printed, and the library's functions (plus any other
code whose count differs) ranked by the bytecodes they add. C code -- kernels, the dispatcher,
PyTorch's C++ hooks machinery, and beartype's checks once compiled -- is not counted.

Why counts
----------
On a CleanRL-sized model the gate's cost is the Python it runs per step, and on a shared machine
the time of that Python varies by ±10 % from one process to the next (see
``small_model_overhead.py``, which measures the time). The counts are the same on every run of the
same code with the same torch: a change to the gate's hot paths shows up as an exact difference,
which ``--amal-path`` (e.g. a ``git archive <commit> amal_verified`` extracted into ``DIR``) turns
into a before/after comparison. The counts do not convert to time: an instruction of the gate's
code, run once per step among the kernels' cache traffic, costs more than one of a hot loop.

Exit status: 0; 2 if a worker fails or the plain worker imported the library. Nothing here limits
wall-clock time.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any, Final

HERE: Final = Path(__file__).resolve().parent
ROOT: Final = HERE.parent
WORKER_SCRIPT: Final = HERE / "_small_model_worker.py"
WORKLOADS: Final = {"wm": "world-model update", "sac": "whole SAC step + WM"}
PACKAGE: Final = "amal_verified"
PLAIN_IMPORT_EXIT: Final = 3

Key = tuple[str, int, str]  # (file relative to its package root, first line, function name)


def _short(filename: str) -> str:
    """A code object's file without the machine's directories (``amal_verified/...``, ``torch/...``)
    or, for generated code (beartype's wrappers: ``<@beartype(name) at 0x...>``), its memory address."""
    if filename.startswith("<"):
        return re.sub(r" at 0x[0-9a-f]+>$", ">", filename)
    path = filename.replace(os.sep, "/")
    for marker in (f"/{PACKAGE}/", "/site-packages/", "/lib/python"):
        i = path.rfind(marker)
        if i >= 0:
            start = i + 1 if marker == f"/{PACKAGE}/" else i + len(marker)
            return path[start:].removeprefix("3.11/")
    return Path(path).name


def _load_worker_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_small_model_worker", WORKER_SCRIPT)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {WORKER_SCRIPT}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def count_in_this_process(
    side: str,
    workload: str,
    batch: int,
    warmup: int,
    steps: int,
    aux_present: bool = False,
    follow_primary: bool = True,
) -> dict[str, Any]:
    """Run the workload here and count what ``steps`` steps execute (the worker's body)."""
    import torch

    worker = _load_worker_module()
    torch.set_num_threads(1)
    av: Any = None
    if side == "gated":
        import amal_verified as av
    elif PACKAGE in sys.modules:
        raise SystemExit(PLAIN_IMPORT_EXIT)
    step, _ = worker._setup(av, workload, batch, 4, aux_present, follow_primary)
    for i in range(warmup):
        step(i)
    bytecodes: collections.Counter[Key] = collections.Counter()
    calls: collections.Counter[Key] = collections.Counter()

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        code = frame.f_code
        key = (code.co_filename, code.co_firstlineno, code.co_name)
        if event == "opcode":
            bytecodes[key] += 1
        elif event == "call":
            frame.f_trace_opcodes = True
            calls[key] += 1
        return trace

    sys.settrace(trace)
    try:
        for i in range(warmup, warmup + steps):
            step(i)
    finally:
        sys.settrace(None)
    if side == "plain" and PACKAGE in sys.modules:
        raise SystemExit(PLAIN_IMPORT_EXIT)
    library = str(Path(av.__file__).parent) if av is not None else None
    functions = [
        {
            "file": _short(file),
            "line": line,
            "function": name,
            "library": library is not None and file.startswith(library + os.sep),
            "bytecodes": bytecodes[(file, line, name)] / steps,
            "calls": calls[(file, line, name)] / steps,
        }
        for file, line, name in set(bytecodes) | set(calls)
    ]
    return {
        "side": side,
        "workload": workload,
        "batch": batch,
        "steps": steps,
        "bytecodes": sum(bytecodes.values()) / steps,
        "calls": sum(calls.values()) / steps,
        "library_dir": library,
        "torch": torch.__version__,
        "functions": functions,
    }


class WorkerFailed(RuntimeError):
    pass


def run_worker(
    side: str,
    workload: str,
    batch: int,
    warmup: int,
    steps: int,
    amal_path: Path | None,
    out: Path,
    aux_present: bool = False,
    follow_primary: bool = True,
) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    if side == "gated" and amal_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(amal_path), env.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, "-P", str(Path(__file__).resolve()), "--worker", side, "--workloads", workload]
    cmd += ["--batch", str(batch), "--warmup", str(warmup), "--steps", str(steps), "--json", str(out)]
    if aux_present:
        cmd.append("--aux-present")
    if not follow_primary:
        cmd.append("--no-follow-primary")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0 or not out.is_file():
        why = " (the plain side imported amal_verified)" if proc.returncode == PLAIN_IMPORT_EXIT else ""
        raise WorkerFailed(
            f"{side} {workload} worker exited {proc.returncode}{why}\n{proc.stdout}\n{proc.stderr}"
        )
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def added_by_function(plain: dict[str, Any], gated: dict[str, Any]) -> list[dict[str, Any]]:
    """Per function: the bytecodes and calls the gated step adds (library functions, and any other
    code whose count changed), largest first."""
    rows: dict[tuple[str, int, str], dict[str, Any]] = {}
    for sign, result in ((-1, plain), (1, gated)):
        for f in result["functions"]:
            row = rows.setdefault(
                (f["file"], f["line"], f["function"]),
                {
                    "file": f["file"],
                    "line": f["line"],
                    "function": f["function"],
                    "library": False,
                    "bytecodes": 0.0,
                    "calls": 0.0,
                },
            )
            row["library"] = row["library"] or f["library"]
            row["bytecodes"] += sign * f["bytecodes"]
            row["calls"] += sign * f["calls"]
    changed = [r for r in rows.values() if r["library"] or abs(r["bytecodes"]) >= 0.5]
    return sorted(changed, key=lambda r: (-r["bytecodes"], r["file"], r["line"], r["function"]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--workloads", nargs="+", choices=sorted(WORKLOADS), default=["wm", "sac"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=10, help="uncounted steps first (default 10)")
    parser.add_argument("--steps", type=int, default=20, help="counted steps (default 20)")
    parser.add_argument("--top", type=int, default=15, help="functions listed per workload (default 15)")
    parser.add_argument("--amal-path", type=Path, help="directory holding the amal_verified to count")
    parser.add_argument("--json", type=Path, help="also write the result as JSON to this path")
    parser.add_argument(
        "--aux-present",
        action="store_true",
        help="the gated worker tags auxiliary data first, as where auxiliary agents run",
    )
    parser.add_argument(
        "--no-follow-primary",
        dest="follow_primary",
        action="store_false",
        help="the gated worker tags the batch av.primary(..., follow=False): the memory only",
    )
    parser.add_argument("--worker", choices=["plain", "gated"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.batch < 1 or args.steps < 1 or args.warmup < 0 or args.top < 0:
        parser.error("--batch and --steps must be ≥ 1, --warmup and --top ≥ 0")
    if args.amal_path is not None and not (args.amal_path / PACKAGE / "__init__.py").is_file():
        parser.error(f"--amal-path {args.amal_path}: no {PACKAGE}/__init__.py there")
    if args.worker is not None:
        (workload,) = args.workloads
        result = count_in_this_process(
            args.worker,
            workload,
            args.batch,
            args.warmup,
            args.steps,
            args.aux_present,
            args.follow_primary,
        )
        args.json.write_text(json.dumps(result))
        return 0

    rows = []
    with tempfile.TemporaryDirectory(prefix="gate-bytecodes-") as tmp:
        for workload in args.workloads:
            try:
                plain, gated = (
                    run_worker(
                        side,
                        workload,
                        args.batch,
                        args.warmup,
                        args.steps,
                        args.amal_path,
                        Path(tmp) / f"{workload}-{side}.json",
                        side == "gated" and args.aux_present,
                        side == "plain" or args.follow_primary,
                    )
                    for side in ("plain", "gated")
                )
            except WorkerFailed as failed:
                print(failed, file=sys.stderr)
                return 2
            rows.append((workload, plain, gated, added_by_function(plain, gated)))

    print(
        f"gate_bytecodes: Python executed per step, batch {args.batch}, {args.steps} counted steps "
        f"after {args.warmup}; torch {rows[0][1]['torch']}"
    )
    header = f"{'workload':22} {'plain bytecodes':>16} {'gated':>9} {'ratio':>6}"
    print(f"{header} {'plain calls':>12} {'gated':>7}")
    for workload, plain, gated, _ in rows:
        print(
            f"{WORKLOADS[workload]:22} {plain['bytecodes']:16.0f} {gated['bytecodes']:9.0f} "
            f"{gated['bytecodes'] / plain['bytecodes']:6.2f} {plain['calls']:12.0f} {gated['calls']:7.0f}"
        )
    for workload, plain, gated, added in rows:
        extra = gated["bytecodes"] - plain["bytecodes"]
        own = sum(r["bytecodes"] for r in added if r["library"])
        print(
            f"\n{WORKLOADS[workload]}: {extra:.0f} bytecodes added per step, {own:.0f} of them in "
            f"{PACKAGE}'s own functions; the largest additions:"
        )
        print(f"  {'bytecodes':>9} {'calls':>6}  function")
        for r in added[: args.top]:
            print(f"  {r['bytecodes']:9.0f} {r['calls']:6.0f}  {r['function']} ({r['file']}:{r['line']})")
    library_dir = rows[0][2]["library_dir"]
    inside = library_dir is not None and Path(library_dir).resolve().is_relative_to(ROOT)
    commit = _git("rev-parse", "--short", "HEAD") if inside else None
    where = f"this repository at {commit}" if inside else "the directory given by --amal-path"
    dirty = bool(_git("status", "--porcelain", "--", PACKAGE)) if inside else None
    print(
        f"\n{PACKAGE} counted: {where}{' (modified in the working tree)' if dirty else ''}"
        + ("; auxiliary data present in the gated worker" if args.aux_present else "")
        + ("; primary batches tagged with follow=False" if not args.follow_primary else "")
    )
    if args.json is not None:
        summary = {
            "commit": commit if inside else None,
            "amal_verified_modified_in_working_tree": dirty,
            "counted": "repository" if inside else "--amal-path",
            "batch": args.batch,
            "warmup": args.warmup,
            "steps": args.steps,
            "aux_present": args.aux_present,
            "follow_primary": args.follow_primary,
            "torch": rows[0][1]["torch"],
            "workloads": {
                workload: {
                    "plain": {"bytecodes": plain["bytecodes"], "calls": plain["calls"]},
                    "gated": {"bytecodes": gated["bytecodes"], "calls": gated["calls"]},
                    "added": added,
                }
                for workload, plain, gated, added in rows
            },
        }
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    return 0


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT, check=False)
    except OSError:
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


if __name__ == "__main__":
    sys.exit(main())
