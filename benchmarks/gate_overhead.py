"""Overhead of the isolation gate on one training step of the paper's world model.

What is measured
----------------
The wall-clock time of one world-model training step (forward over a
``batch 256 × sequence 16`` batch, MSE loss, ``backward()``,
``optimizer.step()``, ``zero_grad()``) of the model in
``paper_world_model.py``, on one thread (``torch.set_num_threads(1)``), in two
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
therefore runs in its own fresh subprocess (``--worker plain|gated``); the
parent alternates plain, gated, plain, gated ... for ``--pairs`` rounds.  Each
worker seeds the model identically, generates identical data from a seeded
``torch.Generator``, runs ``--warmup`` untimed steps, then ``--steps`` timed
steps.  The parent compares medians pair by pair and reports

- per-side median step time (ms);
- the ratio gated/plain as the median of the pairwise ratios of medians, and
  overall (median of all gated steps / median of all plain steps);
- PASS/FAIL against the target ratio 1.10 (aim: ≤ 1.03);
- peak RSS per side (``resource.getrusage``) and their ratio;
- whether every worker ended with **bit-identical parameters** (sha256 over
  the raw bytes of all parameters in ``named_parameters()`` order, plus an
  element-wise comparison of the saved arrays): the gate observes, it must not
  change the arithmetic.

Exit status: 0 unless ``--check`` is given, in which case 1 if the ratio exceeds
the target or parameters differ; 2 if a worker fails (no measurement).
``--profile`` additionally runs one gated worker under cProfile and prints the
top functions inside ``amal_verified`` by cumulative time.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TARGET_RATIO = 1.10
AIM_RATIO = 1.03
SEED = 0
DATA_SEED = 12345


@dataclasses.dataclass
class WorkerResult:
    """What one worker process reports (written as JSON next to its parameter file)."""

    side: str
    step_times_s: list[float]
    cpu_times_s: list[float]
    median_ms: float
    cpu_median_ms: float
    minor_faults_per_step: float
    tag_time_s: float
    peak_rss_kb: int
    rss_before_training_kb: int
    param_sha256: str
    params_file: str
    final_loss: float
    amal_imported: bool
    torch_version: str
    num_threads: int


# --------------------------------------------------------------------------- worker side


def _import_model_module() -> Any:
    """Import ``paper_world_model`` (plain torch; never imports amal_verified)."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    import paper_world_model

    return paper_world_model


def _param_digest(model: Any, out_file: Path) -> str:
    """sha256 over every parameter's raw bytes in ``named_parameters()`` order; save them to ``out_file``.

    Called after the timed region; parameter names and shapes are hashed too.
    """
    import numpy as np
    import torch

    digest = hashlib.sha256()
    arrays: dict[str, Any] = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            arr = np.ascontiguousarray(p.detach().cpu().numpy())
            digest.update(name.encode())
            digest.update(str(arr.shape).encode())
            digest.update(arr.tobytes())
            arrays[name] = arr.copy()
    np.savez(out_file, **arrays)
    return digest.hexdigest()


def run_worker(side: str, steps: int, warmup: int, out_dir: Path, profile_file: Path | None) -> None:
    """Time ``warmup + steps`` training steps on ``side`` ("plain"/"gated"); write results to ``out_dir``."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(SEED)

    if side == "gated":
        import amal_verified

    pwm = _import_model_module()
    model = pwm.PaperWorldModel()
    batches = pwm.make_batches(warmup + steps, seed=DATA_SEED)
    adam = torch.optim.Adam(model.parameters(), lr=pwm.LR)

    t0 = time.perf_counter()
    if side == "gated":
        batches = [b.map(lambda x: amal_verified.primary(x, source="real-env")) for b in batches]
        optimizer: Any = amal_verified.GatedOptimizer(adam)
    else:
        optimizer = adam
    tag_time = time.perf_counter() - t0

    for b in batches[:warmup]:
        pwm.train_step(model, optimizer, b)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    profiler = None
    if profile_file is not None:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    times: list[float] = []
    cpu_times: list[float] = []
    loss = None
    for b in batches[warmup:]:
        cpu_start = time.process_time()
        start = time.perf_counter()
        loss = pwm.train_step(model, optimizer, b)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(str(profile_file))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak_rss = usage.ru_maxrss
    faults_per_step = (usage.ru_minflt - faults_before) / max(1, len(times))

    params_file = out_dir / f"params-{side}-{os.getpid()}.npz"
    digest = _param_digest(model, params_file)
    final_loss = float(loss) if loss is not None else float("nan")

    result = WorkerResult(
        side=side,
        step_times_s=times,
        cpu_times_s=cpu_times,
        median_ms=statistics.median(times) * 1e3,
        cpu_median_ms=statistics.median(cpu_times) * 1e3,
        minor_faults_per_step=faults_per_step,
        tag_time_s=tag_time,
        peak_rss_kb=peak_rss,
        rss_before_training_kb=rss_before,
        param_sha256=digest,
        params_file=str(params_file),
        final_loss=final_loss,
        amal_imported="amal_verified" in sys.modules,
        torch_version=torch.__version__,
        num_threads=torch.get_num_threads(),
    )
    (out_dir / f"result-{side}-{os.getpid()}.json").write_text(json.dumps(dataclasses.asdict(result)))
    print(json.dumps({"result_file": str(out_dir / f"result-{side}-{os.getpid()}.json")}))


def run_interleaved(steps: int, warmup: int, out_dir: Path) -> None:
    """Plain and gated stepped alternately in one process, plus a plain baseline timed before import.

    Three models with the same seed and data: ``before`` is trained (and timed) before
    ``amal_verified`` is imported, so it pays nothing; then ``plain`` and ``gated`` alternate step
    by step, both after the library's global hooks are installed.  Reported: the interleaved ratio
    gated/plain, and the *hook tax* plain-after/plain-before -- what the installed hooks cost code
    that never tags anything.  All three must end bit-identical.
    """
    import torch

    torch.set_num_threads(1)
    pwm = _import_model_module()
    batches = pwm.make_batches(warmup + steps, seed=DATA_SEED)

    def fresh() -> tuple[Any, Any]:
        torch.manual_seed(SEED)
        model = pwm.PaperWorldModel()
        return model, torch.optim.Adam(model.parameters(), lr=pwm.LR)

    def timed(model: Any, optimizer: Any, batch: Any) -> float:
        start = time.perf_counter()
        pwm.train_step(model, optimizer, batch)
        return time.perf_counter() - start

    before_model, before_opt = fresh()
    before = [timed(before_model, before_opt, b) for b in batches][warmup:]

    import amal_verified

    plain_model, plain_opt = fresh()
    gated_model, adam = fresh()
    gated_opt = amal_verified.GatedOptimizer(adam)
    tagged = [b.map(lambda x: amal_verified.primary(x, source="real-env")) for b in batches]
    plain: list[float] = []
    gated: list[float] = []
    for b, tb in zip(batches, tagged, strict=True):
        plain.append(timed(plain_model, plain_opt, b))
        gated.append(timed(gated_model, gated_opt, tb))
    plain, gated = plain[warmup:], gated[warmup:]

    digests = {
        name: _param_digest(model, out_dir / f"params-interleaved-{name}.npz")
        for name, model in (("before", before_model), ("plain", plain_model), ("gated", gated_model))
    }
    summary = {
        "before_ms": statistics.median(before) * 1e3,
        "plain_ms": statistics.median(plain) * 1e3,
        "gated_ms": statistics.median(gated) * 1e3,
        "pairwise_ratio": statistics.median(g / p for g, p in zip(gated, plain, strict=True)),
        "digests": digests,
    }
    (out_dir / "result-interleaved.json").write_text(json.dumps(summary))
    print(json.dumps({"result_file": str(out_dir / "result-interleaved.json")}))


def _interleaved(args: argparse.Namespace, out_dir: Path) -> tuple[float, float, bool]:
    """Run the one-process interleaved worker; print and return (ratio, hook tax, identical)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "interleaved"]
    command += ["--out-dir", str(out_dir), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise WorkerFailed(f"interleaved worker exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    r = json.loads((out_dir / "result-interleaved.json").read_text())
    ratio = r["gated_ms"] / r["plain_ms"]
    tax = r["plain_ms"] / r["before_ms"]
    identical = len(set(r["digests"].values())) == 1
    print(
        f"\nin one process (plain and gated stepped alternately after import; baseline timed before import)\n"
        f"  plain before import {r['before_ms']:.2f} ms, plain after {r['plain_ms']:.2f} ms, "
        f"gated {r['gated_ms']:.2f} ms\n"
        f"  ratio gated/plain (interleaved): {ratio:.3f} "
        f"(median of per-step ratios {r['pairwise_ratio']:.3f})\n"
        f"  hook tax on untagged code (plain after/before import): {tax:.3f}\n"
        f"  parameters: {'bit-identical' if identical else 'DIFFERENT'} across the three models",
        flush=True,
    )
    return ratio, tax, identical


# --------------------------------------------------------------------------- parent side


def _spawn(
    side: str, args: argparse.Namespace, out_dir: Path, profile_file: Path | None = None
) -> WorkerResult:
    """Run one worker in a fresh interpreter and load its result."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        side,
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--out-dir",
        str(out_dir),
    ]
    if profile_file is not None:
        cmd += ["--profile-file", str(profile_file)]
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
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
    return WorkerResult(**json.loads(Path(result_file).read_text()))


class WorkerFailed(RuntimeError):
    """A worker subprocess exited non-zero or produced no result."""

    def __init__(self, side: str, returncode: int, stdout: str, stderr: str) -> None:
        super().__init__(f"{side} worker failed (exit {returncode})")
        self.side, self.returncode, self.stdout, self.stderr = side, returncode, stdout, stderr


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


def run_parent(args: argparse.Namespace) -> int:
    """Alternate plain/gated workers, compare, print the summary; return the exit status."""
    import torch  # only for the version string and thread count in the header

    tmp = tempfile.TemporaryDirectory(prefix="amal-gate-bench-")
    out_dir = Path(tmp.name)
    print(
        f"gate_overhead: paper world model, batch 256 × seq 16, obs 17, act 6, Adam lr 3e-4, 1 thread\n"
        f"  torch {torch.__version__}, python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs; {args.pairs} pair(s) of fresh processes, "
        f"{args.warmup} warm-up + {args.steps} timed steps each",
        flush=True,
    )
    plain: list[WorkerResult] = []
    gated: list[WorkerResult] = []
    try:
        for i in range(args.pairs):
            for side, bucket in (("plain", plain), ("gated", gated)):
                r = _spawn(side, args, out_dir)
                bucket.append(r)
                print(
                    f"  pair {i + 1} {side:5s}: median {r.median_ms:8.2f} ms/step "
                    f"(min {min(r.step_times_s) * 1e3:.2f}, max {max(r.step_times_s) * 1e3:.2f}; "
                    f"CPU {r.cpu_median_ms:.2f}), peak RSS {_fmt_mb(r.peak_rss_kb)}, loss {r.final_loss:.5f}",
                    flush=True,
                )
    except WorkerFailed as exc:
        print(f"\nERROR: {exc}\n--- stdout ---\n{exc.stdout}\n--- stderr ---\n{exc.stderr}", file=sys.stderr)
        tmp.cleanup()
        return 2

    pair_ratios = [g.median_ms / p.median_ms for p, g in zip(plain, gated, strict=True)]
    ratio = statistics.median(pair_ratios)
    plain_all = [t for r in plain for t in r.step_times_s]
    gated_all = [t for r in gated for t in r.step_times_s]
    overall = statistics.median(gated_all) / statistics.median(plain_all)
    # Less sensitive to other load on the machine: process CPU time per step, and per-worker minimum.
    cpu_ratio = statistics.median(
        g.cpu_median_ms / p.cpu_median_ms for p, g in zip(plain, gated, strict=True)
    )
    min_ratio = statistics.median(
        min(g.step_times_s) / min(p.step_times_s) for p, g in zip(plain, gated, strict=True)
    )
    mem_ratio = statistics.median(r.peak_rss_kb for r in gated) / statistics.median(
        r.peak_rss_kb for r in plain
    )

    reference = plain[0]
    param_lines: list[str] = []
    identical = True
    for r in [*plain[1:], *gated]:
        same, desc = _compare_params(reference, r)
        identical &= same
        if not same:
            param_lines.append(f"    {r.side} (pid file {Path(r.params_file).name}) vs plain #1: {desc}")
    plain_clean = not any(r.amal_imported for r in plain)

    verdict = "PASS" if ratio <= TARGET_RATIO else "FAIL"
    print("\nsummary")
    print(f"  plain median step: {statistics.median(r.median_ms for r in plain):8.2f} ms")
    print(f"  gated median step: {statistics.median(r.median_ms for r in gated):8.2f} ms")
    print(
        f"  CPU time per step: plain {statistics.median(r.cpu_median_ms for r in plain):.2f} ms, "
        f"gated {statistics.median(r.cpu_median_ms for r in gated):.2f} ms"
    )
    print(f"  pairwise ratios gated/plain: {', '.join(f'{x:.3f}' for x in pair_ratios)}")
    print(f"  ratio (median of pairwise): {ratio:.3f}")
    print(f"  ratio (overall medians):    {overall:.3f}")
    print(f"  ratio (CPU time, pairwise): {cpu_ratio:.3f}   [less sensitive to other load]")
    print(f"  ratio (pairwise minimums):  {min_ratio:.3f}")
    print(f"  target ≤ {TARGET_RATIO:.2f} (aim ≤ {AIM_RATIO:.2f}): {verdict}")
    tag_ms = statistics.median(r.tag_time_s for r in gated) * 1e3
    print(f"  tagging {args.warmup + args.steps} batches (once, outside the timed steps): {tag_ms:.1f} ms")
    print(
        f"  peak RSS: plain {_fmt_mb(statistics.median(r.peak_rss_kb for r in plain))}, "
        f"gated {_fmt_mb(statistics.median(r.peak_rss_kb for r in gated))}, ratio {mem_ratio:.3f}"
    )
    faults_plain = statistics.median(r.minor_faults_per_step for r in plain)
    faults_gated = statistics.median(r.minor_faults_per_step for r in gated)
    print(f"  minor page faults per step: plain {faults_plain:.0f}, gated {faults_gated:.0f}")
    print(f"  plain workers never imported amal_verified: {'yes' if plain_clean else 'NO'}")
    print(
        f"  parameters: {'bit-identical' if identical else 'DIFFER'} across all "
        f"{len(plain) + len(gated)} workers (sha256 {reference.param_sha256[:16]}…)"
    )
    for line in param_lines:
        print(line)

    if args.json is not None:
        summary = {
            "plain_median_ms": statistics.median(r.median_ms for r in plain),
            "gated_median_ms": statistics.median(r.median_ms for r in gated),
            "pair_ratios": pair_ratios,
            "ratio": ratio,
            "overall_ratio": overall,
            "cpu_ratio": cpu_ratio,
            "min_ratio": min_ratio,
            "target": TARGET_RATIO,
            "aim": AIM_RATIO,
            "pass": verdict == "PASS",
            "memory_ratio": mem_ratio,
            "params_identical": identical,
            "plain_never_imported_amal": plain_clean,
            "workers": [dataclasses.asdict(r) for r in [*plain, *gated]],
        }
        Path(args.json).write_text(json.dumps(summary, indent=2))

    _, _, interleaved_identical = _interleaved(args, out_dir)
    if args.profile:
        _profile_gated(args, out_dir)
    tmp.cleanup()

    if args.check and (ratio > TARGET_RATIO or not identical or not plain_clean or not interleaved_identical):
        return 1
    return 0


def _profile_gated(args: argparse.Namespace, out_dir: Path) -> None:
    """Run one gated worker under cProfile and print where time goes inside amal_verified."""
    import pstats

    prof = out_dir / "gated.prof"
    r = _spawn("gated", args, out_dir, profile_file=prof)
    print(f"\ncProfile of one gated worker ({args.steps} timed steps; median {r.median_ms:.2f} ms/step)")
    stats = pstats.Stats(str(prof))
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    total = stats.total_tt  # type: ignore[attr-defined]
    own = sum(tt for (file, _, _), (_, _, tt, _, _) in raw.items() if "amal_verified" in file)
    print(
        f"own time inside amal_verified: {own:.3f} s of {total:.3f} s profiled "
        f"({100 * own / total if total else 0:.1f}%; cProfile inflates Python-heavy code)"
    )
    stats.sort_stats("cumulative")
    print(f"top {args.profile_top} functions inside amal_verified by cumulative time:")
    stats.print_stats(r"amal_verified", args.profile_top)
    stats.sort_stats("tottime")
    print(f"top {args.profile_top} functions inside amal_verified by own time:")
    stats.print_stats(r"amal_verified", args.profile_top)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parent (default) or worker (``--worker``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--worker", choices=["plain", "gated", "interleaved"], help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profile-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per worker (default 30)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed warm-up steps per worker (default 5)")
    parser.add_argument("--pairs", type=int, default=3, help="plain/gated process pairs (default 3)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 pair, 1 warm-up + 3 timed steps")
    parser.add_argument("--check", action="store_true", help="exit 1 if ratio > 1.10 or parameters differ")
    parser.add_argument("--json", type=Path, help="also write the summary as JSON to this path")
    parser.add_argument("--profile", action="store_true", help="also cProfile one gated worker")
    parser.add_argument("--profile-top", type=int, default=15, help="functions to list (default 15)")
    args = parser.parse_args(argv)

    if args.worker is not None:
        if args.out_dir is None:
            parser.error("--worker needs --out-dir")
        if args.worker == "interleaved":
            run_interleaved(args.steps, args.warmup, args.out_dir)
        else:
            run_worker(args.worker, args.steps, args.warmup, args.out_dir, args.profile_file)
        return 0
    if args.quick:
        args.pairs, args.warmup, args.steps = 1, 1, 3
    if args.steps < 1 or args.pairs < 1 or args.warmup < 0:
        parser.error("--steps and --pairs must be ≥ 1, --warmup ≥ 0")
    return run_parent(args)


if __name__ == "__main__":
    sys.exit(main())
