"""A constant-action policy on a task's evaluation episodes, beside the benchmark's recorded final returns.

Usage::

    .venv/bin/python benchmarks/degenerate_policy.py --task CVRP-100 [--action 0] [--results DIR]

Plays ``--action`` at every step of the evaluation episodes a run with each seed is scored on
(:func:`amal_tools.bench.evaluation.evaluation_seeds`; the same episodes, the same count), then prints,
per seed, that policy's mean return next to the final mean return of every method's record of the task
in ``--results`` (default ``benchmarks/results/full``).  On a task whose environment replaces invalid
actions (the routing tasks do), a constant action is the environment's own fallback rule: a learned
policy that scores like it has learned nothing the fallback does not already do.

Measured (full mode, 50,000 steps, the records of commit be21c96), CVRP-100 with action 0 (the depot:
away from it, valid; at it, replaced by the lowest-index unserved customer, so one customer per route in
index order): −112.5, −104.9 and −102.5 for seeds 0–2.  Every method's final mean return lies 0.5 to 4.7
above it on the same seed (amal −110.0, −103.6, −101.1; SB3 PPO −111.4, −102.8, −101.7; PBT −110.5,
−103.6, −100.8).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from amal_tools.bench.evaluation import evaluate_policy
from amal_tools.bench.records import load_records
from amal_tools.bench.tasks import task_by_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, help="benchmark task name, e.g. CVRP-100")
    parser.add_argument("--action", type=int, default=0, help="the action played at every step (default 0)")
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/full"))
    args = parser.parse_args()
    task = task_by_name(args.task)
    records = [r for r in load_records([args.results / "records"]) if r.task == args.task]
    if not records:
        parser.error(f"no records of {args.task} in {args.results / 'records'}")
    for seed in sorted({r.seed for r in records}):
        runs = [r for r in records if r.seed == seed]
        episodes = len(runs[0].final.returns)
        constant = evaluate_policy(task, lambda _obs: args.action, run_seed=seed, episodes=episodes)
        learned = ", ".join(f"{r.method} {statistics.fmean(r.final.returns):.1f}" for r in runs)
        print(f"seed {seed}: action {args.action} {statistics.fmean(constant.returns):.1f} | {learned}")


if __name__ == "__main__":
    main()
