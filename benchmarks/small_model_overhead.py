"""Overhead of the isolation gate on CleanRL-sized training steps (batch 32 and 256, one thread).

    .venv/bin/python benchmarks/small_model_overhead.py              # 5 pairs, about 3 minutes on 2 cores
    .venv/bin/python benchmarks/small_model_overhead.py --quick      # smoke run: 1 pair, 3 steps
    .venv/bin/python benchmarks/small_model_overhead.py --check      # exit 1 over target or params differ
    .venv/bin/python benchmarks/small_model_overhead.py --profile    # + cProfile of one gated worker
    .venv/bin/python benchmarks/small_model_overhead.py --json summary.json

What is measured
----------------
The cost ratio gated/plain of two workloads, at batch sizes 32 and 256, with
``torch.set_num_threads(1)`` (and ``OMP_NUM_THREADS=1``); the workloads are in
``_small_model_worker.py`` next to this file, written the way a CleanRL user writes them:

- **world-model update**: an MLP world model (obs 17 + action 6 → 256 → 256 → obs 17 +
  reward 1, ReLU), Adam lr 3e-4; ``pred = wm(torch.cat([obs, act], 1))``, MSE against
  ``torch.cat([next_obs, rew.unsqueeze(1)], 1)``, ``zero_grad()``, ``backward()``, ``step()``;
- **whole SAC step**: CleanRL ``sac_continuous_action.py`` on the same batch (two soft
  Q-networks with targets, a tanh-squashed Gaussian actor, automatic entropy tuning, policy
  update and Polyak target update every step), plus the world-model update above.

Each step samples its batch (a clone of the step's entry in a fixed pool of batches drawn from
a seeded ``torch.Generator``, identical on both sides). The **plain** side is that script; the
**gated** side adds what a user adds: the five batch tensors are tagged in place each step
(``obs = av.primary(obs, source="real-env")`` ...), so every network reading them reads tagged
data, and only the world model's optimizer is wrapped in ``av.GatedOptimizer``; the SAC
optimizers stay plain ``torch.optim.Adam``. Sampling and tagging are inside the timed step.

Method
------
The library installs global hooks when data is first tagged, so a plain baseline in the same
process would pay for them. Every measurement is therefore a fresh interpreter running the
worker *by file path* with ``python -P`` (its directory is not put on ``sys.path``); the plain
worker never imports ``amal_verified`` and fails (exit status 3) if ``sys.modules`` holds it.
For ``--pairs`` rounds, each (workload, batch) configuration runs a plain and a gated worker
one after the other, the plain one first in even rounds and second in odd ones: plain, gated,
gated, plain, plain, gated ... Each worker seeds its models identically, runs
``--warmup`` untimed steps and then ``--steps`` timed ones (default 200 world-model updates or
60 SAC steps), and records each step's wall time (``time.perf_counter``) and its thread's CPU
time (``time.thread_time``). ``--quick`` (1 pair, 1 + 3 steps) runs two workers at a time
(``--jobs``): its timings mean nothing, it checks that everything runs and stays bit-identical.

Reported per configuration: the median per side (median over workers of each worker's median
step); the ratio gated/plain as the **median of the pairwise ratios of medians**, by CPU time
(the headline: on shared, loaded machines a process waiting for a core accrues wall time, not
CPU time) and by wall time; as a supplementary figure, the same for each worker's fastest step's
CPU time ("min ratio", the least disturbed by other load); and the ratio of median peak RSS
(``ru_maxrss``, which includes the interpreter and torch). Every worker ends by hashing all
parameters (sha256 over name, shape and raw bytes; for the SAC step the actor, both Q-networks
and their targets, the world model and ``log_alpha``) and saving them; all workers of a
configuration must be **bit-identical** with its first plain worker (compared element-wise as
well), anything else is a failure.

Targets (CPU-time ratio): ≤ 1.10 at batch 256 and ≤ 1.30 at batch 32 for both workloads; the
aim is 1.03 and 1.10. ``--profile`` runs one more gated worker (whole SAC step at batch 32
unless ``--profile-workload``/``--profile-batch`` say otherwise; not used for the ratios) under
cProfile and prints the functions inside ``amal_verified`` with the largest cumulative time.
``--amal-path DIR`` puts ``DIR`` first on the gated workers' ``PYTHONPATH``, to measure another
copy of the library (e.g. ``git archive <commit> amal_verified | tar -x -C DIR``).

Exit status: 0; with ``--check`` 1 if a CPU-time ratio exceeds its target, parameters differ or
a plain worker imported the library; 2 if a worker fails (its output is printed). Nothing here
limits wall-clock time.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Final

HERE: Final = Path(__file__).resolve().parent
ROOT: Final = HERE.parent
WORKER_SCRIPT: Final = HERE / "_small_model_worker.py"
WORKLOADS: Final = {"wm": "world-model update", "sac": "whole SAC step + WM"}
TARGETS: Final = {256: 1.10, 32: 1.30}
AIMS: Final = {256: 1.03, 32: 1.10}
PLAIN_IMPORT_EXIT: Final = 3
DEFAULT_STEPS: Final = {"wm": 200, "sac": 60}


def _load_worker_module() -> ModuleType:
    """``_small_model_worker.py`` (standard-library imports only) for its ``WorkerResult``."""
    name = "_small_model_worker"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, WORKER_SCRIPT)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {WORKER_SCRIPT}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


_worker: Any = _load_worker_module()
WorkerResult: Any = _worker.WorkerResult


class WorkerFailed(RuntimeError):
    """A worker subprocess exited non-zero or produced no result."""

    def __init__(self, label: str, returncode: int, stdout: str, stderr: str) -> None:
        super().__init__(f"{label} worker failed (exit {returncode})")
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@dataclasses.dataclass(frozen=True)
class Settings:
    """How much to run: sizes per worker and the configurations."""

    pairs: int
    warmup: int
    steps: int | None  # timed steps per worker; None: DEFAULT_STEPS of the workload
    pool: int
    batches: tuple[int, ...]
    workloads: tuple[str, ...]
    amal_path: Path | None = None
    jobs: int = 1
    aux_present: bool = False  # gated workers tag auxiliary data before their first step
    follow_primary: bool = True  # False: gated workers tag the batch av.primary(..., follow=False)

    def steps_for(self, workload: str) -> int:
        return self.steps if self.steps is not None else DEFAULT_STEPS[workload]


@dataclasses.dataclass(frozen=True)
class ConfigResult:
    """One (workload, batch) configuration: its plain and gated workers, in pair order."""

    workload: str
    batch: int
    plain: tuple[Any, ...]
    gated: tuple[Any, ...]
    param_differences: tuple[str, ...]

    @property
    def target(self) -> float | None:
        return TARGETS.get(self.batch)

    @property
    def aim(self) -> float | None:
        return AIMS.get(self.batch)

    @property
    def cpu_pair_ratios(self) -> list[float]:
        return [g.cpu_median_ms / p.cpu_median_ms for p, g in zip(self.plain, self.gated, strict=True)]

    @property
    def wall_pair_ratios(self) -> list[float]:
        return [g.wall_median_ms / p.wall_median_ms for p, g in zip(self.plain, self.gated, strict=True)]

    @property
    def cpu_ratio(self) -> float:
        """Headline: median over pairs of gated/plain median CPU time per step."""
        return statistics.median(self.cpu_pair_ratios)

    @property
    def wall_ratio(self) -> float:
        return statistics.median(self.wall_pair_ratios)

    @property
    def cpu_min_pair_ratios(self) -> list[float]:
        return [min(g.step_cpu_s) / min(p.step_cpu_s) for p, g in zip(self.plain, self.gated, strict=True)]

    @property
    def cpu_min_ratio(self) -> float:
        """Supplementary: median over pairs of the ratio of the fastest steps' CPU times."""
        return statistics.median(self.cpu_min_pair_ratios)

    @property
    def rss_ratio(self) -> float:
        gated = statistics.median(float(r.peak_rss_kb) for r in self.gated)
        return gated / statistics.median(float(r.peak_rss_kb) for r in self.plain)

    def median_ms(self, side: str, clock: str) -> float:
        workers = self.plain if side == "plain" else self.gated
        return statistics.median(float(getattr(r, f"{clock}_median_ms")) for r in workers)

    @property
    def params_identical(self) -> bool:
        return not self.param_differences

    @property
    def plain_never_imported_amal(self) -> bool:
        return not any(r.amal_imported for r in self.plain)

    @property
    def passed(self) -> bool:
        """CPU-time ratio within target (no target: not judged), bit-identical, plain side clean."""
        within = self.target is None or self.cpu_ratio <= self.target
        return within and self.params_identical and self.plain_never_imported_amal

    def summary(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "description": WORKLOADS[self.workload],
            "batch": self.batch,
            "plain_cpu_ms": self.median_ms("plain", "cpu"),
            "gated_cpu_ms": self.median_ms("gated", "cpu"),
            "plain_wall_ms": self.median_ms("plain", "wall"),
            "gated_wall_ms": self.median_ms("gated", "wall"),
            "cpu_pair_ratios": self.cpu_pair_ratios,
            "wall_pair_ratios": self.wall_pair_ratios,
            "cpu_ratio": self.cpu_ratio,
            "wall_ratio": self.wall_ratio,
            "cpu_min_pair_ratios": self.cpu_min_pair_ratios,
            "cpu_min_ratio": self.cpu_min_ratio,
            "rss_ratio": self.rss_ratio,
            "target": self.target,
            "aim": self.aim,
            "pass": self.passed,
            "params_identical": self.params_identical,
            "param_differences": list(self.param_differences),
            "param_sha256": self.plain[0].param_sha256,
            "plain_never_imported_amal": self.plain_never_imported_amal,
            "workers": [dataclasses.asdict(r) for r in (*self.plain, *self.gated)],
        }


def _worker_env(side: str, amal_path: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if side == "gated" and amal_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(amal_path), env.get("PYTHONPATH", "")) if p)
    return env


def run_worker(
    side: str,
    workload: str,
    batch: int,
    settings: Settings,
    out_dir: Path,
    profile_file: Path | None = None,
) -> Any:
    """One worker in a fresh interpreter (``python -P`` by file path); its ``WorkerResult``."""
    cmd = [sys.executable, "-P", str(WORKER_SCRIPT), "--side", side, "--workload", workload]
    cmd += [
        "--batch",
        str(batch),
        "--steps",
        str(settings.steps_for(workload)),
        "--warmup",
        str(settings.warmup),
    ]
    cmd += ["--pool", str(settings.pool), "--out-dir", str(out_dir)]
    if profile_file is not None:
        cmd += ["--profile-file", str(profile_file)]
    if side == "gated" and settings.aux_present:
        cmd.append("--aux-present")
    if side == "gated" and not settings.follow_primary:
        cmd.append("--no-follow-primary")
    label = f"{side} {workload} batch {batch}"
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=_worker_env(side, settings.amal_path), check=False
    )
    if proc.returncode == PLAIN_IMPORT_EXIT:
        label += " (the plain side imported amal_verified)"
    lines = [line for line in proc.stdout.splitlines() if line.startswith('{"result_file"')]
    if proc.returncode != 0 or not lines:
        raise WorkerFailed(label, proc.returncode, proc.stdout, proc.stderr)
    if proc.stderr.strip():
        print(f"[{label} worker stderr]\n{proc.stderr.rstrip()}", file=sys.stderr)
    data = json.loads(Path(json.loads(lines[-1])["result_file"]).read_text())
    return WorkerResult(**data)


def compare_params(a: Any, b: Any) -> str | None:
    """``None`` if the two workers' saved tensors are bit-identical, else a description."""
    import numpy as np

    with np.load(a.params_file) as fa, np.load(b.params_file) as fb:
        if list(fa.files) != list(fb.files):
            return f"different tensor names: {fa.files} vs {fb.files}"
        diffs: list[str] = []
        for k in fa.files:
            x, y = fa[k], fb[k]
            if x.shape != y.shape:
                diffs.append(f"{k}: shape {x.shape} vs {y.shape}")
            elif x.tobytes() != y.tobytes():
                n = int(np.sum(x != y))
                diffs.append(f"{k}: {n}/{x.size} differ, max |Δ| {float(np.max(np.abs(x - y))):.3e}")
    if diffs:
        return "; ".join(diffs)
    if a.param_sha256 != b.param_sha256:
        return "arrays equal but sha256 differs (?)"
    return None


def _fmt_worker(pair: int, r: Any) -> str:
    return (
        f"  pair {pair} {WORKLOADS[r.workload]:20s} batch {r.batch:4d} {r.side:5s}: "
        f"CPU {r.cpu_median_ms:8.3f} ms, wall {r.wall_median_ms:8.3f} ms "
        f"(min {min(r.step_wall_s) * 1e3:.3f}, max {max(r.step_wall_s) * 1e3:.3f}), "
        f"RSS {r.peak_rss_kb / 1024:.0f} MB"
    )


def measure(
    settings: Settings, out_dir: Path, log: Callable[[str], None] | None = None
) -> list[ConfigResult]:
    """Alternate plain/gated fresh workers for every configuration, ``settings.pairs`` times (the
    gated one first in odd rounds).

    With ``settings.jobs > 1`` workers run concurrently (for smoke runs: timings then interfere).
    Raises :class:`WorkerFailed` if a worker fails.
    """
    configs = [(w, b) for w in settings.workloads for b in settings.batches]
    # Odd rounds run the gated worker first: a drift of the host's speed within a pair then weighs on
    # each side equally often.
    schedule = [
        (i, w, b, side)
        for i in range(settings.pairs)
        for w, b in configs
        for side in (("plain", "gated") if i % 2 == 0 else ("gated", "plain"))
    ]
    results: dict[tuple[int, str, int, str], Any] = {}

    def run(item: tuple[int, str, int, str]) -> Any:
        i, w, b, side = item
        r = run_worker(side, w, b, settings, out_dir)
        if log is not None:
            log(_fmt_worker(i + 1, r))
        return r

    if settings.jobs > 1:
        with concurrent.futures.ThreadPoolExecutor(max_workers=settings.jobs) as pool:
            for item, r in zip(schedule, pool.map(run, schedule), strict=True):
                results[item] = r
    else:
        for item in schedule:
            results[item] = run(item)

    out: list[ConfigResult] = []
    for w, b in configs:
        plain = tuple(results[(i, w, b, "plain")] for i in range(settings.pairs))
        gated = tuple(results[(i, w, b, "gated")] for i in range(settings.pairs))
        differences = []
        for k, r in enumerate([*plain[1:], *gated]):
            desc = compare_params(plain[0], r)
            if desc is not None:
                differences.append(f"{r.side} worker {k + 1} vs plain worker 1: {desc}")
        out.append(ConfigResult(w, b, plain, gated, tuple(differences)))
    return out


def _fmt_target(c: ConfigResult) -> str:
    if c.target is None or c.aim is None:
        return "-"
    return f"≤ {c.target:.2f} ({c.aim:.2f})"


def print_table(results: Sequence[ConfigResult]) -> None:
    """The summary table (ratios gated/plain; medians in ms per step)."""
    header = (
        f"{'workload':22s} {'batch':>5s} {'plain CPU':>10s} {'gated CPU':>10s} "
        f"{'CPU ratio':>9s} {'min ratio':>9s} "
        f"{'plain wall':>10s} {'gated wall':>10s} {'wall ratio':>10s} {'RSS ratio':>9s} "
        f"{'target (aim)':>13s} {'verdict':>7s}  parameters"
    )
    print("\n" + header)
    print("-" * len(header))
    for c in results:
        params = "bit-identical" if c.params_identical else "DIFFER"
        verdict = "-" if c.target is None else ("PASS" if c.passed else "FAIL")
        print(
            f"{WORKLOADS[c.workload]:22s} {c.batch:5d} {c.median_ms('plain', 'cpu'):10.3f} "
            f"{c.median_ms('gated', 'cpu'):10.3f} {c.cpu_ratio:9.3f} {c.cpu_min_ratio:9.3f} "
            f"{c.median_ms('plain', 'wall'):10.3f} "
            f"{c.median_ms('gated', 'wall'):10.3f} {c.wall_ratio:10.3f} {c.rss_ratio:9.3f} "
            f"{_fmt_target(c):>13s} {verdict:>7s}  {params}"
        )
    print(
        "(ms per step, medians; ratios gated/plain = median over pairs of the ratio of the workers' "
        "medians;\n min ratio: the same for each worker's fastest step's CPU time, least disturbed by "
        "other load;\n verdict on the CPU ratio)"
    )
    print("\npairwise ratios (CPU | wall | fastest CPU):")
    for c in results:
        cpu = ", ".join(f"{x:.3f}" for x in c.cpu_pair_ratios)
        wall = ", ".join(f"{x:.3f}" for x in c.wall_pair_ratios)
        fastest = ", ".join(f"{x:.3f}" for x in c.cpu_min_pair_ratios)
        print(f"  {WORKLOADS[c.workload]:22s} batch {c.batch:4d}: {cpu} | {wall} | {fastest}")
    for c in results:
        print(f"CPU ratio ({c.workload}, batch {c.batch}): {c.cpu_ratio:.3f}")
        print(f"wall ratio ({c.workload}, batch {c.batch}): {c.wall_ratio:.3f}")
    workers = [r for c in results for r in (*c.plain, *c.gated)]
    print(f"load average (1, 5, 15 min) at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    clean = all(c.plain_never_imported_amal for c in results)
    print(f"plain workers never imported amal_verified: {'yes' if clean else 'NO'}")
    identical = all(c.params_identical for c in results)
    print(
        f"parameters: {'bit-identical' if identical else 'DIFFER'} between plain and gated "
        f"in every configuration ({len(workers)} workers)"
    )
    for c in results:
        for line in c.param_differences:
            print(f"  {c.workload} batch {c.batch}: {line}")


def profile_gated(settings: Settings, workload: str, batch: int, top: int, out_dir: Path) -> None:
    """Run one gated worker under cProfile; print the top ``amal_verified`` functions by cumulative time."""
    import pstats

    prof = out_dir / f"gated-{workload}-{batch}.prof"
    r = run_worker("gated", workload, batch, settings, out_dir, profile_file=prof)
    stats = pstats.Stats(str(prof))
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    total: float = stats.total_tt  # type: ignore[attr-defined]
    steps = settings.steps_for(workload)

    def inside(file: str) -> bool:
        return f"amal_verified{os.sep}" in file

    own = sum(tt for (file, _, _), (_, _, tt, _, _) in raw.items() if inside(file))
    print(
        f"\ncProfile of one gated worker: {WORKLOADS[workload]}, batch {batch}, {steps} timed steps "
        f"(under the profiler: median {r.cpu_median_ms:.2f} ms CPU per step; cProfile inflates Python code)"
    )
    print(
        f"own time inside amal_verified: {own / steps * 1e3:.2f} ms per step, "
        f"{100 * own / total if total else 0:.1f}% of {total / steps * 1e3:.2f} ms profiled per step"
    )
    rows = sorted(
        ((ct, tt, nc, key) for key, (_, nc, tt, ct, _) in raw.items() if inside(key[0])),
        reverse=True,
    )[:top]
    print(f"top {len(rows)} functions inside amal_verified by cumulative time:")
    print("(cumulative time includes the torch work called from inside, e.g. the kernels that")
    print(" __torch_dispatch__ runs and the wrapped optimizer's step; own time is the library's own code)")
    _print_rows(rows, steps)
    by_own = sorted(
        ((ct, tt, nc, key) for key, (_, nc, tt, ct, _) in raw.items() if inside(key[0])),
        key=lambda row: row[1],
        reverse=True,
    )[:10]
    print(f"top {len(by_own)} functions inside amal_verified by own time:")
    _print_rows(by_own, steps)


def _print_rows(rows: Sequence[tuple[float, float, int, tuple[str, int, str]]], steps: int) -> None:
    print(f"  {'cum ms/step':>11s} {'own ms/step':>11s} {'calls/step':>10s}  function")
    for ct, tt, nc, (file, line, name) in rows:
        where = f"{Path(file).parent.name}/{Path(file).name}:{line}"
        print(f"  {ct / steps * 1e3:11.3f} {tt / steps * 1e3:11.3f} {nc / steps:10.1f}  {name} ({where})")


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT, check=False)
    except OSError:
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _provenance(settings: Settings, results: Sequence[ConfigResult]) -> dict[str, Any]:
    import torch

    files = {r.amal_file for c in results for r in c.gated if r.amal_file}
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = _git("status", "--porcelain", "--", "amal_verified")
    return {
        "commit": commit,
        "amal_verified_modified_in_working_tree": bool(dirty) if dirty is not None else None,
        "amal_path": str(settings.amal_path) if settings.amal_path else None,
        "aux_present": settings.aux_present,
        "follow_primary": settings.follow_primary,
        "amal_verified_imported_from": sorted(str(Path(f).parent) for f in files),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg_after": os.getloadavg(),
        "settings": {k: v for k, v in dataclasses.asdict(settings).items() if k != "amal_path"},
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: measure, print the table; the exit status is in the module docstring."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=5, help="plain/gated process pairs (default 5)")
    parser.add_argument(
        "--steps", type=int, help="timed steps per worker (default: 200 world-model updates, 60 SAC steps)"
    )
    parser.add_argument("--warmup", type=int, default=10, help="untimed warm-up steps (default 10)")
    parser.add_argument("--pool", type=int, default=16, help="pre-generated batches, reused (default 16)")
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 256], help="batch sizes (32 256)")
    parser.add_argument(
        "--workloads", nargs="+", choices=sorted(WORKLOADS), default=["wm", "sac"], help="(wm sac)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 pair, 1 warm-up + 3 steps")
    parser.add_argument(
        "--jobs", type=int, default=None, help="workers run at once (default 1; --quick: 2; >1 skews timings)"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 over target or if parameters differ")
    parser.add_argument("--json", type=Path, help="also write the summary as JSON to this path")
    parser.add_argument("--profile", action="store_true", help="also cProfile one gated worker")
    parser.add_argument("--profile-workload", choices=sorted(WORKLOADS), default="sac")
    parser.add_argument("--profile-batch", type=int, default=32)
    parser.add_argument("--profile-top", type=int, default=25, help="functions to list (default 25)")
    parser.add_argument("--amal-path", type=Path, help="directory holding the amal_verified to gate with")
    parser.add_argument(
        "--aux-present",
        action="store_true",
        help="gated workers tag auxiliary data first, as where auxiliary agents run (the gate checks fully)",
    )
    parser.add_argument(
        "--no-follow-primary",
        dest="follow_primary",
        action="store_false",
        help="gated workers tag the batch av.primary(..., follow=False): the memory only, tensors stay plain",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.pairs, args.warmup, args.steps = 1, 1, 3
    jobs = args.jobs if args.jobs is not None else (min(2, os.cpu_count() or 1) if args.quick else 1)
    if (
        args.pairs < 1
        or (args.steps is not None and args.steps < 1)
        or args.warmup < 0
        or args.pool < 1
        or jobs < 1
    ):
        parser.error("--pairs, --steps, --pool and --jobs must be ≥ 1, --warmup ≥ 0")
    if args.amal_path is not None and not (args.amal_path / "amal_verified" / "__init__.py").is_file():
        parser.error(f"--amal-path {args.amal_path}: no amal_verified/__init__.py there")
    settings = Settings(
        pairs=args.pairs,
        warmup=args.warmup,
        steps=args.steps,
        pool=args.pool,
        batches=tuple(args.batches),
        workloads=tuple(args.workloads),
        amal_path=args.amal_path.resolve() if args.amal_path else None,
        jobs=jobs,
        aux_present=args.aux_present,
        follow_primary=args.follow_primary,
    )
    import torch  # only for the version string

    print(
        f"small_model_overhead: CleanRL-sized world model (23 → 256 → 256 → 18) and SAC step, "
        f"Adam, 1 thread\n  torch {torch.__version__}, python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; {settings.pairs} pair(s) of fresh "
        f"processes per configuration, {settings.warmup} warm-up + "
        f"{', '.join(f'{settings.steps_for(w)} ({w})' for w in settings.workloads)} timed steps each"
        + (f", {jobs} at once (timings interfere)" if jobs > 1 else ""),
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="amal-small-bench-") as tmp:
        out_dir = Path(tmp)
        started = time.perf_counter()
        try:
            results = measure(settings, out_dir, log=lambda line: print(line, flush=True))
        except WorkerFailed as exc:
            print(
                f"\nERROR: {exc}\n--- stdout ---\n{exc.stdout}\n--- stderr ---\n{exc.stderr}", file=sys.stderr
            )
            return 2
        elapsed = time.perf_counter() - started
        provenance = {**_provenance(settings, results), "elapsed_s": elapsed}
        print_table(results)
        modified = provenance["amal_verified_modified_in_working_tree"]
        print(
            f"amal_verified imported from {', '.join(provenance['amal_verified_imported_from'])}; "
            f"repository at {provenance['commit']}"
            + (
                " (amal_verified/ modified in the working tree)"
                if modified and not settings.amal_path
                else ""
            )
            + f"; {len(results) * settings.pairs * 2} workers in {elapsed:.0f} s"
            + ("; auxiliary data present in the gated workers" if settings.aux_present else "")
            + ("; primary batches tagged with follow=False" if not settings.follow_primary else "")
        )
        if args.json is not None:
            summary = {**provenance, "configs": [c.summary() for c in results]}
            args.json.write_text(json.dumps(summary, indent=2))
        if args.profile:
            try:
                profile_gated(settings, args.profile_workload, args.profile_batch, args.profile_top, out_dir)
            except WorkerFailed as exc:
                print(
                    f"\nERROR: {exc}\n--- stdout ---\n{exc.stdout}\n--- stderr ---\n{exc.stderr}",
                    file=sys.stderr,
                )
                return 2
    if args.check and not all(c.passed for c in results):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
