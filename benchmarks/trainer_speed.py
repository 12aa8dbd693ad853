"""Steps/s of the trainer at Table 1's sizes, world-model learner in the loop or in its own process,
beside SB3 SAC, on one environment.

    .venv/bin/python benchmarks/trainer_speed.py                       # Pendulum-v1, 2 rounds, ~10 minutes
    .venv/bin/python benchmarks/trainer_speed.py --env HalfCheetah-v5 --steps 2000 --pairs 1

Each round runs three fresh processes one after the other: SB3 SAC (``SAC("MlpPolicy")``, one gradient step
per environment step, ``learning_starts`` equal to the trainer's), the trainer with ``TrainConfig``'s
defaults (20 full world-model members, 16 auxiliary agents, CEM population 100, policy 256-256) and the
same with ``wm_learner_process=true``.  Each uses one torch thread per process, runs ``--steps``
primary steps from seed 0 and reports its steps/s over the learning phase (after step ``learning_starts``
to the step before the last: random acting before it costs both sides little and says nothing, and
the trainer's last round, which a run in its own process cannot overlap with anything, belongs to
the run's end, not to its pace), by wall time -- the
learner's process runs on the second core, so throughput is what it buys -- with the CPU seconds
of the measuring process beside it.  Ratios are to SB3's steps/s of the same round.  The trainer
runs with its gate, ledger and checkpoints as always (evaluation only at the end, one episode).

Results and what they mean: ``benchmarks/README.md`` ("Trainer steps/s at Table 1's sizes").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SIDES = ("sb3", "trainer", "trainer-process")


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _run_trainer(env_id: str, steps: int, *, in_process: bool) -> dict[str, float]:
    from amal_verified.run.config import TrainConfig
    from amal_verified.run.trainer import Trainer

    config = TrainConfig(
        env_id=env_id,
        total_steps=steps,
        seed=0,
        eval_every=steps,
        eval_episodes=1,
        checkpoint_every=steps,
        wm_learner_process=in_process,
    )
    marks: dict[str, tuple[float, float]] = {}

    def mark(trainer: Trainer) -> None:
        if trainer.step in (config.learning_starts, steps - 1):
            marks[str(trainer.step)] = _clock()

    with tempfile.TemporaryDirectory(prefix="amal-speed-") as tmp:
        trainer = Trainer.create(config, Path(tmp) / "run")
        trainer.run(after_step=mark)
    return _window(
        marks[str(config.learning_starts)], marks[str(steps - 1)], steps - 1 - config.learning_starts
    )


def _window(start: tuple[float, float], end: tuple[float, float], steps: int) -> dict[str, float]:
    return {
        "steps_per_s": steps / (end[0] - start[0]),
        "cpu_s": end[1] - start[1],
        "wall_s": end[0] - start[0],
    }


def _run_sb3(env_id: str, steps: int) -> dict[str, float]:
    import gymnasium as gym
    import torch
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    from amal_verified.run.config import TrainConfig

    torch.set_num_threads(1)
    learning_starts = TrainConfig().learning_starts
    marks: dict[str, tuple[float, float]] = {}

    class Mark(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps in (learning_starts, steps - 1):
                marks[str(self.num_timesteps)] = _clock()
            return True

    model = SAC("MlpPolicy", gym.make(env_id), learning_starts=learning_starts, seed=0, device="cpu")
    model.learn(total_timesteps=steps, callback=Mark())
    return _window(marks[str(learning_starts)], marks[str(steps - 1)], steps - 1 - learning_starts)


def _worker(side: str, env_id: str, steps: int) -> None:
    if side == "sb3":
        result = _run_sb3(env_id, steps)
    else:
        result = _run_trainer(env_id, steps, in_process=side == "trainer-process")
    print(json.dumps(result))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument(
        "--steps", type=int, default=2_500, help="primary steps per run (learning from 1,000)"
    )
    parser.add_argument("--pairs", type=int, default=2, help="rounds of the three sides")
    parser.add_argument("--json", type=Path, help="write the measurements here")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.worker, args.env, args.steps)
        return 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rows: list[dict[str, Any]] = []
    for pair in range(args.pairs):
        for side in SIDES:
            done = subprocess.run(
                [sys.executable, __file__, "--worker", side, "--env", args.env, "--steps", str(args.steps)],
                capture_output=True,
                text=True,
                env=env,
                check=False,
            )
            if done.returncode:
                print(done.stdout, done.stderr, file=sys.stderr)
                return 2
            row = {"pair": pair, "side": side, **json.loads(done.stdout.strip().splitlines()[-1])}
            rows.append(row)
            print(
                f"round {pair + 1} {side:16s} {row['steps_per_s']:6.1f} steps/s  "
                f"({row['wall_s']:.0f} s wall, {row['cpu_s']:.0f} s CPU of its own process)",
                flush=True,
            )
    from amal_tools.bench.runner import code_commit  # here: the workers never import the tooling

    summary: dict[str, Any] = {"commit": code_commit(), "env": args.env, "steps": args.steps, "rows": rows}
    for side in SIDES[1:]:
        ratios = [
            next(r for r in rows if r["pair"] == p and r["side"] == side)["steps_per_s"]
            / next(r for r in rows if r["pair"] == p and r["side"] == "sb3")["steps_per_s"]
            for p in range(args.pairs)
        ]
        summary[f"{side}_vs_sb3"] = statistics.median(ratios)
        each = ", ".join(f"{x:.2f}" for x in ratios)
        print(f"{side} / SB3 SAC steps/s: median {statistics.median(ratios):.2f} ({each})")
    speedups = [
        next(r for r in rows if r["pair"] == p and r["side"] == "trainer-process")["steps_per_s"]
        / next(r for r in rows if r["pair"] == p and r["side"] == "trainer")["steps_per_s"]
        for p in range(args.pairs)
    ]
    summary["process_vs_loop"] = statistics.median(speedups)
    print(f"learner in its own process / in the loop: median {statistics.median(speedups):.2f}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
