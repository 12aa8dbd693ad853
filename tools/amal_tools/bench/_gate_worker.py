"""Worker processes of :mod:`amal_tools.bench.gate_overhead` (run by file path, never imported by it).

``python <this file> --side plain|gated|interleaved --steps S --warmup W --out-dir D
[--profile-file F]`` times world-model training steps and writes its result as JSON into
``D``; the last stdout line is ``{"result_file": ...}``.

This file is run as a script (with ``python -P``, so that its directory is not put on
``sys.path``), which never imports the ``amal_verified`` package ``__init__``: the
module-level imports below are the standard library only, the model comes from
``_plain_world_model.py`` next to this file (loaded by path), and only the gated side (and
the interleaved run, after its baseline) imports ``amal_verified``.  The plain side reports
``"amal_verified" in sys.modules``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

SEED = 0
DATA_SEED = 12345
MODEL_MODULE = "_plain_world_model"


@dataclasses.dataclass(frozen=True)
class WorkerResult:
    """What one plain or gated worker process reports (JSON next to its parameter file)."""

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


def load_model_module() -> ModuleType:
    """``_plain_world_model.py`` (next to this file) as the top-level module ``_plain_world_model``."""
    if MODEL_MODULE in sys.modules:
        return sys.modules[MODEL_MODULE]
    spec = importlib.util.spec_from_file_location(
        MODEL_MODULE, Path(__file__).with_name(f"{MODEL_MODULE}.py")
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {MODEL_MODULE}.py next to {__file__}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODEL_MODULE] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


def param_digest(model: Any, out_file: Path) -> str:
    """sha256 over every parameter's name, shape and raw bytes in ``named_parameters()`` order.

    Also saves the arrays to ``out_file`` (``.npz``) for an element-wise comparison.
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


def run_worker(side: str, steps: int, warmup: int, out_dir: Path, profile_file: Path | None) -> Path:
    """Time ``warmup + steps`` training steps on ``side`` ("plain"/"gated"); return the result file."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(SEED)

    amal: Any = None
    if side == "gated":
        import amal_verified as amal

    pwm: Any = load_model_module()
    model = pwm.PaperWorldModel()
    batches = pwm.make_batches(warmup + steps, seed=DATA_SEED)
    adam = torch.optim.Adam(model.parameters(), lr=pwm.LR)

    t0 = time.perf_counter()
    if side == "gated":
        batches = [b.map(lambda x: amal.primary(x, source="real-env")) for b in batches]
        optimizer: Any = amal.GatedOptimizer(adam)
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
    faults_per_step = (usage.ru_minflt - faults_before) / max(1, len(times))

    params_file = out_dir / f"params-{side}-{os.getpid()}.npz"
    result = WorkerResult(
        side=side,
        step_times_s=times,
        cpu_times_s=cpu_times,
        median_ms=statistics.median(times) * 1e3,
        cpu_median_ms=statistics.median(cpu_times) * 1e3,
        minor_faults_per_step=faults_per_step,
        tag_time_s=tag_time,
        peak_rss_kb=usage.ru_maxrss,
        rss_before_training_kb=rss_before,
        param_sha256=param_digest(model, params_file),
        params_file=str(params_file),
        final_loss=float(loss) if loss is not None else float("nan"),
        amal_imported="amal_verified" in sys.modules,
        torch_version=torch.__version__,
        num_threads=torch.get_num_threads(),
    )
    out = out_dir / f"result-{side}-{os.getpid()}.json"
    out.write_text(json.dumps(dataclasses.asdict(result)))
    return out


def run_interleaved(steps: int, warmup: int, out_dir: Path) -> Path:
    """Plain and gated stepped alternately in one process, plus a plain baseline timed before import.

    Three models with the same seed and data: ``before`` is trained (and timed) before
    ``amal_verified`` is imported, so it pays nothing; then ``plain`` and ``gated`` alternate step
    by step, both after the library's global hooks are installed.  Reported: the medians, the
    median of per-step ratios gated/plain, and each model's parameter digest (all three must be
    equal).  Returns the result file.
    """
    import torch

    torch.set_num_threads(1)
    pwm: Any = load_model_module()
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
        name: param_digest(model, out_dir / f"params-interleaved-{name}.npz")
        for name, model in (("before", before_model), ("plain", plain_model), ("gated", gated_model))
    }
    summary = {
        "before_ms": statistics.median(before) * 1e3,
        "plain_ms": statistics.median(plain) * 1e3,
        "gated_ms": statistics.median(gated) * 1e3,
        "pairwise_ratio": statistics.median(g / p for g, p in zip(gated, plain, strict=True)),
        "digests": digests,
    }
    out = out_dir / "result-interleaved.json"
    out.write_text(json.dumps(summary))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Worker entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description="gate-overhead worker (internal)")
    parser.add_argument("--side", choices=["plain", "gated", "interleaved"], required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--profile-file", type=Path)
    args = parser.parse_args(argv)
    if args.side == "interleaved":
        out = run_interleaved(args.steps, args.warmup, args.out_dir)
    else:
        out = run_worker(args.side, args.steps, args.warmup, args.out_dir, args.profile_file)
    print(json.dumps({"result_file": str(out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
