"""Benchmark: does the full AMAL trainer learn, how fast, and does every run certify?

For each task, trains with the paper's Table 1 defaults (``TrainConfig()``: K = 20 full ensemble
members at the paper's sizes, N = 16 CEM-evolved auxiliary agents, λ = 0.3, M = 100, ...) for 20,000
primary environment steps on one CPU thread, then replays the run with ``amal certify`` in a fresh
process.  Reports, per task: the evaluation return (10 deterministic episodes every 2,000 steps), the
first step at which it reached the target (CartPole-v1 475, Pendulum-v1 −200), steps/s, wall time of
training and of certification, and the certificate's verdict.  Results go to
``benchmarks/results/trainer_returns_<tasks>.json``; ``benchmarks/README.md`` quotes them.

Run:  .venv/bin/python benchmarks/trainer_returns.py [--tasks CartPole-v1 Pendulum-v1] [--steps 20000]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

import amal_verified
from amal_verified.run.config import TrainConfig
from amal_verified.run.trainer import Trainer

TARGETS = {"CartPole-v1": 475.0, "Pendulum-v1": -200.0}
RESULTS = Path(__file__).parent / "results"


def run_task(
    env_id: str, steps: int, seed: int, out: Path, overrides: dict[str, object]
) -> dict[str, object]:
    run_dir = out / f"{env_id}-seed{seed}"
    config = TrainConfig(env_id=env_id, total_steps=steps, seed=seed, **overrides)  # type: ignore[arg-type]
    start = time.perf_counter()
    Trainer.create(config, run_dir, progress=sys.stderr.isatty()).run()
    train_seconds = time.perf_counter() - start
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # metrics.csv carries the last evaluation forward; keep the rows where one was made.
    made = {s for s in range(config.eval_every, steps + 1, config.eval_every)} | {steps}
    evals = [(int(r["step"]), float(r["eval_return"])) for r in rows if int(r["step"]) in made]
    target = TARGETS.get(env_id)
    reached = next((s for s, r in evals if target is not None and r >= target), None)
    start = time.perf_counter()
    cert = subprocess.run(
        [sys.executable, "-m", "amal_verified.cli", "certify", str(run_dir), "--quiet"],
        capture_output=True,
        text=True,
        check=False,
    )
    certify_seconds = time.perf_counter() - start
    # Results are committed: name the run by its directory's name, never by this machine's path.
    portable = f"<out>/{run_dir.name}"
    return {
        "env_id": env_id,
        "seed": seed,
        "steps": steps,
        "overrides": overrides,
        "eval_returns": evals,
        "final_eval_return": evals[-1][1] if evals else None,
        "best_eval_return": max(r for _, r in evals) if evals else None,
        "target": target,
        "first_step_at_target": reached,
        "train_seconds": round(train_seconds, 1),
        "steps_per_second": round(steps / train_seconds, 2),
        "certify_seconds": round(certify_seconds, 1),
        "certified": cert.returncode == 0,
        "certify_output": cert.stdout.strip().replace(str(run_dir), portable),
        "run_dir": portable,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TARGETS))
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/benchmark"))
    parser.add_argument("--set", nargs="*", default=[], help="KEY=VALUE overrides of TrainConfig")
    args = parser.parse_args()
    overrides: dict[str, object] = {}
    for item in args.set:
        key, _, raw = item.partition("=")
        overrides[key] = json.loads(raw)
    RESULTS.mkdir(exist_ok=True)
    results = []
    for env_id in args.tasks:
        result = run_task(env_id, args.steps, args.seed, args.out, overrides)
        print(json.dumps(result), flush=True)
        results.append(result)
    document = {
        "benchmark": "trainer_returns",
        "amal_verified": amal_verified.__version__,
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": 1,
        "results": results,
    }
    suffix = "_".join(args.tasks) + ("_custom" if overrides else "")
    (RESULTS / f"trainer_returns_{suffix}.json").write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
