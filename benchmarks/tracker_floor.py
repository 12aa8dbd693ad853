"""What any Python-level tracker costs before it tracks anything, beside what the gate costs.

    .venv/bin/python benchmarks/tracker_floor.py               # 5 rounds, wm and SAC, batch 32 and 256
    .venv/bin/python benchmarks/tracker_floor.py --workloads wm --rounds 7
    .venv/bin/python benchmarks/tracker_floor.py --json floor.json

The workers and workloads are ``small_model_overhead.py``'s (``_small_model_worker.py``: a
CleanRL-sized world-model update and whole SAC step, one thread, the five batch tensors tagged
with ``av.primary`` each step, the world model's Adam wrapped in ``av.GatedOptimizer``). The gated
worker imports whatever ``amal_verified`` is first on its path; this script writes four stand-ins
into a temporary directory, each providing just ``primary`` and ``GatedOptimizer``, and doing no
labelling at all:

- **dispatch floor**: ``primary`` returns the tensor as a subclass whose ``__torch_dispatch__``
  only runs the operation (Python dispatch off) and returns plain outputs, as the gate's
  ``TaggedTensor`` does for primary-only results; ``GatedOptimizer`` is a Python object whose
  ``step`` looks at each gradient's type and calls the wrapped optimizer. Every tracker built on
  a ``__torch_dispatch__`` subclass and an optimizer wrapper pays at least this.
- **hooks floor**: the dispatch floor plus empty hooks where the gate has its module boundary and
  gradient labels: a global forward pre-hook and forward hook seen by every module call (nested
  ones too: the gate hides its hooks from calls nested in a tracked call, this stand-in does not),
  a gradient hook on each call's output and on each parameter of the wrapped optimizer.
- **design floor**: the hooks floor with the hooks placed as the gate places them: the global
  registries read as empty to calls nested in a running call (the gate's call-scoped registries,
  so nested calls take PyTorch's hook-free path), a gradient hook on the outermost call's output
  only, registered without ``Tensor.register_hook``'s checks. What the gate's own design costs
  in PyTorch's extension points with every body empty: the gate's labelling and checks come on
  top of it.
- **function floor**: the dispatch floor with ``__torch_function__`` instead of
  ``__torch_dispatch__`` (operations are seen at the Python API, before the dispatcher;
  autograd's own operations are not seen at all, which is why the gate cannot use it for
  auxiliary data).

Each round runs, for every (workload, batch), a plain worker, each stand-in and the library
(the ``amal_verified`` of this checkout), each a fresh interpreter, starting one place later in
that order each round. A variant's ratio is the
median over rounds of its CPU-time median over the round's plain median; beside it the same
for each worker's 10th-percentile step, the least disturbed by other load on a shared machine.
Parameters of every worker must be bit-identical with the plain ones.
The share of the library's cost above the dispatch floor is what labelling, the module boundary,
gradient labels and the gate's checks cost; ``small_model_overhead.py``'s targets (1.10 at batch
256, 1.30 at 32) are printed beside it.

Exit status: 0; 1 if parameters differ; 2 if a worker fails or imports another variant's package.
Nothing here limits wall-clock time.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Final

HERE: Final = Path(__file__).resolve().parent
ROOT: Final = HERE.parent

_COMMON: Final = """
import torch


def primary(t, source):
    return torch.Tensor._make_subclass(Tracked, t, t.requires_grad)


class GatedOptimizer:
    def __init__(self, optimizer):
        self.inner = optimizer

    @property
    def param_groups(self):
        return self.inner.param_groups

    def zero_grad(self, set_to_none=True):
        self.inner.zero_grad(set_to_none)

    def step(self, closure=None):
        for group in self.inner.param_groups:
            for p in group["params"]:
                if p.grad is not None and type(p.grad) is Tracked:
                    raise RuntimeError("a tracked gradient")
        return self.inner.step(closure)
"""

STAND_INS: Final = {
    "dispatch floor": '''"""Stand-in: a __torch_dispatch__ subclass that only runs each operation."""
import torch

_NO_DISPATCH = torch._C._DisableTorchDispatch


class Tracked(torch.Tensor):
    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        with _NO_DISPATCH():
            return func(*args, **(kwargs or {}))
'''
    + _COMMON,
    "function floor": '''"""Stand-in: a __torch_function__ subclass that only runs each operation."""
import torch


class Tracked(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **(kwargs or {}))
'''
    + _COMMON,
}
STAND_INS["hooks floor"] = (
    STAND_INS["dispatch floor"].replace(
        "only runs each operation", "only runs each operation, with empty hooks"
    )
    + """

def _before_call(module, args):
    return None


def _after_call(module, args, output):
    if isinstance(output, torch.Tensor) and output.requires_grad:
        output.register_hook(_on_gradient)
    return None


def _on_gradient(grad):
    return None


torch.nn.modules.module.register_module_forward_pre_hook(_before_call)
torch.nn.modules.module.register_module_forward_hook(_after_call)
_wrap = GatedOptimizer.__init__


def _wrap_and_hook(self, optimizer):
    _wrap(self, optimizer)
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.register_hook(_on_gradient)


GatedOptimizer.__init__ = _wrap_and_hook
"""
)
STAND_INS["design floor"] = (
    STAND_INS["dispatch floor"].replace(
        "only runs each operation", "only runs each operation, with empty hooks where the gate has its own"
    )
    + """
import collections
import sys

# The module call whose hooks are running (the Python frame of its Module._call_impl), or None.
_running = [None]


class _CallScoped(collections.OrderedDict):
    \"\"\"A global hook registry that calls nested in a running call read as empty (the gate's
    call-scoped registries, without their recovery from calls that raised).\"\"\"

    def __bool__(self):
        owner = _running[0]
        if owner is None or sys._getframe(1) is owner:
            return len(self) > 0
        return False


torch.nn.modules.module._global_forward_pre_hooks = _CallScoped()
torch.nn.modules.module._global_forward_hooks = _CallScoped()


def _hook(t, fn):
    # Tensor.register_hook's steps without its checks and handle, as the gate registers its hooks.
    hooks = t._backward_hooks
    if hooks is None:
        hooks = collections.OrderedDict()
        t._backward_hooks = hooks
        if t.grad_fn is not None:
            t.grad_fn._register_hook_dict(t)
    hooks[len(hooks)] = fn


def _before_call(module, args):
    if _running[0] is None:
        _running[0] = sys._getframe(1)
    return None


def _after_call(module, args, output):
    if sys._getframe(1) is not _running[0]:
        return None
    _running[0] = None
    if type(output) is torch.Tensor and output.requires_grad:
        _hook(output, _on_gradient)
    return None


def _on_gradient(grad):
    return None


torch.nn.modules.module.register_module_forward_pre_hook(_before_call)
torch.nn.modules.module.register_module_forward_hook(_after_call, always_call=True)
_wrap = GatedOptimizer.__init__


def _wrap_and_hook(self, optimizer):
    _wrap(self, optimizer)
    for group in optimizer.param_groups:
        for p in group["params"]:
            _hook(p, _on_gradient)


GatedOptimizer.__init__ = _wrap_and_hook
"""
)
LIBRARY: Final = "library"


def _load_harness() -> ModuleType:
    name = "small_model_overhead"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / "small_model_overhead.py")
    if spec is None or spec.loader is None:
        raise ImportError("cannot load small_model_overhead.py next to this script")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


harness: Any = _load_harness()


@dataclasses.dataclass(frozen=True)
class Row:
    """One (workload, batch): per variant, the ratios of its rounds and their median."""

    workload: str
    batch: int
    plain_cpu_ms: float
    ratios: dict[str, list[float]]
    fast_ratios: dict[str, list[float]]

    def median(self, variant: str, *, fast: bool = False) -> float:
        return statistics.median((self.fast_ratios if fast else self.ratios)[variant])


def fastest_tenth_ms(worker: Any) -> float:
    """The 10th percentile of a worker's per-step CPU times (ms): the steps least disturbed by
    other processes on a shared machine."""
    return statistics.quantiles(worker.step_cpu_s, n=10)[0] * 1e3


def _write_stand_ins(root: Path) -> dict[str, Path | None]:
    paths: dict[str, Path | None] = {}
    for i, (variant, source) in enumerate(STAND_INS.items()):
        package = root / f"variant{i}" / "amal_verified"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(source)
        paths[variant] = package.parent
    paths[LIBRARY] = ROOT
    return paths


class WrongPackage(RuntimeError):
    """A gated worker imported another ``amal_verified`` than its variant's."""


def _check_imported_from(worker: Any, variant: str, path: Path) -> None:
    imported = Path(worker.amal_file).resolve() if worker.amal_file else None
    if imported is None or not imported.is_relative_to(path.resolve()):
        raise WrongPackage(f"the {variant} worker imported amal_verified from {imported}, not from {path}")


def measure(
    rounds: int, workloads: Sequence[str], batches: Sequence[int], warmup: int, steps: int | None, pool: int
) -> tuple[list[Row], list[str], dict[str, str]]:
    """Run the rounds; the rows, every parameter difference found (empty when bit-identical) and
    where each variant's workers imported ``amal_verified`` from."""
    differences: list[str] = []
    imported_from: dict[str, str] = {}
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="tracker-floor-") as tmp:
        paths = _write_stand_ins(Path(tmp))
        out_dir = Path(tmp) / "workers"
        out_dir.mkdir()
        per_config: dict[
            tuple[str, int], tuple[list[float], dict[str, list[float]], dict[str, list[float]]]
        ] = {(w, b): ([], {v: [] for v in paths}, {v: [] for v in paths}) for w in workloads for b in batches}
        for r in range(rounds):
            for (w, b), (plain_ms, ratios, fast_ratios) in per_config.items():
                settings = harness.Settings(
                    pairs=1, warmup=warmup, steps=steps, pool=pool, batches=(b,), workloads=(w,)
                )
                # Each round starts one place later in the order, so that no variant always runs
                # right after another.
                order: list[str | None] = [None, *paths]
                order = order[r % len(order) :] + order[: r % len(order)]
                workers: dict[str | None, Any] = {}
                for variant in order:
                    if variant is None:
                        workers[None] = harness.run_worker("plain", w, b, settings, out_dir)
                    else:
                        with_path = dataclasses.replace(settings, amal_path=paths[variant])
                        worker = harness.run_worker("gated", w, b, with_path, out_dir)
                        _check_imported_from(worker, variant, paths[variant])
                        imported_from[variant] = str(Path(worker.amal_file).resolve().parent)
                        workers[variant] = worker
                plain = workers[None]
                plain_ms.append(plain.cpu_median_ms)
                name = harness.WORKLOADS[w]
                line = f"  round {r + 1} {name:20s} batch {b:4d}: plain {plain.cpu_median_ms:7.3f} ms"
                for variant in paths:
                    gated = workers[variant]
                    if (desc := harness.compare_params(plain, gated)) is not None:
                        differences.append(f"{w} batch {b} round {r + 1} {variant}: {desc}")
                    ratios[variant].append(gated.cpu_median_ms / plain.cpu_median_ms)
                    fast_ratios[variant].append(fastest_tenth_ms(gated) / fastest_tenth_ms(plain))
                    line += f", {variant} ×{ratios[variant][-1]:.3f} (×{fast_ratios[variant][-1]:.3f})"
                print(line, flush=True)
        for (w, b), (plain_ms, ratios, fast_ratios) in per_config.items():
            rows.append(Row(w, b, statistics.median(plain_ms), ratios, fast_ratios))
    return rows, differences, imported_from


def print_table(rows: Sequence[Row]) -> None:
    variants = [*STAND_INS, LIBRARY]
    head = f"{'workload':34s} {'batch':>5s} {'plain ms':>9s} " + " ".join(f"{v:>15s}" for v in variants)
    head += f" {'above floor':>12s} {'above design':>12s} {'target':>7s}"
    print("\n" + head + "\n" + "-" * len(head))
    for fast in (False, True):
        for row in rows:
            cells = " ".join(f"{row.median(v, fast=fast):15.3f}" for v in variants)
            above = row.median(LIBRARY, fast=fast) - row.median("dispatch floor", fast=fast)
            above_design = row.median(LIBRARY, fast=fast) - row.median("design floor", fast=fast)
            target = harness.TARGETS.get(row.batch)
            name = harness.WORKLOADS[row.workload] + (", fastest 10 %" if fast else "")
            print(
                f"{name:34s} {row.batch:5d} {row.plain_cpu_ms:9.3f} {cells} "
                f"{above:12.3f} {above_design:12.3f} {target if target is not None else '':>7}"
            )
    print(
        "(CPU-time ratios to plain, median over rounds of the ratio of the workers' median steps; "
        "'fastest 10 %': of their 10th-percentile steps, the least disturbed by other load; 'above "
        "floor': the library's ratio minus the dispatch floor's, what its labelling, module boundary, "
        "gradient labels and checks cost; 'above design': minus the design floor's, what its labelling "
        "and checks cost beyond PyTorch's hooks where it places them)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: measure, print the table; the exit status is in the module docstring."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of plain + every variant (default 5)")
    parser.add_argument("--workloads", nargs="+", choices=sorted(harness.WORKLOADS), default=["wm", "sac"])
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--warmup", type=int, default=10, help="untimed warm-up steps (default 10)")
    parser.add_argument("--steps", type=int, help="timed steps per worker (default: the harness's)")
    parser.add_argument("--pool", type=int, default=16, help="pre-generated batches (default 16)")
    parser.add_argument("--json", type=Path, help="also write the result as JSON to this path")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.warmup < 0 or args.pool < 1 or (args.steps is not None and args.steps < 1):
        parser.error("--rounds, --steps and --pool must be ≥ 1, --warmup ≥ 0")
    print(
        f"tracker_floor: {args.rounds} round(s) of plain, {', '.join(STAND_INS)} and the library; "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    try:
        rows, differences, imported_from = measure(
            args.rounds, args.workloads, args.batches, args.warmup, args.steps, args.pool
        )
    except harness.WorkerFailed as failed:
        print(f"{failed}\n{failed.stdout}\n{failed.stderr}", file=sys.stderr)
        return 2
    except WrongPackage as wrong:
        print(wrong, file=sys.stderr)
        return 2
    print_table(rows)
    commit = harness._git("rev-parse", "--short", "HEAD")
    print(f"library: repository at {commit}; load average at the end {os.getloadavg()[0]:.2f}")
    if args.json is not None:
        summary = {
            "commit": commit,
            "rounds": args.rounds,
            "rows": [dataclasses.asdict(row) for row in rows],
            "parameter_differences": differences,
            "imported_from": imported_from,
        }
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    for desc in differences:
        print(f"PARAMETERS DIFFER: {desc}", file=sys.stderr)
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
