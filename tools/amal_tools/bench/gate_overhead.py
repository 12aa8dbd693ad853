"""Overhead of the isolation gate on one training step of the paper's world model.

What is measured
----------------
The wall-clock time of one world-model training step (forward over a
``batch 256 × sequence 16`` batch, MSE loss, ``backward()``,
``optimizer.step()``, ``zero_grad()``) of the model in
``_plain_world_model.py``, on one thread (``torch.set_num_threads(1)``), in two
configurations:

- **plain**: plain tensors, plain ``torch.optim.Adam(lr=3e-4)``; the worker
  process never imports ``amal_verified`` (checked via ``sys.modules``);
- **gated**: the same data tagged with ``amal_verified.primary(x,
  source="real-env")`` and the optimizer wrapped in
  ``amal_verified.GatedOptimizer``.

Tagging happens once, before the timed region (data are tagged when they are
ingested, not on every step); its cost is reported separately.

Method
------
The library may install global hooks on import or on first use, so a plain
baseline timed in the same process would pay for them too.  Each side
therefore runs in its own fresh interpreter: the worker ``_gate_worker.py`` is
run *by file path* with ``python -P`` (so the package ``__init__`` is never imported, and
the package directory is not put on ``sys.path``; it loads the model file next to it by
path).  :func:`measure_gate_overhead` alternates
plain, gated, plain, gated ... for ``pairs`` rounds.  Each worker seeds the
model identically, generates identical data from a seeded ``torch.Generator``,
runs ``warmup`` untimed steps, then ``steps`` timed steps.  Reported
(:class:`GateOverheadResult`):

- per-side median step time (ms);
- the ratio gated/plain as the median of the pairwise ratios of medians, and
  overall (median of all gated steps / median of all plain steps), by CPU time
  and by per-worker minimum;
- PASS/FAIL against the target ratio 1.10 (aim: ≤ 1.03);
- peak RSS per side (``resource.getrusage``) and their ratio;
- whether every worker ended with **bit-identical parameters** (sha256 over
  the raw bytes of all parameters in ``named_parameters()`` order, plus an
  element-wise comparison of the saved arrays): the gate observes, it must not
  change the arithmetic.

:func:`measure_interleaved` runs plain and gated alternately step by step in
*one* process, after timing a plain baseline before ``amal_verified`` is
imported, and reports the hook tax (plain after import / plain before).

:func:`main` is the command line (``benchmarks/gate_overhead.py`` calls it).
Exit status: 0 unless ``--check`` is given, in which case 1 if the ratio
exceeds the target or parameters differ; 2 if a worker fails (no measurement).
``--profile`` additionally runs one gated worker under cProfile and prints the
top functions inside ``amal_verified`` by cumulative time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from amal_tools.bench._gate_worker import WorkerResult
from amal_verified.common.runtime_checks import checked

__all__ = [
    "AIM_RATIO",
    "TARGET_RATIO",
    "GateOverheadResult",
    "InterleavedResult",
    "WorkerFailed",
    "WorkerResult",
    "main",
    "measure_gate_overhead",
    "measure_interleaved",
]

TARGET_RATIO: Final = 1.10
AIM_RATIO: Final = 1.03
WORKER_SCRIPT: Final = Path(__file__).resolve().with_name("_gate_worker.py")


class WorkerFailed(RuntimeError):
    """A worker subprocess exited non-zero or produced no result."""

    def __init__(self, side: str, returncode: int, stdout: str, stderr: str) -> None:
        super().__init__(f"{side} worker failed (exit {returncode})")
        self.side, self.returncode, self.stdout, self.stderr = side, returncode, stdout, stderr


@dataclasses.dataclass(frozen=True)
class GateOverheadResult:
    """The alternating fresh-process measurement (see the module docstring)."""

    pairs: int
    warmup: int
    steps: int
    plain: tuple[WorkerResult, ...]
    gated: tuple[WorkerResult, ...]
    pair_ratios: tuple[float, ...]
    ratio: float
    overall_ratio: float
    cpu_ratio: float
    min_ratio: float
    memory_ratio: float
    params_identical: bool
    param_differences: tuple[str, ...]
    plain_never_imported_amal: bool

    @property
    def passed(self) -> bool:
        """``ratio`` within :data:`TARGET_RATIO`."""
        return self.ratio <= TARGET_RATIO

    @property
    def plain_median_ms(self) -> float:
        return statistics.median(r.median_ms for r in self.plain)

    @property
    def gated_median_ms(self) -> float:
        return statistics.median(r.median_ms for r in self.gated)

    def summary(self) -> dict[str, Any]:
        """The JSON summary ``--json`` writes."""
        return {
            "plain_median_ms": self.plain_median_ms,
            "gated_median_ms": self.gated_median_ms,
            "pair_ratios": list(self.pair_ratios),
            "ratio": self.ratio,
            "overall_ratio": self.overall_ratio,
            "cpu_ratio": self.cpu_ratio,
            "min_ratio": self.min_ratio,
            "target": TARGET_RATIO,
            "aim": AIM_RATIO,
            "pass": self.passed,
            "memory_ratio": self.memory_ratio,
            "params_identical": self.params_identical,
            "plain_never_imported_amal": self.plain_never_imported_amal,
            "workers": [dataclasses.asdict(r) for r in (*self.plain, *self.gated)],
        }


@dataclasses.dataclass(frozen=True)
class InterleavedResult:
    """Plain and gated stepped alternately in one process (see :func:`measure_interleaved`)."""

    before_ms: float
    plain_ms: float
    gated_ms: float
    pairwise_ratio: float
    params_identical: bool

    @property
    def ratio(self) -> float:
        """Median gated step / median plain step, both after import."""
        return self.gated_ms / self.plain_ms

    @property
    def hook_tax(self) -> float:
        """Median plain step after importing ``amal_verified`` / before."""
        return self.plain_ms / self.before_ms


def _worker_command(
    side: str, steps: int, warmup: int, out_dir: Path, profile_file: Path | None
) -> list[str]:
    # -P: do not put the worker's directory (amal_verified/bench) on sys.path, where its modules
    # (tasks.py, stats.py, ...) would shadow top-level modules of the same names.
    cmd = [sys.executable, "-P", str(WORKER_SCRIPT), "--side", side, "--steps", str(steps)]
    cmd += ["--warmup", str(warmup)]
    cmd += ["--out-dir", str(out_dir)]
    if profile_file is not None:
        cmd += ["--profile-file", str(profile_file)]
    return cmd


def _run_worker(side: str, steps: int, warmup: int, out_dir: Path, profile_file: Path | None = None) -> Path:
    """Run one worker in a fresh interpreter; the path of its result file."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(
        _worker_command(side, steps, warmup, out_dir, profile_file),
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise WorkerFailed(side, proc.returncode, proc.stdout, proc.stderr)
    result_file = None
    for line in proc.stdout.splitlines():
        if line.startswith('{"result_file"'):
            result_file = json.loads(line)["result_file"]
    if result_file is None:
        raise WorkerFailed(side, proc.returncode, proc.stdout, proc.stderr)
    if proc.stderr.strip():
        print(f"[{side} worker stderr]\n{proc.stderr.rstrip()}", file=sys.stderr)
    return Path(result_file)


def _spawn(
    side: str, steps: int, warmup: int, out_dir: Path, profile_file: Path | None = None
) -> WorkerResult:
    result_file = _run_worker(side, steps, warmup, out_dir, profile_file)
    return WorkerResult(**json.loads(result_file.read_text()))


def _compare_params(a: WorkerResult, b: WorkerResult) -> tuple[bool, str]:
    """Bit-for-bit comparison of two workers' saved parameters; a description of any difference."""
    import numpy as np

    if a.param_sha256 == b.param_sha256:
        with np.load(a.params_file) as fa, np.load(b.params_file) as fb:
            same = list(fa.files) == list(fb.files) and all(
                fa[k].tobytes() == fb[k].tobytes() for k in fa.files
            )
        if same:
            return True, "bit-identical"
        return False, "sha256 equal but arrays differ (?)"
    diffs: list[str] = []
    with np.load(a.params_file) as fa, np.load(b.params_file) as fb:
        if list(fa.files) != list(fb.files):
            return False, f"different parameter names: {fa.files} vs {fb.files}"
        for k in fa.files:
            x, y = fa[k], fb[k]
            if x.shape != y.shape:
                diffs.append(f"{k}: shape {x.shape} vs {y.shape}")
            elif x.tobytes() != y.tobytes():
                n = int(np.sum(x != y))
                diffs.append(f"{k}: {n}/{x.size} elements differ, max |Δ| = {np.max(np.abs(x - y)):.3e}")
    return False, "; ".join(diffs) or "sha256 differs"


def _fmt_mb(kb: float) -> str:
    return f"{kb / 1024:.1f} MB"


def _check_sizes(pairs: int, warmup: int, steps: int) -> None:
    if pairs < 1 or steps < 1 or warmup < 0:
        raise ValueError(f"need pairs >= 1, steps >= 1, warmup >= 0; got {pairs}, {steps}, {warmup}")


@checked
def measure_gate_overhead(
    *,
    pairs: int = 3,
    warmup: int = 5,
    steps: int = 30,
    out_dir: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> GateOverheadResult:
    """Alternate ``pairs`` plain/gated fresh worker processes and compare them (module docstring).

    Workers write results and parameter files into ``out_dir`` (a temporary directory,
    removed afterwards, if ``None``).  ``log`` receives one line per worker.  Raises
    :class:`WorkerFailed` if a worker fails, ``ValueError`` for sizes out of range.
    """
    _check_sizes(pairs, warmup, steps)
    if out_dir is None:
        with tempfile.TemporaryDirectory(prefix="amal-gate-bench-") as tmp:
            return measure_gate_overhead(pairs=pairs, warmup=warmup, steps=steps, out_dir=Path(tmp), log=log)
    plain: list[WorkerResult] = []
    gated: list[WorkerResult] = []
    for i in range(pairs):
        for side, bucket in (("plain", plain), ("gated", gated)):
            r = _spawn(side, steps, warmup, out_dir)
            bucket.append(r)
            if log is not None:
                log(
                    f"  pair {i + 1} {side:5s}: median {r.median_ms:8.2f} ms/step "
                    f"(min {min(r.step_times_s) * 1e3:.2f}, max {max(r.step_times_s) * 1e3:.2f}; "
                    f"CPU {r.cpu_median_ms:.2f}), peak RSS {_fmt_mb(r.peak_rss_kb)}, loss {r.final_loss:.5f}"
                )

    pair_ratios = tuple(g.median_ms / p.median_ms for p, g in zip(plain, gated, strict=True))
    plain_all = [t for r in plain for t in r.step_times_s]
    gated_all = [t for r in gated for t in r.step_times_s]
    reference = plain[0]
    identical = True
    differences: list[str] = []
    for r in [*plain[1:], *gated]:
        same, desc = _compare_params(reference, r)
        identical &= same
        if not same:
            differences.append(f"{r.side} (pid file {Path(r.params_file).name}) vs plain #1: {desc}")
    return GateOverheadResult(
        pairs=pairs,
        warmup=warmup,
        steps=steps,
        plain=tuple(plain),
        gated=tuple(gated),
        pair_ratios=pair_ratios,
        ratio=statistics.median(pair_ratios),
        overall_ratio=statistics.median(gated_all) / statistics.median(plain_all),
        # Less sensitive to other load on the machine: process CPU time per step, per-worker minimum.
        cpu_ratio=statistics.median(
            g.cpu_median_ms / p.cpu_median_ms for p, g in zip(plain, gated, strict=True)
        ),
        min_ratio=statistics.median(
            min(g.step_times_s) / min(p.step_times_s) for p, g in zip(plain, gated, strict=True)
        ),
        memory_ratio=statistics.median(r.peak_rss_kb for r in gated)
        / statistics.median(r.peak_rss_kb for r in plain),
        params_identical=identical,
        param_differences=tuple(differences),
        plain_never_imported_amal=not any(r.amal_imported for r in plain),
    )


@checked
def measure_interleaved(
    *, warmup: int = 5, steps: int = 30, out_dir: Path | None = None
) -> InterleavedResult:
    """Plain and gated alternately in one fresh process, after a plain baseline timed before import.

    Three models with the same seed and data; all three must end bit-identical
    (:attr:`InterleavedResult.params_identical`).  Raises :class:`WorkerFailed` if the worker fails.
    """
    _check_sizes(1, warmup, steps)
    if out_dir is None:
        with tempfile.TemporaryDirectory(prefix="amal-gate-bench-") as tmp:
            return measure_interleaved(warmup=warmup, steps=steps, out_dir=Path(tmp))
    r = json.loads(_run_worker("interleaved", steps, warmup, out_dir).read_text())
    return InterleavedResult(
        before_ms=r["before_ms"],
        plain_ms=r["plain_ms"],
        gated_ms=r["gated_ms"],
        pairwise_ratio=r["pairwise_ratio"],
        params_identical=len(set(r["digests"].values())) == 1,
    )


def _print_summary(result: GateOverheadResult, warmup: int, steps: int) -> None:
    plain, gated = result.plain, result.gated
    print("\nsummary")
    print(f"  plain median step: {result.plain_median_ms:8.2f} ms")
    print(f"  gated median step: {result.gated_median_ms:8.2f} ms")
    print(
        f"  CPU time per step: plain {statistics.median(r.cpu_median_ms for r in plain):.2f} ms, "
        f"gated {statistics.median(r.cpu_median_ms for r in gated):.2f} ms"
    )
    print(f"  pairwise ratios gated/plain: {', '.join(f'{x:.3f}' for x in result.pair_ratios)}")
    print(f"  ratio (median of pairwise): {result.ratio:.3f}")
    print(f"  ratio (overall medians):    {result.overall_ratio:.3f}")
    print(f"  ratio (CPU time, pairwise): {result.cpu_ratio:.3f}   [less sensitive to other load]")
    print(f"  ratio (pairwise minimums):  {result.min_ratio:.3f}")
    verdict = "PASS" if result.passed else "FAIL"
    print(f"  target ≤ {TARGET_RATIO:.2f} (aim ≤ {AIM_RATIO:.2f}): {verdict}")
    tag_ms = statistics.median(r.tag_time_s for r in gated) * 1e3
    print(f"  tagging {warmup + steps} batches (once, outside the timed steps): {tag_ms:.1f} ms")
    print(
        f"  peak RSS: plain {_fmt_mb(statistics.median(r.peak_rss_kb for r in plain))}, "
        f"gated {_fmt_mb(statistics.median(r.peak_rss_kb for r in gated))}, ratio {result.memory_ratio:.3f}"
    )
    faults_plain = statistics.median(r.minor_faults_per_step for r in plain)
    faults_gated = statistics.median(r.minor_faults_per_step for r in gated)
    print(f"  minor page faults per step: plain {faults_plain:.0f}, gated {faults_gated:.0f}")
    print(
        f"  plain workers never imported amal_verified: {'yes' if result.plain_never_imported_amal else 'NO'}"
    )
    print(
        f"  parameters: {'bit-identical' if result.params_identical else 'DIFFER'} across all "
        f"{len(plain) + len(gated)} workers (sha256 {plain[0].param_sha256[:16]}…)"
    )
    for line in result.param_differences:
        print(f"    {line}")


def _print_interleaved(r: InterleavedResult) -> None:
    print(
        f"\nin one process (plain and gated stepped alternately after import; baseline timed before import)\n"
        f"  plain before import {r.before_ms:.2f} ms, plain after {r.plain_ms:.2f} ms, "
        f"gated {r.gated_ms:.2f} ms\n"
        f"  ratio gated/plain (interleaved): {r.ratio:.3f} "
        f"(median of per-step ratios {r.pairwise_ratio:.3f})\n"
        f"  hook tax on untagged code (plain after/before import): {r.hook_tax:.3f}\n"
        f"  parameters: {'bit-identical' if r.params_identical else 'DIFFERENT'} across the three models",
        flush=True,
    )


def _profile_gated(steps: int, warmup: int, top: int, out_dir: Path) -> None:
    """Run one gated worker under cProfile and print where time goes inside amal_verified."""
    import pstats

    prof = out_dir / "gated.prof"
    r = _spawn("gated", steps, warmup, out_dir, profile_file=prof)
    print(f"\ncProfile of one gated worker ({steps} timed steps; median {r.median_ms:.2f} ms/step)")
    stats = pstats.Stats(str(prof))
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    total = stats.total_tt  # type: ignore[attr-defined]
    own = sum(tt for (file, _, _), (_, _, tt, _, _) in raw.items() if "amal_verified" in file)
    print(
        f"own time inside amal_verified: {own:.3f} s of {total:.3f} s profiled "
        f"({100 * own / total if total else 0:.1f}%; cProfile inflates Python-heavy code)"
    )
    stats.sort_stats("cumulative")
    print(f"top {top} functions inside amal_verified by cumulative time:")
    stats.print_stats(r"amal_verified", top)
    stats.sort_stats("tottime")
    print(f"top {top} functions inside amal_verified by own time:")
    stats.print_stats(r"amal_verified", top)


def _run(args: argparse.Namespace, out_dir: Path) -> int:
    import torch  # only for the version string in the header

    print(
        f"gate_overhead: paper world model, batch 256 × seq 16, obs 17, act 6, Adam lr 3e-4, 1 thread\n"
        f"  torch {torch.__version__}, python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs; {args.pairs} pair(s) of fresh processes, "
        f"{args.warmup} warm-up + {args.steps} timed steps each",
        flush=True,
    )
    try:
        result = measure_gate_overhead(
            pairs=args.pairs,
            warmup=args.warmup,
            steps=args.steps,
            out_dir=out_dir,
            log=lambda line: print(line, flush=True),
        )
    except WorkerFailed as exc:
        print(f"\nERROR: {exc}\n--- stdout ---\n{exc.stdout}\n--- stderr ---\n{exc.stderr}", file=sys.stderr)
        return 2
    _print_summary(result, args.warmup, args.steps)
    if args.json is not None:
        Path(args.json).write_text(json.dumps(result.summary(), indent=2))
    try:
        interleaved = measure_interleaved(warmup=args.warmup, steps=args.steps, out_dir=out_dir)
        _print_interleaved(interleaved)
        if args.profile:
            _profile_gated(args.steps, args.warmup, args.profile_top, out_dir)
    except WorkerFailed as exc:
        print(f"\nERROR: {exc}\n--- stdout ---\n{exc.stdout}\n--- stderr ---\n{exc.stderr}", file=sys.stderr)
        return 2
    ok = result.passed and result.params_identical and result.plain_never_imported_amal
    if args.check and not (ok and interleaved.params_identical):
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: measure, print the summary; the exit status is described in the module docstring."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0] or None)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per worker (default 30)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed warm-up steps per worker (default 5)")
    parser.add_argument("--pairs", type=int, default=3, help="plain/gated process pairs (default 3)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 pair, 1 warm-up + 3 timed steps")
    parser.add_argument("--check", action="store_true", help="exit 1 if ratio > 1.10 or parameters differ")
    parser.add_argument("--json", type=Path, help="also write the summary as JSON to this path")
    parser.add_argument("--profile", action="store_true", help="also cProfile one gated worker")
    parser.add_argument("--profile-top", type=int, default=15, help="functions to list (default 15)")
    args = parser.parse_args(argv)
    if args.quick:
        args.pairs, args.warmup, args.steps = 1, 1, 3
    if args.steps < 1 or args.pairs < 1 or args.warmup < 0:
        parser.error("--steps and --pairs must be ≥ 1, --warmup ≥ 0")
    with tempfile.TemporaryDirectory(prefix="amal-gate-bench-") as tmp:
        return _run(args, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
